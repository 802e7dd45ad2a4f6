"""The stateful proxy core (RFC 3261 §16): what a proxy does to requests and responses.

The pure parts (checks, route preprocessing, the forwarded copy, best
response selection) are functions; `ProxyCall` ties one server transaction to
its client branches, forks them in parallel or in sequence, forwards the
best response and propagates CANCEL. Which targets to try is the caller's
business (the edge's routing, later the local mode's groups).
"""

import hashlib
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

from vaxelbox.sip.message import Header, Request, Response
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.uri import SipUri, Uri
from vaxelbox.sip.via import MAGIC_COOKIE, Via

DEFAULT_MAX_FORWARDS = 70


def check_request(request: Request, our_sent_by: Collection[str]) -> Response | None:
    """§16.3: the error response a proxy owes this request instead of forwarding it, if any."""
    if request.max_forwards == 0:
        return make_response(request, 483, "Too Many Hops")
    if tags := request.get("Proxy-Require"):
        response = make_response(request, 420, "Bad Extension")
        response.add("Unsupported", tags)
        return response
    # Only a Via of ours below the top one can make a loop: most requests have none, and need
    # neither the hash nor every Via parsed.
    via_text = ",".join(request.get_all("Via")).lower()
    if not any(sent_by in via_text for sent_by in our_sent_by):
        return None
    expected = loop_hash(request)
    for via in request.vias[1:] if request.vias else []:
        branch = via.branch or ""
        if via.sent_by.lower() in our_sent_by and branch.startswith(f"{MAGIC_COOKIE}{expected}."):
            return make_response(request, 482, "Loop Detected")
    return None


def needs_tls(request: Request) -> bool:
    """RFC 3261 §26.2.2, RFC 5630 §3.1.3: a request whose Request-URI is SIPS may travel only over
    TLS, on every hop; a proxy must not carry it further over UDP or TCP."""
    return isinstance(request.uri, SipUri) and request.uri.scheme == "sips"


def sips_refusal(request: Request, warn_agent: str) -> Response:
    """The answer to a SIPS request whose next hop is not TLS, instead of a downgrade: 480 with
    warn-code 380 "SIPS Not Allowed" (RFC 5630 §5.3 and its warn-code registry), the phrase saying
    the same on the status line for phones that show it. `warn_agent`: our host:port."""
    response = make_response(request, 480, "SIPS Not Allowed")
    response.add("Warning", f'380 {warn_agent} "SIPS Not Allowed"')
    return response


def loop_hash(request: Request) -> str:
    """§16.6 item 8: what identifies this request's path, so a request coming back is seen as a loop."""
    top = request.top_via
    material = "|".join(
        (
            str(request.uri),
            request.from_tag or "",
            request.to_tag or "",
            request.call_id,
            str(request.cseq[0]),
            top.branch or top.sent_by,
            ",".join(request.get_all("Route")),
        )
    )
    return hashlib.sha1(material.encode(), usedforsecurity=False).hexdigest()[:10]


def new_branch(request: Request) -> str:
    return f"{MAGIC_COOKIE}{loop_hash(request)}.{_random_hex()}"


_entropy = b""  # from the OS in blocks: one getrandom(2) per 1,024 branches, not one per branch


def _random_hex(size: int = 4) -> str:
    global _entropy
    if len(_entropy) < size:
        _entropy = secrets.token_bytes(4096)
    chunk, _entropy = _entropy[:size], _entropy[size:]
    return chunk.hex()


def preprocess_routes(request: Request, is_ours: Callable[[Uri], bool]) -> None:
    """§16.4: undo a strict router's rewrite, then drop the Route entries that name this proxy."""
    if is_ours(request.uri) and request.routes:
        routes = request.routes
        request.uri = routes[-1].uri
        request.remove("Route")
        for address in routes[:-1]:
            request.add("Route", str(address))
    while request.routes and is_ours(request.routes[0].uri):
        request.pop_first_value("Route")


