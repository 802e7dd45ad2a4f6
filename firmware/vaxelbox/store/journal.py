"""The journal of what users changed by star code while the appliance ran the office locally.

Each entry is written in one transaction when the change is made (so it
survives SIGKILL and power loss like the site versions), and replayed to the
cloud in order after failback. States: `pending` (not yet replayed),
`replayed` (the cloud accepted it), `failed` (the cloud refused it, or it
could not be placed after the bounded retries; `answer` says what happened).
"""

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaxelbox.store.database import Store

STATES = ("pending", "replayed", "failed")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    user: str  # site user id
    code: str  # the star code as dialled, canonical form with a raw '#'
    at: float  # wall clock, when the user dialled it
    result: str  # what the appliance did locally
    state: str  # pending / replayed / failed
    attempts: int  # replay attempts so far
    answer: str | None  # the cloud's last answer, e.g. "200 OK" or "403 Forbidden"
    replayed_at: float | None

    def row(self) -> dict[str, Any]:
        return asdict(self)


class Journal:
    def __init__(self, store: "Store") -> None:
        self._store = store

    def add(self, user: str, code: str, result: str) -> JournalEntry:
        at = time.time()
        with self._store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO journal(user, code, at, result, state) VALUES (?,?,?,?,'pending')",
                (user, code, at, result),
            )
            number = cursor.lastrowid
        assert number is not None
        return JournalEntry(number, user, code, at, result, "pending", 0, None, None)

    def pending(self) -> list[JournalEntry]:
        """What the replay still owes the cloud, oldest first."""
        return self._select("WHERE state = 'pending' ORDER BY id")

    def entries(self, limit: int = 500) -> list[JournalEntry]:
        """The newest `limit` entries, oldest first."""
        return list(reversed(self._select("ORDER BY id DESC LIMIT ?", (limit,))))

    def attempted(self, entry_id: int, answer: str, state: str) -> None:
        """Record one replay attempt and its answer; `state` stays pending to retry, or ends it."""
        assert state in STATES
        replayed_at = time.time() if state == "replayed" else None
        with self._store.transaction() as db:
            db.execute(
                "UPDATE journal SET attempts = attempts + 1, answer = ?, state = ?, replayed_at = ? "
                "WHERE id = ?",
                (answer, state, replayed_at, entry_id),
            )

    def _select(self, tail: str, params: tuple[object, ...] = ()) -> list[JournalEntry]:
        return [JournalEntry(*row) for row in self._store.read(f"SELECT * FROM journal {tail}", params)]
