"""Vendor profiles as data: what a vendor's devices send and request, read from vendors/*.toml.

An installer adds or corrects a vendor without code; the templates the
profile names live in templates/<vendor>/.
"""

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

VENDOR_DIR = Path(__file__).parent / "vendors"

FileKind = Literal["device", "common"]
FORMATS = ("yealink-cfg", "xml", "text")


class VendorDataError(ValueError):
    """A vendor file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class FileRule:
    """One file a vendor's devices request, and how it is made."""

    pattern: re.Pattern[str]
    template: str
    kind: FileKind
    format: str
    content_type: str
    example: str

    def match(self, path: str) -> re.Match[str] | None:
        return self.pattern.fullmatch(path)


@dataclass(frozen=True)
class Pnp:
    url: str  # NOTIFY body; {base}, {mac}, {model}
    event_vendors: tuple[str, ...]  # lower-case values of the Event's vendor= parameter


@dataclass(frozen=True)
class DhcpHint:
    option66: str
    option160: str
    option114: str
    option43: str
    notes: str


@dataclass(frozen=True)
class Vendor:
    id: str
    name: str
    oui: tuple[str, ...]
    user_agents: tuple[re.Pattern[str], ...]
    files: tuple[FileRule, ...]
    pnp: Pnp | None
    dhcp: DhcpHint
    # Files the vendor's devices request at boot that we do not serve (logs, overrides, firmware):
    # a 404, never a miss (see service.py).
    unserved: tuple[re.Pattern[str], ...] = ()
    dect_models: re.Pattern[str] | None = None  # models that are DECT bases

    def rule_for(self, path: str) -> tuple[FileRule, re.Match[str]] | None:
        """The rule whose pattern matches `path` (or its last part: devices prefix directories)."""
        candidates = [path, path.rsplit("/", 1)[-1]] if "/" in path else [path]
        for candidate in candidates:
            for rule in self.files:
                if match := rule.match(candidate):
                    return rule, match
        return None

    def documents(self, path: str) -> bool:
        """Whether `path` (or its last part) is a file this vendor's devices ask for, served or not."""
        names = {path, path.rsplit("/", 1)[-1]}
        served = self.rule_for(path) is not None
        return served or any(p.fullmatch(name) for p in self.unserved for name in names)

    def is_dect(self, model: str | None) -> bool:
        return bool(model and self.dect_models and self.dect_models.fullmatch(model))


@cache
def load_vendors(directory: Path = VENDOR_DIR) -> dict[str, Vendor]:
    return {path.stem: _load(path) for path in sorted(directory.glob("*.toml"))}


def _load(path: Path) -> Vendor:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Vendor(
            id=path.stem,
            name=data["name"],
            oui=tuple(o.lower() for o in data.get("oui", [])),
            user_agents=tuple(re.compile(p) for p in data["user_agents"]),
            files=tuple(_file_rule(f) for f in data["files"]),
            pnp=_pnp(data.get("pnp")),
            dhcp=DhcpHint(**{k: data.get("dhcp", {}).get(k, "") for k in DhcpHint.__dataclass_fields__}),
            unserved=tuple(re.compile(p) for p in data.get("unserved", [])),
            dect_models=re.compile(data["dect_models"]) if "dect_models" in data else None,
        )
    except (KeyError, TypeError, ValueError, re.error, tomllib.TOMLDecodeError) as exc:
        raise VendorDataError(f"{path}: {exc!r}") from None


def _file_rule(data: dict[str, str]) -> FileRule:
    if data["kind"] not in ("device", "common"):
        raise ValueError(f"files.kind must be device or common, not {data['kind']!r}")
    if data["format"] not in FORMATS:
        raise ValueError(f"files.format must be one of {FORMATS}, not {data['format']!r}")
    pattern = re.compile(data["pattern"])
    if data["kind"] == "device" and "mac" not in pattern.groupindex:
        raise ValueError(f"device file {data['pattern']!r} has no (?P<mac>...) group")
    return FileRule(
        pattern=pattern,
        template=data["template"],
        kind="device" if data["kind"] == "device" else "common",
        format=data["format"],
        content_type=data.get("content_type", "text/plain"),
        example=data["example"],
    )


def _pnp(data: dict[str, object] | None) -> Pnp | None:
    if not data:
        return None
    vendors = data.get("event_vendor", [])
    assert isinstance(vendors, list)
    return Pnp(url=str(data["url"]), event_vendors=tuple(str(v).lower() for v in vendors))
