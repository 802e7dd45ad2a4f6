"""The appliance's footprint on the cloud: what it sent there, by kind, for `vaxelctl status --json`.

Every message the edge sends the cloud goes through `CloudTraffic.sent` (the
upstream wraps the flow's `send`: its own flows, the flow a cloud request came
in on, the relay's stateless forwards), so retransmissions by the transaction
layer, ACKs and answers are counted as packets too. What goes to the fallback
trunk is not the cloud's and is not counted here. A
request sent again with the same top branch and method is a retransmission.
Attempts the edge kept back are counted as suppressed, by why: the cloud asked
it to wait (a 503 with Retry-After: "retry-after"), or a phone is held for the
cloud's repeated refusals of its password ("auth-guard", edge/auth_guard.py).
"""

import re
from collections import Counter, deque
from typing import Any

KINDS = ("OPTIONS", "REGISTER", "INVITE")
_BRANCH = re.compile(rb"branch=([^;,\s]+)", re.IGNORECASE)
_REMEMBERED = 4096  # recent (method, branch) pairs kept to recognise retransmissions


class CloudTraffic:
    def __init__(self) -> None:
        self.packets = 0  # every datagram or stream write to the cloud, requests and responses
        self.requests: Counter[str] = Counter()  # first sendings, by kind (OPTIONS, ..., other)
        self.retransmissions = 0
        self.suppressed = 0  # requests not sent to the cloud, for any reason
        self.suppressed_by: Counter[str] = Counter()  # ... by reason: "retry-after", "auth-guard"
        self.by_target: Counter[str] = Counter()  # packets per "address:port/transport"
        # The hash of each recent (method, branch) pair, oldest first: an int each instead of a
        # tuple and two bytes objects (a quarter of the memory once thousands of phones register;
        # two pairs in 2**64 sharing a hash would count one first sending as a retransmission).
        self._seen: set[int] = set()
        self._order: deque[int] = deque()

    def sent(self, data: bytes, target: str) -> None:
        """One message (`data`, its bytes as sent) went to the cloud at `target`."""
        self.packets += 1
        self.by_target[target] += 1
        space = data.find(b" ", 0, 32)  # not split or strip: they copy the whole message
        method = data[:space] if space > 0 else b""
        if not method or method == b"SIP/2.0":
            return  # a keepalive (CRLFs) or a response: a packet, not a request
        branch = _BRANCH.search(data)
        key = hash((method, branch.group(1) if branch else data))
        if key in self._seen:
            self.retransmissions += 1
            return
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > _REMEMBERED:
            self._seen.discard(self._order.popleft())
        name = method.decode(errors="replace").upper()
        self.requests[name if name in KINDS else "other"] += 1

    def suppress(self, why: str = "retry-after") -> None:
        """A request that would have gone to the cloud was kept back, for `why`."""
        self.suppressed += 1
        self.suppressed_by[why] += 1

    def snapshot(self) -> dict[str, Any]:
        """{"packets": int, "requests": {"OPTIONS"|"REGISTER"|"INVITE"|"other": int},
        "retransmissions": int, "suppressed": int, "suppressed_by": {"retry-after"|"auth-guard": int},
        "by_target": {"addr:port/transport": int}}"""
        return {
            "packets": self.packets,
            "requests": {kind: self.requests[kind] for kind in (*KINDS, "other")},
            "retransmissions": self.retransmissions,
            "suppressed": self.suppressed,
            "suppressed_by": {why: self.suppressed_by[why] for why in ("retry-after", "auth-guard")},
            "by_target": dict(self.by_target),
        }
