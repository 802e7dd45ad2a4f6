"""The slot back-ends' state on disk: one JSON file, written whole or not at all, under a lock.

Both the agent and the board's init (or systemd's trial-failed unit) read and write it; a power cut
mid-write must leave the old state or the new one, never a mix.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_json(path: Path, data: object) -> None:
    """`data` as JSON at `path`: written beside it, fsynced, then renamed over it. Raises OSError."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as file:
        json.dump(data, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


@contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """An exclusive lock on `lock_file` (made if missing, with its directory) for the block."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
