"""Answer a call here, then hang up: how local mode confirms a star code without any media.

The phone hears "answered and ended" (the way a PBX confirms a code after its
announcement), never silence. The appliance is the UAS of a one-moment
dialog: 200 OK with an SDP answer that declines the media (port 0, RFC 3264
§6), then, once the phone's ACK has arrived (RFC 3261 §15: not before), a BYE
on the flow the call came in on. Over UDP the 200 is resent until that ACK
(RFC 3261 §13.3.1.4: after T1, the interval doubling up to T2), else one lost
200 leaves the phone waiting. Should no ACK come, the dialog is forgotten
after 64*T1 (Timer H's span).
"""

from collections.abc import Callable
from dataclasses import dataclass

from vaxelbox.routing.forking import Cancellable, EdgeAddresses, Scheduler
from vaxelbox.sip.message import Header, Request
from vaxelbox.sip.proxy import new_branch
from vaxelbox.sip.responses import make_response, new_tag
from vaxelbox.sip.stack import Running, SipStack
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.via import Via


@dataclass(slots=True)
class _Confirmed:
    invite: Request
    local_tag: str
    flow: Flow
    wire: bytes  # the 200 as sent: resent as is until the ACK
    resend: Cancellable | None = None  # the next retransmission, over UDP


class Confirmations:
    def __init__(self, stack: SipStack, addresses: EdgeAddresses, schedule: Scheduler) -> None:
        self.stack = stack
        self.addresses = addresses
        self.schedule = schedule
        self._waiting: dict[str, _Confirmed] = {}  # by Call-ID: answered, waiting for the ACK

    def answer_and_hang_up(self, transaction: Running, request: Request, why: str) -> None:
        """Answer `request` (an INVITE) with 200 OK now; hang up as soon as it is acknowledged."""
        tag = new_tag()
        response = make_response(request, 200, "OK", to_tag=tag)
        response.add("Contact", f"<{self.addresses.uri('lan', transaction.flow.transport)}>")
        response.add("Reason", f'SIP;cause=200;text="{why.replace(chr(34), chr(39))}"')
        if request.body and (request.get("Content-Type") or "").lower().startswith("application/sdp"):
            response.add("Content-Type", "application/sdp")
            response.body = declined_answer(request.body, self.addresses.lan[0])
        confirmed = _Confirmed(request, tag, transaction.flow, response.to_bytes())
        self._waiting[request.call_id] = confirmed
        self.schedule(64 * self.stack.timers.t1, lambda: self._forget(confirmed))
        self.stack.respond(transaction, response)
        if not transaction.flow.reliable:
            self._resend_after(confirmed, self.stack.timers.t1)

    def on_ack(self, ack: Request) -> bool:
        """The phone's ACK for one of our 2xx: send the BYE. Whether the ACK was ours."""
        confirmed = self._waiting.get(ack.call_id)
        if confirmed is None or ack.to_tag != confirmed.local_tag:
            return False
        self._forget(confirmed)
        self.stack.send_request(self._bye(confirmed), confirmed.flow, _ignore, lambda: None)
        return True

    def _resend_after(self, confirmed: _Confirmed, interval: float) -> None:
        """Resend the 200 in `interval` seconds, then at twice that, at most T2 apart (§13.3.1.4),
        while it is still unacknowledged (`_forget` cancels)."""

        def resend() -> None:
            confirmed.flow.send(confirmed.wire)
            self._resend_after(confirmed, min(2 * interval, self.stack.timers.t2))

        confirmed.resend = self.schedule(interval, resend)

    def _forget(self, confirmed: _Confirmed) -> None:
        """Acknowledged, or 64*T1 passed: no more retransmissions; a later ACK is not ours."""
        if self._waiting.get(confirmed.invite.call_id) is confirmed:
            del self._waiting[confirmed.invite.call_id]
        if confirmed.resend is not None:
            confirmed.resend.cancel()
            confirmed.resend = None

    def _bye(self, confirmed: _Confirmed) -> Request:
        invite, flow = confirmed.invite, confirmed.flow
        contact = invite.contacts[0].uri if invite.contacts else invite.from_.uri
        host, port = self.addresses.lan
        via = Via(flow.transport.upper(), host, port, {"branch": new_branch(invite), "rport": None})
        to = invite.get("From") or ""
        ours = f"{invite.get('To')};tag={confirmed.local_tag}"
        headers = [
            Header("Via", str(via)),
            Header("Max-Forwards", "70"),
            Header("From", ours),
            Header("To", to),
            Header("Call-ID", invite.call_id),
            Header("CSeq", "1 BYE"),
        ]
        return Request("BYE", contact, headers)


def declined_answer(offer: bytes, address: str) -> bytes:
    """An SDP answer that declines every media stream of `offer` (port 0, same formats)."""
    lines = [
        "v=0",
        f"o=vaxelbox 1 1 IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    for line in offer.decode("utf-8", "replace").splitlines():
        if line.startswith("m="):
            kind, _port, *rest = line[2:].split()
            lines.append(f"m={kind} 0 {' '.join(rest)}")
    return ("\r\n".join(lines) + "\r\n").encode()


_ignore: Callable[[object], None] = lambda response: None  # noqa: E731
