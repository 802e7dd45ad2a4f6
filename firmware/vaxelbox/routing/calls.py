"""The calls in progress, as the relay sees them: for `vaxelctl calls` and support.

One entry per INVITE dialog attempt (by Call-ID): who called whom, in which
mode, how it was routed, ringing or up, since when. The relay records the
start, the answer and the end (a failed final, BYE from either side); entries
that outlive any real call (a lost BYE) are dropped after `max_age` seconds.
"""

import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from vaxelbox.sip.message import Request
from vaxelbox.sip.uri import SipUri

MAX_AGE = 12 * 3600.0  # seconds a call may last before we assume its BYE was lost
MAX_CALLS = 2000  # a bound on memory whatever a peer sends


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    caller: str  # From user part (or the authenticated user in local mode)
    callee: str  # the dialled user part
    mode: str  # online / local
    route: str  # how the chain routed it
    state: str  # ringing / up
    started: float  # wall clock
    answered: float | None = None

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        row["started"] = _iso(self.started)
        row["answered"] = _iso(self.answered) if self.answered else None
        return row


class CallTable:
    def __init__(self, max_age: float = MAX_AGE) -> None:
        self.max_age = max_age
        self._calls: dict[str, CallRecord] = {}
        self._expired_at = 0.0  # wall clock of the last scan for expired calls

    def started(self, request: Request, mode: str, route: str, caller: str | None) -> None:
        self._expire()
        if len(self._calls) >= MAX_CALLS or request.call_id in self._calls:
            return  # a call through the cloud passes twice (phone to cloud, cloud to phone): keep the first
        record = CallRecord(
            request.call_id, caller or _user(request.from_.uri), _user(request.uri), mode, route, "ringing",
            time.time(),
        )  # fmt: skip
        self._calls[request.call_id] = record

    def answered(self, call_id: str) -> None:
        if (record := self._calls.get(call_id)) is not None and record.state != "up":
            self._calls[call_id] = replace(record, state="up", answered=time.time())

    def ended(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def rows(self) -> list[dict[str, Any]]:
        self._expire()
        return [record.row() for record in sorted(self._calls.values(), key=lambda r: r.started)]

    def __len__(self) -> int:
        return len(self._calls)

    def _expire(self) -> None:
        """Drop the calls started more than `max_age` ago; at most once a second, as a scan of the
        whole table on every new call was 1 % of a relay's time (issue 12)."""
        now = time.time()
        if abs(now - self._expired_at) < 1.0:
            return
        self._expired_at = now
        for call_id in [c for c, r in self._calls.items() if r.started < now - self.max_age]:
            del self._calls[call_id]


def _user(uri: object) -> str:
    return (uri.user or uri.host) if isinstance(uri, SipUri) else str(uri)


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
