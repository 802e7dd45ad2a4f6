"""Versions of the site: applying one is one transaction; older ones stay for rollback.

The store keeps the site as the text the installer wrote (comments and all)
and knows nothing of its meaning; the agent validates before it applies.
"""

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vaxelbox.store.database import Store

KEEP_VERSIONS = 20


@dataclass(frozen=True, slots=True)
class SiteVersion:
    number: int
    digest: str  # sha256 of source; doubles as the ETag
    origin: str  # who applied it: "file site.toml", "rollback to 3", ...
    created_at: float
    source: str


class SiteConflict(Exception):
    """The active site changed since the caller read it."""

    def __init__(self, active: SiteVersion | None) -> None:
        super().__init__(f"the site changed meanwhile (now version {active.number if active else None})")
        self.active = active


def digest_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


class SiteVersions:
    def __init__(self, store: "Store") -> None:
        self._store = store

    def apply(
        self, source: str, origin: str, keep: int = KEEP_VERSIONS, if_active: str | None = None
    ) -> SiteVersion:
        """Make `source` the active site. Applying the active text again changes nothing.
        With `if_active` (a digest), only if that is still the active version: SiteConflict otherwise,
        checked inside the write transaction, so two installers cannot both win."""
        digest = digest_of(source)
        with self._store.transaction() as db:
            active = self.active()
            if if_active is not None and (active is None or active.digest != if_active):
                raise SiteConflict(active)
            if active and active.digest == digest:
                return active
            number = self._highest() + 1
            created = time.time()
            db.execute(
                "INSERT INTO site_version(number, digest, origin, created_at, source) VALUES (?,?,?,?,?)",
                (number, digest, origin, created, source),
            )
            db.execute("INSERT OR REPLACE INTO active_site(only_row, number) VALUES (1, ?)", (number,))
            db.execute("DELETE FROM site_version WHERE number <= ?", (number - keep,))
        return SiteVersion(number, digest, origin, created, source)

    def active(self) -> SiteVersion | None:
        rows = self._store.read("SELECT v.* FROM site_version v JOIN active_site a ON a.number = v.number")
        return _version(rows[0]) if rows else None

    def active_number(self) -> int | None:
        """The active version's number alone: cheap enough to ask on every request."""
        rows = self._store.read("SELECT number FROM active_site")
        return rows[0][0] if rows else None

    def get(self, number: int) -> SiteVersion | None:
        rows = self._store.read("SELECT * FROM site_version WHERE number = ?", (number,))
        return _version(rows[0]) if rows else None

    def history(self) -> list[SiteVersion]:
        """All kept versions, newest first."""
        rows = self._store.read("SELECT * FROM site_version ORDER BY number DESC")
        return [_version(r) for r in rows]

    def rollback(self, number: int) -> SiteVersion:
        """Apply an earlier version's text again, as a new version, so history only grows."""
        old = self.get(number)
        if old is None:
            raise KeyError(f"no site version {number} (kept: {[v.number for v in self.history()]})")
        return self.apply(old.source, origin=f"rollback to {number}")

    def _highest(self) -> int:
        return self._store.read("SELECT coalesce(max(number), 0) FROM site_version")[0][0]


def _version(row: sqlite3.Row) -> SiteVersion:
    return SiteVersion(row["number"], row["digest"], row["origin"], row["created_at"], row["source"])
