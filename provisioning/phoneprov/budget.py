"""The miss budget: a source that keeps asking for files that are not there is enumerating MACs.

Each source IP may miss `per_minute` times in a minute. Beyond that it is
refused for a back-off that doubles at each new trip (up to `max_backoff`)
and is forgiven after a quiet `forgive_after`.
"""

from dataclasses import dataclass, field

MAX_TRACKED = 4096  # sources remembered; the oldest go first


@dataclass
class _Source:
    window_start: float
    misses: int = 0
    trips: int = 0
    blocked_until: float = 0.0
    last_miss: float = 0.0


@dataclass
class MissBudget:
    """Per-source budget of events per minute (misses for HTTP, requests for PnP)."""

    per_minute: int = 20
    first_backoff: float = 60.0
    max_backoff: float = 3600.0
    forgive_after: float = 3600.0
    _sources: dict[str, _Source] = field(default_factory=dict)

    def blocked_for(self, source: str, now: float) -> float:
        """Seconds `source` must still wait (0: not blocked)."""
        entry = self._sources.get(source)
        return max(0.0, entry.blocked_until - now) if entry else 0.0

    def miss(self, source: str, now: float) -> float:
        """Count a miss; returns the back-off it started (0 if the budget still holds)."""
        entry = self._entry(source, now)
        if now - entry.window_start >= 60.0:
            entry.window_start, entry.misses = now, 0
        if entry.trips and now - entry.last_miss >= self.forgive_after:
            entry.trips = 0
        entry.misses += 1
        entry.last_miss = now
        if entry.misses <= self.per_minute:
            return 0.0
        backoff = min(self.max_backoff, self.first_backoff * 2**entry.trips)
        entry.trips += 1
        entry.blocked_until = now + backoff
        entry.window_start, entry.misses = now + backoff, 0
        return backoff

    def _entry(self, source: str, now: float) -> _Source:
        entry = self._sources.pop(source, None) or _Source(window_start=now)
        self._sources[source] = entry  # most recent last
        if len(self._sources) > MAX_TRACKED:
            del self._sources[next(iter(self._sources))]
        return entry
