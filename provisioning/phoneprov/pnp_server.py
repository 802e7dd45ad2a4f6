"""SIP PnP's sockets: the multicast group on the LAN interface, and a unicast socket for answers.

The multicast socket is bound to the group address, so it coexists with the
SIP edge's socket on the LAN address's port 5060.
"""

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field

from phoneprov.pnp import PNP_GROUP, PNP_PORT, Address, Datagram, PnpResponder

NOTIFY_RETRANSMITS = (0.5, 1.0, 2.0, 4.0)  # T1 doubling, as a non-INVITE client transaction


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, server: "PnpServer") -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.server.received(data, addr[:2])


@dataclass
class PnpServer:
    responder: PnpResponder
    lan_host: str
    group_port: int = PNP_PORT
    _unicast: asyncio.DatagramTransport | None = None
    _multicast: asyncio.DatagramTransport | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def listening(self) -> list[str]:
        return [f"sip-pnp udp {PNP_GROUP}:{self.group_port} on {self.lan_host}"]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._unicast, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self), local_addr=(self.lan_host, 0)
        )
        self.responder.local = self._unicast.get_extra_info("sockname")[:2]
        self._multicast, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self), sock=self._group_socket()
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for transport in (self._multicast, self._unicast):
            if transport is not None:
                transport.close()

    def received(self, data: bytes, source: Address) -> None:
        out = self.responder.on_datagram(data, source, time.monotonic())
        for datagram in out:
            if datagram.data.startswith(b"NOTIFY "):
                task = asyncio.create_task(self._send_notify(datagram))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._send(datagram)

    async def _send_notify(self, datagram: Datagram) -> None:
        call_id = _call_id(datagram.data)
        for wait in NOTIFY_RETRANSMITS:
            self._send(datagram)
            await asyncio.sleep(wait)
            if call_id in self.responder.notified:
                self.responder.notified.discard(call_id)
                return

    def _send(self, datagram: Datagram) -> None:
        assert self._unicast is not None
        self._unicast.sendto(datagram.data, datagram.to)

    def _group_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((PNP_GROUP, self.group_port))
        membership = struct.pack("4s4s", socket.inet_aton(PNP_GROUP), socket.inet_aton(self.lan_host))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        sock.setblocking(False)
        return sock


def _call_id(data: bytes) -> str:
    for line in data.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"call-id", b"i"):
            return value.strip().decode()
    return ""
