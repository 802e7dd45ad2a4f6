"""The local processors: what the mode gate runs for phones' requests while the cloud is away.

In order: in-dialog requests (short-cut to the office phone at the far end,
or answered here when that end was the dead cloud), the local registrar,
emergency calls (before any authentication: a phone with a stale password
still reaches 112), call authentication (407), star codes (answered here and
journaled), the route plan from the site, and a clear 480 for everything the
appliance does not serve locally.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from vaxelbox.local.changes import apply, is_change
from vaxelbox.local.registrar import LocalRegistrar, authenticate_call
from vaxelbox.local.routing import ActiveActivity, Caller, UserState, is_emergency, plan_call
from vaxelbox.local.star_codes import Bypass as BypassCall
from vaxelbox.local.star_codes import HiddenCall, Pickup, StarCode, StarCodeError, ToVoicemail
from vaxelbox.local.star_codes import parse as parse_code
from vaxelbox.routing.chain import Next, RequestContext, Target
from vaxelbox.sip.digest import SipDigest
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.responses import make_response
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import AbsoluteUri, SipUri
from vaxelbox.site import Site
from vaxelbox.site.model import Forwards, Group, User
from vaxelbox.store.journal import Journal
from vaxelbox.store.user_state import UserStates

LOCAL_REASON = 'SIP;cause={status};text="{text}"'


def local_response(request: Request, status: int, reason: str, why: str) -> Response:
    """A final response made here, with a Reason header (RFC 3326) saying why, for the phone's log."""
    response = make_response(request, status, reason)
    response.add("Reason", LOCAL_REASON.format(status=status, text=why.replace('"', "'")))
    return response


NextHop = Callable[[Request], Flow | None]  # a live WAN peer (the fallback trunk) the request names


@dataclass(frozen=True)
class InDialog:
    """A request inside a dialog: to the office phone at its far end (even past the dead cloud), or
    to the fallback trunk when the dialog went out through it; a BYE whose far end was the cloud is
    answered 200 so the phone hangs up cleanly, anything else 481 at once instead of timing out
    toward a cloud that is not there."""

    trunk_hop: NextHop = lambda request: None

    def __call__(self, context: RequestContext) -> Next:
        request = context.request
        if request.to_tag is None:
            return Next.CONTINUE
        if context.far_target is not None:
            context.targets = [Target("lan", context.far_target, label="far end of the dialog")]
            context.route = "in-dialog, local"
        elif (trunk := self.trunk_hop(request)) is not None:
            context.targets = [Target("wan", trunk, label="fallback trunk")]
            context.route = "in-dialog, fallback trunk"
        elif request.method == "BYE":
            context.response = local_response(request, 200, "OK", "local mode: the far end was the cloud")
        else:
            context.response = local_response(
                request, 481, "Call/Transaction Does Not Exist", "local mode: the far end was the cloud"
            )
        return Next.STOP


@dataclass(frozen=True)
class Registrar:
    registrar: LocalRegistrar
    site: Callable[[], Site]

    def __call__(self, context: RequestContext) -> Next:
        if context.request.method != "REGISTER":
            return Next.CONTINUE
        context.response = self.registrar.register(context.request, context.flow, self.site())
        context.route = "local registrar"
        return Next.STOP


def dialled(request: Request) -> str:
    """The Request-URI's user part (or tel: number) as the caller dialled it, %-escapes undone."""
    uri = request.uri
    if isinstance(uri, SipUri):
        return unquote(uri.user or "")
    if isinstance(uri, AbsoluteUri) and uri.scheme.lower() == "tel":
        return unquote(uri.rest.split(";", 1)[0])
    return ""


@dataclass(frozen=True)
class Emergency:
    """112 and the other emergency numbers: routed before authentication, always."""

    site: Callable[[], Site]
    plan: "LocalPlanner"

    def __call__(self, context: RequestContext) -> Next:
        if context.request.method != "INVITE" or not is_emergency(dialled(context.request)):
            return Next.CONTINUE
        return self.plan(context)


