"""SIP dialogs (RFC 3261 §12), sans-I/O: create one as UAS or UAC, build requests in it, judge the
peer's requests against it. Knows nothing of the usage (calls, subscriptions) built on top.

A dialog is plain data (`to_dict`/`from_dict` for the store). URIs and route entries are kept as
text, parsed where a request is built, so a dialog read back from the store is the one written.

- Route set: §12.1.1 (UAS) the request's Record-Route in order; §12.1.2 (UAC) the response's in
  reverse. A NOTIFY that creates the subscriber's dialog (RFC 6665 §4.1.2.4) is a request received,
  so its Record-Route is taken in order, as a UAS would.
- Requests (§12.2.1.1): loose routing when the first route has `lr` (Request-URI the remote
  target, Route the whole set), strict routing otherwise (Request-URI the first route, Route the
  rest and then the remote target).
- CSeq: each request one more than the last local one (ACK reuses the INVITE's, §13.2.2.4); a
  UAS dialog starts at 0, so its first request carries 1. A peer's request lower than the last
  one seen is out of order (§12.2.2: the caller answers it 500).
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vaxelbox.sip.address import Address, parse_address
from vaxelbox.sip.errors import SipSyntaxError
from vaxelbox.sip.message import Header, Request, Response
from vaxelbox.sip.uri import SipUri, Uri, parse_uri
from vaxelbox.sip.via import Via

MAX_FORWARDS = 70


@dataclass
class Dialog:
    """The state of one dialog (§12), from our side."""

    call_id: str
    local_tag: str
    remote_tag: str | None  # None only for a UAC dialog whose peer sent no To tag (RFC 2543)
    local_uri: str  # name-addr text without tag, e.g. "<sip:102@example.net>"
    remote_uri: str
    remote_target: str  # URI text: the peer's Contact
    route_set: list[str] = field(default_factory=list)  # Route values in the order to send them
    local_cseq: int = 0  # the last CSeq number we sent (0: none yet)
    remote_cseq: int | None = None  # the last CSeq number the peer sent, None: none yet

    @classmethod
    def as_uas(cls, request: Request, local_tag: str) -> "Dialog":
        """§12.1.1: the dialog a 2xx (or a NOTIFY's 2xx) with To tag `local_tag` sets up for
        `request`. Raises SipSyntaxError when the request has no Contact (no remote target)."""
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag,
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=_target(request),
            route_set=[str(route) for route in request.record_routes],
            remote_cseq=request.cseq[0],
        )

    @classmethod
    def as_uac(cls, request: Request, response_or_notify: Response | Request) -> "Dialog":
        """§12.1.2: the dialog our `request` set up, from its 2xx (or from a NOTIFY that came first,
        RFC 6665 §4.1.2.4). Raises SipSyntaxError when the answer has no Contact."""
        answer = response_or_notify
        if isinstance(answer, Request):  # a request received: tags swapped, routes as a UAS takes them
            remote, routes, remote_cseq = answer.from_, answer.record_routes, answer.cseq[0]
        else:
            remote, routes, remote_cseq = answer.to, answer.record_routes[::-1], None
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag or "",
            remote_tag=remote.tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(request.to),
            remote_target=_target(answer),
            route_set=[str(route) for route in routes],
            local_cseq=request.cseq[0],
            remote_cseq=remote_cseq,
        )

    @property
    def key(self) -> tuple[str, str, str | None]:
        """(Call-ID, local tag, remote tag): what identifies the dialog (§12)."""
        return self.call_id, self.local_tag, self.remote_tag

    def request(self, method: str, via: Via, headers: Sequence[Header] = (), body: bytes = b"") -> Request:
        """A request in the dialog (§12.2.1.1): the next local CSeq, From/To with tags, Call-ID,
        Route and Request-URI from the route set and remote target, Max-Forwards 70, then
        `headers` (Contact, Event, Content-Type, ...) and `body`. `via` must carry a new branch.
        Raises SipSyntaxError when a stored URI or route no longer parses."""
        if method != "ACK":
            self.local_cseq += 1
        uri, routes = self._routing()
        remote = self.remote_uri + (f";tag={self.remote_tag}" if self.remote_tag else "")
        lines = [
            Header("Via", str(via)),
            Header("Max-Forwards", str(MAX_FORWARDS)),
            *[Header("Route", route) for route in routes],
            Header("From", f"{self.local_uri};tag={self.local_tag}"),
            Header("To", remote),
            Header("Call-ID", self.call_id),
            Header("CSeq", f"{self.local_cseq} {method}"),
            *[Header(h.name, h.value) for h in headers],
        ]
        return Request(method, uri, lines, body)

    def accept_remote(self, request: Request) -> bool:
        """§12.2.2: whether the peer's in-dialog `request` is in order (its CSeq not lower than the
        last one seen); records its CSeq when it is. False: answer 500."""
        number = request.cseq[0]
        if self.remote_cseq is not None and number < self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def refresh_target(self, message: Request | Response) -> None:
        """A target refresh (§12.2: re-INVITE, SUBSCRIBE, NOTIFY, or their 2xx): the Contact, if
        any, becomes the remote target."""
        if message.contacts:
            self.remote_target = str(message.contacts[0].uri)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, for the store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Dialog":
        """The dialog `to_dict` wrote. Raises KeyError for a missing field."""
        remote_cseq = data["remote_cseq"]
        return cls(
            call_id=str(data["call_id"]),
            local_tag=str(data["local_tag"]),
            remote_tag=None if data["remote_tag"] is None else str(data["remote_tag"]),
            local_uri=str(data["local_uri"]),
            remote_uri=str(data["remote_uri"]),
            remote_target=str(data["remote_target"]),
            route_set=[str(route) for route in data["route_set"]],
            local_cseq=int(data["local_cseq"]),
            remote_cseq=None if remote_cseq is None else int(remote_cseq),
        )

    def _routing(self) -> tuple[Uri, list[str]]:
        """(Request-URI, Route values) for the next request: loose or strict routing (§12.2.1.1)."""
        target = parse_uri(self.remote_target)
        if not self.route_set:
            return target, []
        first = parse_address(self.route_set[0]).uri
        if isinstance(first, SipUri) and "lr" in first.params:
            return target, list(self.route_set)
        return _request_uri(first), [*self.route_set[1:], f"<{self.remote_target}>"]


def _without_tag(address: Address) -> str:
    params = {k: v for k, v in address.params.items() if k != "tag"}
    return str(Address(address.uri, address.display, params))


def _target(message: Request | Response) -> str:
    if not message.contacts:
        raise SipSyntaxError("missing Contact: no remote target for the dialog")
    return str(message.contacts[0].uri)


def _request_uri(uri: Uri) -> Uri:
    """A strict router's URI as a Request-URI: without the parts a Request-URI may not hold (§19.1.1:
    headers, method)."""
    if not isinstance(uri, SipUri):
        return uri
    params = {k: v for k, v in uri.params.items() if k != "method"}
    return SipUri(uri.scheme, uri.host, uri.port, uri.user, uri.password, params, None)
