"""Every vendor profile renders the demo site into files that parse and carry the right settings.

Vendor-specific key names come from each vendor's documentation (see
provisioning/README.md); what is checked here is that the site's values land
where the vendor reads them.
"""

import pytest
from phoneprov.context import Appliance, Credentials, build_context
from phoneprov.device import Device
from phoneprov.formats import FormatError, check_format
from phoneprov.render import Renderer, TemplateError, model_slug
from phoneprov.vendors import load_vendors
from phones import DEMO_PHONES, DemoPhone
from vaxelbox.site import parse_site

APPLIANCE = Appliance("192.0.2.1", 5060, 80, 443)
CREDENTIALS = Credentials("mac-user", "prov-credential-Zx9")
VENDORS = load_vendors()
PREFIX_PICKUP = {"snom", "poly"}
# Vendors that set the transport per server; the others fall back to the cloud only when it
# speaks the LAN's transport.
TRANSPORT_PER_SERVER = {
    "snom",
    "poly",
    "fanvil",
}  # configured with the pickup prefix; they append the extension


def test_every_vendor_has_a_profile():
    assert set(VENDORS) == {"yealink", "snom", "poly", "grandstream", "gigaset", "fanvil"}
    for vendor in VENDORS.values():
        assert any(rule.kind == "device" for rule in vendor.files), vendor.id
        assert vendor.user_agents, vendor.id


def render(site, phone: DemoPhone, full: bool, renderer: Renderer | None = None) -> dict[str, str]:
    """Every file of the phone's vendor, as the service would render it: path -> text."""
    vendor = VENDORS[phone.vendor]
    assigned = site.phone(phone.mac)
    rendered = {}
    for kind, path in phone.files():
        rule, match = vendor.rule_for(path)
        device = Device(phone.mac if kind == "device" else None, phone.vendor, assigned.model, None)
        is_full = full and kind == "device"
        context = build_context(
            site,
            device,
            assigned if is_full else None,
            APPLIANCE,
            match.groupdict(),
            CREDENTIALS if is_full else None,
        )
        rendered[path] = (renderer or Renderer()).render(phone.vendor, rule, context)
    return rendered


@pytest.mark.parametrize("phone", DEMO_PHONES, ids=lambda p: p.vendor)
def test_full_configuration_carries_the_site(demo_text, phone):
    site = parse_site(demo_text, "demo")
    text = "\n".join(render(site, phone, full=True).values())
    cloud_host = "sbc1.vaxel.example.net"
    assert "192.0.2.1" in text, "server 1 (the appliance) missing"
    if phone.vendor in TRANSPORT_PER_SERVER:  # the demo cloud speaks TLS, the LAN UDP
        assert cloud_host in text, "server 2 (the cloud) missing"
    else:
        assert cloud_host not in text, "fallback to a server the line cannot speak to"
    for user_id in phone.users:
        user = site.user(user_id)
        assert user.sip.user in text
        assert user.sip.password.get_secret_value() in text
    assert "demo-admin-7d3e" in text, "admin password missing"
    assert CREDENTIALS.password in text, "provisioning credentials missing"
    assert "https://192.0.2.1" in text, "HTTPS provisioning URL missing"
    assigned = site.phone(phone.mac)
    for user_id in assigned.blf:
        extension = site.user(user_id).extension
        if phone.vendor in PREFIX_PICKUP:  # the phone dials the prefix, then the extension
            assert "*80*" in text, "BLF pickup prefix missing"
            assert extension in text, "BLF extension missing"
        else:
            assert f"*80*{extension}" in text, "BLF pickup missing"
    assert "se.pool.ntp.org" in text


@pytest.mark.parametrize("phone", DEMO_PHONES, ids=lambda p: p.vendor)
def test_every_vendor_falls_back_to_a_phone_fallback_in_its_transport(demo_with, phone):
    text = demo_with(
        "[provisioning]\n", '[provisioning]\nphone_fallback = "sip:phones.vaxel.example.net:5070"\n'
    )
    site = parse_site(text, "fallback")
    rendered = "\n".join(render(site, phone, full=True).values())
    assert "phones.vaxel.example.net" in rendered
    assert "5070" in rendered
    assert "sbc1.vaxel.example.net" not in rendered  # the phones' address replaces the edge's


