"""Per-file authorisation, decided without sockets: real vendor data, real templates, real store.

The HTTP side with curl is in test_provisioning_http.py; here every rule of
the service is driven directly, with a clock the test controls.
"""

import hashlib

import pytest
from phoneprov import digest
from phoneprov.context import Appliance
from phoneprov.service import ENROLMENT_GRACE, HttpRequest, ProvisioningService
from phones import DEMO_PHONES, DemoPhone
from vaxelbox.site import parse_site
from vaxelbox.store import Store

APPLIANCE = Appliance("192.0.2.1", 5060, 80, 443)
YEALINK = DEMO_PHONES[0]


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path, demo_text):
    site = parse_site(demo_text, "demo")
    store = Store(tmp_path)
    clock = Clock()
    service = ProvisioningService(lambda: site, store.devices, APPLIANCE, b"--CA--", clock=clock)
    return site, store, clock, service


def get(service, path, user_agent, client="192.0.2.50", secure=True, authorization=None):
    return service.handle(
        HttpRequest("GET", "/" + path, "/" + path, user_agent, authorization, client, secure)
    )


def secrets_of(site, phone: DemoPhone) -> list[str]:
    return [site.user(u).sip.password.get_secret_value() for u in phone.users]


def open_window(store, clock, minutes=30, macs=None):
    window = store.devices.open_enrolment(minutes, macs)
    clock.now = window.until - minutes * 60 + 1


@pytest.mark.parametrize("phone", DEMO_PHONES, ids=lambda p: p.vendor)
def test_boot_sequence_in_enrolment_window_gets_full_config_once(setup, phone):
    site, store, clock, service = setup
    open_window(store, clock)
    for kind, path in phone.files():
        reply = get(service, path, phone.user_agent)
        assert reply.status == 200, (path, reply)
        body = reply.body.decode()
        for secret in site.secrets():
            if kind == "common":
                assert secret not in body, f"{path} is common and leaks a secret"
    device_bodies = "".join(get(service, p, phone.user_agent).body.decode() for p in phone.device_files())
    for secret in secrets_of(site, phone):
        assert secret in device_bodies, f"{phone.vendor}: a line's password is missing"
    enrolled = store.devices.enrolled(phone.mac)
    assert enrolled is not None
    assert enrolled.credential in device_bodies  # the device learns how to prove itself next time
    [seen] = [d for d in store.devices.all() if d.mac == phone.mac]
    assert seen.vendor == phone.vendor


def test_after_enrolment_only_digest_credentials_open_the_file(setup):
    site, store, clock, service = setup
    open_window(store, clock)
    path = YEALINK.device_files()[0]
    assert get(service, path, YEALINK.user_agent).status == 200
    clock.now += ENROLMENT_GRACE + 1
    challenge = get(service, path, YEALINK.user_agent)
    assert challenge.status == 401
    headers = challenge.headers["WWW-Authenticate"]
    assert any("algorithm=MD5" in h for h in headers)
    credential = store.devices.enrolled(YEALINK.mac).credential
    nonce = headers[0].split('nonce="')[1].split('"')[0]
    ha1 = hashlib.md5(f"{YEALINK.mac}:{digest.REALM}:{credential}".encode()).hexdigest()
    ha2 = hashlib.md5(f"GET:/{path}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}".encode()).hexdigest()
    authorization = (
        f'Digest username="{YEALINK.mac}", realm="{digest.REALM}", nonce="{nonce}", uri="/{path}", '
        f'qop=auth, nc=00000001, cnonce="c0ffee", response="{response}"'
    )
    reply = get(service, path, YEALINK.user_agent, authorization=authorization)
    assert reply.status == 200
    assert secrets_of(site, YEALINK)[0] in reply.body.decode()
    wrong = authorization.replace(response, "0" * 32)
    assert get(service, path, YEALINK.user_agent, authorization=wrong).status == 401
    # a second device claiming the MAC during a new general window gets nothing either
    open_window(store, clock)
    assert get(service, path, YEALINK.user_agent, client="192.0.2.66").status == 401


