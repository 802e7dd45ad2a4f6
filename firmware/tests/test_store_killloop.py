"""SIGKILL at any moment leaves either the old or the new site version active, never a mix.

A child process applies large site versions in a loop; the parent kills it
after a random delay, 100 times, and after every kill checks the store: the
file is intact, the active version is whole (its digest matches, its trailer
is there), nothing acknowledged was lost, and at most the one in flight landed.
This is process death; a power cut additionally relies on SQLite's WAL with
synchronous=FULL, which this machine cannot cut the power to prove.
"""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from vaxelbox.store import Store
from vaxelbox.store.sites import KEEP_VERSIONS, digest_of

KILLS = 100  # each a fresh writer process (~0.15 s): 100 random moments cover the write path
WRITER = Path(__file__).with_name("store_writer.py")


def run_and_kill(data_dir: Path, start: int, delay: float) -> list[int]:
    """Start a writer, kill it `delay` seconds after it opened the store; the versions it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(data_dir), str(start)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "ready"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    output = child.stdout.read()
    child.wait()
    assert child.returncode == -signal.SIGKILL
    return [int(line.split()[1]) for line in output.splitlines() if line.startswith("committed ")]


def test_sigkill_never_leaves_a_mix(tmp_path):
    rng = random.Random(20261122)
    data_dir = tmp_path / "data"
    acknowledged = 0
    landed_in_flight = 0
    for kill in range(KILLS):
        committed = run_and_kill(data_dir, start=kill * 1000, delay=rng.uniform(0, 0.05))
        if committed:
            acknowledged = committed[-1]
        store = Store(data_dir)
        try:
            assert store.check_integrity() == "ok", f"kill {kill}"
            active = store.sites.active()
            if active is None:
                assert acknowledged == 0, f"kill {kill}: acknowledged version {acknowledged} lost"
                continue
            assert active.digest == digest_of(active.source), f"kill {kill}: torn version"
            assert active.source.startswith("sequence = ")
            assert active.source.endswith(f"# end of version {active.source.split()[2]}\n")
            assert acknowledged <= active.number <= acknowledged + 1, f"kill {kill}"
            landed_in_flight += active.number == acknowledged + 1
            acknowledged = active.number
            numbers = [v.number for v in store.sites.history()]
            assert numbers == list(range(active.number, max(0, active.number - KEEP_VERSIONS), -1))
        finally:
            store.close()
    assert acknowledged > KILLS / 2, "the writer hardly ever committed: the delays are too short to test much"
    print(f"{KILLS} kills, {acknowledged} versions, {landed_in_flight} commits landed just before a kill")
