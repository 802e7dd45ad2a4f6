"""SIGKILL at any moment leaves either the old or the new site version active, never a mix.

A child process applies large site versions in a loop; the parent kills it
after a random delay, 100 times, and after every kill checks the store: the
file is intact, the active version is whole (its digest matches, its trailer
is there), nothing acknowledged was lost, and at most the one in flight landed.
This is process death; a power cut additionally relies on SQLite's WAL with
synchronous=FULL, which this machine cannot cut the power to prove.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from vaxelbox.store import Store
from vaxelbox.store.sites import KEEP_VERSIONS, digest_of

KILLS = 100  # each a fresh writer process (forked: ~0.05 s): 100 random moments cover the write path
WRITER = Path(__file__).with_name("store_writer.py")


def run_and_kill(writers: subprocess.Popen[str], start: int, delay: float) -> list[int]:
    """Have `writers` (store_writer.py) fork a writer and kill it `delay` seconds after it opened the
    store; the versions it acknowledged."""
    assert writers.stdin is not None
    assert writers.stdout is not None
    writers.stdin.write(f"{start}\n")
    writers.stdin.flush()
    ready = writers.stdout.readline().split()
    assert ready[:1] == ["ready"], ready
    time.sleep(delay)
    os.kill(int(ready[1]), signal.SIGKILL)
    output = []
    while not (line := writers.stdout.readline()).startswith("dead "):
        assert line, "the writers' fork server ended"
        output.append(line)
    assert line.split() == ["dead", ready[1], str(int(signal.SIGKILL))]  # killed, not ended
    return [int(line.split()[1]) for line in output if line.startswith("committed ")]


def check(data_dir: Path, kill: int, acknowledged: int) -> int:
    """The store after `kill`, whose writer acknowledged up to version `acknowledged` (0: none yet):
    intact, its active version whole and at most the one in flight past it; that version's number."""
    store = Store(data_dir)
    try:
        assert store.check_integrity() == "ok", f"kill {kill}"
        active = store.sites.active()
        if active is None:
            assert acknowledged == 0, f"kill {kill}: acknowledged version {acknowledged} lost"
            return 0
        assert active.digest == digest_of(active.source), f"kill {kill}: torn version"
        assert active.source.startswith("sequence = ")
        assert active.source.endswith(f"# end of version {active.source.split()[2]}\n")
        assert acknowledged <= active.number <= acknowledged + 1, f"kill {kill}"
        numbers = [v.number for v in store.sites.history()]
        assert numbers == list(range(active.number, max(0, active.number - KEEP_VERSIONS), -1))
        return active.number
    finally:
        store.close()


def test_sigkill_never_leaves_a_mix(tmp_path):
    rng = random.Random(20261122)
    data_dir = tmp_path / "data"
    acknowledged = 0
    landed_in_flight = 0
    writers = subprocess.Popen(
        [sys.executable, str(WRITER), str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        for kill in range(KILLS):
            committed = run_and_kill(writers, start=kill * 1000, delay=rng.uniform(0, 0.05))
            if committed:
                acknowledged = committed[-1]
            active = check(data_dir, kill, acknowledged)
            landed_in_flight += active == acknowledged + 1
            acknowledged = active or acknowledged
    finally:
        writers.stdin.close()  # type: ignore[union-attr]  # the fork server ends at end of input
        writers.wait(10)
    assert acknowledged > KILLS / 2, "the writer hardly ever committed: the delays are too short to test much"
    print(f"{KILLS} kills, {acknowledged} versions, {landed_in_flight} commits landed just before a kill")
