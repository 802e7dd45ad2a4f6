"""The transaction driver over loopback: what a client transaction does once its user let go."""

import asyncio

from test_sip_transport import udp_client
from vaxelbox.sip.message import Request, Response, parse_message
from vaxelbox.sip.stack import SipStack
from vaxelbox.sip.transport import TransportLayer


class Strays:
    """A transaction user that only records what matches no handler (a proxy's stateless path)."""

    def __init__(self) -> None:
        self.strays: list[Request | Response] = []
        self.arrived = asyncio.Event()

    def admit(self, message, flow) -> bool:
        return True

    def on_request(self, transaction, request) -> None:
        pass

    def on_cancel(self, invite, cancel) -> None:
        pass

    def on_stray(self, message, flow) -> None:
        self.strays.append(message)
        self.arrived.set()


def answer(request: bytes, status: str) -> bytes:
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = [line for line in head if line.split(b":", 1)[0].lower() in (b"via", b"from", b"call-id", b"cseq")]
    to = next(line for line in head if line.lower().startswith(b"to:"))
    return b"\r\n".join(
        [b"SIP/2.0 " + status.encode(), *keep, to + b";tag=callee", b"Content-Length: 0", b"", b""]
    )


async def test_a_2xx_retransmission_after_the_user_let_go_takes_the_stateless_path():
    """Issue 12: a fork releases its client transaction at the final response, so the call's state
    is freed at once; an accepted INVITE's transaction ends then, and later 2xx go to `on_stray`."""
    layer = TransportLayer(lambda message, flow: None)
    stack, user = SipStack(layer), Strays()
    stack.user = user
    await layer.listen_udp("127.0.0.1", 0)
    answers: list[Response] = []
    try:
        with udp_client() as callee:
            invite = parse_message(
                b"INVITE sip:102@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-stack1\r\n"
                b"Max-Forwards: 70\r\nFrom: <sip:101@office.example>;tag=a1\r\nTo: <sip:102@office.example>\r\n"
                b"Call-ID: stack-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
            assert isinstance(invite, Request)
            flow = layer.udp_flow(callee.getsockname())

            def on_response(response: Response) -> None:  # as a fork does: let go at the final
                answers.append(response)
                stack.release(running)

            running = stack.send_request(invite, flow, on_response, lambda: None)
            sent = await asyncio.to_thread(callee.recv, 4096)
            callee.sendto(answer(sent, "200 OK"), running.flow.local)
            for _ in range(50):
                if answers:
                    break
                await asyncio.sleep(0.02)
            assert [r.status for r in answers] == [200]
            assert running.key not in stack.clients  # no 32 s wait for what on_stray handles anyway
            callee.sendto(answer(sent, "200 OK"), running.flow.local)  # our ACK was lost, say
            await asyncio.wait_for(user.arrived.wait(), 2)
        assert [r.status for r in user.strays if isinstance(r, Response)] == [200]
        assert len(answers) == 1  # the released handler saw nothing more
    finally:
        await layer.close()
