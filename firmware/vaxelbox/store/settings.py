"""Small named settings the agent must keep across restarts (e.g. the installer's forced mode)."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vaxelbox.store.database import Store


class Settings:
    def __init__(self, store: "Store") -> None:
        self._store = store

    def get(self, name: str, default: str | None = None) -> str | None:
        rows = self._store.read("SELECT value FROM setting WHERE name = ?", (name,))
        return rows[0][0] if rows else default

    def set(self, name: str, value: str | None) -> None:
        """Set (or, with None, remove) a setting, in one transaction."""
        with self._store.transaction() as db:
            if value is None:
                db.execute("DELETE FROM setting WHERE name = ?", (name,))
            else:
                db.execute("INSERT OR REPLACE INTO setting(name, value) VALUES (?, ?)", (name, value))
