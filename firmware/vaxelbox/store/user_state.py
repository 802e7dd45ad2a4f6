"""The users' dynamic state beside the site: what a user turned on from a phone or was given by an
installer, which local routing applies on top of the site's defaults. One transaction per change.

Today: the active activity (hänvisning) and when it ends. Forwards set by star
code and group log-in/out join it with the star codes (issue 10).
"""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vaxelbox.store.database import Store


@dataclass(frozen=True, slots=True)
class StoredActivity:
    user: str  # site user id
    activity: str  # the user's activity id in the site
    until: float | None  # wall clock; None = until further notice
    set_at: float
    origin: str  # "vaxelbox activity", "*24*1#", ...


class UserStates:
    def __init__(self, store: "Store") -> None:
        self._store = store

    def set_activity(self, user: str, activity: str, until: float | None, origin: str) -> StoredActivity:
        """Make `activity` the user's active one (replacing any other) until `until`."""
        now = time.time()
        with self._store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO user_activity(user, activity, until, set_at, origin) "
                "VALUES (?,?,?,?,?)",
                (user, activity, until, now, origin),
            )
        return StoredActivity(user, activity, until, now, origin)

    def clear_activity(self, user: str) -> bool:
        """Back to available; whether there was an activity to end."""
        with self._store.transaction() as db:
            return db.execute("DELETE FROM user_activity WHERE user = ?", (user,)).rowcount > 0

    def activity(self, user: str) -> StoredActivity | None:
        rows = self._store.read("SELECT * FROM user_activity WHERE user = ?", (user,))
        return StoredActivity(*rows[0]) if rows else None

    def activities(self) -> list[StoredActivity]:
        return [StoredActivity(*row) for row in self._store.read("SELECT * FROM user_activity ORDER BY user")]
