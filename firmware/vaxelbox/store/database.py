"""The agent's database: opening it safely, migrating its schema, one transaction per change.

Durability rules: WAL with synchronous=FULL, so a change that returned is on
disk and a power cut mid-change leaves the previous state; the file and its
WAL are created 0600 in a 0700 directory because the site holds SIP secrets.
"""

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vaxelbox.store.devices import Devices
from vaxelbox.store.journal import Journal
from vaxelbox.store.presence import Watches
from vaxelbox.store.settings import Settings
from vaxelbox.store.sites import SiteVersions
from vaxelbox.store.user_state import UserStates

DB_NAME = "vaxelbox.db"

# Each entry migrates from schema version i to i + 1. Append only; never edit a shipped one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE site_version (
        number     INTEGER PRIMARY KEY,
        digest     TEXT NOT NULL,
        origin     TEXT NOT NULL,
        created_at REAL NOT NULL,
        source     TEXT NOT NULL
    );
    CREATE TABLE active_site (
        only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
        number   INTEGER NOT NULL REFERENCES site_version(number)
    );
    """,
    """
    CREATE TABLE binding (
        aor        TEXT NOT NULL,
        contact    TEXT NOT NULL,
        transport  TEXT NOT NULL,
        remote     TEXT NOT NULL,
        local      TEXT NOT NULL,
        expires_at REAL NOT NULL,
        user_agent TEXT NOT NULL,
        last_seen  REAL NOT NULL,
        PRIMARY KEY (aor, contact)
    );
    """,
    """
    CREATE TABLE device (
        mac         TEXT PRIMARY KEY,
        vendor      TEXT,
        model       TEXT,
        firmware    TEXT,
        ip          TEXT NOT NULL,
        user_agent  TEXT NOT NULL,
        last_file   TEXT NOT NULL,
        first_seen  REAL NOT NULL,
        last_seen   REAL NOT NULL,
        credential  TEXT,
        enrolled_at REAL,
        enrolled_ip TEXT
    );
    CREATE TABLE enrolment (
        only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
        until    REAL NOT NULL,
        macs     TEXT
    );
    """,
    # The site file the agent was started with seeds the store only when its text changed since it was
    # last applied; `replaced` names an appliance edit that applying it overwrote (for the warning).
    """
    CREATE TABLE site_file (
        path       TEXT PRIMARY KEY,
        digest     TEXT NOT NULL,
        version    INTEGER NOT NULL,
        applied_at REAL NOT NULL,
        replaced   INTEGER
    );
    """,
    """
    CREATE TABLE setting (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE user_activity (
        user     TEXT PRIMARY KEY,
        activity TEXT NOT NULL,
        until    REAL,
        set_at   REAL NOT NULL,
        origin   TEXT NOT NULL
    );
    """,
    # Forwards and group log-in set by star code override the site's defaults; the journal keeps
    # what users changed while local, in order, for the replay to the cloud.
    """
    CREATE TABLE user_forward (
        user    TEXT NOT NULL,
        kind    TEXT NOT NULL,
        target  TEXT,
        seconds INTEGER,
        set_at  REAL NOT NULL,
        origin  TEXT NOT NULL,
        PRIMARY KEY (user, kind)
    );
    CREATE TABLE group_login (
        grp       TEXT NOT NULL,
        user      TEXT NOT NULL,
        logged_in INTEGER NOT NULL,
        set_at    REAL NOT NULL,
        PRIMARY KEY (grp, user)
    );
    CREATE TABLE journal (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user        TEXT NOT NULL,
        code        TEXT NOT NULL,
        at          REAL NOT NULL,
        result      TEXT NOT NULL,
        state       TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        answer      TEXT,
        replayed_at REAL
    );
    """,
    """
    CREATE TABLE presence_watch (
        id         TEXT PRIMARY KEY,
        resource   TEXT NOT NULL,
        data       TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
]


class StoreError(RuntimeError):
    """The store cannot be opened or is not ours (wrong schema, unreadable)."""


class Store:
    """The agent's persistent state under one data directory. Thread-safe."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        _private_dir(data_dir)
        _private_file(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._lock = threading.RLock()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        self.sites = SiteVersions(self)
        self.devices = Devices(self)
        self.settings = Settings(self)
        self.users = UserStates(self)
        self.journal = Journal(self)
        self.watches = Watches(self)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic change: all of it lands, or none of it (also across SIGKILL or power loss)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def stamp(self) -> tuple[int, ...]:
        """What changes when any process commits here (the WAL grows or is rewritten, a checkpoint
        writes the file): a stat, not a query, so a value asked on every SIP request can be re-read
        only after a change. Timestamps are coarse (a clock tick): callers re-read now and then anyway."""
        stamp: list[int] = []
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                found = os.stat(path)
            except FileNotFoundError:
                stamp += (0, 0)
            else:
                stamp += (found.st_mtime_ns, found.st_size)
        return tuple(stamp)

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._db.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    def check_integrity(self) -> str:
        """SQLite's own verdict on the file: 'ok' or a description of the damage."""
        return self.read("PRAGMA integrity_check")[0][0]

    def _migrate(self) -> None:
        current = self._db.execute("PRAGMA user_version").fetchone()[0]
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema {current}, newer than this software knows ({len(MIGRATIONS)})"
            )
        for version in range(current, len(MIGRATIONS)):
            with self.transaction() as db:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does; SQLite gives its WAL the same mode."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    path.chmod(0o600)