def test_a_forged_user_agent_cannot_fetch_another_phones_file(setup):
    _, store, clock, service = setup
    open_window(store, clock)
    snom_file = DEMO_PHONES[1].device_files()[0]
    yealink_file = YEALINK.device_files()[0]
    unknown = get(service, "no-such-file.cfg", YEALINK.user_agent)
    other_mac = get(service, yealink_file.replace(YEALINK.mac, "001565000001"), YEALINK.user_agent)
    assert unknown.status == other_mac.status == 404
    assert unknown.body == other_mac.body  # nothing tells a forbidden file from a missing one
    # a Snom's User-Agent asking for the Yealink's file: refused (vendor or naming mismatch)
    assert get(service, yealink_file, DEMO_PHONES[1].user_agent).status == 404
    # the Yealink's User-Agent asking for the Snom's file: refused
    assert get(service, snom_file, YEALINK.user_agent).status == 404
    assert store.devices.enrolled(YEALINK.mac) is None
    assert store.devices.enrolled(DEMO_PHONES[1].mac) is None


def test_unassigned_mac_gets_bootstrap_without_secrets_and_is_recorded(setup):
    site, store, clock, service = setup
    open_window(store, clock)
    mac = "805ec0aabbcc"
    path = YEALINK.device_files()[0].replace(YEALINK.mac, mac)
    ua = f"Yealink SIP-T46U 108.86.0.20 {':'.join(mac[i : i + 2] for i in range(0, 12, 2))}"
    reply = get(service, path, ua)
    assert reply.status == 200
    body = reply.body.decode()
    for secret in site.secrets():
        assert secret not in body
    assert "192.0.2.1" in body  # it is told where the appliance is
    [seen] = store.devices.all()
    assert (seen.mac, seen.vendor, seen.model, seen.firmware) == (mac, "yealink", "T46U", "108.86.0.20")
    assert store.devices.enrolled(mac) is None


def test_assigned_phone_outside_window_or_over_plain_http_gets_only_the_bootstrap(setup):
    site, store, clock, service = setup
    path = YEALINK.device_files()[0]
    closed = get(service, path, YEALINK.user_agent)
    assert closed.status == 200
    assert secrets_of(site, YEALINK)[0] not in closed.body.decode()
    open_window(store, clock)
    plain = get(service, path, YEALINK.user_agent, secure=False)
    assert secrets_of(site, YEALINK)[0] not in plain.body.decode()
    assert APPLIANCE.base("https") in plain.body.decode()  # moved to HTTPS
    assert store.devices.enrolled(YEALINK.mac) is None
    assert secrets_of(site, YEALINK)[0] in get(service, path, YEALINK.user_agent).body.decode()


def test_window_for_named_macs_admits_only_them(setup):
    site, store, clock, service = setup
    open_window(store, clock, macs=[DEMO_PHONES[1].mac])
    path = YEALINK.device_files()[0]
    assert secrets_of(site, YEALINK)[0] not in get(service, path, YEALINK.user_agent).body.decode()
    snom = DEMO_PHONES[1]
    body = "".join(get(service, p, snom.user_agent).body.decode() for p in snom.device_files())
    assert secrets_of(site, snom)[0] in body


def test_miss_budget_trips_and_other_sources_are_served(setup):
    _, _, clock, service = setup
    statuses = [get(service, f"{i:012x}.unknown", "curl/8", client="192.0.2.99").status for i in range(25)]
    assert statuses[:20] == [404] * 20
    assert statuses[-1] == 429
    assert get(service, "ca.pem", "curl/8", client="192.0.2.99").status == 429
    assert get(service, "ca.pem", "curl/8", client="192.0.2.98").status == 200
    clock.now += 61
    assert get(service, "ca.pem", "curl/8", client="192.0.2.99").status == 200


def test_inventing_macs_counts_against_the_budget(setup):
    _, store, _, service = setup
    path = YEALINK.device_files()[0]
    statuses = [
        get(service, path.replace(YEALINK.mac, f"0015650{i:05x}"), "curl/8", client="192.0.2.97").status
        for i in range(25)
    ]
    assert statuses[0] == 200
    assert statuses[-1] == 429
    assert len(store.devices.all()) <= 21
