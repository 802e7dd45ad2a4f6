"""`vaxelctl` and `python -m vaxelctl`: the command line, imported here so that a Ctrl-C while it
loads (about half a second: typer, rich, aiocoap, pydantic) ends it quietly, exit 130, as a Ctrl-C
during a command does (vaxelctl.remote.run), instead of a traceback through the imports."""

import os


def main() -> None:
    try:
        from vaxelctl.cli import main as command_line
    except KeyboardInterrupt:
        os._exit(130)  # nothing was done yet: nothing to undo or to say
    command_line()


if __name__ == "__main__":
    main()