def forward_copy(
    request: Request,
    via: Via,
    *,
    target: Uri | None = None,
    record_route: tuple[str, ...] = (),
) -> Request:
    """§16.6: the request as this proxy sends it on: a new Via on top, Max-Forwards less one.

    `record_route` lists our Record-Route URIs, the one facing the next hop
    first (two of them when the request changes interface or transport).
    """
    ours = [Header("Record-Route", f"<{uri}>") for uri in record_route]
    routes_placed = request.get("Record-Route") is None  # none yet: ours go on top
    headers = list(ours) if routes_placed else []
    top = Header("Via", str(via))
    max_forwards = Header("Max-Forwards", str((request.max_forwards or DEFAULT_MAX_FORWARDS) - 1))
    via_placed = mf_placed = False
    for header in request.headers:  # one pass: an edit at a time rebuilt the list each (issue 12)
        key = header.key
        if key == "via" and not via_placed:
            headers.append(top)  # §16.6 step 8: ours above the first Via
            via_placed = True
        elif key == "record-route" and not routes_placed:
            headers += ours  # step 4: ours above the first Record-Route
            routes_placed = True
        if key != "max-forwards":
            headers.append(header)
        elif not mf_placed:  # step 3: the first one, less one; any others dropped
            headers.append(max_forwards)
            mf_placed = True
    if not mf_placed:
        headers.append(max_forwards)
    copy = Request(request.method, target or request.uri, headers, request.body)
    placed = [top] if via_placed else []  # (a request we made ourselves may have no Via)
    copy.__dict__["_firsts"] = request.firsts_with(*placed, max_forwards, *ours[:1])  # not read again
    copy.__dict__["top_via"] = via  # the client transaction keys itself on it at once (§17.1.3)
    for name in _SAME_IN_COPIES:
        if name in request.__dict__:
            copy.__dict__[name] = request.__dict__[name]
    strict_route(copy)
    return copy


# Parsed forms a forwarded copy keeps as they are: immutable, so sharing them shares nothing.
_SAME_IN_COPIES = ("from_tag", "to_tag", "call_id", "cseq")


def strict_route(request: Request) -> None:
    """§16.6 step 6: when the next hop (the first Route left after ours were popped) is a strict
    router (no `lr`), it becomes the Request-URI and the old Request-URI goes last in Route, as a
    strict router expects (§16.12); a loose next hop leaves the request as it is."""
    if request.get("Route") is None:
        return
    first = request.routes[0]
    if not isinstance(first.uri, SipUri) or "lr" in first.uri.params:
        return
    request.pop_first_value("Route")
    request.add("Route", f"<{request.uri}>")
    request.uri = first.uri


def strip_top_via(response: Response) -> Response:
    """§16.7 step 3: the response as it goes upstream, without our Via."""
    copy = Response(response.status, response.reason, list(response.headers))
    copy.body = response.body
    copy.pop_first_value("Via")
    return copy


