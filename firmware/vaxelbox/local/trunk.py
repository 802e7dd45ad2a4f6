"""External calls in local mode: out through the site's fallback trunk, with the caller id set.

The trunk is reached like the cloud (RFC 3263 resolution, one kept flow, the
WAN address); its addresses are let in on the WAN side. The caller id goes in
P-Asserted-Identity (RFC 3325), which trunks read for the presented number;
a proxy does not rewrite From.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from vaxelbox.edge.upstream import Upstream
from vaxelbox.local.plan import Trunk
from vaxelbox.local.processors import local_response
from vaxelbox.routing.chain import RequestContext, Target
from vaxelbox.sip.message import Response
from vaxelbox.sip.uri import SipUri

log = logging.getLogger("vaxelbox.local.trunk")


@dataclass
class FallbackTrunk:
    """The plan runner's `trunk`: targets for a `Trunk` plan, or a clear final response."""

    upstream: Upstream | None  # None: the site has no fallback trunk
    _opening: set[asyncio.Task[None]] = field(default_factory=set)

    def __call__(self, context: RequestContext, plan: Trunk) -> list[Target] | Response:
        request = context.request
        if self.upstream is None:
            return local_response(request, 503, "Service Unavailable", "local mode: no fallback trunk")
        flow = self.upstream.ready_flow()
        target = self.upstream.target
        if flow is None or target is None:
            self.prepare()
            return local_response(
                request, 503, "Service Unavailable", "local mode: fallback trunk not reachable"
            )
        if plan.caller_id:
            request.replace("P-Asserted-Identity", f"<sip:{plan.caller_id}@{target.name}>")
        uri = SipUri(
            "sip", target.name, target.port, user=plan.number, params={"transport": target.transport}
        )
        return [Target("wan", flow, uri, label=f"trunk {plan.number}")]

    def prepare(self) -> None:
        """Open (or reopen) the trunk's flow in the background, so a call never waits on DNS."""
        if self.upstream is None or self._opening:
            return
        task = asyncio.get_running_loop().create_task(self._open())
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open(self) -> None:
        assert self.upstream is not None
        try:
            await self.upstream.flow()
        except OSError as exc:
            log.warning("fallback trunk unreachable: %s", exc)
