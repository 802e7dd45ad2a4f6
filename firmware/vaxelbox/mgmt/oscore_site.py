"""OSCORE in front of the management site, loaded on the first request that needs it.

aiocoap's OscoreSiteWrapper imports aiocoap.oscore, cryptography (its Rust
library alone is ~8 MiB of RSS), cbor2 and lakers; the agent keeps every
module it imports for life (issue 12: RSS idle at most 80 MB). Most boxes
serve a management request a few times a year, so this wrapper passes plain
requests straight to the inner site, exactly as OscoreSiteWrapper does with a
request that carries no OSCORE option, and builds the real wrapper on the
first request it would treat differently: one with an OSCORE option, or an
EDHOC message (/.well-known/edhoc). From then on every request goes through
the real wrapper, so the behaviour is OscoreSiteWrapper's throughout.

The stack is imported in a worker thread: inline, the import stops the event
loop (~50 ms on a development host, several times that on a board), and SIP
with it, while the loop goes on between the import's bytecodes in a thread.
"""

import asyncio
import importlib
from typing import Any

from aiocoap import interfaces
from aiocoap.pipe import Pipe

EDHOC_PATH = (".well-known", "edhoc")  # OscoreSiteWrapper answers it itself, before the OSCORE check
# What the first protected request imports: the wrapper, and the contexts vaxelbox.mgmt.security
# loads installers' credentials with.
OSCORE_STACK = ("aiocoap.oscore_sitewrapper", "vaxelbox.mgmt.oscore_contexts")


class OscoreOnDemand(interfaces.Resource):
    """A server site for aiocoap.Context: `inner` behind OSCORE with `credentials` (a CredentialsMap)."""

    def __init__(self, inner: Any, credentials: Any) -> None:
        # No super().__init__(): like OscoreSiteWrapper, this only renders through render_to_pipe,
        # so it needs no blockwise spool of its own.
        self._inner = inner
        self._credentials = credentials
        self._wrapper: interfaces.Resource | None = None
        self._loading = asyncio.Lock()  # requests arriving during the import wait for the one import

    @property
    def loaded(self) -> bool:
        """Whether the OSCORE stack has been imported and the real wrapper built."""
        return self._wrapper is not None

    def get_resources_as_linkheader(self) -> Any:
        """The inner site's /.well-known/core links (as OscoreSiteWrapper gives them)."""
        return self._inner.get_resources_as_linkheader()

    async def render(self, request: Any) -> Any:
        raise RuntimeError("OscoreOnDemand can only be used through the render_to_pipe interface")

    async def needs_blockwise_assembly(self, request: Any) -> bool:
        raise RuntimeError("OscoreOnDemand can only be used through the render_to_pipe interface")

    async def render_to_pipe(self, pipe: Pipe) -> None:
        request = pipe.request
        if self._wrapper is None and request.opt.oscore is None and request.opt.uri_path != EDHOC_PATH:
            await self._inner.render_to_pipe(pipe)
            return
        await (await self.real()).render_to_pipe(pipe)

    async def real(self) -> interfaces.Resource:
        """The OscoreSiteWrapper, built (and the OSCORE stack imported in a thread) on the first call."""
        if self._wrapper is None:
            async with self._loading:
                if self._wrapper is None:  # not built by a request that held the lock before
                    await asyncio.to_thread(_import_oscore_stack)
                    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

                    self._wrapper = OscoreSiteWrapper(self._inner, self._credentials)
        return self._wrapper


def _import_oscore_stack() -> None:
    for name in OSCORE_STACK:
        importlib.import_module(name)
