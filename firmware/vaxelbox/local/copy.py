"""Online, the cloud is the authority for star codes: a code still goes to the cloud as a call. When
the cloud answers it with success (2xx), the appliance applies the same change to its own copy of the
user's state, so the copy is current when the next outage comes.

A response processor (the relay's response chain): it looks at every response to a phone's INVITE
that went to the cloud, and acts on a 2xx to a state-changing code from a site user.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vaxelbox.local.changes import apply, is_change
from vaxelbox.local.processors import dialled
from vaxelbox.local.registrar import user_for_aor
from vaxelbox.local.star_codes import StarCodeError
from vaxelbox.local.star_codes import parse as parse_code
from vaxelbox.routing.chain import RequestContext, Target
from vaxelbox.sip.message import Response
from vaxelbox.sip.uri import SipUri
from vaxelbox.site import Site
from vaxelbox.store.user_state import UserStates

log = logging.getLogger("vaxelbox.local.copy")


@dataclass(frozen=True)
class CopyConfirmedCodes:
    site: Callable[[], Site]
    users: UserStates
    now: Callable[[], datetime]

    def __call__(self, context: RequestContext, target: Target, response: Response | None) -> None:
        request = context.request
        if response is None or not 200 <= response.status < 300 or target.side != "wan":
            return
        if request.method != "INVITE" or request.to_tag is not None or context.side != "lan":
            return
        try:
            code = parse_code(dialled(request))
        except StarCodeError:
            return
        if code is None or not is_change(code) or not isinstance(request.from_.uri, SipUri):
            return
        site = self.site()
        user = user_for_aor(site, request.from_.uri.user or "")
        if user is None:
            return
        applied = apply(code, user, site, self.users, self.now(), origin=f"{code.code} (cloud)")
        log.info(
            "star code copied from the cloud: user=%s code=%s result=%s", user.id, code.code, applied.text
        )
