"""INVITE -> 200 latency with a nanosecond clock: a small asyncio UAC and UAS over UDP.

sipp times responses in whole milliseconds; the edge's added latency is well under one.
The UAC calls at a fixed rate (INVITE, the cloud's 407 answered with proxy digest, 200,
ACK, BYE 100 ms later, as bench/sipp/uac_auth.xml) and stamps each datagram with
time.perf_counter_ns() as it is received. The UAS (`python bench/sip_latency.py uas
--port N --user U`, a process of its own so that it does not share the UAC's loop)
answers INVITE 200 at once, and BYE 200. Run the same UAC once straight to the cloud
and once through each edge: the difference is what the edge adds.

    python bench/sip_latency.py uac --target 127.0.0.1:5060 --callee 102 --rate 100 --seconds 10
"""

import argparse
import asyncio
import hashlib
import json
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

DOMAIN = "demo.vaxel.example.net"
Address = tuple[str, int]
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8\r\n"
T1, TIMER_B = 0.5, 32.0  # s: RFC 3261's retransmission start and transaction timeout


@dataclass
class Message:
    """A received SIP message, as far as these endpoints read it: start line and headers in order."""

    start: str
    headers: list[tuple[str, str]]  # (lower-case full name, value), one per header line
    received_ns: int

    @classmethod
    def parse(cls, data: bytes, received_ns: int) -> "Message":
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        headers = []
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers.append((COMPACT.get(name, name), value.strip()))
        return cls(head[0], headers, received_ns)

    def get(self, name: str) -> str:
        return next((v for n, v in self.headers if n == name), "")

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    @property
    def status(self) -> int:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0") else 0

    @property
    def key(self) -> tuple[str, str]:
        return self.get("call-id"), self.get("cseq")


class Endpoint(asyncio.DatagramProtocol):
    """One UDP socket; every datagram is stamped on arrival and handed to `deliver`."""

    def __init__(self, deliver: Any) -> None:
        self.deliver = deliver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.deliver(Message.parse(data, time.perf_counter_ns()), addr)


# --- UAS ---------------------------------------------------------------------------------------