@pytest.mark.parametrize("phone", DEMO_PHONES, ids=lambda p: p.vendor)
def test_bootstrap_has_no_secret_but_points_at_https(demo_text, phone):
    site = parse_site(demo_text, "demo")
    for path, text in render(site, phone, full=False).items():
        for secret in [*site.secrets(), CREDENTIALS.password]:
            assert secret not in text, f"{path} leaks a secret"
    assert "https://192.0.2.1" in "\n".join(render(site, phone, full=False).values())


@pytest.mark.parametrize("phone", DEMO_PHONES, ids=lambda p: p.vendor)
def test_awkward_names_still_parse(demo_with, phone):
    text = demo_with('name = "Anna Lindqvist"', 'name = "Anna & <Åsa> \\"Ö\\" Lindqvist"')
    text = text.replace('name = "Björn Åkesson"', 'name = "Björn & <Co> \\"Å\\""')
    text = text.replace('name = "Elin Nyström"', 'name = "Elin <&> Nyström"')
    site = parse_site(text, "awkward")
    render(site, phone, full=True)  # raises TemplateError if any file does not parse


def test_installer_overrides_follow_device_then_model_then_base(tmp_path, demo_text):
    site = parse_site(demo_text, "demo")
    yealink = DEMO_PHONES[0]
    rule = next(r for r in VENDORS["yealink"].files if r.kind == "device")
    base = f'{{% extends "builtin/{rule.template}" %}}{{% block custom %}}\n'
    model_dir = tmp_path / "yealink" / "models" / model_slug("T54W")
    model_dir.mkdir(parents=True)
    (model_dir / rule.template).write_text(base + "features.dnd.allow = 0\n{% endblock %}\n")
    renderer = Renderer(tmp_path)
    text = render(site, yealink, full=True, renderer=renderer)[yealink.device_files()[0]]
    assert "features.dnd.allow = 0" in text
    assert site.user("anna").sip.password.get_secret_value() in text  # the base still renders
    device_dir = tmp_path / "yealink" / "devices" / yealink.mac
    device_dir.mkdir(parents=True)
    (device_dir / rule.template).write_text(base + "features.dnd.allow = 1\n{% endblock %}\n")
    text = Renderer(tmp_path).render("yealink", rule, _full_context(site, yealink))
    assert "features.dnd.allow = 1" in text
    assert "features.dnd.allow = 0" not in text


def test_broken_override_is_refused_with_its_name(tmp_path, demo_text):
    site = parse_site(demo_text, "demo")
    snom = DEMO_PHONES[1]
    rule = next(r for r in VENDORS["snom"].files if r.kind == "device")
    (tmp_path / "snom").mkdir()
    (tmp_path / "snom" / rule.template).write_text("<settings><unclosed></settings>\n")
    with pytest.raises(TemplateError, match="broken xml file"):
        Renderer(tmp_path).render("snom", rule, _full_context(site, snom))
    (tmp_path / "snom" / rule.template).write_text("{{ no_such_variable }}\n")
    with pytest.raises(TemplateError, match="no_such_variable"):
        Renderer(tmp_path).render("snom", rule, _full_context(site, snom))


def _full_context(site, phone: DemoPhone) -> dict:
    assigned = site.phone(phone.mac)
    return build_context(
        site, Device(phone.mac, phone.vendor, assigned.model, None), assigned, APPLIANCE, {}, CREDENTIALS
    )


def test_format_checks_catch_what_phones_would_choke_on():
    check_format("#!version:1.0.0.1\naccount.1.enable = 1\n# comment\n\n", "yealink-cfg")
    with pytest.raises(FormatError, match="starts with the line"):
        check_format("account.1.enable = 1\n", "yealink-cfg")
    with pytest.raises(FormatError, match="line 3"):
        check_format("#!version:1.0.0.1\naccount.1.enable = 1\nthis is not a setting\n", "yealink-cfg")
    with pytest.raises(FormatError, match="well-formed"):
        check_format("<a><b></a>", "xml")