def best_response(finals: list[Response]) -> Response:
    """§16.7 step 6: a 6xx if any, else the lowest class; 401/407 challenges are merged; 503 -> 500."""
    sixes = [r for r in finals if r.status >= 600]
    if sixes:
        return sixes[0]
    best = min(finals, key=lambda r: r.status // 100)
    if best.status in (401, 407):
        for other in finals:
            if other is not best and other.status in (401, 407):
                for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                    for value in other.get_all(name):
                        best.add(name, value)
    if best.status == 503:
        best.status, best.reason = 500, "Service Unavailable Downstream"
    return best


@dataclass(eq=False)
class Branch:
    """One forwarded copy of the request, and what came back on it."""

    request: Request
    provisional: bool = False
    final: Response | None = None
    cancel_pending: bool = False


Strategy = Literal["parallel", "sequential"]


@dataclass(eq=False)
class ProxyCall:
    """One proxied request: its branches, the response we owe upstream, and CANCEL.

    `send_branch(branch)` starts a client transaction for `branch.request`;
    `send_cancel(branch)` cancels one; `respond(response)` answers upstream.
    For sequential forking the driver calls `ring_timeout(branch)` when a
    branch has rung long enough.
    """

    request: Request
    send_branch: Callable[["Branch"], None]
    send_cancel: Callable[["Branch"], None]
    respond: Callable[[Response], None]
    strategy: Strategy = "parallel"
    branches: list[Branch] = field(default_factory=list)
    pending_targets: list[Request] = field(default_factory=list)
    answered: bool = False
    cancelled: bool = False

    def start(self, copies: list[Request]) -> None:
        if not copies:
            self._answer(make_response(self.request, 480, "Temporarily Unavailable"))
            return
        if self.strategy == "parallel":
            for copy in copies:
                self._launch(copy)
        else:
            self.pending_targets = copies[1:]
            self._launch(copies[0])

    def on_response(self, branch: Branch, response: Response) -> None:
        if response.status < 200:
            branch.provisional = True
            if branch.cancel_pending:
                branch.cancel_pending = False
                self.send_cancel(branch)
            if response.status > 100 and not self.answered:
                self.respond(strip_top_via(response))
            return
        if branch.final is not None and response.status >= 300:
            return
        branch.final = response
        if 200 <= response.status < 300:
            # §16.7 step 5: every 2xx goes upstream at once; the others are cancelled.
            self.answered = True
            self.respond(strip_top_via(response))
            self.cancel_others(branch)
            return
        if response.status >= 600:
            self.cancel_others(branch)
        self._maybe_finish()

    def on_timeout(self, branch: Branch) -> None:
        if branch.final is None:
            branch.final = make_response(branch.request, 408, "Request Timeout")
        self._maybe_finish()

    def refuse(self, response: Response) -> None:
        """Answer `response` without forwarding anything (a policy ruled out every target)."""
        self._answer(response)

    def ring_timeout(self, branch: Branch) -> None:
        """Sequential forking: this branch rang long enough; cancel it and let the next one ring."""
        if branch.final is None:
            self._cancel(branch)

    def cancel(self) -> None:
        """The caller cancelled (§16.10): cancel every branch still ringing, start no more."""
        self.cancelled = True
        self.pending_targets.clear()
        for branch in self.branches:
            if branch.final is None:
                self._cancel(branch)

    def cancel_others(self, winner: Branch) -> None:
        self.pending_targets.clear()
        for branch in self.branches:
            if branch is not winner and branch.final is None:
                self._cancel(branch)

    def _launch(self, copy: Request) -> None:
        branch = Branch(copy)
        self.branches.append(branch)
        self.send_branch(branch)

    def _cancel(self, branch: Branch) -> None:
        if branch.request.method != "INVITE":
            return
        if branch.provisional:
            self.send_cancel(branch)
        else:
            branch.cancel_pending = True  # §9.1: not before a provisional response

    def _maybe_finish(self) -> None:
        if any(b.final is None for b in self.branches):
            return
        if self.pending_targets and not self.cancelled:
            self._launch(self.pending_targets.pop(0))
            return
        if not self.answered:
            finals = [b.final for b in self.branches if b.final is not None]
            self._answer(
                strip_top_via(best_response(finals))
                if finals
                else make_response(self.request, 408, "Request Timeout")
            )

    def _answer(self, response: Response) -> None:
        self.answered = True
        self.respond(response)


def cancel_for(branch_request: Request) -> Request:
    """§9.1: the CANCEL for a forwarded INVITE: same Request-URI, top Via, Route, Call-ID, CSeq number."""
    keep = ("from", "to", "call-id", "route", "max-forwards")
    headers = [Header("Via", str(branch_request.top_via))]
    headers += [h for h in branch_request.headers if h.key in keep]
    headers.append(Header("CSeq", f"{branch_request.cseq[0]} CANCEL"))
    return Request("CANCEL", branch_request.uri, headers)
