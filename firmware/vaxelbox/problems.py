"""Problems in a configuration file (site or board), each located by its path.

A path reads like the file: `groups[2].members[0]`. Every message says what
is wrong in words an installer understands, never echoing secret values.
"""

import json
import os
import sys
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

Path = tuple[str | int, ...]
MISSING = "required field is missing"


def format_path(path: Path | str) -> str:
    if isinstance(path, str):
        return path
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "(top level)"


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path | str
    message: str

    @property
    def location(self) -> str:
        return format_path(self.path)

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ConfigError(ValueError):
    """A file that cannot be used; `problems` says each thing wrong and where."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def report(exc: ConfigError, as_json: bool) -> None:
    """Print a refused file's problems: one plain line each on stderr, or JSON on stdout."""
    if as_json:
        problems = [{"path": p.location, "message": p.message} for p in exc.problems]
        print(json.dumps({"ok": False, "file": exc.source, "problems": problems}, ensure_ascii=False))
        return
    # Plain lines, never wrapped: one problem per line is what editors and grep expect.
    for problem in exc.problems:
        print(f"{exc.source}: {problem}", file=sys.stderr)
    print(f"{len(exc.problems)} problem(s); nothing was applied", file=sys.stderr)


def read_config(path: "os.PathLike[str]", error: type[ConfigError]) -> str:
    """The text of a configuration file, or `error` saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(str(path), [Problem("(file)", f"cannot read: {exc}")]) from None


def validation_problems(exc: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """pydantic's errors as located problems, in words for people. A misspelt field is one problem:
    its unknown-field line (with the field meant) comes first, and no "required field is missing"
    for the field it suggests follows; unknown fields come before every other problem."""
    unknown: list[Problem] = []
    others: list[Problem] = []
    meant: set[Path] = set()  # where the unknown fields' suggestions are
    for error in exc.errors():
        path = _clean_path(error["loc"])
        if error["type"] == "missing":
            others.append(Problem(path, MISSING))
        elif error["type"] == "extra_forbidden":
            close = _closest_field(root, path)
            if close:
                meant.add((*path[:-1], close))
            unknown.append(
                Problem(path, f"unknown field (did you mean {close!r}?)" if close else "unknown field")
            )
        else:
            others.append(Problem(path, error["msg"].removeprefix("Value error, ")))
    return unknown + [p for p in others if not (p.message == MISSING and p.path in meant)]


def _clean_path(loc: tuple[int | str, ...]) -> Path:
    """Drop pydantic's internal steps (validator names, union members) from a location."""
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def _closest_field(root: type[BaseModel], path: Path) -> str | None:
    """The field the unknown one at `path` most likely misspells (as written in files), if any."""
    import difflib  # only for a misspelt field: the agent would keep it for life otherwise

    close = difflib.get_close_matches(str(path[-1]), _fields_at(root, path[:-1]), n=1)
    return close[0] if close else None


def _fields_at(root: type[BaseModel], path: Path) -> list[str]:
    """The field names, as written in the file, of the part at `path`."""
    model: type[BaseModel] | None = root
    for step in path:
        if model is None or isinstance(step, int):
            continue
        field = model.model_fields.get(step) or next(
            (f for f in model.model_fields.values() if f.alias == step), None
        )
        model = _model_in(field.annotation) if field else None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside `Model`, `Model | None`, `list[Model]` or `list[Annotated[Model]]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if found := _model_in(arg):
            return found
    return None
