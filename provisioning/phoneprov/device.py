"""What a request says about the device that sent it."""

import re
from dataclasses import dataclass

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")


def normalise_mac(text: str) -> str | None:
    """`00:15:65:4A:A9:37`, `00-15-65-...` or `0015654aa937` -> `0015654aa937`; None if not a MAC."""
    if not _MAC.fullmatch(text):
        return None
    return re.sub(r"[:-]", "", text).lower()


@dataclass(frozen=True)
class Device:
    """A device as identified from one request; any field may be unknown."""

    mac: str | None  # 12 lower-case hex digits
    vendor: str | None  # vendor id, e.g. "yealink"
    model: str | None
    firmware: str | None
