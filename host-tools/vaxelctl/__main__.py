"""`vaxelctl` and `python -m vaxelctl`: the command line, imported here so that a Ctrl-C while it
loads (about half a second: typer, rich, aiocoap, pydantic) or while typer builds its commands ends
it quietly, exit 130, as a Ctrl-C during a command does (vaxelctl.remote.run), instead of a
traceback through the imports or through typer."""

import contextlib
import os
import sys


def main() -> None:
    try:
        from vaxelctl.cli import main as command_line

        command_line()
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):  # what was printed stays; nothing else is said
            sys.stdout.flush()
        os._exit(130)


if __name__ == "__main__":
    main()
