"""The users' state as local routing sees it: the site's defaults with what is in the store on top
(`store.user_state`). Read per call, so a change made by another process (`vaxelbox activity`, a
star code) counts from the next call on."""

from datetime import UTC, datetime

from vaxelbox.local.routing import ActiveActivity, UserState
from vaxelbox.site.model import Forwards, Group, User
from vaxelbox.store.user_state import UserStates


class StoredUserState(UserState):
    def __init__(self, users: UserStates) -> None:
        self._users = users

    def forwards(self, user: User) -> Forwards:
        """The site's forwards with those set (or cancelled) by star code on top."""
        stored = self._users.forwards(user.id)
        if not stored:
            return user.forwards
        update: dict[str, object] = {kind: forward.target for kind, forward in stored.items()}
        if (no_answer := stored.get("no_answer")) is not None and no_answer.seconds:
            update["no_answer_after"] = no_answer.seconds
        return user.forwards.model_copy(update=update)

    def activity(self, user: User, now: datetime) -> ActiveActivity | None:
        """The user's stored activity while it lasts; one the site no longer has counts as none."""
        stored = self._users.activity(user.id)
        if stored is None:
            return None
        profile = next((a for a in user.activities if a.id == stored.activity), None)
        until = datetime.fromtimestamp(stored.until, UTC) if stored.until is not None else None
        if profile is None or (until is not None and until <= now):
            return None
        return ActiveActivity(profile, until)

    def logged_in(self, group: Group, user_id: str) -> bool:
        return self._users.logged_in(group.id, user_id)
