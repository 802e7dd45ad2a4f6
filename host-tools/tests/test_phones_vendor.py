"""`vaxelctl phones assign MAC USER --vendor VENDOR` over CoAP (issue 14): the installer on a laptop
names the vendor of a device provisioning could not identify, and from then on the appliance serves
that vendor's files to it. The real agent on loopback, vaxelctl as the installer runs it, and curl as
the device, with the User-Agent it really sent."""

import json
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
from peers import free_port
from test_cli_output import vaxelctl as vaxelctl_at
from test_management import Appliance, ok, paired, vaxelctl
from vaxelbox.site import demo_site_text, parse_site

# A device no vendor rule knows: its firmware fetches with libcurl's default User-Agent, which names
# neither vendor nor model nor MAC, and its OUI is in no vendor's list. It asks for `<mac>.cfg`,
# which is Yealink's, Fanvil's and Poly's file name at once, so the name alone decides nothing.
MAC, UA = "48:25:67:e5:50:01", "curl/7.68.0"
BARE = MAC.replace(":", "")
FREDRIK_PASSWORD = parse_site(demo_site_text(), "demo").user("fredrik").sip.password.get_secret_value()


class Provisioning:
    """The agent's provisioning HTTP(S) ports, fetched with curl."""

    def __init__(self, tmp_path: Path) -> None:
        self.http, self.https = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.ca = tmp_path / "ca.pem"

    def flags(self) -> list[str]:
        return ["--http-port", str(self.http), "--https-port", str(self.https)]

    def fetch_ca(self) -> None:
        status, body = self.curl("http", "ca.pem", "curl/8")
        assert status == 200
        self.ca.write_bytes(body)

    def curl(self, scheme: str, path: str, user_agent: str) -> tuple[int, bytes]:
        """(status, body) of one GET as the device with `user_agent`."""
        port = self.https if scheme == "https" else self.http
        ca = ["--cacert", str(self.ca)] if scheme == "https" else []
        with tempfile.NamedTemporaryFile() as body:
            result = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-o",
                    body.name,
                    "-w",
                    "%{http_code}",
                    "-A",
                    user_agent,
                    *ca,
                    f"{scheme}://127.0.0.1:{port}/{path}",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            return int(result.stdout), Path(body.name).read_bytes()


@pytest.fixture
def office(tmp_path):
    """(the running appliance's provisioning ports, a paired laptop's vaxelctl config)."""
    provisioning = Provisioning(tmp_path)
    appliance = Appliance(tmp_path, *provisioning.flags())
    try:
        provisioning.fetch_ca()
        laptop = paired(tmp_path / "laptop", appliance, "Lisa")
        yield provisioning, laptop
    finally:
        appliance.stop()


def test_an_unknown_device_named_by_vaxelctl_gets_that_vendors_file_in_the_window(office):
    """Before, vaxelctl had no --vendor (usage error, exit 2) and the appliance ignored the field:
    a device nobody could identify stayed without a file, whatever the installer did on a laptop."""
    provisioning, laptop = office
    ok(vaxelctl(laptop, "enrol", "open", "--minutes", "10"))
    assert provisioning.curl("https", f"{BARE}.cfg", UA)[0] == 404  # no evidence: no file
    listed = ok(vaxelctl(laptop, "phones"))
    assert "Vendor unknown (1), these get no file; name it with: vaxelctl phones assign MAC USER " in listed
    assert f"--vendor VENDOR\n  {MAC}  User-Agent: {UA}\n" in listed

    assigned = ok(vaxelctl(laptop, "phones", "assign", MAC, "fredrik"))
    assert (
        "Its vendor is unknown, so it gets no file: assign it again with --vendor VENDOR "
        "(yealink, snom, poly, grandstream, gigaset, fanvil)." in assigned
    )
    assert provisioning.curl("https", f"{BARE}-vaxelbox.cfg", UA)[0] == 404  # still nobody said

    wrong = vaxelctl(laptop, "phones", "assign", MAC, "fredrik", "--vendor", "polycom")
    assert wrong.returncode == 1  # refused by the appliance, as every other refusal
    assert (
        "unknown vendor 'polycom': choose one of yealink, snom, poly, grandstream, gigaset, fanvil"
        in wrong.stderr
    )
    named = json.loads(ok(vaxelctl(laptop, "phones", "assign", MAC, "fredrik", "--vendor", "Poly", "--json")))
    assert (named["vendor"], named["vendor_unknown"], named["changed"]) == ("poly", False, True)
    again = json.loads(ok(vaxelctl(laptop, "phones", "assign", MAC, "fredrik", "--vendor", "poly", "--json")))
    assert again["changed"] is False  # the same word twice makes no new site version

    status, body = provisioning.curl("https", f"{BARE}.cfg", UA)
    assert (status, b"<APPLICATION" in body) == (200, True)  # Poly's master file, no secret
    status, body = provisioning.curl("https", f"{BARE}-vaxelbox.cfg", UA)
    assert status == 200
    assert b"<polycomConfig>" in body
    assert FREDRIK_PASSWORD.encode() in body  # the user's line, in the enrolment window
    assert "Vendor unknown" not in ok(vaxelctl(laptop, "phones"))
    for phantom in ("00:00:00:00:00:00", "01:00:5e:00:00:fb"):  # no device has either: refused
        refused = vaxelctl(laptop, "phones", "assign", phantom, "fredrik", "--vendor", "poly")
        assert refused.returncode == 2, refused.stdout  # usage: vaxelctl sends no such MAC
        assert f"'{phantom}' names no device: all zeros and multicast addresses" in refused.stderr


