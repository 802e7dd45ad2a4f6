"""Devices seen by provisioning, the enrolment window and credentials, in the store."""

import time

from phoneprov.book import Enrolled, Sighting
from vaxelbox.store import Store


def _sighting(mac: str, at: float, model: str | None = "T54W") -> Sighting:
    return Sighting(mac, "yealink", model, "96.86.0.100", "192.0.2.50", "Yealink SIP-T54W", f"{mac}.cfg", at)


def test_devices_are_recorded_once_and_updated(tmp_path):
    store = Store(tmp_path)
    assert store.devices.record(_sighting("0015654aa937", 100.0)) is True
    assert store.devices.record(_sighting("0015654aa937", 200.0, model=None)) is False
    [device] = store.devices.all()
    assert (device.first_seen, device.last_seen, device.model) == (
        100.0,
        200.0,
        "T54W",
    )  # unknown keeps known
    assert device.enrolled_at is None


def test_enrolment_window_and_re_enrolment_voids_the_credential(tmp_path):
    store = Store(tmp_path)
    store.devices.record(_sighting("0015654aa937", 100.0))
    store.devices.enrol("0015654aa937", Enrolled("cred", 150.0, "192.0.2.50"))
    assert store.devices.enrolled("0015654aa937") == Enrolled("cred", 150.0, "192.0.2.50")
    window = store.devices.open_enrolment(10)
    assert window.admits("anything0000", time.time())
    assert store.devices.enrolled("0015654aa937")
    store.devices.close_enrolment()  # else the MAC's window would widen the open one
    window = store.devices.open_enrolment(10, ["0015654aa937"])
    assert window.admits("0015654aa937", time.time())
    assert not window.admits("000413922d24", time.time())
    assert store.devices.enrolled("0015654aa937") is None  # named: must enrol again
    assert not window.admits("0015654aa937", time.time() + 601)
    store.devices.close_enrolment()
    assert store.devices.enrolment() is None
    store.close()
    assert Store(tmp_path).devices.all()[0].mac == "0015654aa937"  # survives a restart


def test_unenrolled_devices_are_bounded(tmp_path, monkeypatch):
    from vaxelbox.store import devices

    monkeypatch.setattr(devices, "MAX_UNENROLLED", 3)
    store = Store(tmp_path)
    store.devices.record(_sighting("00156500000a", 1.0))
    store.devices.enrol("00156500000a", Enrolled("c", 1.0, "192.0.2.1"))
    for i in range(6):
        store.devices.record(_sighting(f"0015650000{i:02x}", 10.0 + i))
    macs = {d.mac for d in store.devices.all()}
    assert "00156500000a" in macs  # enrolled devices are never pushed out
    assert {"001565000005", "001565000004", "001565000003"} <= macs
    assert len(macs) == 4
