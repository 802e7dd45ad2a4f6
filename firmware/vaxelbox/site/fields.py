"""Field types of the site file: each checks one kind of value and says plainly what is wrong."""

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, SecretStr

from vaxelbox.site.numbers import to_e164
from vaxelbox.site.targets import Target

_HANDLE = re.compile(r"[a-z][a-z0-9._-]{0,31}")
_EXTENSION = re.compile(r"[1-9][0-9]{1,5}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
_PROXY_URI = re.compile(
    r"(?P<scheme>sips?):(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?"
    r"(?:;transport=(?P<transport>udp|tcp|tls))?"
)
_TIME_RANGE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-(([01]\d|2[0-3]):([0-5]\d)|24:00)")


def _handle(value: str) -> str:
    if not _HANDLE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid id: use 1-32 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter"
        )
    return value


def _extension(value: str) -> str:
    if not _EXTENSION.fullmatch(value):
        raise ValueError(f"{value!r} is not an extension: 2 to 6 digits, not starting with 0")
    return value


def _mac(value: str) -> str:
    digits = re.sub(r"[:\-.]", "", value).lower()
    if not re.fullmatch(r"[0-9a-f]{12}", digits):
        raise ValueError(f"{value!r} is not a MAC address (e.g. 00:15:65:4a:a9:37)")
    if int(digits[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast MAC address, not a device's")
    return digits


def colon_mac(mac: str) -> str:
    """`0015654aa937` -> `00:15:65:4a:a9:37`, the form people read."""
    return ":".join(mac[i : i + 2] for i in range(0, 12, 2))


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Stockholm)") from None
    return value


def _hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value.lower()):
        raise ValueError(f"{value!r} is not a host name")
    return value.lower()


def check_proxy_uri(value: str) -> str:
    match = _PROXY_URI.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a SIP proxy URI (e.g. sips:sip.example.net:5061;transport=tls)")
    if match["port"] and not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{value!r}: port out of range")
    if match["scheme"] == "sips" and match["transport"] in ("udp",):
        raise ValueError(f"{value!r}: a sips: URI needs TLS, not transport=udp")
    return value


def _time_range(value: str) -> str:
    match = _TIME_RANGE.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a time range (e.g. 08:00-17:00)")
    start, end = value.split("-")
    if end <= start:
        raise ValueError(f"{value!r}: the range ends before it starts")
    return value


def _printable(value: str) -> str:
    # Values end up in phones' key = value files, where a line break would start a new setting.
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError("contains a control character (line break, tab, ...)")
    return value


def _password(value: SecretStr) -> SecretStr:
    # Never echo the value: errors end up in terminals and logs.
    if re.search(r"[\x00-\x1f\x7f]", value.get_secret_value()):
        raise ValueError("contains a control character (line break, tab, ...)")
    length = len(value.get_secret_value())
    if length < 8:
        raise ValueError(f"too short ({length} characters; at least 8, SIP passwords are brute-forced)")
    if length > 128:
        raise ValueError(f"too long ({length} characters; at most 128)")
    return value


def _firmware_url(value: str) -> str:
    if not re.fullmatch(r"(https?|tftp|ftp)://[^\s\"'<>]+", value):
        raise ValueError(f"{value!r} is not a firmware URL (http://, https://, tftp:// or ftp://)")
    return value


def _target(value: str) -> str:
    return str(Target.parse(value))


Handle = Annotated[str, AfterValidator(_handle)]
Extension = Annotated[str, AfterValidator(_extension)]
PhoneNumber = Annotated[str, AfterValidator(to_e164)]
Mac = Annotated[str, AfterValidator(_mac)]
TimeZoneName = Annotated[str, AfterValidator(_timezone)]
HostName = Annotated[str, AfterValidator(_hostname)]
ProxyUri = Annotated[str, AfterValidator(check_proxy_uri)]
TimeRange = Annotated[str, AfterValidator(_time_range)]
TargetRef = Annotated[str, AfterValidator(_target)]
FirmwareUrl = Annotated[str, AfterValidator(_firmware_url)]
Password = Annotated[SecretStr, AfterValidator(_password)]
Text = Annotated[str, AfterValidator(_printable)]
Name = Annotated[Text, Field(min_length=1, max_length=80)]
Seconds = Annotated[int, Field(ge=5, le=600)]


def proxy_spec(uri: str) -> tuple[str, str, int | None, str | None]:
    """(scheme, host, port, transport) of a proxy URI as written: None where it says nothing."""
    match = _PROXY_URI.fullmatch(uri)
    if not match:
        raise ValueError(f"{uri!r} is not a SIP proxy URI")
    port = int(match["port"]) if match["port"] else None
    return match["scheme"], match["host"].strip("[]"), port, match["transport"]


def proxy_parts(uri: str) -> tuple[str, int, str]:
    """(host, port, transport) of a validated proxy URI, with the RFC 3263 defaults filled in."""
    match = _PROXY_URI.fullmatch(uri)
    assert match, uri
    transport = match["transport"] or ("tls" if match["scheme"] == "sips" else "udp")
    port = int(match["port"]) if match["port"] else (5061 if transport == "tls" else 5060)
    return match["host"].strip("[]"), port, transport