@dataclass(frozen=True)
class Authenticate:
    """Calls (and anything else out of dialog) from office phones prove who they are (407)."""

    auth: SipDigest
    site: Callable[[], Site]

    def __call__(self, context: RequestContext) -> Next:
        checked = authenticate_call(context.request, self.auth, self.site())
        if isinstance(checked, Response):
            context.response = checked
            return Next.STOP
        context.caller = checked.id
        context.request.remove("Proxy-Authorization")  # ours, consumed here (RFC 3261 §22.3)
        return Next.CONTINUE


@dataclass(frozen=True)
class LocalPlanner:
    """An INVITE's route plan, from the site, the users' state and now."""

    site: Callable[[], Site]
    state: UserState
    registered: Callable[[str], bool]
    now: Callable[[], datetime]

    def __call__(self, context: RequestContext) -> Next:
        if context.request.method != "INVITE":
            return Next.CONTINUE
        return self.plan(context, dialled(context.request), self.state)

    def plan(self, context: RequestContext, number: str, state: UserState) -> Next:
        """Settle the plan for a call to `number` as `state` says (a star code may change both)."""
        request, site = context.request, self.site()
        caller_number = None
        if isinstance(request.from_.uri, SipUri):
            caller_number = request.from_.uri.user
        if context.caller is not None:
            user = site.user(context.caller)
            caller_number = user.direct_number or user.extension
        caller = Caller(context.caller, caller_number)
        plan = plan_call(site, number, caller, self.now(), state, self.registered)
        context.plan = plan
        context.route = f"local: {plan.why}"
        return Next.STOP


class Bypass(UserState):
    """`*60*`: the callee's state as if no activity or forward were set, so the call rings through."""

    def forwards(self, user: User) -> Forwards:
        return Forwards()

    def activity(self, user: User, now: datetime) -> ActiveActivity | None:
        return None

    def logged_in(self, group: Group, user_id: str) -> bool:
        return True


@dataclass(frozen=True)
class StarCodes:
    """A star code from an office phone, answered here while the cloud is away.

    A change (forwards, activity, group log-in) takes effect at once, is
    journaled for the replay to the cloud, and is confirmed: the call is
    answered and ended. A refusal gets its status and a Reason. `*31*nr` calls
    nr with the number hidden (Privacy: id toward the trunk, RFC 3323); `*60*nr`
    calls past the colleague's activity and forwards. `*80*` pickup and `*59*`
    voicemail need the cloud (taking over a ringing call, media): refused with
    480 and the reason. A malformed code is refused (404) with what is wrong.
    """

    site: Callable[[], Site]
    users: UserStates
    journal: Journal
    planner: LocalPlanner

    def __call__(self, context: RequestContext) -> Next:
        request = context.request
        if request.method != "INVITE" or request.to_tag is not None or context.caller is None:
            return Next.CONTINUE
        try:
            code = parse_code(dialled(request))
        except StarCodeError as exc:
            context.response = local_response(request, 404, "Not Found", f"not a star code: {exc}")
            return Next.STOP
        if code is None:
            return Next.CONTINUE
        context.route = f"star code {code.code}"
        if isinstance(code, HiddenCall):
            request.replace("Privacy", "id")
            return self.planner.plan(context, code.number, self.planner.state)
        if isinstance(code, BypassCall):
            return self.planner.plan(context, code.number, Bypass())
        if isinstance(code, Pickup | ToVoicemail):
            why = f"local mode: {code.describe()} needs the cloud"
            context.response = local_response(request, 480, "Temporarily Unavailable", why)
            return Next.STOP
        return self._change(context, code)

    def _change(self, context: RequestContext, code: StarCode) -> Next:
        site = self.site()
        assert context.caller is not None
        user = site.user(context.caller)
        applied = apply(code, user, site, self.users, self.planner.now(), origin=code.code)
        if not applied.done:
            reason = "Forbidden" if applied.status == 403 else "Not Found"
            context.response = local_response(context.request, applied.status, reason, applied.text)
        else:
            context.confirm = applied.text
            if is_change(code):
                self.journal.add(user.id, code.code, applied.text)
        return Next.STOP


def not_served_locally(context: RequestContext) -> Next:
    """The end of the local chain: what local mode does not do (yet) gets a clear 480 at once."""
    request = context.request
    context.response = local_response(
        request, 480, "Temporarily Unavailable", f"local mode: {request.method} needs the cloud"
    )
    return Next.STOP
