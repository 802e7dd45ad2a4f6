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


# Each vendor's boot as its documentation lists the requests (method, path; {mac} lower-case,
# {MAC} upper-case), whether we serve the file or not. Sources: Poly UC Software Administrator
# Guide (updater pass, then application pass: master, application image and its version,
# overrides GET and PUT, licence, web settings, directories, log uploads); Yealink Auto
# Provisioning Guide (boot files, common, MAC, MAC-local and contact files); snom "Auto
# provisioning" (model file, then the device's); Grandstream Administration Guide (cfg<mac>.xml,
# cfg<mac>, cfg<model>.xml, cfg.xml); Fanvil and Gigaset (their one device file).
BOOTS: dict[str, list[tuple[str, str]]] = {
    "poly": [
        ("GET", "{mac}.cfg"),
        ("GET", "000000000000.cfg"),
        ("GET", "3111-48450-001.sip.ld"),
        ("GET", "sip.ld"),
        ("GET", "sip.ver"),
        ("PUT", "{mac}-boot.log"),
        ("GET", "{mac}.cfg"),
        ("GET", "{mac}-vaxelbox.cfg"),
        ("GET", "{mac}-license.cfg"),
        ("GET", "{mac}-phone.cfg"),
        ("PUT", "{mac}-phone.cfg"),
        ("GET", "{mac}-web.cfg"),
        ("GET", "{mac}-directory.xml"),
        ("GET", "000000000000-directory.xml"),
        ("GET", "{mac}-calls.xml"),
        ("PUT", "{mac}-app.log"),
    ],
    "yealink": [
        ("GET", "{mac}.boot"),
        ("GET", "y000000000000.boot"),
        ("GET", "y000000000000.cfg"),
        ("GET", "{mac}.cfg"),
        ("GET", "{mac}-local.cfg"),
        ("GET", "{mac}-contact.xml"),
    ],
    "snom": [("GET", "snomD785.htm"), ("GET", "snomD785-{MAC}.htm")],
    "grandstream": [
        ("GET", "cfg{mac}.xml"),
        ("GET", "cfg{mac}"),
        ("GET", "cfggxp2170.xml"),
        ("GET", "cfg.xml"),
    ],
    "fanvil": [("GET", "{mac}.cfg")],
    "gigaset": [("GET", "{mac}.xml")],
}


def boot(phone: DemoPhone) -> list[tuple[str, str]]:
    """The phone's documented boot requests with its MAC filled in."""
    return [
        (method, path.format(mac=phone.mac, MAC=phone.mac.upper())) for method, path in BOOTS[phone.vendor]
    ]
