"""Reading a site file: TOML syntax, then structure, then references; every problem located."""

import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path

from pydantic import ValidationError

from vaxelbox.problems import ConfigError, Problem, read_config, report, validation_problems
from vaxelbox.site.model import Site
from vaxelbox.site.references import check_references

_TOML_POSITION = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


class SiteError(ConfigError):
    """A site file that cannot be applied; the running site stays."""


def parse_site(text: str, source: str = "<site>") -> Site:
    """The validated site in `text`, or SiteError naming every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteError(source, [_syntax_problem(str(exc))]) from None
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        raise SiteError(source, validation_problems(exc, Site)) from None
    if problems := check_references(site):
        raise SiteError(source, problems)
    return site


def load_site(path: Path) -> Site:
    return parse_site(read_config(path, SiteError), str(path))


def check_site_file(path: Path, as_json: bool) -> bool:
    """Validate a site file and print the verdict for a person (or as JSON). True if valid."""
    try:
        site = load_site(path)
    except SiteError as exc:
        report(exc, as_json)
        return False
    if as_json:
        print(json.dumps({"ok": True, "file": str(path), "summary": site.summary()}, ensure_ascii=False))
    else:
        print(f"{path}: OK — {site.site.name}: {site.summary()}")
    return True


def demo_site_text() -> str:
    """The embedded demo office, as TOML."""
    return files("vaxelbox.site").joinpath("demo.toml").read_text(encoding="utf-8")


def demo_site() -> Site:
    return parse_site(demo_site_text(), "demo.toml")


def _syntax_problem(message: str) -> Problem:
    match = _TOML_POSITION.match(message)
    if match:
        return Problem(f"line {match['line']}, column {match['col']}", f"TOML syntax: {match['msg']}")
    return Problem("(file)", f"TOML syntax: {message}")
