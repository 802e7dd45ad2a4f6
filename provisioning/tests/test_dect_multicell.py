"""snom DECT multicell (issue 14, part 2): when a site has several snom DECT bases (M900 multicell,
M400 chains) they form one chain. Every base's file names the same chain; exactly one base, the
primary (data master), gets the servers and every handset of the chain, and syncs them to the
others; a site with one snom base gets no chain settings at all. Every file parses (the renderer
checks it, and so does ElementTree here). Mistakes in the site are refused with their place."""

import xml.etree.ElementTree as ElementTree

import pytest
from phoneprov.context import Appliance, Credentials, build_context
from phoneprov.device import Device
from phoneprov.render import Renderer
from phoneprov.vendors import load_vendors
from vaxelbox.site import SiteError, parse_site

APPLIANCE = Appliance("192.0.2.1", 5060, 80, 443)
CREDENTIALS = Credentials("mac-user", "prov-credential-Zx9")
SNOM = load_vendors()["snom"]
M900_A, M900_B = "00:04:13:b6:06:80", "00:04:13:b6:06:81"


def snom_base(mac: str, model: str, handsets: list[str], extra: str = "") -> str:
    users = ", ".join(f'"{u}"' for u in handsets)
    return (
        f'\n[[phones]]\nmac = "{mac}"\ntype = "dect"\nvendor = "snom"\nmodel = "{model}"\n'
        f"handsets = [{users}]\n{extra}"
    )


def settings(site_text: str, mac: str) -> dict[tuple[str, str | None], str]:
    """The base's full device file (snom<model>-<MAC>.htm), rendered and parsed: (tag, idx) -> text."""
    site = parse_site(site_text, "site")
    phone = site.phone(mac.replace(":", ""))
    assert phone is not None
    bare = phone.mac.upper()
    rule, match = SNOM.rule_for(f"snom{phone.model}-{bare}.htm")
    device = Device(phone.mac, "snom", phone.model, None)
    context = build_context(site, device, phone, APPLIANCE, match.groupdict(), CREDENTIALS)
    root = ElementTree.fromstring(Renderer().render("snom", rule, context))
    return {(e.tag, e.get("idx")): e.text or "" for e in root.iter()}


def passwords(site_text: str, users: list[str]) -> list[str]:
    site = parse_site(site_text, "site")
    return [site.user(u).sip.password.get_secret_value() for u in users]


def test_two_snom_bases_share_one_chain_and_only_the_primary_carries_the_handsets(demo_with):
    text = demo_with("recheck_minutes = 1440\n", "recheck_minutes = 1440\ndect_chain_id = 4711\n")
    text += snom_base(M900_A, "M900", ["anna", "bjorn"])
    text += snom_base(M900_B, "M900", ["cecilia"], "primary = true\n")
    first, primary = settings(text, M900_A), settings(text, M900_B)
    for base in (first, primary):
        assert base[("network_sync_enable", None)] == "on"
        assert base[("network_sync_chain_id", None)] == "4711"  # the same chain for both
        assert base[("network_sync_data_transport", None)] == "multicast"
    # The primary (marked, though second in the file) has every handset of the chain, its own first.
    users = ["cecilia", "anna", "bjorn"]
    for index, secret in enumerate(passwords(text, users), 1):
        assert primary[("user_pass", str(index))] == secret
        assert primary[("subscr_sip_hs_idx", str(index))] == str(index)
    assert ("user_pass", "4") not in primary
    assert primary[("user_outbound", "1")] == "192.0.2.1:5060;transport=udp"
    # The secondary gets the chain, no server and no handset: the data master syncs those to it.
    assert not [key for key in first if key[0] in {"user_pass", "user_name", "user_outbound"}]
    assert not [key for key in first if key[0].startswith(("subscr_", "srv_sip_"))]
    for secret in parse_site(text, "site").secrets()[:-1]:  # the users' passwords; not the admin's
        assert secret not in str(first.values())


def test_without_a_mark_the_first_snom_base_is_the_primary(demo_text):
    text = demo_text + snom_base(M900_A, "M400", ["anna"]) + snom_base(M900_B, "M400", ["bjorn"])
    first, second = settings(text, M900_A), settings(text, M900_B)
    assert (first[("network_sync_chain_id", None)], second[("network_sync_chain_id", None)]) == ("512", "512")
    assert [first[("user_pass", "1")], first[("user_pass", "2")]] == passwords(text, ["anna", "bjorn"])
    assert ("user_pass", "1") not in second


def test_one_snom_base_gets_no_chain_settings(demo_text):
    text = demo_text + snom_base(M900_A, "M900", ["anna", "bjorn"])
    base = settings(text, M900_A)
    assert not [key for key in base if key[0].startswith("network_sync")]
    assert [base[("user_pass", "1")], base[("user_pass", "2")]] == passwords(text, ["anna", "bjorn"])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            snom_base(M900_A, "M900", ["anna"], "primary = true\n")
            + snom_base(M900_B, "M900", ["bjorn"], "primary = true\n"),
            "phones[7].primary: phones[6] is the chain's primary already: a chain has one",
        ),
        (
            snom_base(M900_A, "M900", ["anna"]) + '\n[[phones]]\nmac = "80:5e:c0:aa:bb:02"\n'
            'type = "dect"\nvendor = "yealink"\nmodel = "W80B"\nhandsets = ["bjorn"]\nprimary = true\n',
            "phones[7].primary: only a snom DECT base can be a multicell primary, not this yealink DECT base",
        ),
        (
            snom_base(M900_A, "M900", ["anna"]) + snom_base(M900_B, "M900", ["bjorn"]),
            "provisioning.dect_chain_id: 301 is users[5].extension too: the snom bases use the chain id "
            "as a SIP account, so pick a number nobody dials",
        ),
    ],
    ids=["two-primaries", "primary-not-snom", "chain-id-dialled"],
)
def test_chain_mistakes_are_refused_with_their_place(demo_text, change, problem):
    text = demo_text + change
    if "chain id" in problem:  # fredrik dials 301
        text = text.replace("recheck_minutes = 1440\n", "recheck_minutes = 1440\ndect_chain_id = 301\n")
    with pytest.raises(SiteError) as refused:
        parse_site(text, "site")
    assert [str(p) for p in refused.value.problems] == [problem]


def test_a_chain_id_nobody_dials_is_fine_with_one_base(demo_with):
    """The chain id only matters when there is a chain: one base never registers it."""
    text = demo_with("recheck_minutes = 1440\n", "recheck_minutes = 1440\ndect_chain_id = 301\n")
    parse_site(text + snom_base(M900_A, "M900", ["anna"]), "site")
