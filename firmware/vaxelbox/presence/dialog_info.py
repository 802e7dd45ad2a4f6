"""application/dialog-info+xml (RFC 4235): parsed from the cloud's NOTIFYs, rendered for the phones.

`parse` accepts what real notifiers send: Kamailio's presence_dialoginfo (fed by pua_dialoginfo,
default namespace, `id`/`call-id`/`local-tag`/`remote-tag`/`direction` attributes, the display
name sometimes on `<target>`), Asterisk (the dialog id is the extension, no call-id, `<state>`
after `<local>`/`<remote>`), FreeSWITCH, and documents written with a namespace prefix. Elements
of other namespaces (vendor extensions) are skipped. Input is bounded (`MAX_BODY`) and a DTD is
refused before parsing, so entity expansion (billion laughs) and external entities cannot happen.

`render` writes one document per watcher (RFC 4235 §4.1: version per subscription, state "full",
entity = what the watcher subscribed to), with what a phone needs for directed pickup with
Replaces (RFC 3891): call-id, both tags, direction, identities and targets.
"""

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from vaxelbox.presence.model import Direction, LineDialog, LineState, Party

NS = "urn:ietf:params:xml:ns:dialog-info"
CONTENT_TYPE = "application/dialog-info+xml"
MAX_BODY = 64 * 1024  # bytes; a full document of a busy user is a few KiB
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_VERSION = re.compile(r"[0-9]{1,20}")
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_DIRECTIONS: tuple[Direction, ...] = ("initiator", "recipient")


class DialogInfoError(ValueError):
    """A dialog-info document that cannot be used; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class DialogInfo:
    """One parsed document (RFC 4235 §4.1): `full` is state="full" (False: "partial")."""

    entity: str
    version: int
    full: bool
    dialogs: tuple[LineDialog, ...]


# -- parse -----------------------------------------------------------------------------------------


def parse(body: bytes, max_size: int = MAX_BODY) -> DialogInfo:
    """Parse a dialog-info document (RFC 4235 §4.1).

    body: the NOTIFY body as received, at most `max_size` bytes, in an ASCII-compatible encoding
    (UTF-8 in practice). Raises DialogInfoError naming the problem: too large, empty, a DTD or
    entity declaration, not well-formed, not a <dialog-info> root, a missing or bad version,
    state or entity, a dialog without id or <state>, an unknown state or direction.
    """
    root = _root(body, max_size)
    version = _version(root.get("version"))
    state = root.get("state")
    if state not in ("full", "partial"):
        raise DialogInfoError(f'dialog-info state is {state!r}; expected "full" or "partial" (RFC 4235 §4.1)')
    entity = (root.get("entity") or "").strip()
    if not entity:
        raise DialogInfoError("dialog-info has no entity attribute (RFC 4235 §4.1)")
    dialogs = tuple(_dialog(el, n) for n, el in enumerate(_children(root, "dialog"), 1))
    return DialogInfo(entity=entity, version=version, full=state == "full", dialogs=dialogs)


def _root(body: bytes, max_size: int) -> ET.Element:
    """The root element of a checked body; see `parse` for the errors."""
    if len(body) > max_size:
        raise DialogInfoError(f"document is {len(body)} bytes, more than the {max_size} accepted")
    if not body.strip():
        raise DialogInfoError("empty document")
    if b"\x00" in body:  # UTF-16/32 would hide a DTD from the check below
        raise DialogInfoError("document is not in an ASCII-compatible encoding (NUL bytes); send UTF-8")
    if _DTD.search(body):
        raise DialogInfoError("document has a DTD or entity declaration; refused (entity expansion)")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        raise DialogInfoError(f"not well-formed XML: {err}") from None
    if _local(root.tag) != "dialog-info":
        raise DialogInfoError(f"root element is {root.tag!r}; expected dialog-info in namespace {NS}")
    return root


def _version(text: str | None) -> int:
    """RFC 4235 §4.1.1: a non-negative integer, required."""
    if text is None:
        raise DialogInfoError("dialog-info has no version attribute (RFC 4235 §4.1.1)")
    if not _VERSION.fullmatch(text.strip()):
        raise DialogInfoError(f"dialog-info version {text!r} is not a non-negative integer")
    return int(text)


def _dialog(el: ET.Element, n: int) -> LineDialog:
    """One <dialog> (RFC 4235 §4.1.2); `n` counts from 1 for messages."""
    dialog_id = (el.get("id") or "").strip()
    if not dialog_id:
        raise DialogInfoError(f"dialog #{n} has no id attribute (RFC 4235 §4.1.2)")
    state_el = next(_children(el, "state"), None)
    if state_el is None:
        raise DialogInfoError(f"dialog {dialog_id!r} has no <state> element (RFC 4235 §4.1.3)")
    try:
        state = LineState.parse(state_el.text or "")
    except ValueError:
        raise DialogInfoError(
            f"dialog {dialog_id!r}: state {state_el.text!r} is not one of "
            "trying, proceeding, early, confirmed, terminated"
        ) from None
    return LineDialog(
        id=dialog_id,
        state=state,
        call_id=_attr(el, "call-id"),
        local_tag=_attr(el, "local-tag"),
        remote_tag=_attr(el, "remote-tag"),
        direction=_direction(el, dialog_id),
        local=_party(next(_children(el, "local"), None)),
        remote=_party(next(_children(el, "remote"), None)),
        reason=_attr(state_el, "event"),
    )


def _direction(el: ET.Element, dialog_id: str) -> Direction | None:
    value = _attr(el, "direction")
    for known in _DIRECTIONS:
        if value == known:
            return known
    if value is None:
        return None
    raise DialogInfoError(f'dialog {dialog_id!r}: direction {value!r} is not "initiator" or "recipient"')


def _party(el: ET.Element | None) -> Party | None:
    """<local>/<remote> (RFC 4235 §4.1.6). Kamailio may put the display name on <target>;
    Asterisk's on-hold <local> has a target only, which then stands for the identity."""
    if el is None:
        return None
    identity_el = next(_children(el, "identity"), None)
    target_el = next(_children(el, "target"), None)
    identity = (identity_el.text or "").strip() if identity_el is not None else ""
    target = _attr(target_el, "uri") if target_el is not None else None
    display = _attr(identity_el, "display") if identity_el is not None else None
    if display is None and target_el is not None:
        display = _attr(target_el, "display")
    if not identity and target is None:
        return None
    return Party(identity=identity or target or "", display=display, target=target)


