"""What a busy lamp shows, in RFC 4235's terms: a user's dialogs and the state of each.

The order of `LineState` is the merge priority of issue 11: when two views of
the same call disagree, the higher state wins (confirmed > early > proceeding
> trying > terminated), so a losing forked branch never darkens an answered
call and a lamp is never darker than what either view knows.
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

Direction = Literal["initiator", "recipient"]


class LineState(IntEnum):
    """RFC 4235 §4.1.4 dialog states, ordered by merge priority."""

    TERMINATED = 0
    TRYING = 1
    PROCEEDING = 2
    EARLY = 3
    CONFIRMED = 4

    @property
    def text(self) -> str:
        """The state's name in dialog-info XML ("early", "confirmed", ...)."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "LineState":
        """From dialog-info XML text; raises ValueError for anything else."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"not a dialog state: {text!r}") from None


@dataclass(frozen=True, slots=True)
class Party:
    """One end of a dialog (RFC 4235 §4.1.6): who (identity URI, display name) and where (target URI)."""

    identity: str
    display: str | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class LineDialog:
    """One dialog of a monitored user, from that user's side (`local` is the user, `remote` the other
    party). `id` is unique within the user's view. Tags let a phone pick up with Replaces (RFC 3891):
    `call_id`, `local_tag` (the user's side) and `remote_tag`. `reason` is the RFC 4235 `event` of a
    terminated dialog (cancelled, rejected, replaced, local-bye, remote-bye, error, timeout)."""

    id: str
    state: LineState
    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    direction: Direction | None = None
    local: Party | None = None
    remote: Party | None = None
    reason: str | None = None
