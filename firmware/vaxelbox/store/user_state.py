"""The users' dynamic state beside the site: what a user turned on from a phone or was given by an
installer, which local routing applies on top of the site's defaults. One transaction per change.

Kept: the active activity (hänvisning) and when it ends; forwards set by star
code (a row per kind overrides the site's forward of that kind; a row without
a target means "cancelled", which overrides a site default too); group log-in
and log-out (a member without a row is logged in).
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


@dataclass(frozen=True, slots=True)
class StoredForward:
    user: str
    kind: str  # always / no_answer / busy
    target: str | None  # a site target ("tel:+46...", "user:anna"); None = cancelled by the user
    seconds: int | None  # no_answer: after how long
    set_at: float
    origin: str


class UserStates:
    def __init__(self, store: "Store") -> None:
        self._store = store

    # -- activities ---------------------------------------------------------------------------

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

    # -- forwards -----------------------------------------------------------------------------

    def set_forward(
        self, user: str, kind: str, target: str | None, seconds: int | None, origin: str
    ) -> StoredForward:
        """Set (`target`) or cancel (None) the user's forward of `kind`, overriding the site's."""
        now = time.time()
        with self._store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO user_forward(user, kind, target, seconds, set_at, origin) "
                "VALUES (?,?,?,?,?,?)",
                (user, kind, target, seconds, now, origin),
            )
        return StoredForward(user, kind, target, seconds, now, origin)

    def forwards(self, user: str) -> dict[str, StoredForward]:
        """The user's forwards set by code, by kind."""
        rows = self._store.read("SELECT * FROM user_forward WHERE user = ?", (user,))
        return {row["kind"]: StoredForward(*row) for row in rows}

    # -- group log-in -------------------------------------------------------------------------

    def set_logged_in(self, group: str, user: str, logged_in: bool) -> None:
        with self._store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO group_login(grp, user, logged_in, set_at) VALUES (?,?,?,?)",
                (group, user, int(logged_in), time.time()),
            )

    def logged_in(self, group: str, user: str) -> bool:
        """Whether a member is logged in to a group: yes unless they logged out."""
        rows = self._store.read("SELECT logged_in FROM group_login WHERE grp = ? AND user = ?", (group, user))
        return bool(rows[0][0]) if rows else True
