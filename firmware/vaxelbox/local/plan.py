"""What local mode does with a call: a route plan, computed from the site, the users' state and now.

A plan is pure data. The routing chain (`vaxelbox.routing`) executes it: it
rings the branches of a `Ring` (every registered contact of each user, in
parallel), and on the outcome follows `on_no_answer` / `on_busy` /
`on_unavailable`. `Trunk` sends the call out through the fallback trunk;
`Reject` answers the caller with a final response and a Reason header.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the caller with `status reason`, a Reason header carrying `why`, and log `why`."""

    status: int
    reason: str
    why: str


@dataclass(frozen=True, slots=True)
class Trunk:
    """Out through the site's fallback trunk to `number` (E.164), showing `caller_id` if set."""

    number: str
    caller_id: str | None
    why: str


@dataclass(frozen=True, slots=True)
class Ring:
    """Ring every registered contact of `users` at once, for `ring_time` seconds (None: until the
    caller gives up or Timer C).

    - `on_no_answer`: nobody answered within ring_time (every branch cancelled first);
    - `on_busy`: every contact that answered finally said busy (486/600);
    - `on_unavailable`: none of the users has a registered contact now.
    A None outcome answers the caller with the best response seen (480 if none).
    """

    users: tuple[str, ...]
    ring_time: float | None
    why: str
    on_no_answer: "Plan | None" = None
    on_busy: "Plan | None" = None
    on_unavailable: "Plan | None" = None


Plan = Ring | Trunk | Reject
