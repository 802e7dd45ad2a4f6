"""The mode machine: online -> local when the cloud is down, back only after a hold-down."""

from vaxelbox.edge.health import CloudHealth, CloudState
from vaxelbox.routing.mode import Mode, ModeMachine


def test_down_goes_local_at_once_and_up_waits_for_the_hold_down():
    machine = ModeMachine(now=0, hold_down=30)
    assert machine.cloud(CloudState.UP, 1) is None
    change = machine.cloud(CloudState.DOWN, 10)
    assert (change.old, change.new, change.reason) == (Mode.ONLINE, Mode.LOCAL, "the cloud stopped answering")
    assert machine.back_online_at is None  # local, the cloud still down: no end in sight
    assert machine.cloud(CloudState.UP, 20) is None
    assert machine.back_online_at == 50  # what status shows during the hold-down
    assert machine.tick(49.9) is None
    back = machine.tick(50)
    assert (back.new, back.at, machine.since) == (Mode.ONLINE, 50, 50)
    assert machine.back_online_at is None


def test_a_flapping_link_restarts_the_hold_down():
    machine = ModeMachine(now=0, hold_down=30)
    machine.cloud(CloudState.DOWN, 1)
    machine.cloud(CloudState.UP, 2)
    machine.cloud(CloudState.DEGRADED, 25)  # one lost probe
    assert machine.back_online_at is None
    machine.cloud(CloudState.UP, 26)
    assert machine.back_online_at == 56
    assert machine.tick(40) is None
    assert machine.tick(55) is None
    assert machine.tick(56).new is Mode.ONLINE


def test_degraded_alone_does_not_leave_online():
    machine = ModeMachine(now=0)
    assert machine.cloud(CloudState.DEGRADED, 1) is None
    assert machine.mode is Mode.ONLINE


def test_forced_local_holds_until_auto():
    machine = ModeMachine(now=0, hold_down=30)
    machine.cloud(CloudState.UP, 0)
    assert machine.force_local(5).new is Mode.LOCAL
    assert machine.back_online_at is None  # an installer's order: no hold-down ends it
    assert machine.tick(100) is None
    assert machine.cloud(CloudState.UP, 101) is None
    assert machine.auto(102).new is Mode.ONLINE  # the cloud was up all along: no hold-down


def test_auto_soon_after_the_cloud_returned_waits_out_its_hold_down():
    """It went online at once, saying "the cloud answered for 30 s" of a cloud back for 11 s."""
    machine = ModeMachine(now=0, hold_down=30)
    machine.cloud(CloudState.DOWN, 1)
    machine.cloud(CloudState.UP, 90)
    machine.force_local(95)
    assert machine.auto(101) is None
    assert (machine.mode, machine.back_online_at) == (Mode.LOCAL, 120)
    assert machine.tick(120).reason == "the cloud answered for 30 s"


def test_auto_while_the_cloud_is_down_stays_local():
    machine = ModeMachine(now=0, forced=True)
    assert machine.mode is Mode.LOCAL
    machine.cloud(CloudState.DOWN, 1)
    assert machine.auto(2) is None
    assert machine.mode is Mode.LOCAL
    assert machine.reason == "override ended; the cloud is still unreachable"  # not "forced" any more
    machine.cloud(CloudState.UP, 3)
    assert machine.tick(33).new is Mode.ONLINE


def test_one_lost_probe_never_flips_the_office():
    """The health monitor and the mode machine together: 2 misses, then an answer: still online."""
    health = CloudHealth()
    machine = ModeMachine(now=0)
    changes = []
    health.subscribe(lambda change: changes.append(machine.cloud(change.new, change.at)))
    health.success(now=0)
    health.failure(now=1)
    health.failure(now=2)
    health.success(now=3)
    assert machine.mode is Mode.ONLINE
    health.failure(now=4)
    health.failure(now=5)
    health.failure(now=6)
    assert machine.mode is Mode.LOCAL
    assert machine.since == 6
