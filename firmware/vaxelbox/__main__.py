"""`vaxelbox` and `python -m vaxelbox`: a plain `run` starts the agent without the command line's
typer (vaxelbox.agent.command explains why and what counts as plain); all else is vaxelbox.cli."""

import sys


def main() -> None:
    from vaxelbox.agent.command import plain_run, run_agent

    flags = plain_run(sys.argv[1:])
    if flags is None:
        from vaxelbox.cli import main as command_line

        command_line()
        return
    try:
        code = run_agent(flags)
    except KeyboardInterrupt:  # before the agent's own SIGINT handling: as typer (click) says it
        sys.stderr.write("\nAborted!\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
