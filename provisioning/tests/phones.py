"""The demo site's phones as their real selves: MAC, the User-Agent they send, the files they fetch.

User-Agents are the shapes real devices send (see provisioning/README.md for sources).
"""

import re
from dataclasses import dataclass

from phoneprov.vendors import load_vendors


@dataclass(frozen=True)
class DemoPhone:
    vendor: str
    mac: str
    user_agent: str
    users: tuple[str, ...]  # on lines / handsets, in order

    def files(self) -> list[tuple[str, str]]:
        """(kind, path) of every file this vendor's devices request, with this phone's MAC."""
        return [(rule.kind, with_mac(rule.example, self.mac)) for rule in load_vendors()[self.vendor].files]

    def device_files(self) -> list[str]:
        return [path for kind, path in self.files() if kind == "device"]


def with_mac(example: str, mac: str) -> str:
    """The example file name with its MAC replaced by `mac`, in the case the example uses."""
    found = re.search(r"[0-9a-fA-F]{12}", example)
    if not found or re.fullmatch(r"0{12}", found.group()):
        return example
    replacement = mac.upper() if found.group().isupper() else mac
    return example[: found.start()] + replacement + example[found.end() :]


DEMO_PHONES = [
    DemoPhone("yealink", "0015654aa937", "Yealink SIP-T54W 96.86.0.100 00:15:65:4a:a9:37", ("anna",)),
    DemoPhone(
        "snom",
        "000413922d24",
        "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IFX-05.01.12 000413922D24 SIP/stack)",
        ("bjorn",),
    ),
    DemoPhone(
        "poly",
        "64167f123456",
        "FileTransport PolycomVVX-VVX_450-UA/6.4.3.5156 Type/Application",
        ("cecilia",),
    ),
    DemoPhone(
        "grandstream",
        "000b82865e6a",
        "Grandstream Model HW GXP2170 SW 1.0.11.85 DevId 000b82865e6a",
        ("david",),
    ),
    DemoPhone("fanvil", "0c383e07e16c", "Fanvil X4U 2.10.2.6887 0c383e07e16c", ("fredrik",)),
    DemoPhone(
        "gigaset",
        "7c2f80e0d605",
        "Gigaset N870 IP PRO/83.V2.11.0+build.a546b3b;7C2F80E0D605",
        ("elin", "fredrik"),
    ),
]