def _local(tag: str) -> str | None:
    """The local name of a dialog-info (or unqualified) element; None for other namespaces."""
    if not tag.startswith("{"):
        return tag
    ns, _, name = tag[1:].partition("}")
    return name if ns == NS else None


def _children(el: ET.Element, name: str) -> Iterator[ET.Element]:
    return (child for child in el if isinstance(child.tag, str) and _local(child.tag) == name)


def _attr(el: ET.Element, name: str) -> str | None:
    value = (el.get(name) or "").strip()
    return value or None


# -- render ----------------------------------------------------------------------------------------


def render(entity: str, version: int, dialogs: Sequence[LineDialog], *, trim: bool = False) -> bytes:
    """A state="full" document for one watcher (RFC 4235 §4.1), UTF-8.

    entity: the URI the watcher subscribed to (its SUBSCRIBE's To URI). version: that watcher's
    next version (RFC 4235 §4.1.1, from 0; ValueError if negative). dialogs: the user's merged
    view. trim=True: only what a lamp needs (RFC 4235 §4.1.2 attributes and §4.1.3 state of the
    dialog with the highest state, no identities or targets), so the NOTIFY fits a UDP datagram
    (typical ids: under 500 bytes); no dialogs: an empty document (idle).
    """
    if version < 0:
        raise ValueError(f"version must be non-negative, got {version}")
    root = ET.Element("dialog-info", {"xmlns": NS, "version": str(version), "state": "full"})
    root.set("entity", entity)
    for dialog in _lamp(dialogs) if trim else dialogs:
        _dialog_element(root, dialog, full=not trim)
    return _DECLARATION + ET.tostring(root, encoding="unicode").encode()


def _lamp(dialogs: Sequence[LineDialog]) -> list[LineDialog]:
    """The one dialog a lamp shows: the highest state, the first of equals."""
    return [max(dialogs, key=lambda d: d.state)] if dialogs else []


def _dialog_element(root: ET.Element, dialog: LineDialog, full: bool) -> None:
    attrs = {
        "id": dialog.id,
        "call-id": dialog.call_id,
        "local-tag": dialog.local_tag,
        "remote-tag": dialog.remote_tag,
        "direction": dialog.direction,
    }
    el = ET.SubElement(root, "dialog", {k: v for k, v in attrs.items() if v is not None})
    state = ET.SubElement(el, "state")
    state.text = dialog.state.text
    if full and dialog.reason and dialog.state is LineState.TERMINATED:
        state.set("event", dialog.reason)
    if full:  # schema order (RFC 4235 §4.1): state, ..., local, remote
        _party_element(el, "local", dialog.local)
        _party_element(el, "remote", dialog.remote)


def _party_element(parent: ET.Element, name: str, party: Party | None) -> None:
    if party is None:
        return
    el = ET.SubElement(parent, name)
    identity = ET.SubElement(el, "identity")
    identity.text = party.identity
    if party.display:
        identity.set("display", party.display)
    if party.target:
        ET.SubElement(el, "target", {"uri": party.target})


def fits(body: bytes, limit: int = 1300 - 600) -> bool:
    """Whether a body of len(body) bytes fits in `limit` bytes (default: a 1300-byte path MTU
    budget minus 600 bytes of NOTIFY headers) for sending over UDP."""
    return len(body) <= limit
