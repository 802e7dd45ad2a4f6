"""Executes a local route plan for one call: rings, then the fallback its outcome calls for.

A `Ring` forks to every registered contact of its users at once (a user's
desk phone and DECT handset ring together), with the plan's ring time. Its
outcome picks the next plan: answered (done), no answer (the ring timer ran
out, or every branch failed without a busy), busy (a branch said 486, 600 or
603 and none answered), unavailable (nobody to ring). Provisional responses
reach the caller as they come; the caller's CANCEL stops everything.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from vaxelbox.local.plan import Plan, Reject, Ring, Trunk
from vaxelbox.local.processors import local_response
from vaxelbox.routing.chain import RequestContext, Target
from vaxelbox.routing.forking import Fork, Forking
from vaxelbox.sip.message import Response

log = logging.getLogger("vaxelbox.local.calls")

BUSY = (486, 600, 603)

Contacts = Callable[[str], list[Target]]  # site user id -> a target per registered contact
TrunkTargets = Callable[[RequestContext, Trunk], list[Target] | Response]


@dataclass(frozen=True)
class LocalCalls:
    """The relay's `execute_plan`: one `PlanRunner` per call."""

    forking: Forking
    contacts: Contacts
    trunk: TrunkTargets

    def __call__(self, context: RequestContext, respond: Callable[[Response], None]) -> "PlanRunner":
        assert context.plan is not None
        runner = PlanRunner(self, context, respond)
        runner.run(context.plan)
        return runner


class PlanRunner:
    def __init__(
        self, calls: LocalCalls, context: RequestContext, respond: Callable[[Response], None]
    ) -> None:
        self.calls = calls
        self.context = context
        self.respond = respond
        self.fork: Fork | None = None
        self.cancelled = False
        self.answered = False
        self.steps: list[str] = []  # what was tried, for the log and `vaxelctl calls`

    def cancel(self) -> None:
        self.cancelled = True
        if self.fork is not None:
            self.fork.cancel()

    def run(self, plan: Plan) -> None:
        self.steps.append(plan.why)
        log.info("local call %s: %s", self.context.request.call_id, plan.why)
        if isinstance(plan, Reject):
            self._final(local_response(self.context.request, plan.status, plan.reason, plan.why))
        elif isinstance(plan, Trunk):
            targets = self.calls.trunk(self.context, plan)
            if isinstance(targets, Response):
                self._final(targets)
            else:
                self._ring(targets, None, plan)
        else:
            caller = self.context.flow.remote  # never ring the device placing the call (a self-call)
            targets = [
                t
                for user in plan.users
                for t in self.calls.contacts(user)
                if t.flow is None or t.flow.remote != caller
            ]
            if not targets:
                self._next(plan.on_unavailable, None)
                return
            self._ring(targets, plan.ring_time, plan)

    def _ring(self, targets: list[Target], ring_time: float | None, plan: Plan) -> None:
        self.fork = self.calls.forking.fork(
            self.context, targets, lambda response: self._on_response(plan, response), ring_time
        )

    def _on_response(self, plan: Plan, response: Response) -> None:
        if response.status < 200:
            if response.status > 100 and not self.answered:
                self.respond(response)
            return
        if response.status < 300:
            self.answered = True
            self.respond(response)
            return
        if self.cancelled or self.answered or not isinstance(plan, Ring):
            self._final(response)
            return
        fork = self.fork
        assert fork is not None
        if fork.no_answer:  # our ring timer cancelled the branches: the caller hears why, not a 487
            why = f"local mode: no answer from {', '.join(plan.users)}"
            response = local_response(self.context.request, 480, "Temporarily Unavailable", why)
        busy = not fork.no_answer and any(
            b.final is not None and b.final.status in BUSY for b in fork.call.branches
        )
        self._next(plan.on_busy if busy else plan.on_no_answer, response)

    def _next(self, plan: Plan | None, last: Response | None) -> None:
        if plan is not None and not self.cancelled:
            self.run(plan)
        elif last is not None:
            self._final(last)
        else:
            why = "local mode: nobody to ring"
            self._final(local_response(self.context.request, 480, "Temporarily Unavailable", why))

    def _final(self, response: Response) -> None:
        if not self.answered:
            self.answered = True
            self.respond(response)
