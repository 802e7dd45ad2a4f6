"""Persistent state that survives power loss: SQLite in WAL mode, one transaction per change."""

from vaxelbox.store.database import Store, StoreError
from vaxelbox.store.sites import FileApplied, FileRecord, SiteConflict, SiteVersion

__all__ = ["FileApplied", "FileRecord", "SiteConflict", "SiteVersion", "Store", "StoreError"]
