"""Devices provisioning has seen, the enrolment window, and each enrolled device's credential.

Implements phoneprov's DeviceBook. The credential is a secret: it lives only
here (0600 database) and in the device's own configuration file. The records
(Sighting, Enrolment, Enrolled) are defined here, the lower layer, and phoneprov
uses them: the store imports nothing of phoneprov.
"""

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vaxelbox.store.database import Store

MAX_UNENROLLED = 2000  # devices never enrolled are forgotten oldest first beyond this


@dataclass(frozen=True)
class Sighting:
    mac: str
    vendor: str | None
    model: str | None
    firmware: str | None
    ip: str
    user_agent: str
    file: str
    at: float


@dataclass(frozen=True)
class Enrolment:
    """An enrolment window the installer opened: for every assigned MAC, or only for `macs`."""

    until: float
    macs: frozenset[str] | None = None

    def admits(self, mac: str, now: float) -> bool:
        return now < self.until and (self.macs is None or mac in self.macs)


@dataclass(frozen=True)
class Enrolled:
    """A device that received its configuration; it proves itself with `credential` from now on."""

    credential: str
    at: float
    ip: str


@dataclass(frozen=True)
class SeenDevice:
    mac: str
    vendor: str | None
    model: str | None
    firmware: str | None
    ip: str
    user_agent: str
    last_file: str
    first_seen: float
    last_seen: float
    enrolled_at: float | None


class Devices:
    def __init__(self, store: "Store") -> None:
        self._store = store

    def record(self, sighting: Sighting) -> bool:
        s = sighting
        with self._store.transaction() as db:
            known = db.execute("SELECT 1 FROM device WHERE mac = ?", (s.mac,)).fetchone() is not None
            db.execute(
                """INSERT INTO device(mac, vendor, model, firmware, ip, user_agent, last_file,
                                      first_seen, last_seen)
                   VALUES (?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(mac) DO UPDATE SET
                     vendor = coalesce(excluded.vendor, vendor), model = coalesce(excluded.model, model),
                     firmware = coalesce(excluded.firmware, firmware), ip = excluded.ip,
                     user_agent = excluded.user_agent, last_file = excluded.last_file,
                     last_seen = excluded.last_seen""",
                (s.mac, s.vendor, s.model, s.firmware, s.ip, s.user_agent, s.file, s.at, s.at),
            )
            if not known:
                db.execute(
                    """DELETE FROM device WHERE credential IS NULL AND mac IN (
                         SELECT mac FROM device WHERE credential IS NULL
                         ORDER BY last_seen DESC LIMIT -1 OFFSET ?)""",
                    (MAX_UNENROLLED,),
                )
        return not known

    def all(self) -> list[SeenDevice]:
        rows = self._store.read(
            """SELECT mac, vendor, model, firmware, ip, user_agent, last_file, first_seen, last_seen,
                      enrolled_at FROM device ORDER BY last_seen DESC"""
        )
        return [SeenDevice(**dict(row)) for row in rows]

    def enrolment(self) -> Enrolment | None:
        rows = self._store.read("SELECT until, macs FROM enrolment")
        if not rows:
            return None
        macs = rows[0]["macs"]
        return Enrolment(rows[0]["until"], frozenset(json.loads(macs)) if macs is not None else None)

    def open_enrolment(self, minutes: float, macs: list[str] | None = None) -> Enrolment:
        """Open the window, or widen the one already open: the phones of both (every assigned phone
        if either is for all), until the later end, so nothing an installer opened closes early.
        Naming MACs re-enrols them: their old credentials are void."""
        now = time.time()
        until, wanted = now + minutes * 60, frozenset(macs) if macs else None
        with self._store.transaction() as db:
            row = db.execute("SELECT until, macs FROM enrolment").fetchone()
            if row is not None and row[0] > now:
                until = max(until, row[0])
                if wanted is not None:
                    wanted = None if row[1] is None else wanted | frozenset(json.loads(row[1]))
            window = Enrolment(until, wanted)
            db.execute(
                "INSERT OR REPLACE INTO enrolment(only_row, until, macs) VALUES (1, ?, ?)",
                (window.until, json.dumps(sorted(window.macs)) if window.macs else None),
            )
            for mac in macs or []:
                db.execute(
                    "UPDATE device SET credential = NULL, enrolled_at = NULL, enrolled_ip = NULL"
                    " WHERE mac = ?",
                    (mac,),
                )
        return window

    def open_until(self, mac: str, now: float) -> float | None:
        """The end of the enrolment window that admits `mac` at `now` (s since the epoch), or None."""
        window = self.enrolment()
        return window.until if window is not None and window.admits(mac, now) else None

    def close_enrolment(self) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM enrolment")

    def enrolled(self, mac: str) -> Enrolled | None:
        rows = self._store.read(
            "SELECT credential, enrolled_at, enrolled_ip FROM device"
            " WHERE mac = ? AND credential IS NOT NULL",
            (mac,),
        )
        return (
            Enrolled(rows[0]["credential"], rows[0]["enrolled_at"], rows[0]["enrolled_ip"]) if rows else None
        )

    def enrol(self, mac: str, enrolled: Enrolled) -> None:
        with self._store.transaction() as db:
            db.execute(
                "UPDATE device SET credential = ?, enrolled_at = ?, enrolled_ip = ? WHERE mac = ?",
                (enrolled.credential, enrolled.at, enrolled.ip, mac),
            )

    def forget(self, mac: str) -> bool:
        """Drop a device and its credential (unassigned, replaced or stolen)."""
        with self._store.transaction() as db:
            return db.execute("DELETE FROM device WHERE mac = ?", (mac,)).rowcount > 0
