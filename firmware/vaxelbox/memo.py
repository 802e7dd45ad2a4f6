"""A bounded memo for pure parses: the relay reads the same few URIs, addresses, Via sent-by values
and flow tokens over and over, and a flood of distinct ones must not grow memory."""

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """key -> value of a pure function, at most `size` entries. When full it starts again empty: one
    O(size) clear per `size` misses, where an LRU would cost something on every hit."""

    __slots__ = ("size",)

    def __init__(self, size: int = 4096) -> None:
        super().__init__()
        self.size = size

    def keep(self, key: K, value: V) -> V:
        """Remember `value` for `key`; returns `value`."""
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value
