"""The relay's table of calls in progress (routing.calls), without sockets: what `vaxelctl calls`
lists, and that calls whose BYE was lost leave it after MAX_AGE."""

import pytest
from vaxelbox.routing import calls
from vaxelbox.routing.calls import CallTable
from vaxelbox.sip.message import Request, parse_message


def invite(call_id: str, caller: str = "101", callee: str = "102") -> Request:
    message = parse_message(
        (
            f"INVITE sip:{callee}@example.net SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK-1\r\n"
            f"From: <sip:{caller}@example.net>;tag=f\r\nTo: <sip:{callee}@example.net>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Wall clock seconds the table reads, set by the test."""
    now = [1_000_000.0]
    monkeypatch.setattr(calls.time, "time", lambda: now[0])
    return now


def test_a_call_is_listed_ringing_then_up_then_gone(clock: list[float]) -> None:
    table = CallTable()
    table.started(invite("a"), "online", "cloud", None)
    assert [(r["call_id"], r["caller"], r["callee"], r["state"]) for r in table.rows()] == [
        ("a", "101", "102", "ringing")
    ]
    table.answered("a")
    assert table.rows()[0]["state"] == "up"
    table.ended("a")
    assert table.rows() == []


def test_calls_older_than_max_age_are_dropped_and_the_rest_kept(clock: list[float]) -> None:
    table = CallTable(max_age=100.0)
    table.started(invite("first"), "online", "cloud", None)
    clock[0] += 60
    table.started(invite("second"), "online", "cloud", None)
    table.answered("first")  # answered later: still as old as when it started
    clock[0] += 50  # "first" is 110 s old, "second" 50 s
    table.started(invite("third"), "online", "cloud", None)
    assert [r["call_id"] for r in table.rows()] == ["second", "third"]
    clock[0] += 200
    assert table.rows() == []
    assert len(table) == 0


def test_a_call_seen_twice_keeps_its_first_record(clock: list[float]) -> None:
    table = CallTable()
    table.started(invite("a", caller="101"), "online", "cloud", None)
    table.started(invite("a", caller="cloud"), "online", "phone", None)  # the cloud's leg back
    assert [(r["caller"], r["route"]) for r in table.rows()] == [("101", "cloud")]


def test_a_clock_stepped_back_does_not_keep_expired_calls(clock: list[float]) -> None:
    """NTP steps the wall clock back between two calls: the call started second is then older by
    its start time than the first, and must still expire (found by helper-51 in an early-break scan
    that trusted insertion order)."""
    table = CallTable(max_age=3600.0)
    table.started(invite("A"), "online", "cloud", None)
    clock[0] -= 600
    table.started(invite("B"), "online", "cloud", None)
    clock[0] += 3601
    assert [r["call_id"] for r in table.rows()] == ["A"]
