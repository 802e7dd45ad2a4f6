"""What a request says about the device that sent it."""

import re
from dataclasses import dataclass

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")


def normalise_mac(text: str) -> str | None:
    """`00:15:65:4A:A9:37`, `00-15-65-...` or `0015654aa937` -> `0015654aa937`; None if not a MAC."""
    if not _MAC.fullmatch(text):
        return None
    return re.sub(r"[:-]", "", text).lower()


def is_device_mac(mac: str) -> bool:
    """Whether a normalised MAC (12 lower-case hex digits) can name one device.

    All zeros is the placeholder in vendors' common file names (Poly's
    `000000000000.cfg`), and a group bit (the first octet odd: multicast, and
    ff:ff:ff:ff:ff:ff broadcast) never belongs to one network card (IEEE 802,
    section 8.2); neither is ever recorded as a device.
    """
    return mac != "0" * 12 and not int(mac[:2], 16) & 1


def device_mac(text: str) -> str | None:
    """`text` normalised if it is a MAC one device can have (see is_device_mac), else None."""
    mac = normalise_mac(text)
    return mac if mac is not None and is_device_mac(mac) else None


def installer_mac(text: str) -> str:
    """A MAC an installer typed, normalised; ValueError saying why when it names no device (the
    same words from the local CLI and over CoAP)."""
    mac = normalise_mac(text)
    if mac is None:
        raise ValueError(f"{text!r} is not a MAC address (e.g. 00:15:65:4a:a9:37)")
    if not is_device_mac(mac):
        raise ValueError(
            f"{text!r} names no device: all zeros and multicast addresses (first octet odd) are not "
            "a phone's MAC"
        )
    return mac


@dataclass(frozen=True)
class Device:
    """A device as identified from one request; any field may be unknown."""

    mac: str | None  # 12 lower-case hex digits
    vendor: str | None  # vendor id, e.g. "yealink"
    model: str | None
    firmware: str | None
