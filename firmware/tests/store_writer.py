"""Child process for the kill-loop test: applies site versions to a store as fast as it can.

Each source embeds its own sequence number and a trailer, so the parent can
tell a whole version from a torn one. Prints `committed N` after each commit
returns (the commit is then durable), flushing so the parent sees it at once.
"""

import random
import sys
from pathlib import Path

from vaxelbox.store import Store


def source(sequence: int) -> str:
    # 50-250 KB, so a commit spans many pages and a kill often lands inside it.
    rng = random.Random(sequence)
    body = "".join(f"# filler {rng.random()}\n" for _ in range(rng.randint(2000, 10000)))
    return f"sequence = {sequence}\n{body}# end of version {sequence}\n"


def main() -> None:
    store = Store(Path(sys.argv[1]))
    start = int(sys.argv[2])
    print("ready", flush=True)
    for sequence in range(start, start + 1_000_000):
        version = store.sites.apply(source(sequence), f"writer {sequence}")
        print(f"committed {version.number}", flush=True)


if __name__ == "__main__":
    main()
