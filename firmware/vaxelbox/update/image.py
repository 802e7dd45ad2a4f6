"""`make image`: the agent as a wheel set for the boards' Python, as a RAUC bundle and as our bundle.

For each board file with `update: {kind: rauc}` it writes, in `out`:
- `wheels/`: this project's wheel at the version asked and its runtime dependencies for the
  board's Python (CPython 3.11, Debian bookworm; manylinux wheels for the board's arch, fetched
  now, pinned to the versions this virtual environment runs): nothing is fetched on the board;
- `manifest.json`: version, boards, Python, platform, and every wheel's name, size and SHA-256;
- `<board>/rootfs.ext4`: the slot's file system: `--base-rootfs` (a tar of the board's Debian,
  if given) with the wheel set and the manifest in /opt/vaxelbox/;
- `vaxelbox-<version>-<board>.raucb`: a RAUC bundle (`[update] compatible=<board>`, the image
  for the `rootfs` slot class) signed with an X.509 key under a CA (RAUC's keyring);
- `vaxelbox-<version>-<board>.vxb`: our Ed25519-signed bundle around that RAUC bundle, for
  `vaxelctl fw upload` (the appliance checks our signature while it streams, RAUC its own when
  it installs).

Keys are made on first use in `keys` (build/keys; never committed): signing.pem/.pub (Ed25519,
install the .pub as <data>/firmware-signing.pub) and a dev CA (rauc-ca.pem, install as
/etc/rauc/keyring.pem) with its code-signing certificate. Needs `rauc`, `mksquashfs`
(squashfs-tools) and `mkfs.ext4`; raises ImageError naming the step that failed.
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from vaxelbox.bundle import pack
from vaxelbox.hw.board import Board, load_board
from vaxelbox.update.untar import extract_all

PYTHON = "3.11"  # Debian bookworm's python3 on every real board
GLIBC_MINOR = 36  # bookworm's glibc 2.36: manylinux wheels up to manylinux_2_36 run there
SOURCES = ("pyproject.toml", "README.md", "firmware", "host-tools", "provisioning")
PAYLOAD = Path("opt/vaxelbox")  # where the slot's file system holds the wheel set


class ImageError(RuntimeError):
    """A build step failed; the message names it and quotes the tool."""


@dataclass(frozen=True)
class Keys:
    """Paths of the build's keys (PEM): ours (Ed25519) and RAUC's (dev CA, signing cert)."""

    signing: Path
    signing_pub: Path
    rauc_ca: Path
    rauc_cert: Path
    rauc_key: Path


def dev_keys(directory: Path) -> Keys:
    """The keys in `directory`, made there first if missing (0600 for private keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = Keys(
        *(directory / n for n in ("signing.pem", "signing.pub", "rauc-ca.pem", "rauc.pem", "rauc.key"))
    )
    if not keys.signing.exists():
        key = Ed25519PrivateKey.generate()
        keys.signing.touch(mode=0o600)
        keys.signing.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        keys.signing_pub.write_bytes(
            key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
    if not keys.rauc_cert.exists():
        _dev_ca(directory, keys)
    return keys


def _dev_ca(directory: Path, keys: Keys) -> None:
    """A dev CA and a code-signing certificate under it (RAUC: check-purpose=codesign)."""
    ca_key = directory / "rauc-ca.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subject = "/O=Vaxelbox development/CN=Vaxelbox development CA"
    ca = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    out = ["-keyout", str(ca_key), "-out", str(keys.rauc_ca), "-days", "3650", "-subj", subject]
    _run(["openssl", "req", "-x509", *ec, *out, *ca], "making the dev CA")
    extensions = directory / "codesign.cnf"
    extensions.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,codeSigning\n"
    )
    request = directory / "rauc.csr"
    subject = "/O=Vaxelbox development/CN=Vaxelbox development bundle signing"
    _run(
        ["openssl", "req", *ec, "-keyout", str(keys.rauc_key), "-out", str(request), "-subj", subject],
        "making the bundle signing key",
    )
    issuer = ["-CA", str(keys.rauc_ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "3650"]
    signed = ["-extfile", str(extensions), "-out", str(keys.rauc_cert)]
    _run(["openssl", "x509", "-req", "-in", str(request), *issuer, *signed], "signing the certificate")
    for private in (ca_key, keys.rauc_key):
        private.chmod(0o600)


def project_wheel(repo: Path, version: str, out: Path) -> Path:
    """This project's wheel at `version` (built from a copy of the tree, so the tree stays clean)."""
    with tempfile.TemporaryDirectory(prefix="vaxelbox-src-") as tmp:
        source = Path(tmp)
        for name in SOURCES:
            copy = shutil.copytree if (repo / name).is_dir() else shutil.copy2
            ignore = shutil.ignore_patterns("tests", "node_modules", "__pycache__", "*.egg-info")
            copy(repo / name, source / name, **({"ignore": ignore} if copy is shutil.copytree else {}))
        pyproject = source / "pyproject.toml"
        text, count = re.subn(
            r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text(), count=1
        )
        if count != 1:
            raise ImageError("pyproject.toml has no `version = ...` line")
        pyproject.write_text(text)
        before = set(out.glob("vaxelbox-*.whl"))
        _pip(["wheel", "--no-deps", "-w", str(out), str(source)], "building the vaxelbox wheel")
    built = sorted(set(out.glob(f"vaxelbox-{version}-*.whl")) - before) or sorted(
        out.glob(f"vaxelbox-{version}-*.whl")
    )
    if not built:
        raise ImageError(f"pip wrote no vaxelbox-{version} wheel into {out}")
    return built[0]


def dependency_wheels(arch: str, out: Path) -> None:
    """The runtime dependencies for CPython 3.11 on `arch` (aarch64, armv7l, x86_64), pinned to the
    versions installed here, as binary wheels only (the board builds nothing)."""
    from importlib.metadata import requires

    wanted = [r for r in requires("vaxelbox") or [] if "extra ==" not in r]
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "pins.txt"
        frozen = _pip(
            ["freeze", "--exclude-editable", "--exclude", "vaxelbox"], "reading the installed versions"
        )
        pins.write_text(frozen)
        platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(17, GLIBC_MINOR + 1)]
        platforms += [f"manylinux2014_{arch}", f"linux_{arch}"]
        _pip(
            ["download", "-q", "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp"]
            + [arg for p in platforms for arg in ("--platform", p)]
            + ["-c", str(pins), "-d", str(out), *wanted],
            f"fetching the dependencies' wheels for {arch}",
        )


def manifest(version: str, boards: list[Board], wheels: Path) -> dict[str, object]:
    """What the image holds: version, boards, Python, platform, every wheel with size and SHA-256."""
    return {
        "name": "vaxelbox",
        "version": version,
        "boards": [board.name for board in boards],
        "python": PYTHON,
        "arch": sorted({board.arch for board in boards}),
        "wheels": [
            {"file": path.name, "size": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(wheels.glob("*.whl"))
        ],
    }


def rootfs_image(wheels: Path, manifest_file: Path, out: Path, base_rootfs: Path | None = None) -> Path:
    """An ext4 file system image with `base_rootfs` (tar) unpacked and the wheel set and manifest
    in /opt/vaxelbox/, sized to its content with room to spare."""
    with tempfile.TemporaryDirectory(prefix="vaxelbox-rootfs-") as tmp:
        tree = Path(tmp)
        if base_rootfs is not None:
            with tarfile.open(base_rootfs) as archive:
                extract_all(archive, tree, "tar")
        payload = tree / PAYLOAD
        shutil.copytree(wheels, payload / "wheels")
        shutil.copy2(manifest_file, payload / "manifest.json")
        size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file() and not f.is_symlink())
        blocks = (size * 13 // 10 + (8 << 20)) // 1024  # ext4 metadata and some room, in KiB
        out.unlink(missing_ok=True)
        _run(
            ["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(tree), str(out), f"{blocks}k"],
            "making rootfs.ext4",
        )
    return out


def rauc_bundle(image: Path, board: str, version: str, keys: Keys, out: Path) -> Path:
    """A RAUC bundle (plain format) for `board`'s compatible with `image` for the rootfs slots."""
    with tempfile.TemporaryDirectory(prefix="vaxelbox-rauc-") as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        shutil.copy2(image, content / "rootfs.ext4")
        (content / "manifest.raucm").write_text(
            f"[update]\ncompatible={board}\nversion={version}\ndescription=Vaxelbox {version}\n\n"
            "[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.ext4\n"
        )
        out.unlink(missing_ok=True)
        _run(
            [
                "rauc",
                "bundle",
                "--cert",
                str(keys.rauc_cert),
                "--key",
                str(keys.rauc_key),
                str(content),
                str(out),
            ],
            f"making the RAUC bundle for {board}",
        )
    return out


def signed_bundle(payload: Path, version: str, boards: list[str], keys: Keys, out: Path) -> Path:
    """Our Ed25519-signed bundle (vaxelbox.bundle) of `payload` for `boards`."""
    key = load_pem_private_key(keys.signing.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    with payload.open("rb") as source, out.open("wb") as target:
        pack(source, target, version, key, tuple(boards))
    return out


def build(
    boards: list[Path],
    version: str,
    out: Path,
    keys_dir: Path,
    repo: Path,
    deps: bool = True,
    base_rootfs: Path | None = None,
) -> dict[str, object]:
    """Everything above for the board files `boards` (each with update.kind rauc); returns the
    manifest with the bundles' paths. `deps=False` leaves the dependencies out (tests)."""
    loaded = [load_board(path) for path in boards]
    for board in loaded:
        if board.update is None or board.update.kind != "rauc":
            raise ImageError(f"{board.name}: its board file has no `update: {{kind: rauc}}` section")
    keys = dev_keys(keys_dir)
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    project_wheel(repo, version, wheels)
    if deps:
        for arch in sorted({board.arch for board in loaded}):
            dependency_wheels(arch, wheels)
    summary = manifest(version, loaded, wheels)
    manifest_file = out / "manifest.json"
    manifest_file.write_text(json.dumps(summary, indent=2) + "\n")
    bundles: dict[str, dict[str, str]] = {}
    for board in loaded:
        image = rootfs_image(wheels, manifest_file, _fresh(out / board.name) / "rootfs.ext4", base_rootfs)
        stem = f"vaxelbox-{version}-{board.name}"
        raucb = rauc_bundle(image, board.name, version, keys, out / f"{stem}.raucb")
        vxb = signed_bundle(raucb, version, [board.name], keys, out / f"{stem}.vxb")
        bundles[board.name] = {"rauc": str(raucb), "vxb": str(vxb)}
    return {**summary, "bundles": bundles}


def _fresh(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _pip(args: list[str], step: str) -> str:
    return _run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], step)


def _run(command: list[str], step: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageError(f"{step}: {command[0]} is not installed") from None
    if done.returncode != 0:
        said = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise ImageError(f"{step} failed: {said[-1] if said else f'exit status {done.returncode}'}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vaxelbox.update.image", description=__doc__.split("\n")[0]
    )
    parser.add_argument("boards", nargs="+", type=Path, help="board files (update.kind rauc)")
    parser.add_argument("--version", required=True, help="the version to build, e.g. 0.2.0")
    parser.add_argument("--out", type=Path, default=Path("build/image"))
    parser.add_argument("--keys", type=Path, default=Path("build/keys"))
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--base-rootfs", type=Path, help="a tar of the board's Debian root file system")
    args = parser.parse_args(argv)
    try:
        result = build(
            args.boards, args.version, args.out, args.keys, args.repo, base_rootfs=args.base_rootfs
        )
    except ImageError as exc:
        print(f"make image: {exc}", file=sys.stderr)
        return 1
    wheels = result["wheels"]
    assert isinstance(wheels, list)
    print(
        f"vaxelbox {args.version}: {len(wheels)} wheels for Python {PYTHON}, "
        f"manifest {args.out}/manifest.json"
    )
    for board, paths in result["bundles"].items():  # type: ignore[attr-defined]
        print(f"{board}: {paths['vxb']} (vaxelctl fw upload), {paths['rauc']} (rauc install)")
    print(
        f"keys in {args.keys}: install signing.pub as <data>/firmware-signing.pub, "
        "rauc-ca.pem as /etc/rauc/keyring.pem"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
