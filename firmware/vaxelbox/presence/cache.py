"""Per monitored user: the merge of the cloud's dialog view (its NOTIFYs) and the office's own (every
call that crosses the appliance), so a lamp is right, fast, and still lit when the cloud is gone.

Merge rules (issue 11), per source (office, cloud) and dialog id:
- the state only moves up in priority (`LineState` order); a lower one is a late message;
- terminated ends a dialog and leaves a tombstone for `tombstone` seconds, keyed by dialog id and
  call-id, so a late `early` (or `confirmed`) never relights the lamp; a dialog without a call-id
  (Asterisk's per-extension summary, whose id is reused by every call) gets none;
- a terminated whose tags differ from the live dialog's (a tag present on both sides, different)
  is a losing fork branch: ignored, it never darkens the answered call;
- ringing (trying/proceeding/early) unchanged for more than `max_ringing` seconds is dropped and
  may not ring again under that id (stuck blinking lamps); a later `confirmed` still shows.
Between sources: the union, one entry per call-id, the higher state winning (office on a tie), so
a desk branch cancelled at the office never darkens a call the cloud saw answered on the mobile.
When the office sees a dialog end, the cloud's copy of that same dialog (same call-id and tags;
after a BYE, same call-id and no tag that differs) ends too: a call that ends during an outage does
not stay busy until the cloud is back, nor a hung-up call until the cloud's own NOTIFY.

Cloud documents: versions per upstream subscription (RFC 4235 §4.1.1): one not above the last is
stale and ignored; a full one replaces the cloud's set (what it leaves out has ended), a partial
one merges. `cloud_gone` (subscription ended, outage) forgets the version, drops the cloud's
ringing dialogs and keeps its confirmed ones until the next full document: a colleague on the
mobile leg (which only the cloud knows) is not shown idle in an outage.

Sans-I/O: time is `now`, monotonic seconds, passed in by the caller.
"""

from dataclasses import dataclass, field, replace

from vaxelbox.presence.dialog_info import DialogInfo
from vaxelbox.presence.model import LineDialog, LineState

_RINGING = (LineState.TRYING, LineState.PROCEEDING, LineState.EARLY)


@dataclass(slots=True)
class _Entry:
    dialog: LineDialog
    since: float  # when the dialog entered its current state (monotonic s)


@dataclass(frozen=True, slots=True)
class _Tombstone:
    call_id: str
    until: float  # monotonic s
    blocks: LineState  # states up to this one may not bring the dialog back


@dataclass(slots=True)
class _Source:
    """One source's view of one user: live dialogs and tombstones, both by dialog id."""

    live: dict[str, _Entry] = field(default_factory=dict)
    dead: dict[str, _Tombstone] = field(default_factory=dict)

    def apply(self, dialog: LineDialog, now: float, keep: float) -> LineDialog | None:
        """Merge one dialog state; returns the dialog that ended, if this ended one."""
        if dialog.state is LineState.TERMINATED:
            return self._terminate(dialog, now, keep)
        if self._buried(dialog):
            return None
        entry = self.live.get(dialog.id)
        if entry is None or dialog.state > entry.dialog.state:
            self.live[dialog.id] = _Entry(dialog, now)
        elif dialog.state == entry.dialog.state and not _conflict(dialog, entry.dialog):
            self.live[dialog.id] = _Entry(dialog, entry.since)  # same state, fresher details
        return None

    def _terminate(self, dialog: LineDialog, now: float, keep: float) -> LineDialog | None:
        entry = self.live.get(dialog.id)
        if entry is not None and _conflict(dialog, entry.dialog):
            return None  # a losing fork branch
        ended = dialog if entry is None else replace(entry.dialog, state=dialog.state, reason=dialog.reason)
        self.end(dialog.id, ended, now + keep, LineState.CONFIRMED)
        return ended

    def end(self, dialog_id: str, dialog: LineDialog, until: float, blocks: LineState) -> None:
        """Forget a live dialog; with a call-id, remember it until `until` (monotonic s)."""
        self.live.pop(dialog_id, None)
        if dialog.call_id is not None:
            self.dead[dialog_id] = _Tombstone(dialog.call_id, until, blocks)

    def _buried(self, dialog: LineDialog) -> bool:
        grave = self.dead.get(dialog.id)
        return grave is not None and grave.call_id == dialog.call_id and dialog.state <= grave.blocks

    def replace(self, dialogs: tuple[LineDialog, ...], now: float, keep: float) -> None:
        """A full document: what it leaves out has ended; what it lists merges as usual."""
        listed = {d.id for d in dialogs}
        for dialog_id, entry in list(self.live.items()):
            if dialog_id not in listed:
                self.end(dialog_id, entry.dialog, now + keep, LineState.CONFIRMED)
        for dialog in dialogs:
            self.apply(dialog, now, keep)

    def end_same(self, ended: LineDialog, now: float, keep: float) -> None:
        """End the live copy of exactly this dialog (same call-id and pair of tags), if any."""
        for dialog_id, entry in list(self.live.items()):
            if _same_dialog(entry.dialog, ended):
                self.end(dialog_id, entry.dialog, now + keep, LineState.CONFIRMED)

    def keep_confirmed(self) -> None:
        self.live = {k: e for k, e in self.live.items() if e.dialog.state is LineState.CONFIRMED}

    def expire(self, now: float, max_ringing: float, keep: float) -> None:
        """Drop ringing unchanged for more than max_ringing s, and tombstones past their time."""
        for dialog_id, entry in list(self.live.items()):
            if entry.dialog.state in _RINGING and now - entry.since > max_ringing:
                self.end(dialog_id, entry.dialog, now + keep, LineState.EARLY)
        self.dead = {k: t for k, t in self.dead.items() if t.until > now}


