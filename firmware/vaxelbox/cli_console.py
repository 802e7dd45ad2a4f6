"""The consoles `vaxelbox`'s commands print through, made on first use.

`vaxelbox run` (the agent, for months) imports every command's module to parse its flags, but
prints through none of these consoles; importing rich up front would cost it about 2 MiB for life.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A rich `Console(**options)`, imported and made when first used; then it is that console."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console  # the first print, never in the agent (see above)

            self._console = Console(**self._options)
        return getattr(self._console, name)


def console(**options: Any) -> "Console":
    """A console with rich's `Console` options (`soft_wrap=True`, `stderr=True`, ...), made on first use."""
    return LazyConsole(**options)  # type: ignore[return-value]  # it behaves as one
