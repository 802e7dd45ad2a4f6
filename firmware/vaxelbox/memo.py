"""A bounded memo for pure parses: the relay reads the same few URIs, addresses, Via sent-by values
and flow tokens over and over, and a flood of distinct ones must not grow memory."""

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """key -> value of a pure function, at most `size` entries. When full it starts again empty: one
    O(size) clear per `size` misses, where an LRU would cost something on every hit."""

    __slots__ = ("size",)

    # 1024 by default: the values a relay reads over and over (its own Routes and sent-by, an
    # office's few domains, the parties of the calls under way) fit; most others are read once
    # (a tag makes every From and To distinct). At 4096 the memos held ~2 MiB of such values once
    # 2,000 phones had registered; at 1024 they missed hardly more often over 2,000 registrations
    # and 2,000 calls (URI parts +0.5 %, address parts +2 %) (issue 12).
    def __init__(self, size: int = 1024) -> None:
        super().__init__()
        self.size = size

    def keep(self, key: K, value: V) -> V:
        """Remember `value` for `key`; returns `value`."""
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value
