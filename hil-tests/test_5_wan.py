"""Suite 5, the WAN: the board's health monitor sees the WAN cut within 5 s, and its return.

Timing comes from the agent's own "cloud state" events (timestamped on the
board), measured from the moment the cable was pulled. (Local mode comes with
a later capability; this suite grows then.)"""

import datetime
import json
import time

import pytest

pytestmark = pytest.mark.lab_needs("HIL_WAN_CUT", "HIL_WAN_RESTORE")
DETECT_WITHIN = 5.0


def cloud_changes(lab, shell, since: float) -> list[tuple[float, str]]:
    changes = []
    for line in lab.agent_log(shell).splitlines():
        if '"cloud state"' not in line:
            continue
        event = json.loads(line)
        at = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        if at >= since:
            changes.append((at, event["new"]))
    return changes


def wait_for_state(lab, shell, since: float, wanted: str, limit: float) -> float:
    deadline = time.time() + limit
    while time.time() < deadline:
        for at, state in cloud_changes(lab, shell, since):
            if state == wanted:
                return at - since
        time.sleep(0.2)
    raise AssertionError(f"the board never reported the cloud {wanted!r} (waited {limit} s)")


def test_wan_cut_is_seen_within_5_s_and_its_return_too(lab, shell, installer, measure):
    status = json.loads(lab.vaxelctl(installer, "status", "--json").stdout)
    if status["cloud"] != "up":
        wait_for_state(lab, shell, 0, "up", 30)
    cut_at = time.time()
    lab.cut_wan()
    try:
        seen = wait_for_state(lab, shell, cut_at, "down", DETECT_WITHIN + 10)
    finally:
        restored_at = time.time()
        lab.restore_wan()
    assert seen <= DETECT_WITHIN, f"the WAN cut was seen after {seen:.1f} s"
    back = wait_for_state(lab, shell, restored_at, "up", 20)
    measure("WAN cut seen by the health monitor after", f"{seen:.1f} s (limit {DETECT_WITHIN:.0f} s)")
    measure("WAN return seen after", f"{back:.1f} s")
