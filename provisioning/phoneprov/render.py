"""Rendering: a vendor's templates, with an override chain an installer extends without code.

For a file named NAME of vendor V the renderer uses the first template found:
  devices/<mac>/NAME  ->  models/<model>/NAME  ->  NAME
looked up in the installer's directory (<templates>/V/) before the built-in
one. `builtin/NAME` always reaches the built-in template, so an override can
`{% extends "builtin/NAME" %}` and fill `{% block custom %}`.
"""

import re
from pathlib import Path
from typing import Any

import jinja2

from phoneprov.formats import check_format
from phoneprov.vendors import FileRule

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"


class TemplateError(RuntimeError):
    """A template is missing or broken, or its output does not parse; the message says which."""


class Renderer:
    def __init__(self, override_dir: Path | None = None) -> None:
        self._override_dir = override_dir
        self._environments: dict[str, jinja2.Environment] = {}  # per vendor and escaping

    def render(self, vendor: str, rule: FileRule, context: dict[str, Any]) -> str:
        environment = self._environment(vendor, escape_xml=rule.format == "xml")
        names = _chain(rule.template, context["device"]["mac"], context["device"]["model"])
        try:
            template = environment.select_template(names)
            text = template.render(context)
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{vendor}: no template {rule.template!r}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{vendor}/{rule.template}: {exc}") from None
        try:
            check_format(text, rule.format)
        except ValueError as exc:
            raise TemplateError(
                f"{vendor}/{template.name} renders a broken {rule.format} file: {exc}"
            ) from None
        return text

    def _environment(self, vendor: str, escape_xml: bool) -> jinja2.Environment:
        key = f"{vendor}/{escape_xml}"
        if key not in self._environments:
            builtin = jinja2.FileSystemLoader(BUILTIN_TEMPLATES / vendor)
            search = [jinja2.FileSystemLoader(self._override_dir / vendor)] if self._override_dir else []
            loader = jinja2.ChoiceLoader(
                [jinja2.PrefixLoader({"builtin": builtin}), *search, builtin],
            )
            self._environments[key] = jinja2.Environment(
                loader=loader,
                undefined=jinja2.StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
                keep_trailing_newline=True,
                autoescape=escape_xml,  # by format: Poly's .cfg files are XML too
            )
        return self._environments[key]


def _chain(name: str, mac: str, model: str | None) -> list[str]:
    chain = [f"devices/{mac}/{name}"] if mac else []
    if model:
        chain.append(f"models/{model_slug(model)}/{name}")
    return [*chain, name]


def model_slug(model: str) -> str:
    """`VVX 450` -> `vvx-450`: a directory name an installer can type."""
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
