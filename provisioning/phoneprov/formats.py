"""Every rendered file must parse in its vendor's format before it leaves the appliance."""

import re
import xml.etree.ElementTree as ElementTree

_KEY_VALUE = re.compile(r"[A-Za-z0-9_.\-\[\]]+\s*=.*")


class FormatError(ValueError):
    """A rendered file does not parse; a template (or an installer's override) is broken."""


def check_format(text: str, fmt: str) -> None:
    checker = _CHECKERS[fmt]
    checker(text)


def _xml(text: str) -> None:
    try:
        ElementTree.fromstring(text.encode("utf-8"))
    except ElementTree.ParseError as exc:
        raise FormatError(f"not well-formed XML: {exc}") from None


def _yealink_cfg(text: str) -> None:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#!version:1.0.0.1":
        raise FormatError("a Yealink file starts with the line #!version:1.0.0.1")
    _key_value_lines(lines[1:], first_number=2)


def _key_value_lines(lines: list[str], first_number: int) -> None:
    for number, line in enumerate(lines, first_number):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not _KEY_VALUE.fullmatch(stripped):
            raise FormatError(f"line {number} is not 'key = value': {line!r}")


def _text(text: str) -> None:
    if "\x00" in text:
        raise FormatError("text file contains a NUL byte")


_CHECKERS = {"xml": _xml, "yealink-cfg": _yealink_cfg, "text": _text}
