"""Factory reset: the data directory's state goes, the board's identity stays.

Wiped: everything in the data directory (the store `vaxelbox.db` with its -wal and -shm files,
the installers in mgmt/installers, mgmt/pairing-attempts, the site PKI in pki/, staged firmware
in firmware/, template overrides) except KEPT: the board's serial and pairing code (on its label)
and the firmware signing key installed with it. The A/B slots (outside the data directory) stay.

Who wipes: with no agent on the directory, `vaxelbox factory-reset` itself; with one, the agent,
which holds the store open: the command leaves a request (REQUEST_NAME, JSON
`{"by": str, "at": epoch seconds}`) in the data directory, the agent's `watch_requests` sees it
within POLL_INTERVAL, stops, wipes (the request with the rest) and starts again as a fresh box.
A request older than REQUEST_TTL (left by a command that gave up) is removed and ignored.
"""

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from vaxelbox.agent.logs import get_logger

log = get_logger("vaxelbox.factory_reset")

KEPT = ("mgmt/serial", "mgmt/pairing-code", "firmware-signing.pub")  # relative to the data dir
REQUEST_NAME = "factory-reset.request"
POLL_INTERVAL = 0.5  # s between the agent's looks for a request
REQUEST_TTL = 30.0  # s a request stays good for


class WipeError(OSError):
    """Part of the state could not be removed; `removed` says what was, the message what was not."""

    def __init__(self, message: str, removed: list[str]) -> None:
        super().__init__(message)
        self.removed = removed


def doomed(data_dir: Path) -> list[str]:
    """What a wipe of `data_dir` removes, as paths relative to it (sorted; directories whole)."""
    kept = {Path(k) for k in KEPT}
    keep_under = {k.parent for k in kept} - {Path(".")}
    found: list[str] = []
    for entry in sorted(data_dir.iterdir()) if data_dir.is_dir() else []:
        relative = entry.relative_to(data_dir)
        if relative in kept:
            continue
        if relative in keep_under and entry.is_dir() and not entry.is_symlink():
            found += [
                str(p.relative_to(data_dir))
                for p in sorted(entry.iterdir())
                if p.relative_to(data_dir) not in kept
            ]
            continue
        found.append(str(relative))
    return found


def wipe(data_dir: Path) -> list[str]:
    """Remove `doomed(data_dir)`; returns what was removed. Raises WipeError naming what was not."""
    removed: list[str] = []
    failed: list[str] = []
    for relative in doomed(data_dir):
        path = data_dir / relative
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            removed.append(relative)
        except OSError as exc:
            failed.append(f"{relative}: {exc.strerror or exc}")
    if failed:
        raise WipeError("; ".join(failed), removed)
    return removed


def request(data_dir: Path, by: str) -> Path:
    """Ask the agent serving `data_dir` for a factory reset (see the module's docstring)."""
    path = data_dir / REQUEST_NAME
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({"by": by, "at": time.time()}) + "\n")
    os.chmod(partial, 0o600)
    os.replace(partial, path)  # the agent never reads half a request
    return path


def take_request(data_dir: Path, now: float | None = None) -> str | None:
    """Who asked, for a good request in `data_dir`; None when there is none. A stale or unreadable
    request is removed (logged), never acted on. The good one stays: the wipe removes it."""
    path = data_dir / REQUEST_NAME
    try:
        body = json.loads(path.read_text())
        by, at = str(body["by"]), float(body["at"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("factory reset request unreadable: ignored", file=str(path), reason=str(exc))
        path.unlink(missing_ok=True)
        return None
    age = (time.time() if now is None else now) - at
    if not -5 < age <= REQUEST_TTL:
        log.warning("factory reset request stale: ignored", file=str(path), by=by, age_s=round(age, 1))
        path.unlink(missing_ok=True)
        return None
    return by


async def watch_requests(data_dir: Path, reset: Callable[[str], None]) -> None:
    """A supervisor service: calls `reset(origin)` for a request `vaxelbox factory-reset` left."""
    while True:
        by = await asyncio.to_thread(take_request, data_dir)
        if by is not None:
            reset(f"vaxelbox factory-reset ({by})")
            return
        await asyncio.sleep(POLL_INTERVAL)
