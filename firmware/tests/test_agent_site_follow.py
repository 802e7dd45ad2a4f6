"""Agent.current_site follows the store, which another process may change (`vaxelbox phones
assign`), without querying it on every SIP request: the store's stamp (a stat) is looked at most
every STAMP_INTERVAL, the store is queried when the stamp changed and at least once per
SITE_RECHECK (a change the coarse stamp missed), and `changed=True` queries at once.

A real Store in tmp_path, changed through a second Store on the same files as the other process
does; the clock (time.monotonic) is the test's; the store's calls are counted."""

import time
from pathlib import Path

import pytest
from vaxelbox.agent.app import SITE_RECHECK, STAMP_INTERVAL, ActiveSite, Agent
from vaxelbox.agent.logs import Redactor
from vaxelbox.agent.options import HostPort, RunOptions
from vaxelbox.site import demo_site_text, parse_site
from vaxelbox.store import Store

LOOK = STAMP_INTERVAL * 1.01  # s: just past the interval (the clock is a float)


class Following:
    """An agent whose active site is version 1 of a store in `data`, with counted store calls."""

    def __init__(self, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(time, "monotonic", lambda: self.now)
        options = RunOptions(None, data, None, HostPort("127.0.0.1", 5060), HostPort("127.0.0.2", 5062), None)
        self.agent = Agent(options, Redactor())
        self.store = self.agent._store = Store(data)
        version = self.store.sites.apply(demo_site_text(), "test")
        self.agent._activate(ActiveSite(parse_site(version.source, "test"), version))
        self.stats = self.queries = 0
        self.frozen: tuple[int, ...] | None = None  # set: the stamp misses every change from now on
        stamp, active_number = self.store.stamp, self.store.sites.active_number

        def counted_stamp() -> tuple[int, ...]:
            self.stats += 1
            return self.frozen or stamp()

        def counted_query() -> int | None:
            self.queries += 1
            return active_number()

        monkeypatch.setattr(self.store, "stamp", counted_stamp)
        monkeypatch.setattr(self.store.sites, "active_number", counted_query)

    def version(self, changed: bool = False) -> int:
        self.agent.current_site(changed=changed)
        assert self.agent.active is not None
        return self.agent.active.version.number

    def other_process_edits(self) -> None:
        """A new active version, written as `vaxelbox phones assign` writes it: another connection."""
        other = Store(self.store.data_dir)
        try:
            other.sites.apply(demo_site_text().replace("Demo", "Edited", 1), "other process")
        finally:
            other.close()


@pytest.fixture
def following(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    running = Following(tmp_path / "data", monkeypatch)
    yield running
    running.store.close()


def test_a_burst_of_calls_stats_the_store_once_and_queries_it_at_most_once(following: Following) -> None:
    following.version()
    stats, queries = following.stats, following.queries
    for _ in range(100):
        following.now += STAMP_INTERVAL / 200
        assert following.version() == 1
    assert (following.stats - stats, following.queries - queries) == (0, 0)
    following.now += LOOK
    following.version()
    assert following.stats - stats == 1


def test_an_unchanged_store_is_queried_about_once_a_second(following: Following) -> None:
    following.version()
    queries, seconds = following.queries, 5
    for _ in range(int(seconds / LOOK)):  # a call at every look
        following.now += LOOK
        following.version()
    assert seconds / SITE_RECHECK - 1 <= following.queries - queries <= seconds / SITE_RECHECK + 1


def test_another_processs_change_is_seen_at_the_next_look(following: Following) -> None:
    following.version()
    following.other_process_edits()
    assert following.version() == 1  # within STAMP_INTERVAL of the last look: not even a stat
    following.now += LOOK
    assert following.version() == 2


def test_a_change_the_stamp_missed_is_seen_within_the_recheck_time(following: Following) -> None:
    """The stamp is a file's mtime and size: a clock tick may hide a change."""
    following.version()
    following.frozen = following.store.stamp()
    following.other_process_edits()
    waited = 0.0
    while following.version() == 1:
        following.now += LOOK
        waited += LOOK
        assert waited <= SITE_RECHECK + LOOK, "the missed change was never seen"


def test_changed_queries_at_once(following: Following) -> None:
    """Management changed the site itself: it must be active when the response goes out."""
    following.version()
    following.other_process_edits()
    assert following.version(changed=True) == 2
