"""Versions of the site: applying one is one transaction; older ones stay for rollback.

The store keeps the site as the text the installer wrote (comments and all)
and knows nothing of its meaning; the agent validates before it applies.

The store is the one source of truth. A site file (`vaxelbox run --site`) only
seeds it: its text becomes a new version when it differs from the text last
applied from that file, so a restart or SIGHUP never undoes an edit made on
the appliance (`vaxelctl site push`, `phones assign`, a rollback). When a
changed file does overwrite such an edit, the edit stays in the history and
`FileRecord.replaced` names it until the next change.
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


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the store remembers of a site file: the text it last applied from it, as which version,
    and the appliance edit (a version number) that applying it overwrote, if any."""

    path: str
    digest: str
    version: int
    applied_at: float
    replaced: int | None


@dataclass(frozen=True, slots=True)
class FileApplied:
    """The outcome of `SiteVersions.apply_file`: the active version afterwards, whether the file's text
    was new (and so applied), and the appliance edit it overwrote."""

    active: SiteVersion
    changed: bool
    replaced: SiteVersion | None


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
        with self._store.transaction() as db:
            active = self.active()
            if if_active is not None and (active is None or active.digest != if_active):
                raise SiteConflict(active)
            return self._make_active(db, active, source, origin, keep)

    def apply_file(self, source: str, path: str, keep: int = KEEP_VERSIONS) -> FileApplied:
        """Seed the store from the site file at `path` (its text `source`, already validated): a new
        version only if the text differs from what was last applied from this file. One transaction,
        so a power cut leaves either the old or the new version and file record."""
        digest = digest_of(source)
        with self._store.transaction() as db:
            active = self.active()
            record = self.file_record(path)
            if active is not None and record is not None and record.digest == digest:
                return FileApplied(active, changed=False, replaced=None)
            if active is not None and active.digest == digest:  # e.g. a store older than file records
                _remember_file(db, path, digest, active, replaced=None)
                return FileApplied(active, changed=False, replaced=None)
            replaced = active if active is not None and _is_edit(active, record) else None
            version = self._make_active(db, active, source, f"file {path}", keep)
            _remember_file(db, path, digest, version, replaced)
        return FileApplied(version, changed=True, replaced=replaced)

    def file_record(self, path: str) -> FileRecord | None:
        rows = self._store.read("SELECT * FROM site_file WHERE path = ?", (path,))
        return FileRecord(*rows[0]) if rows else None

    def _make_active(
        self, db: sqlite3.Connection, active: SiteVersion | None, source: str, origin: str, keep: int
    ) -> SiteVersion:
        """Inside a write transaction: `source` as a new active version, or the active one if equal."""
        digest = digest_of(source)
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


def _remember_file(
    db: sqlite3.Connection, path: str, digest: str, version: SiteVersion, replaced: SiteVersion | None
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO site_file(path, digest, version, applied_at, replaced) VALUES (?,?,?,?,?)",
        (path, digest, version.number, time.time(), replaced.number if replaced else None),
    )


def _is_edit(active: SiteVersion, record: FileRecord | None) -> bool:
    """Whether the active version was made on the appliance after the file was last applied
    (an installer's push, assign or rollback), as opposed to the file itself or the demo site."""
    if record is not None and record.version == active.number:
        return False
    return not (active.origin.startswith("file ") or active.origin == "demo site")


def _version(row: sqlite3.Row) -> SiteVersion:
    return SiteVersion(row["number"], row["digest"], row["origin"], row["created_at"], row["source"])
