"""Call targets: where a forward, an overflow or an entry point sends a call.

Written in the site file as `kind:ref`, which reads well in TOML and in errors:
`user:anna`, `group:support`, `voicemail:anna`, `menu:main`, `tel:+46701740605`.
"""

from dataclasses import dataclass
from enum import StrEnum

from vaxelbox.site.numbers import to_e164


class TargetKind(StrEnum):
    USER = "user"
    GROUP = "group"
    VOICEMAIL = "voicemail"
    MENU = "menu"
    TEL = "tel"


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    ref: str

    @classmethod
    def parse(cls, text: str) -> "Target":
        kind, sep, ref = text.partition(":")
        if not sep or not ref:
            raise ValueError(f"{text!r} is not a target; write kind:ref, e.g. user:anna or tel:+46...")
        try:
            target_kind = TargetKind(kind)
        except ValueError:
            kinds = ", ".join(k.value for k in TargetKind)
            raise ValueError(f"{text!r}: unknown target kind {kind!r} (one of {kinds})") from None
        if target_kind is TargetKind.TEL:
            ref = to_e164(ref)
        return cls(target_kind, ref)

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}"
