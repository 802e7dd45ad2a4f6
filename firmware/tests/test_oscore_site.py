"""The OSCORE stack loads on the first protected management request without stopping the event loop.

Each case runs in a fresh interpreter (the stack must not be imported yet), with the real
OscoreOnDemand and aiocoap's OscoreSiteWrapper; no request is needed to build the wrapper.
"""

import json
import subprocess
import sys

# Ticks of a 1 ms timer while two first requests build the wrapper at once.
PROBE = """\
import asyncio, json, sys
from vaxelbox.mgmt.oscore_site import OSCORE_STACK, OscoreOnDemand

async def main():
    ticks = 0
    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    site = OscoreOnDemand(inner=object(), credentials=object())
    before = ticks
    first, second = await asyncio.gather(site.real(), site.real())
    during = ticks - before
    task.cancel()
    print(json.dumps({
        "ticks": during, "same": first is second, "loaded": site.loaded,
        "imported": [name for name in OSCORE_STACK if name in sys.modules],
    }))

asyncio.run(main())
"""


def test_the_first_protected_request_imports_the_stack_off_the_event_loop() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # Inline, the import (tens of ms) holds the loop: at most a tick before it and one after. In a
    # thread the loop runs at each switch of the GIL (every 5 ms): 24 ticks on a development host.
    assert seen["ticks"] >= 5, seen
    assert seen["same"], "two first requests at once build one wrapper"
    assert seen["loaded"]
    assert seen["imported"] == ["aiocoap.oscore_sitewrapper", "vaxelbox.mgmt.oscore_contexts"]
