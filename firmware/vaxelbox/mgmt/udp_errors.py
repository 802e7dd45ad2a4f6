"""Send errors on the management UDP socket go to the watcher that caused them, not the next one.

A watcher that goes away (`vaxelctl status --watch` ended by Ctrl-C) sends no
deregistration; the next notification to its closed port comes back as an ICMP
port unreachable. Linux queues that error with the dead port's address on the
socket's error queue, where aiocoap reads it and ends that watcher's observation
quietly, and also keeps it as the socket's pending error, which the *next*
sendmsg() returns, whatever its destination. aiocoap 0.4.17 blames the datagram
being sent for it: a live watcher (or any request) sending next loses its
exchange, and when that was a notification, aiocoap's Pipe ends inside its own
callback (TypeError in `_any_interest`, then a second TypeError from its
`log.error(..., exception=...)`, which no `logging.Logger` accepts) and the agent
logs "Task exception was never retrieved". Reading SO_ERROR before each send
takes the stale pending error away; the error queue still names its real sender.
"""

import socket
from collections.abc import Callable

import aiocoap
from aiocoap.messagemanager import MessageManager
from aiocoap.transports.udp6 import MessageInterfaceUDP6
from vaxelbox.agent.logs import get_logger

log = get_logger("vaxelbox.mgmt")


def attribute_udp_errors(context: aiocoap.Context) -> int:
    """Make every UDP transport of `context` (a server context) clear the socket's stale pending
    error before it sends. Returns how many transports it changed (0 without UDP)."""
    changed = 0
    for interface in context.request_interfaces:
        messages = getattr(interface, "token_interface", None)
        if isinstance(messages, MessageManager) and isinstance(
            messages.message_interface, MessageInterfaceUDP6
        ):
            udp = messages.message_interface
            udp.send = _clearing_stale_error(udp.send, udp.transport.get_extra_info("socket"))  # type: ignore[method-assign]
            changed += 1
    return changed


def _clearing_stale_error(
    send: Callable[[aiocoap.Message], None], sock: socket.socket
) -> Callable[[aiocoap.Message], None]:
    def send_own_errors_only(message: aiocoap.Message) -> None:
        # Reading SO_ERROR clears it; the error queue keeps the entry with the address it belongs to.
        if stale := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            log.debug("stale UDP send error left to the error queue", errno=stale, to=str(message.remote))
        send(message)

    return send_own_errors_only
