"""Help screens of `vaxelbox` and `vaxelctl` as people read a CLI's help: a flag takes no value,
so it shows no value type.

Typer's rich help (0.26 and later) prints `<bool>` after every flag (`--json  <bool>`), which
reads as if the flag wanted a value; its plain help does not. `plain_flags()` makes the rich
help do the same for every command; both CLIs call it where they build their commands.
"""

from collections.abc import Callable
from typing import Any

import typer.core

_MARK = "_vaxelbox_plain_flags"


def plain_flags() -> None:
    """No value type after flags in rich help (idempotent; a no-op on typers without the column)."""
    option = typer.core.TyperOption
    shown: Callable[..., Any] | None = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, _MARK, False):
        return

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        if self.is_flag and self.metavar is None:
            return None
        return shown(self, ctx)

    setattr(display_type_rich, _MARK, True)
    option.display_type_rich = display_type_rich  # type: ignore[method-assign]
