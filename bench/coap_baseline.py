"""The baseline CoAP server for bench/coap_mgmt.py: plain aiocoap, one small resource, served
with and without OSCORE (aiocoap's own OscoreSiteWrapper and file context) — what our agent's
figures are compared against. Usage: coap_baseline.py PORT OSCORE_CONTEXT_DIR"""

import asyncio
import sys

import aiocoap
import cbor2
from aiocoap import resource
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore import FilesystemSecurityContext
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper


class Device(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        payload = cbor2.dumps({"model": "baseline", "serial": "BASE-0001", "firmware": "0"})
        return aiocoap.Message(payload=payload, content_format=60)


async def main(port: int, context_dir: str) -> None:
    site = resource.Site()
    site.add_resource(["dev"], Device())
    credentials = CredentialsMap()
    credentials[":bench"] = FilesystemSecurityContext(context_dir)
    await aiocoap.Context.create_server_context(
        OscoreSiteWrapper(site, credentials), bind=("127.0.0.1", port), transports=["udp6"]
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
