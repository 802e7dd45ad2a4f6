"""Unpacking update images and base root file systems: nothing written outside the destination.

The boards' Python (Debian 12's 3.11.2) has no extraction filters (PEP 706, Python 3.11.4), so
vaxelbox.update.untar applies their rules itself there. These tests call that path directly, so
they hold on any interpreter; `extract_all` takes the filters where they exist."""

import io
import tarfile
from pathlib import Path

import pytest
from vaxelbox.update.untar import extract_all, extract_checked


def archive_of(*members: tuple[str, str, str]) -> tarfile.TarFile:
    """A tar in memory of (kind, name, content or link target) members: kind file, dir, sym, link, fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for kind, name, content in members:
            info = tarfile.TarInfo(name)
            data = content.encode()
            if kind == "file":
                info.size, info.mode = len(data), 0o4777
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]  # fmt: skip
            info.linkname = content
            archive.addfile(info)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


@pytest.mark.parametrize("unpack", [extract_checked, extract_all])
def test_an_image_unpacks_with_safe_modes(tmp_path: Path, unpack) -> None:
    archive = archive_of(("dir", "vaxelbox", ""), ("file", "vaxelbox/__init__.py", "x = 1\n"),
                         ("sym", "vaxelbox/latest", "__init__.py"))  # fmt: skip
    unpack(archive, tmp_path / "slot", "data")
    assert (tmp_path / "slot/vaxelbox/__init__.py").read_text() == "x = 1\n"
    assert (tmp_path / "slot/vaxelbox/latest").read_text() == "x = 1\n"
    assert (tmp_path / "slot/vaxelbox/__init__.py").stat().st_mode & 0o7022 == 0  # setuid, o+w gone


@pytest.mark.parametrize("unpack", [extract_checked, extract_all])
@pytest.mark.parametrize(
    "members",
    [
        [("file", "../escaped", "x")],
        [("sym", "out", "/etc")],
        [("sym", "up", "../..")],
        [("sym", "ok", "."), ("file", "ok/../../escaped", "x")],
        [("link", "hard", "../../etc/passwd")],
        [("fifo", "pipe", "")],
    ],
    ids=["dot-dot", "absolute-link", "escaping-link", "through-a-link", "hard-link", "fifo"],
)
def test_an_image_writing_outside_or_special_files_is_refused(tmp_path: Path, unpack, members) -> None:
    with pytest.raises(tarfile.TarError):
        unpack(archive_of(*members), tmp_path / "slot", "data")
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("unpack", [extract_checked, extract_all])
def test_an_absolute_name_lands_inside(tmp_path: Path, unpack) -> None:
    unpack(archive_of(("file", "/absolute", "x")), tmp_path / "slot", "data")
    assert (tmp_path / "slot/absolute").read_text() == "x"


def test_a_root_file_system_keeps_its_absolute_links_and_loses_leading_slashes(tmp_path: Path) -> None:
    archive = archive_of(("dir", "/etc", ""), ("file", "/etc/hostname", "board\n"),
                         ("sym", "etc/localtime", "/usr/share/zoneinfo/Etc/UTC"))  # fmt: skip
    extract_checked(archive, tmp_path / "root", "tar")
    assert (tmp_path / "root/etc/hostname").read_text() == "board\n"
    assert (tmp_path / "root/etc/localtime").readlink() == Path("/usr/share/zoneinfo/Etc/UTC")


def test_a_root_file_system_cannot_write_through_its_own_link(tmp_path: Path) -> None:
    archive = archive_of(("sym", "etc", str(tmp_path / "host-etc")), ("file", "etc/passwd", "x"))
    (tmp_path / "host-etc").mkdir()
    with pytest.raises(tarfile.TarError, match="outside"):
        extract_checked(archive, tmp_path / "root", "tar")
    assert not (tmp_path / "host-etc/passwd").exists()
