"""Request processing as a chain of small processors, the way reSIProcate's repro does it.

A processor looks at a `RequestContext` and either lets the next one look
(`CONTINUE`) or settles the request (`STOP`): it put a final response, a
target set or a route plan into the context. Processors are plain callables
and pure with respect to I/O (they may consult state, like the binding mirror
or the site), so each is unit-tested without sockets. `EdgeRelay`, the one
transaction user, runs the request chain and then acts on what it settled.

`ModeGate` is the fork in the chain: the same request takes the online
processors (`vaxelbox.edge.online`) or the local ones (`vaxelbox.local.processors`)
by the current mode, and nothing else differs between the two.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Literal

from vaxelbox.routing.mode import Mode
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import Uri

if TYPE_CHECKING:
    from vaxelbox.local.plan import Plan
    from vaxelbox.sip.stack import Running

Side = Literal["lan", "wan"]


class Next(Enum):
    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Target:
    """One branch to fork: where it goes (`flow`, None for the cloud's flow, opened on demand), on
    which side, and the Request-URI it carries (None: the request's own)."""

    side: Side
    flow: Flow | None = None
    uri: Uri | None = None
    label: str = ""  # for logs and `vaxelctl calls`: "cloud", "anna (192.0.2.11)", "trunk"
    user: str | None = None  # the site user whose phone this is, when the plan knows (presence)


@dataclass(eq=False)
class RequestContext:
    """One request on its way through the chains, and what they settled."""

    request: Request
    flow: Flow  # where it came in
    side: Side
    mode: Mode
    transaction: "Running | None" = None  # None for a stray ACK (forwarded statelessly)
    token_target: Flow | None = None  # the phone flow our own route token names
    far_target: Flow | None = None  # in a dialog: the office phone at its far end, even past the cloud
    response: Response | None = None  # settled: answer with this
    targets: list[Target] = field(default_factory=list)  # settled: fork to these
    plan: "Plan | None" = None  # settled: execute this local route plan
    confirm: str | None = None  # settled: answer here and hang up (a star code done); says what was done
    caller: str | None = None  # the authenticated site user, in local mode
    route: str = ""  # how it was routed, for logs and the call table

    @property
    def settled(self) -> bool:
        return self.response is not None or bool(self.targets) or self.plan is not None or bool(self.confirm)


Processor = Callable[[RequestContext], Next]


@dataclass(frozen=True)
class Chain:
    """Processors in order; the first that says STOP ends the chain."""

    name: str
    processors: Sequence[Processor]

    def __call__(self, context: RequestContext) -> Next:
        for processor in self.processors:
            if processor(context) is Next.STOP:
                return Next.STOP
        return Next.CONTINUE


@dataclass(frozen=True)
class ModeGate:
    """Runs the online or the local chain by the request's mode; always ends the outer chain."""

    online: Chain
    local: Chain

    def __call__(self, context: RequestContext) -> Next:
        chain = self.local if context.mode is Mode.LOCAL else self.online
        chain(context)
        return Next.STOP


ResponseProcessor = Callable[[RequestContext, Target, Response | None], None]  # None: branch timed out


@dataclass(frozen=True)
class ResponseChain:
    """Every response that comes back on a branch passes these, in order (health signal, binding
    mirror, call records); they observe and record, the forking logic decides what goes upstream."""

    processors: Sequence[ResponseProcessor]

    def __call__(self, context: RequestContext, target: Target, response: Response | None) -> None:
        for processor in self.processors:
            processor(context, target, response)
