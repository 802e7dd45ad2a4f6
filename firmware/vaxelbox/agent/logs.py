"""Structured logging: human lines on a terminal, JSON lines otherwise, secrets redacted.

Every record passes one redaction step at the very end, after tracebacks are
rendered, whether it came from our code (structlog) or a library (stdlib
logging), so a secret cannot reach the log by any route. Libraries' info lines
(aiocoap, zeroconf, asyncio, ...) are debug detail: they show at DEBUG only.
Every management action leaves one `audit` line (see `audit`).
"""

import itertools
import json
import logging
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO


@contextmanager
def _absent(name: str) -> Iterator[None]:
    """Within the block, `import name` (and of its submodules) fails as if it were not installed:
    a None in sys.modules stops an import (a documented rule of Python's import system). The
    entry is put back after, so code that imports `name` later still finds it."""
    before = sys.modules.get(name)
    sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if before is None:
            del sys.modules[name]
        else:
            sys.modules[name] = before


# structlog's dev and tracebacks modules import rich (its console, traceback and pretty modules,
# and pygments: about 5 MiB the agent would keep for life) whenever it is installed, for pretty
# tracebacks and locals this log never uses: it renders tracebacks plainly (format_exc_info,
# plain_traceback). The CLI's commands import rich themselves when they print.
with _absent("rich"):
    import structlog

REDACTED = "***"
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|private|psk|credential", re.IGNORECASE)
# Digest credentials in SIP or HTTP headers: the response and cnonce let an
# eavesdropper brute-force the password offline.
_DIGEST_FIELD = re.compile(r'\b(response|cnonce)="[^"]*"', re.IGNORECASE)

LogFormat = Literal["auto", "human", "json"]
# Loggers of our own code; everything else is a library.
OWN_LOGGERS = frozenset({"vaxelbox", "phoneprov"})
AUDIT_EVENT = "audit"
_terminal: TextIO | None = None  # see terminal()


class Redactor:
    """A structlog processor that removes known secret values and secret-looking fields."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def redact_text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _DIGEST_FIELD.sub(lambda m: f'{m[1]}="{REDACTED}"', text)

    def _redact(self, key: str, value: Any) -> Any:
        if _SECRET_KEY.search(key) and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {k: self._redact(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact(key, v) for v in value]
        return value if isinstance(value, int | float | bool | None) else self.redact_text(str(value))

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return {k: v if k.startswith("_") else self._redact(k, v) for k, v in event.items()}


class LogRing(logging.Handler):
    """The most recent records, redacted like the log itself: what /log serves installers."""

    def __init__(self, size: int = 500) -> None:
        super().__init__()
        self.records: deque[dict[str, Any]] = deque(maxlen=size)
        self._numbers = itertools.count(1)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append({"n": next(self._numbers), **json.loads(self.format(record))})
        except Exception:  # a log record must never break the code that logs it
            self.handleError(record)

    def forget(self) -> None:
        """Drop every record (a factory reset: the fresh box's status shows no earlier errors). The
        numbers go on, so `vaxelctl log --watch`, which skips numbers it has seen, misses nothing."""
        self.records.clear()


class LibraryChatter(logging.Filter):
    """Demotes a library's info records to debug (e.g. aiocoap's "Render request raised a
    renderable error (ContinueException...)" per block-wise request, "Received Release" per TCP
    connection): they are kept only when the log level is DEBUG. Libraries' warnings and errors
    stay as they are."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or record.name.partition(".")[0] in OWN_LOGGERS:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.level <= logging.DEBUG


def configure_logging(
    redactor: Redactor, level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> LogRing:
    """Route structlog and stdlib logging to one handler on `stream` (default stderr) and to a
    ring of recent records (returned)."""
    global _terminal
    stream = stream or sys.stderr
    human = fmt == "human" or (fmt == "auto" and stream.isatty())
    _terminal = stream if human and stream.isatty() else None
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=not human)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    renderer: Any = (
        structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        if human
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    ring = LogRing()
    ring.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler, ring]
    root.setLevel(level.upper())
    chatter = LibraryChatter(root.level)
    for each in root.handlers:
        each.addFilter(chatter)
    return ring


def terminal() -> TextIO | None:
    """The terminal human log lines go to, where a person reads them: the agent may print a summary
    there. None when logs are JSON or go to a file, a pipe or the journal."""
    return _terminal


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)


def audit(
    action: str, result: str, installer: str | None, installer_name: str | None, **details: Any
) -> None:
    """One line per management action, event `audit`: who (the installer's ID and name from the
    OSCORE context that protected the request), what (`action`, e.g. "site-push", and `details`
    such as the new site version), when (the line's timestamp) and `result` ("ok", "refused",
    "conflict" or "failed", with a `reason` among the details). Never pass a secret: the redactor
    is the last line of defence, not the first."""
    get_logger("vaxelbox.audit").info(
        AUDIT_EVENT,
        action=action,
        installer=installer,
        installer_name=installer_name,
        result=result,
        **details,
    )
