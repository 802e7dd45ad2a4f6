"""Child process for the kill-loop test: forks writers that apply site versions as fast as they can.

It imports the store once, then for each start number read from stdin forks a writer: a fresh
process that opens the store, prints `ready PID`, and applies versions, printing `committed N`
after each commit returns (the commit is then durable), each line in one write(2), so the parent
sees it at once and a kill never leaves half of one (print's text and newline can be two writes).
Once the writer is dead (the parent kills it), this prints `dead PID SIGNAL` (0 when it was not
killed by a signal): every line the writer wrote comes before it. A fork costs milliseconds where
a new interpreter importing the store costs ~70 ms, the bulk of each kill.

Each source embeds its own sequence number and a trailer, so the parent can tell a whole version
from a torn one.
"""

import os
import random
import sys
import traceback
from pathlib import Path

from vaxelbox.store import Store


def source(sequence: int) -> str:
    # 50-250 KB, so a commit spans many pages and a kill often lands inside it.
    rng = random.Random(sequence)
    body = "".join(f"# filler {rng.random()}\n" for _ in range(rng.randint(2000, 10000)))
    return f"sequence = {sequence}\n{body}# end of version {sequence}\n"


def write(data_dir: Path, start: int) -> None:
    """The writer: never returns (it applies versions until it is killed)."""
    store = Store(data_dir)
    os.write(1, f"ready {os.getpid()}\n".encode())
    for sequence in range(start, start + 1_000_000):
        version = store.sites.apply(source(sequence), f"writer {sequence}")
        os.write(1, f"committed {version.number}\n".encode())


def main() -> None:
    data_dir = Path(sys.argv[1])
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                write(data_dir, int(line))
            except BaseException:
                traceback.print_exc()
            os._exit(1)  # never back into the loop above: only the parent forks
        _, status = os.waitpid(pid, 0)
        print(f"dead {pid} {os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0}", flush=True)


if __name__ == "__main__":
    main()
