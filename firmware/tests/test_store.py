"""The store keeps every applied site version, atomically, privately, and refuses what is not its own."""

import sqlite3
import stat

import pytest
from vaxelbox.store import Store, StoreError
from vaxelbox.store.sites import KEEP_VERSIONS, digest_of


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


def test_apply_makes_a_new_active_version(store):
    first = store.sites.apply("a = 1", "test")
    second = store.sites.apply("a = 2", "test")
    assert (first.number, second.number) == (1, 2)
    assert store.sites.active() == second
    assert second.digest == digest_of("a = 2")


def test_applying_the_active_text_again_changes_nothing(store):
    store.sites.apply("a = 1", "boot")
    assert store.sites.apply("a = 1", "boot again").number == 1
    assert len(store.sites.history()) == 1


def test_rollback_reapplies_an_old_version_as_a_new_one(store):
    store.sites.apply("a = 1", "test")
    store.sites.apply("a = 2", "test")
    rolled = store.sites.rollback(1)
    assert (rolled.number, rolled.source, rolled.origin) == (3, "a = 1", "rollback to 1")
    assert [v.number for v in store.sites.history()] == [3, 2, 1]


def test_rollback_to_an_unknown_version_says_what_is_kept(store):
    store.sites.apply("a = 1", "test")
    with pytest.raises(KeyError, match=r"no site version 7 \(kept: \[1\]\)"):
        store.sites.rollback(7)


def test_old_versions_are_pruned_in_the_same_transaction(store):
    for i in range(KEEP_VERSIONS + 5):
        store.sites.apply(f"a = {i}", "test")
    numbers = [v.number for v in store.sites.history()]
    assert numbers == list(range(KEEP_VERSIONS + 5, 5, -1))


def test_active_version_survives_reopening(tmp_path):
    store = Store(tmp_path)
    store.sites.apply("a = 1", "test")
    store.sites.apply("a = 2", "test")
    store.close()
    again = Store(tmp_path)
    assert again.sites.active().source == "a = 2"
    again.close()


def test_files_are_private_because_the_site_holds_sip_passwords(store):
    store.sites.apply("password = 'x'", "test")  # the connection stays open: WAL and SHM exist
    assert stat.S_IMODE(store.data_dir.stat().st_mode) == 0o700
    files = sorted(store.data_dir.iterdir())
    assert {f.name for f in files} >= {"vaxelbox.db", "vaxelbox.db-wal", "vaxelbox.db-shm"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name


def test_wal_and_full_sync_are_on(store):
    assert store.read("PRAGMA journal_mode")[0][0] == "wal"
    assert store.read("PRAGMA synchronous")[0][0] == 2  # FULL


def test_a_store_from_newer_software_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "vaxelbox.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema 99, newer than this software knows"):
        Store(tmp_path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "vaxelbox.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="file is not a database"):
        Store(tmp_path)


def test_failed_transaction_leaves_nothing(store):
    store.sites.apply("a = 1", "test")

    def half_a_change() -> None:
        with store.transaction() as db:
            db.execute("INSERT INTO site_version VALUES (2, 'd', 'o', 0, 'half')")
            raise RuntimeError("power cut, so to speak")

    with pytest.raises(RuntimeError):
        half_a_change()
    assert [v.number for v in store.sites.history()] == [1]
