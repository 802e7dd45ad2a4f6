"""The site model accepts a real office and normalises what installers type."""

from vaxelbox.site import demo_site, parse_site
from vaxelbox.site.fields import proxy_parts
from vaxelbox.site.targets import Target, TargetKind


def test_demo_site_is_a_small_office():
    site = demo_site()
    assert len(site.users) == 6
    assert len(site.groups) == 2
    desk = [p for p in site.phones if p.type == "desk"]
    dect = [p for p in site.phones if p.type == "dect"]
    assert len({p.vendor for p in desk}) == 5
    assert len(dect) == 1
    assert len(dect[0].handsets) == 2
    assert site.site.timezone == "Europe/Stockholm"


def test_numbers_are_normalised_to_e164():
    site = demo_site()
    assert site.main.number == "+46846500400"  # written "08-465 004 00"
    assert site.user("anna").mobile == "+46701740605"
    assert site.user("anna").forwards.no_answer == "tel:+46701740605"


def test_macs_are_normalised(demo_with):
    site = parse_site(demo_with('mac = "00:15:65:4a:a9:37"', 'mac = "00-15-65-4A-A9-37"'))
    assert site.phones[0].mac == "0015654aa937"


def test_group_members_take_shorthand_and_table_forms():
    ekonomi = next(g for g in demo_site().groups if g.id == "ekonomi")
    assert [(m.user, m.ring_time) for m in ekonomi.members] == [
        ("cecilia", 15),
        ("david", None),
        ("elin", None),
    ]


def test_secrets_are_collected_and_hidden_from_repr():
    site = demo_site()
    secrets = site.secrets()
    assert "demo-pw-anna-4f9c" in secrets
    assert len(secrets) == 7  # six SIP passwords and the phones' admin password
    assert "demo-admin-7d3e" in secrets
    assert "demo-pw-anna-4f9c" not in repr(site)
    assert "demo-pw-anna-4f9c" not in site.model_dump_json()


def test_targets_parse():
    assert Target.parse("group:reception") == Target(TargetKind.GROUP, "reception")
    assert Target.parse("tel:070-174 06 05") == Target(TargetKind.TEL, "+46701740605")


def test_proxy_uri_defaults_follow_rfc3263():
    assert proxy_parts("sips:sbc.example.net") == ("sbc.example.net", 5061, "tls")
    assert proxy_parts("sip:sbc.example.net") == ("sbc.example.net", 5060, "udp")
    assert proxy_parts("sip:[2001:db8::1]:5070;transport=tcp") == ("2001:db8::1", 5070, "tcp")
