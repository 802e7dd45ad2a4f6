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
        return user.forwards

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
        return True
