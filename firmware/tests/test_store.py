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


def test_a_site_file_seeds_the_store_only_when_its_text_changed(store):
    first = store.sites.apply_file("a = 1", "/etc/vaxelbox/site.toml")
    assert (first.changed, first.active.number, first.replaced) == (True, 1, None)
    edit = store.sites.apply("a = 1\nb = 2", "pushed by installer lisa")
    again = store.sites.apply_file("a = 1", "/etc/vaxelbox/site.toml")  # a restart or SIGHUP
    assert (again.changed, again.active) == (False, edit)
    assert store.sites.active() == edit


def test_a_changed_site_file_over_an_appliance_edit_names_the_edit(store):
    store.sites.apply_file("a = 1", "/etc/vaxelbox/site.toml")
    edit = store.sites.apply("a = 1\nb = 2", "assign 80:5e:c0:11:22:55 to fredrik")
    applied = store.sites.apply_file("a = 3", "/etc/vaxelbox/site.toml")
    assert (applied.changed, applied.active.number, applied.replaced) == (True, 3, edit)
    record = store.sites.file_record("/etc/vaxelbox/site.toml")
    assert (record.version, record.replaced) == (3, 2)
    assert store.sites.get(2) == edit  # kept for `site rollback 2`
    # A file change over its own earlier text, or over the demo site, overwrote no edit.
    assert store.sites.apply_file("a = 4", "/etc/vaxelbox/site.toml").replaced is None


def test_a_store_from_before_file_records_does_not_take_the_file_for_new(store):
    store.sites.apply("a = 1", "file /etc/vaxelbox/site.toml")  # applied by an older agent
    assert store.sites.apply_file("a = 1", "/etc/vaxelbox/site.toml").changed is False
    store.sites.apply("a = 2", "pushed by installer lisa")
    assert store.sites.apply_file("a = 1", "/etc/vaxelbox/site.toml").changed is False
    assert store.sites.active().source == "a = 2"
