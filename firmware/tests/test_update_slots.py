"""The A/B slot state machine without I/O: try, commit, and roll back on each failure kind."""

import pytest
from vaxelbox.update import slots
from vaxelbox.update.lwm2m import Result
from vaxelbox.update.slots import Bundle, Failure, Install, MarkBad, MarkGood, Refused, Restart, Slots

BOARD = "simboard"
FRESH = Slots(versions={"A": "0.1.0", "B": None}, primary="A", booted="A")
NEWER = Bundle("0.2.0", (BOARD,))
DEADLINE = 30.0


def on_trial(now: float = 100.0) -> Slots:
    """Applied 0.2.0 and booted into it at `now`."""
    applied = slots.apply(FRESH, NEWER, BOARD, running="0.1.0").state
    return slots.boot(applied, now, DEADLINE).state


def test_apply_installs_into_the_inactive_slot_and_restarts_into_it_once() -> None:
    step = slots.apply(FRESH, NEWER, BOARD, running="0.1.0")
    assert step.actions == [Install("B"), Restart("trying 0.2.0 in slot B")]
    assert step.state.primary == "A"
    assert step.state.versions["B"] == "0.2.0"
    booted = slots.boot(step.state, now=100.0, deadline_s=DEADLINE).state
    assert booted.booted == "B"
    assert booted.trial is not None
    assert booted.trial.deadline == 130.0


def test_healthy_in_time_commits_the_new_slot() -> None:
    step = slots.healthy(on_trial(), now=120.0)
    assert step.actions == [MarkGood("B")]
    assert step.state.primary == "B"
    assert step.state.trial is None
    assert step.state.outcome is not None
    assert step.state.outcome.result == Result.SUCCESS
    assert slots.boot(step.state, 200.0, DEADLINE).state.booted == "B"  # and stays there


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        (Failure.CRASH, "the agent exited with status 1"),
        (Failure.HANG, "the watchdog reset the board"),
        (Failure.HEALTH, "SIP is not listening"),
    ],
)
def test_each_failure_rolls_back_to_the_previous_slot_naming_why(kind: Failure, detail: str) -> None:
    step = slots.failed(on_trial(), kind, detail)
    assert step.state.primary == "A"
    assert step.state.booted == "A"
    assert step.state.trial is None
    assert step.state.bad == ("B",)
    outcome = step.state.outcome
    assert outcome is not None
    assert outcome.result == Result.UPDATE_FAILED
    assert f"({kind.value}): {detail}" in outcome.reason
    assert "back on slot A" in outcome.reason
    assert step.actions == [MarkBad("B", outcome.reason), Restart(outcome.reason)]


def test_no_healthy_report_by_the_deadline_rolls_back() -> None:
    trial = on_trial(now=100.0)
    assert slots.tick(trial, now=129.9).state == trial
    step = slots.tick(trial, now=130.1)
    assert step.state.primary == "A"
    assert step.state.outcome is not None
    assert "(deadline)" in step.state.outcome.reason


def test_healthy_after_the_deadline_is_not_committed() -> None:
    step = slots.healthy(on_trial(now=100.0), now=131.0)
    assert step.state.primary == "A"
    assert isinstance(step.actions[0], MarkBad)


def test_a_power_cut_during_the_trial_boots_the_previous_slot() -> None:
    step = slots.boot(on_trial(), now=500.0, deadline_s=DEADLINE)  # the trial's one try is used
    assert step.state.booted == "A"
    assert step.state.primary == "A"
    assert step.state.outcome is not None
    assert "(interrupted)" in step.state.outcome.reason
    assert all(not isinstance(a, Restart) for a in step.actions)  # the init is booting already


def test_a_power_cut_after_apply_before_the_restart_still_tries_the_new_slot_once() -> None:
    applied = slots.apply(FRESH, NEWER, BOARD, running="0.1.0").state
    assert slots.boot(applied, 0.0, DEADLINE).state.booted == "B"


def test_state_survives_its_json_form() -> None:
    trial = on_trial()
    assert Slots.from_dict(trial.to_dict()) == trial


@pytest.mark.parametrize(
    ("bundle", "running", "why"),
    [
        (Bundle("0.2.0", ("rpi-4b",)), "0.1.0", "the bundle is for rpi-4b, this appliance is simboard"),
        (Bundle("0.2.0", ()), "0.1.0", "the bundle is for no board, this appliance is simboard"),
        (Bundle("0.0.9", (BOARD,)), "0.1.0", "0.0.9 is a downgrade of the running 0.1.0"),
        (Bundle("0.1.0", (BOARD,)), "0.1.0", "0.1.0 is the same version of the running 0.1.0"),
        (Bundle("1.0-beta", (BOARD,)), "0.1.0", "version '1.0-beta' is not dotted numbers"),
    ],
)
def test_refusals_name_their_reason_and_write_nothing(bundle: Bundle, running: str, why: str) -> None:
    with pytest.raises(Refused, match=why) as refused:
        slots.apply(FRESH, bundle, BOARD, running=running)
    assert refused.value.result == Result.UNSUPPORTED_PACKAGE


def test_a_downgrade_goes_through_when_forced() -> None:
    step = slots.apply(FRESH, Bundle("0.0.9", (BOARD,)), BOARD, running="0.1.0", force=True)
    assert step.actions[0] == Install("B")


def test_a_second_apply_during_a_trial_is_refused() -> None:
    with pytest.raises(Refused, match="on trial"):
        slots.apply(on_trial(), Bundle("0.3.0", (BOARD,)), BOARD, running="0.2.0")


def test_after_a_roll_back_the_next_bundle_goes_to_the_failed_slot() -> None:
    back = slots.failed(on_trial(), Failure.CRASH, "exit 1").state
    step = slots.apply(back, Bundle("0.2.1", (BOARD,)), BOARD, running="0.1.0")
    assert step.actions[0] == Install("B")
    assert step.state.bad == ()
