"""Who may use the relay: phones on the LAN, the cloud on the WAN, and never a SIP scanner.

Scanners (sipvicious' "friendly-scanner" and its kin) are banned for a
while, with one log line per ban that a fail2ban filter can match:
`SIP scanner banned: source=<ip> user_agent=<ua> seconds=<n>`.
"""

import logging
import re
import time

from vaxelbox.sip.message import Request

log = logging.getLogger("vaxelbox.edge.admission")

SCANNER_AGENTS = re.compile(
    r"friendly-scanner|sipvicious|sipcli|sip-scan|vaxsipuseragent|pplsip|iWar|sundayddr", re.I
)
BAN_SECONDS = 600
MAX_BANNED = 10_000  # sources banned at once: scanners from ever new (or spoofed) addresses stay bounded


class Admission:
    def __init__(self, ban_seconds: float = BAN_SECONDS) -> None:
        self.ban_seconds = ban_seconds
        self._banned: dict[str, float] = {}

    def is_banned(self, source: str, now: float | None = None) -> bool:
        until = self._banned.get(source)
        if until is None:
            return False
        if (now or time.monotonic()) >= until:
            del self._banned[source]
            return False
        return True

    def screen(self, request: Request, source: str) -> bool:
        """False (and a ban) if the request comes from a scanner."""
        agent = request.get("User-Agent") or ""
        if SCANNER_AGENTS.search(agent):
            self._banned.pop(source, None)  # to the end: the dict stays in order of expiry
            if len(self._banned) >= MAX_BANNED:
                del self._banned[next(iter(self._banned))]  # the ban closest to its end goes first
            self._banned[source] = time.monotonic() + self.ban_seconds
            log.warning(
                "SIP scanner banned: source=%s user_agent=%s seconds=%d", source, agent[:60], self.ban_seconds
            )
            return False
        return True