@dataclass(slots=True)
class _UserView:
    office: _Source = field(default_factory=_Source)
    cloud: _Source = field(default_factory=_Source)
    cloud_version: int | None = None  # last accepted version of the current upstream subscription

    def idle(self) -> bool:
        sources = (self.office, self.cloud)
        return self.cloud_version is None and not any(s.live or s.dead for s in sources)


class PresenceCache:
    """The merged dialog view per site user id (see the module docstring for the rules).

    max_ringing: seconds a ringing dialog may go without news before it is dropped.
    tombstone: seconds an ended dialog id is remembered against late messages.
    The update methods return whether the merged view of that user changed (then NOTIFY).
    """

    def __init__(self, max_ringing: float = 200.0, tombstone: float = 600.0) -> None:
        if max_ringing <= 0 or tombstone < 0:
            raise ValueError(f"max_ringing must be > 0 and tombstone >= 0, got {max_ringing}, {tombstone}")
        self.max_ringing = max_ringing
        self.tombstone = tombstone
        self._users: dict[str, _UserView] = {}

    def office(self, user: str, dialog: LineDialog, now: float) -> bool:
        """The appliance's own view of one of `user`'s dialogs (from the relay)."""
        view = self._users.setdefault(user, _UserView())
        before = self.dialogs(user)
        ended = view.office.apply(dialog, now, self.tombstone)
        if ended is not None:
            view.cloud.end_same(ended, now, self.tombstone)
        return self.dialogs(user) != before

    def cloud(self, user: str, info: DialogInfo, now: float) -> bool:
        """A dialog-info document from `user`'s upstream subscription (RFC 4235 §4.1.1 versions)."""
        view = self._users.setdefault(user, _UserView())
        if view.cloud_version is not None and info.version <= view.cloud_version:
            return False  # stale or repeated
        view.cloud_version = info.version
        before = self.dialogs(user)
        if info.full:
            view.cloud.replace(info.dialogs, now, self.tombstone)
        else:
            for dialog in info.dialogs:
                view.cloud.apply(dialog, now, self.tombstone)
        return self.dialogs(user) != before

    def cloud_gone(self, user: str, now: float) -> bool:
        """`user`'s upstream subscription ended (outage, 481, terminated): the next one counts
        versions afresh; ringing cloud dialogs go, confirmed ones stay until its full document.
        `now` is unused today; it is in the signature for symmetry with the other updates."""
        view = self._users.get(user)
        if view is None:
            return False
        before = self.dialogs(user)
        view.cloud_version = None
        view.cloud.keep_confirmed()
        return self.dialogs(user) != before

    def dialogs(self, user: str) -> list[LineDialog]:
        """The merged view: one dialog per call-id (the higher state; office on a tie), office
        dialogs first, each source in arrival order. Ended dialogs are not listed."""
        view = self._users.get(user)
        if view is None:
            return []
        best: dict[tuple[str, str], tuple[LineDialog, int]] = {}
        for rank, name, source in ((1, "office", view.office), (0, "cloud", view.cloud)):
            for entry in source.live.values():
                dialog = entry.dialog
                key = ("call", dialog.call_id) if dialog.call_id else (name, dialog.id)
                held = best.get(key)
                if held is None or (dialog.state, rank) > (held[0].state, held[1]):
                    best[key] = (dialog, rank)
        return [dialog for dialog, _ in best.values()]

    def line(self, user: str) -> LineState:
        """What the lamp shows: the highest state of the merged view; TERMINATED means idle."""
        return max((d.state for d in self.dialogs(user)), default=LineState.TERMINATED)

    def expire(self, now: float) -> set[str]:
        """Drop stuck ringing and old tombstones; returns the users whose merged view changed."""
        changed: set[str] = set()
        for user, view in list(self._users.items()):
            before = self.dialogs(user)
            for source in (view.office, view.cloud):
                source.expire(now, self.max_ringing, self.tombstone)
            if self.dialogs(user) != before:
                changed.add(user)
            if view.idle():
                del self._users[user]
        return changed


def _conflict(a: LineDialog, b: LineDialog) -> bool:
    """Different fork branches: a tag known on both sides that differs."""
    return any(x is not None and y is not None and x != y for x, y in _tags(a, b))


def _tags(a: LineDialog, b: LineDialog) -> tuple[tuple[str | None, str | None], ...]:
    return ((a.local_tag, b.local_tag), (a.remote_tag, b.remote_tag))


def _same_dialog(a: LineDialog, b: LineDialog) -> bool:
    """Same call-id and the same pair of tags (either orientation), all known; or, when `b` ended
    with a BYE (a call that was up, now over), the same call-id and no tag that says otherwise
    (Kamailio's pua_dialoginfo sends no tags)."""
    if a.call_id is None or a.call_id != b.call_id:
        return False
    tags_a, tags_b = {a.local_tag, a.remote_tag}, {b.local_tag, b.remote_tag}
    if None not in tags_a and tags_a == tags_b:
        return True
    return b.reason in ("local-bye", "remote-bye") and tags_a - {None} <= tags_b
