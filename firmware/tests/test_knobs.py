"""Test knobs (vaxelbox.knobs): read, range-checked, refused and warned about in one place."""

import logging

import pytest
from vaxelbox.edge.health import BACKOFF_CEILING, CEILING_ENV, _ceiling
from vaxelbox.knobs import knob
from vaxelbox.local.replay import BACKOFF, BACKOFF_SCALE_ENV, default_backoff

NAME = "VAXELBOX_TEST_KNOB"


def test_unset_is_the_default_and_says_nothing(monkeypatch, caplog) -> None:
    monkeypatch.delenv(NAME, raising=False)
    with caplog.at_level(logging.WARNING):
        assert knob(NAME, 8.0, 8.0, "a wait of {} s") == 8.0
    assert caplog.text == ""


def test_a_value_in_range_is_used_and_warned_about_with_the_callers_words(monkeypatch, caplog) -> None:
    monkeypatch.setenv(NAME, "2.5")
    with caplog.at_level(logging.WARNING, logger="vaxelbox.knobs"):
        assert knob(NAME, 8.0, 8.0, "a wait of {} s") == 2.5
    assert f"a wait of 2.5 s ({NAME}: a test knob)" in caplog.text


@pytest.mark.parametrize("text", ["0", "-1", "9", "inf", "nan", "soon", ""])
def test_anything_else_is_refused_naming_the_variable(monkeypatch, text) -> None:
    monkeypatch.setenv(NAME, text)
    with pytest.raises(ValueError, match=NAME):
        knob(NAME, 8.0, 8.0, "a wait of {} s")


def test_the_product_knobs_log_what_their_end_to_end_tests_look_for(monkeypatch, caplog) -> None:
    """test_good_neighbour*.py find 'probe backoff ceiling 4 s' in the agent's log; a change of
    wording broke them once (the warning said 'probe backoff ceiling (s) 4')."""
    monkeypatch.setenv(CEILING_ENV, "4")
    monkeypatch.setenv(BACKOFF_SCALE_ENV, "0.2")
    with caplog.at_level(logging.WARNING, logger="vaxelbox.knobs"):
        assert _ceiling() == 4.0 < BACKOFF_CEILING
        assert default_backoff() == tuple(seconds * 0.2 for seconds in BACKOFF)
    assert f"probe backoff ceiling 4 s ({CEILING_ENV}: a test knob)" in caplog.text
    assert f"journal replay backoff scaled by 0.2 ({BACKOFF_SCALE_ENV}: a test knob)" in caplog.text
