"""Firmware bundles: a signed header, then the image; checked while it streams in.

Layout: b"VXBUNDLE", header length (4 bytes, big-endian), the header (JSON:
version, size, sha256 of the image), an Ed25519 signature over everything
before it, then the image. The signature is checked as soon as the header
has arrived (a forged bundle is refused after its first block); the image's
length and SHA-256 are checked when the last byte arrives. Nothing needs the
whole bundle in memory.
"""

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # cryptography is imported where a key is made, loaded or checked (issue 12: RSS)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"VXBUNDLE"
SIGNATURE_SIZE = 64
MAX_HEADER = 4096


class BundleError(ValueError):
    """Not a good bundle; `unsupported` tells a foreign file from a tampered one."""

    def __init__(self, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


@dataclass(frozen=True)
class Header:
    version: str
    size: int
    sha256: str
    boards: tuple[str, ...] = ()  # the board files' names it is for; () in bundles made before boards


def pack(
    image: BinaryIO, out: BinaryIO, version: str, key: "Ed25519PrivateKey", boards: tuple[str, ...] = ()
) -> Header:
    """Write a signed bundle of `image` (read twice: hash, then copy) to `out`, for `boards`."""
    digest, size = hashlib.sha256(), 0
    while chunk := image.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    header = Header(version, size, digest.hexdigest(), tuple(boards))
    signed = _signed_part(header)
    out.write(signed + key.sign(signed))
    image.seek(0)
    while chunk := image.read(1 << 20):
        out.write(chunk)
    return header


def _signed_part(header: Header) -> bytes:
    fields: dict[str, object] = {"version": header.version, "size": header.size, "sha256": header.sha256}
    if header.boards:  # signed with the rest; absent in older bundles, whose signatures still verify
        fields["boards"] = list(header.boards)
    body = json.dumps(fields).encode()
    return MAGIC + struct.pack(">I", len(body)) + body


class BundleVerifier:
    """Feed the bundle's bytes in order; learn the header early and the verdict at the end."""

    def __init__(self, key: "Ed25519PublicKey") -> None:
        self._key = key
        self._prefix = b""
        self.header: Header | None = None
        self._digest = hashlib.sha256()
        self.image_bytes = 0

    def feed(self, data: bytes) -> None:
        """Raises BundleError as soon as the bytes so far cannot be a good bundle."""
        if self.header is None:
            self._prefix += data
            data = self._read_header()
            if self.header is None:
                return
        assert self.header is not None
        self.image_bytes += len(data)
        if self.image_bytes > self.header.size:
            raise BundleError(f"the image is longer than its header says ({self.header.size} bytes)")
        self._digest.update(data)

    def finish(self) -> Header:
        """The header of a complete, intact bundle; raises BundleError otherwise."""
        if self.header is None:
            raise BundleError("the bundle ended inside its header")
        if self.image_bytes != self.header.size:
            raise BundleError(f"the image has {self.image_bytes} of {self.header.size} bytes")
        if self._digest.hexdigest() != self.header.sha256:
            raise BundleError("the image's SHA-256 does not match its signed header")
        return self.header

    def _read_header(self) -> bytes:
        prefix = self._prefix
        if len(prefix) >= len(MAGIC) and not prefix.startswith(MAGIC):
            raise BundleError("not a Vaxelbox bundle (wrong magic)", unsupported=True)
        if len(prefix) < len(MAGIC) + 4:
            return b""
        (length,) = struct.unpack(">I", prefix[len(MAGIC) : len(MAGIC) + 4])
        if length > MAX_HEADER:
            raise BundleError("bundle header too long", unsupported=True)
        end = len(MAGIC) + 4 + length
        if len(prefix) < end + SIGNATURE_SIZE:
            return b""
        from cryptography.exceptions import InvalidSignature  # loaded already: the key is its object

        try:
            self._key.verify(prefix[end : end + SIGNATURE_SIZE], prefix[:end])
        except InvalidSignature:
            raise BundleError("the bundle's signature does not verify with the appliance's key") from None
        self.header = _header(json.loads(prefix[len(MAGIC) + 4 : end]))
        self._prefix = b""
        return prefix[end + SIGNATURE_SIZE :]


def read_header(file: BinaryIO) -> Header:
    """The header of the bundle `file` starts with, NOT verified (the sender's side has no key:
    it names its bundle by this; the appliance verifies). Raises BundleError if it has none."""
    start = file.read(len(MAGIC) + 4)
    if len(start) < len(MAGIC) + 4 or not start.startswith(MAGIC):
        raise BundleError("not a Vaxelbox bundle (wrong magic): make one with vaxelctl fw pack", True)
    (length,) = struct.unpack(">I", start[len(MAGIC) :])
    if length > MAX_HEADER:
        raise BundleError("bundle header too long", unsupported=True)
    try:
        return _header(json.loads(file.read(length)))
    except (ValueError, KeyError, TypeError):
        raise BundleError("the bundle's header is not readable", unsupported=True) from None


def _header(fields: dict[str, object]) -> Header:
    """The header's JSON object as a Header; raises KeyError, TypeError or ValueError."""
    boards = fields.get("boards") or []
    if not isinstance(boards, list):
        raise TypeError("boards is not a list")
    return Header(
        str(fields["version"]), int(fields["size"]), str(fields["sha256"]), tuple(str(b) for b in boards)
    )  # type: ignore[call-overload]


def image_offset(file: BinaryIO) -> int:
    """Where the image starts in the bundle `file` (after header and signature); not verified."""
    start = file.read(len(MAGIC) + 4)
    (length,) = struct.unpack(">I", start[len(MAGIC) :])
    return len(MAGIC) + 4 + length + SIGNATURE_SIZE


def load_public_key(path: Path) -> "Ed25519PublicKey":
    """The Ed25519 public key in the PEM file `path`; raises OSError, or ValueError for another key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key