def test_assign_promises_a_file_only_where_the_vendor_is_known(office):
    """Before, every assignment of a device not yet enrolled ended "It fetches its configuration in
    the next enrolment window", also beside "Its vendor is unknown, so it gets no file" and for a MAC
    never seen that nobody named, which gets a file only once its first request names its vendor."""
    provisioning, laptop = office
    vendors = "(yealink, snom, poly, grandstream, gigaset, fanvil)"
    unseen, ua = "00:15:65:12:34:56", "Yealink SIP-T46U 108.86.0.20 00:15:65:12:34:56"
    assert lines(at80(laptop, "phones", "assign", unseen, "fredrik")) == [
        f"{unseen} assigned to fredrik (site version 2).",
        "No vendor is known for it yet: it gets its files once provisioning identifies it by its "
        f"User-Agent or MAC, or name its vendor with --vendor VENDOR {vendors}.",
        "It fetches its configuration in an enrolment window once its vendor is known: vaxelctl enrol open",
    ]
    window = json.loads(ok(vaxelctl(laptop, "enrol", "open", "--minutes", "10", "--json")))
    until = datetime.fromtimestamp(window["until"]).isoformat(timespec="seconds")
    unseen_in_window = "00:15:65:12:34:57"  # the same, assigned with the window open
    assert lines(at80(laptop, "phones", "assign", unseen_in_window, "fredrik"))[-1] == (
        f"Enrolment is open until {until}: it gets its configuration at a request that tells its vendor."
    )
    status, body = provisioning.curl("https", "001565123456.cfg", ua)  # its User-Agent names Yealink
    assert (status, FREDRIK_PASSWORD.encode() in body) == (200, True)

    assert provisioning.curl("https", f"{BARE}.cfg", UA)[0] == 404  # seen, and nothing names a vendor
    assert lines(at80(laptop, "phones", "assign", MAC, "fredrik")) == [
        f"{MAC} assigned to fredrik (site version 4).",
        f"Its vendor is unknown, so it gets no file: assign it again with --vendor VENDOR {vendors}.",
    ]
    named = "0c:38:3e:07:e1:99"  # never seen either, but the installer names its vendor
    assert lines(at80(laptop, "phones", "assign", named, "fredrik", "--vendor", "fanvil")) == [
        f"{named} assigned to fredrik (site version 5).",  # in the window still open: said so, not
        f"It gets its configuration at its next request: enrolment is open until {until}.",  # "next"
    ]
    ok(vaxelctl(laptop, "enrol", "close"))
    later = "0c:38:3e:07:e1:98"
    assert lines(at80(laptop, "phones", "assign", later, "fredrik", "--vendor", "fanvil")) == [
        f"{later} assigned to fredrik (site version 6).",
        "It fetches its configuration in the next enrolment window: vaxelctl enrol open",
    ]


def at80(config: Path, *args: str) -> str:
    """vaxelctl's output as an installer reads it in an 80-column terminal (exit 0 asserted)."""
    return ok(vaxelctl_at(config, *args, columns=80))


def lines(text: str) -> list[str]:
    return text.splitlines()
