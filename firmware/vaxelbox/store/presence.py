"""Watchers' presence subscriptions, kept across restarts so no lamp goes dark or stale after one.

A row per subscription: its id, the watched user, the subscription as JSON
(dialog, version, CSeq: what a NOTIFY after the restart must continue from)
and when it expires (wall clock). Written in one transaction per batch.
"""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaxelbox.store.database import Store


@dataclass(frozen=True, slots=True)
class StoredWatch:
    id: str
    resource: str  # site user id
    data: dict[str, Any]
    expires_at: float  # wall clock


class Watches:
    def __init__(self, store: "Store") -> None:
        self._store = store

    def save(self, watches: Iterable[StoredWatch], gone: Iterable[str] = ()) -> None:
        """Write `watches` and delete the ids in `gone`, all in one transaction."""
        with self._store.transaction() as db:
            db.executemany("DELETE FROM presence_watch WHERE id = ?", [(i,) for i in gone])
            db.executemany(
                "INSERT OR REPLACE INTO presence_watch(id, resource, data, expires_at) VALUES (?,?,?,?)",
                [(w.id, w.resource, json.dumps(w.data), w.expires_at) for w in watches],
            )

    def live(self, now: float | None = None) -> list[StoredWatch]:
        """The subscriptions not yet expired; expired ones are deleted."""
        now = time.time() if now is None else now
        with self._store.transaction() as db:
            db.execute("DELETE FROM presence_watch WHERE expires_at <= ?", (now,))
        rows = self._store.read("SELECT id, resource, data, expires_at FROM presence_watch ORDER BY id")
        return [StoredWatch(r["id"], r["resource"], json.loads(r["data"]), r["expires_at"]) for r in rows]
