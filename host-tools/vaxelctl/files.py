"""Files an installer names on vaxelctl's command line: site files, bundles, images, keys.

A mistyped name is a usage error (exit 2) in one line that names the file and what is wrong with
it, never a traceback. Files are written atomically (a temporary file in the same directory, fsync,
rename), so an interrupted write leaves the old file or the new one, never half of either.
"""

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from vaxelctl.client import EXIT_USAGE, ClientError

PRIVATE = 0o600  # the site (SIP passwords) and signing keys
PUBLIC = 0o644  # bundles and public keys


def reason(exc: OSError, path: Path) -> str:
    """What is wrong with `path`, in the words of one line: "no such file", "it is a directory"..."""
    if exc.errno == errno.ENOENT:
        return "no such file" if path.parent.is_dir() else f"no directory {path.parent}"
    if exc.errno == errno.EISDIR:
        return "it is a directory"
    if exc.errno == errno.ENOTDIR:
        return f"{path.parent} is not a directory"
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


class FileProblem(ClientError):
    """A file named on the command line cannot be read or written: a usage error (2)."""

    def __init__(self, verb: str, path: Path, what: str, why: str) -> None:
        named = f"{what} {path}" if what else str(path)
        super().__init__(f"cannot {verb} {named}: {why}", EXIT_USAGE)
        self.path, self.why = path, why


def unreadable(path: Path, what: str, why: str) -> FileProblem:
    return FileProblem("read", path, what, why)


def read_bytes(path: Path, what: str) -> bytes:
    """The file's bytes; `what` names it in the error ("bundle", "key"). Raises FileProblem."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise unreadable(path, what, reason(exc, path)) from None


def read_text(path: Path, what: str) -> str:
    """The file as UTF-8 text. Raises FileProblem if it cannot be read or is not UTF-8."""
    try:
        return read_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError:
        raise unreadable(path, what, "it is not UTF-8 text") from None


@contextmanager
def reading(path: Path, what: str) -> Iterator[BinaryIO]:
    """`path` open for reading in binary; an error opening it is a FileProblem."""
    try:
        file = path.open("rb")
    except OSError as exc:
        raise unreadable(path, what, reason(exc, path)) from None
    with file:
        yield file


def readable(path: Path, what: str) -> Path:
    """`path`, checked to be a file this user can read (before anything else happens)."""
    with reading(path, what):
        return path


def unwritable(path: Path, what: str, exc: OSError) -> FileProblem:
    return FileProblem("write", path, what, reason(exc, path))


@contextmanager
def writing(path: Path, what: str, mode: int) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` (with `mode`) when the block ends without an exception;
    on an exception the temporary file goes and `path` is untouched. An OSError on the way, the
    block's writes included, is a FileProblem naming `path` (never the temporary file); so
    the block only writes (open what it reads before)."""
    if path.is_dir():
        raise unwritable(path, what, IsADirectoryError(errno.EISDIR, "is a directory"))
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise unwritable(path, what, exc) from None
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise unwritable(path, what, exc) from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write(path: Path, data: bytes | str, what: str, mode: int) -> None:
    """Write `data` (str as UTF-8) to `path` atomically with `mode`. Raises FileProblem."""
    with writing(path, what, mode) as file:
        file.write(data.encode() if isinstance(data, str) else data)
