"""Unpacking a tar archive without letting it write outside its destination (PEP 706).

Python has the extraction filters from 3.11.4 on; Debian 12's python3.11 (3.11.2), the boards'
interpreter, has not, and `extractall(filter=...)` raises TypeError there. Without them the same
rules are applied here, member by member, before each is written:

- both: leading slashes dropped, no member written outside the destination (through a link or
  otherwise), no setuid, setgid or sticky bit, no write for group or others;
- "data" (an update image) also: no symbolic links leading outside or absolute, no device, FIFO
  or other special files. "tar" (a base root file system) allows them: it has its own.
"""

import os
import tarfile
from pathlib import Path
from typing import Literal

Policy = Literal["data", "tar"]


def extract_all(archive: tarfile.TarFile, destination: Path, policy: Policy) -> None:
    """Unpack `archive` into `destination` under `policy`. Raises tarfile.TarError naming the first
    member refused (nothing after it is written) or OSError."""
    if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
        archive.extractall(destination, filter=policy)
        return
    extract_checked(archive, destination, policy)


def extract_checked(archive: tarfile.TarFile, destination: Path, policy: Policy) -> None:
    """The filters' rules by hand, for an interpreter without them (see the module's docstring)."""
    destination.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(destination)
    for member in archive:  # as read: an image may be a stream inside a bundle, never read back
        _check(member, root, policy)
        # A directory's mode waits, as extractall's does: a read-only one would refuse its files.
        archive.extract(member, root, set_attrs=not member.isdir())


def _check(member: tarfile.TarInfo, root: str, policy: Policy) -> None:
    member.name = name = member.name.lstrip("/")  # as the filters do: relative to the destination
    if member.islnk():
        member.linkname = member.linkname.lstrip("/")
    path = os.path.realpath(os.path.join(root, name))  # through the links already unpacked
    if not _inside(path, root):
        raise tarfile.TarError(f"{name!r}: would be written outside {root}")
    if member.islnk() and not _inside(os.path.realpath(os.path.join(root, member.linkname)), root):
        raise tarfile.TarError(f"{name!r}: a hard link to {member.linkname!r}, outside {root}")
    member.mode &= 0o755  # no setuid, setgid or sticky bit, no write for group or others
    if policy == "data":
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise tarfile.TarError(f"{name!r}: a special file")
        if member.issym():
            target = os.path.join(os.path.dirname(path), member.linkname)
            if os.path.isabs(member.linkname) or not _inside(os.path.realpath(target), root):
                raise tarfile.TarError(f"{name!r}: a symbolic link to {member.linkname!r}, outside {root}")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