def answer(request: Message, user: str, port: int, tag: str) -> bytes:
    """The 200 OK to `request` (INVITE: with our tag, Record-Route and Contact, SDP; BYE: plain)."""
    lines = ["SIP/2.0 200 OK", *(f"Via: {v}" for v in request.all("via")), f"From: {request.get('from')}"]
    to = request.get("to")
    lines.append(f"To: {to}" if ";tag=" in to else f"To: {to};tag={tag}")
    lines += [f"Call-ID: {request.get('call-id')}", f"CSeq: {request.get('cseq')}"]
    body = ""
    if request.start.startswith("INVITE"):
        lines += [f"Record-Route: {r}" for r in request.all("record-route")]
        lines.append(f"Contact: <sip:{user}@127.0.0.1:{port}>")
        lines.append("Content-Type: application/sdp")
        body = SDP
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def uas(port: int, user: str) -> None:
    """Answer every INVITE and BYE 200 on 127.0.0.1:port until cancelled (SIGTERM ends the process)."""
    loop = asyncio.get_running_loop()
    sent: dict[tuple[str, str], bytes] = {}  # a retransmitted request gets the same answer

    def deliver(message: Message, addr: Address) -> None:
        method = message.start.split(" ", 1)[0]
        if method not in ("INVITE", "BYE"):
            return
        reply = sent.get(message.key) or answer(message, user, port, f"uas{len(sent)}")
        sent[message.key] = reply
        endpoint.transport.sendto(reply, addr)  # type: ignore[union-attr]
        if len(sent) > 50_000:
            sent.clear()

    endpoint = Endpoint(deliver)
    await loop.create_datagram_endpoint(lambda: endpoint, local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()


# --- UAC ---------------------------------------------------------------------------------------


def digest(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    """A Proxy-Authorization value answering `challenge` (MD5, with qop=auth when offered)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.removeprefix("Digest").strip()))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    value = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    if "auth" in params.get("qop", "").split(","):
        cnonce = os.urandom(8).hex()
        response = hashlib.md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
        value += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    else:
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    if "opaque" in params:
        value += f', opaque="{params["opaque"]}"'
    return value + f', response="{response}"'


@dataclass
class Caller:
    """Calls `callee` through `target` at a fixed rate from one UDP socket; collects timings (ns)."""

    target: Address
    callee: str
    user: str = "101"
    password: str = "pw-101-secret"
    waiting: dict[tuple[str, str], asyncio.Queue[Message]] = field(default_factory=dict)
    invite_200_ns: list[int] = field(default_factory=list)
    invite_407_ns: list[int] = field(default_factory=list)
    failed: int = 0
    retransmissions: int = 0

    async def run(self, rate: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self.endpoint = Endpoint(self.deliver)
        await loop.create_datagram_endpoint(lambda: self.endpoint, local_addr=("127.0.0.1", 0))
        self.port = self.endpoint.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        calls, start, tasks = int(rate * seconds), time.perf_counter(), []
        for n in range(calls):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(self.call(n)))
        await asyncio.gather(*tasks)
        self.endpoint.transport.close()  # type: ignore[union-attr]

    def deliver(self, message: Message, addr: Address) -> None:
        queue = self.waiting.get(message.key)
        if queue is not None and message.status:
            queue.put_nowait(message)

    def send(self, text: str) -> None:
        self.endpoint.transport.sendto(text.encode(), self.target)  # type: ignore[union-attr]

    async def transaction(self, request: str, call_id: str, cseq: str) -> tuple[Message | None, int]:
        """Send `request`, retransmit it (T1 doubling, UDP) until a final response or Timer B.

        Returns (final response or None on timeout, perf_counter_ns when first sent)."""
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self.waiting[(call_id, cseq)] = queue
        sent_ns, interval, deadline = time.perf_counter_ns(), T1, time.monotonic() + TIMER_B
        self.send(request)
        try:
            provisional = False
            while time.monotonic() < deadline:
                try:
                    response = await asyncio.wait_for(queue.get(), interval)
                except TimeoutError:
                    if not provisional or not request.startswith("INVITE"):
                        self.retransmissions += 1
                        self.send(request)
                    interval = min(interval * 2, 4.0)
                    continue
                if response.status >= 200:
                    return response, sent_ns
                provisional = True
            return None, sent_ns
        finally:
            del self.waiting[(call_id, cseq)]

    def request(self, method: str, uri: str, call_id: str, cseq: int, to: str, extra: list[str],
                branch: str = "") -> str:  # fmt: skip
        """A request from us; `branch` given: the one of the INVITE it acknowledges (ACK of a non-2xx)."""
        branch = branch or f"z9hG4bK{os.urandom(6).hex()}"
        lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
                 f"From: <sip:{self.user}@{DOMAIN}>;tag=lat{call_id[:8]}", f"To: {to}", f"Call-ID: {call_id}",
                 f"CSeq: {cseq} {method}", "Max-Forwards: 70", *extra]  # fmt: skip
        body = SDP if method == "INVITE" else ""
        if body:
            lines += [f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>", "Content-Type: application/sdp"]
        lines.append(f"Content-Length: {len(body)}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    async def call(self, n: int) -> None:
        """One call; a call that does not end with 200 to its INVITE and its BYE counts as failed."""
        call_id, uri, to = (
            f"{os.urandom(8).hex()}-{n}",
            f"sip:{self.callee}@{DOMAIN}",
            f"<sip:{self.callee}@{DOMAIN}>",
        )
        invite = self.request("INVITE", uri, call_id, 1, to, [])
        response, sent = await self.transaction(invite, call_id, "1 INVITE")
        cseq = 1
        if response is not None and response.status == 407:
            self.invite_407_ns.append(response.received_ns - sent)
            branch = re.search(r"branch=([^;\r]+)", invite).group(1)  # type: ignore[union-attr]
            self.send(self.request("ACK", uri, call_id, 1, response.get("to"), [], branch=branch))
            cseq = 2
            auth = digest(response.get("proxy-authenticate"), self.user, self.password, "INVITE", uri)
            invite = self.request("INVITE", uri, call_id, cseq, to, [f"Proxy-Authorization: {auth}"])
            response, sent = await self.transaction(invite, call_id, f"{cseq} INVITE")
        if response is None or response.status != 200:
            self.failed += 1
            return
        self.invite_200_ns.append(response.received_ns - sent)
        routes = [f"Route: {r}" for r in reversed(response.all("record-route"))]
        remote = re.search(r"<([^>]+)>", response.get("contact"))
        target = remote.group(1) if remote else uri
        self.send(self.request("ACK", target, call_id, cseq, response.get("to"), routes))
        await asyncio.sleep(0.1)
        bye = self.request("BYE", target, call_id, cseq + 1, response.get("to"), routes)
        done, _ = await self.transaction(bye, call_id, f"{cseq + 1} BYE")
        if done is None or done.status != 200:
            self.failed += 1


def summary_ms(values_ns: list[int]) -> dict[str, float]:
    """Median, p90, p99 and max of `values_ns`, in milliseconds (3 decimals); empty -> {}."""
    if not values_ns:
        return {}
    ordered = sorted(values_ns)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] / 1e6, 3)

    return {"median": round(statistics.median(ordered) / 1e6, 3), "p90": at(0.90), "p99": at(0.99),
            "max": round(ordered[-1] / 1e6, 3), "samples": len(ordered)}  # fmt: skip


def measure(target: Address, callee: str, rate: float, seconds: float, password: str) -> dict[str, Any]:
    """Call `callee` through `target` at `rate` calls/s for `seconds`; timings in ms (see summary_ms)."""
    caller = Caller(target, callee, password=password)
    asyncio.run(caller.run(rate, seconds))
    return {"rate": rate, "calls": int(rate * seconds), "ok": len(caller.invite_200_ns), "failed": caller.failed,
            "retransmissions": caller.retransmissions, "invite_200_ms": summary_ms(caller.invite_200_ns),
            "invite_407_ms": summary_ms(caller.invite_407_ns)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=["uac", "uas"])
    parser.add_argument("--port", type=int, help="uas: the UDP port on 127.0.0.1 to answer on")
    parser.add_argument("--user", default="102", help="uas: the user in our Contact")
    parser.add_argument("--target", help="uac: HOST:PORT of the edge or the cloud")
    parser.add_argument("--callee", default="102")
    parser.add_argument("--password", default="pw-101-secret", help="uac: user 101's password at the cloud")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.role == "uas":
        asyncio.run(uas(args.port, args.user))
        return
    host, port = args.target.rsplit(":", 1)
    print(
        json.dumps(measure((host, int(port)), args.callee, args.rate, args.seconds, args.password), indent=2)
    )


if __name__ == "__main__":
    main()
