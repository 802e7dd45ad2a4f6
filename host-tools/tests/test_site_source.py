"""One source of truth for the site: edits made with vaxelctl survive restarts and SIGHUP.

Issue 19, item 1: the agent started with `--site FILE` used to re-apply the file at every start
and on SIGHUP, silently undoing `vaxelctl phones assign` and `site push`. Now the file seeds the
store only when its text changed since it was last applied; a changed file that overwrites an edit
is applied with a warning naming both versions. Real agent process, real vaxelctl over OSCORE.
"""

import json
import signal

import pytest
from test_management import Appliance, ok, paired, vaxelctl


@pytest.fixture
def with_file(tmp_path):
    running = Appliance(tmp_path, "--site", str(tmp_path / "site.toml"))
    yield running
    running.stop()


@pytest.fixture
def laptop(with_file, tmp_path):
    return paired(tmp_path / "laptop", with_file, "Lisa")


def versions(laptop) -> list[tuple[int, bool, str]]:
    rows = json.loads(ok(vaxelctl(laptop, "site", "versions", "--json")))
    return [(row["version"], row["active"], row["origin"]) for row in rows]


def reload(appliance: Appliance) -> None:
    appliance.agent.signal(signal.SIGHUP)
    appliance.agent.wait_notification("RELOADING", "1")
    appliance.agent.wait_notification("READY", "1")


def test_an_assignment_survives_a_restart(with_file, laptop):
    ok(vaxelctl(laptop, "phones", "assign", "80:5e:c0:11:22:33", "fredrik"))
    with_file.stop()
    with_file.start()
    assert versions(laptop)[0][:2] == (2, True)
    assert "80:5e:c0:11:22:33" in ok(vaxelctl(laptop, "site", "pull"))
    assert with_file.agent.events(
        "site file unchanged since it was applied; the newer version made on the appliance stays"
    )
    assert json.loads(ok(vaxelctl(laptop, "status", "--json")))["site_warning"] is None


def test_a_push_survives_sighup(with_file, laptop, tmp_path):
    pulled = tmp_path / "pulled.toml"
    ok(vaxelctl(laptop, "site", "pull", "-o", str(pulled)))
    pulled.write_text(pulled.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Lisas byrå"'))
    ok(vaxelctl(laptop, "site", "push", str(pulled)))
    reload(with_file)
    assert versions(laptop)[0][:2] == (2, True)
    assert 'name = "Lisas byrå"' in ok(vaxelctl(laptop, "site", "pull"))


def test_a_changed_file_over_an_edit_warns_with_both_versions(with_file, laptop, tmp_path):
    ok(vaxelctl(laptop, "phones", "assign", "80:5e:c0:11:22:33", "fredrik"))
    site_file = tmp_path / "site.toml"
    site_file.write_text(
        site_file.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Kontor B"')
    )
    reload(with_file)
    assert [v[:2] for v in versions(laptop)] == [(3, True), (2, False), (1, False)]
    (warning,) = with_file.agent.events("site file replaced an edit made on the appliance")
    assert (warning["version"], warning["replaced_version"]) == (3, 2)
    assert warning["replaced_origin"].startswith("assign 80:5e:c0:11:22:33")
    status = ok(vaxelctl(laptop, "status"))
    assert "applied as version 3 over version 2" in status
    assert "vaxelctl site rollback 2" in status
    with_file.stop()
    with_file.start()  # the warning is kept in the store, not only in memory
    assert "vaxelctl site rollback 2" in json.loads(ok(vaxelctl(laptop, "status", "--json")))["site_warning"]
    ok(vaxelctl(laptop, "site", "rollback", "2"))
    assert json.loads(ok(vaxelctl(laptop, "status", "--json")))["site_warning"] is None


def test_keeping_the_file_current_with_site_pull_is_no_change(with_file, laptop, tmp_path):
    """The README says: keep the file current with `vaxelctl site pull -o site.toml`. The pulled file
    carries vaxelctl's mark line; the agent reads it without the mark, so it is the same text as the
    version it came from: no new version, no warning, and the next push from it is not refused."""
    site_file = tmp_path / "site.toml"
    ok(vaxelctl(laptop, "phones", "assign", "80:5e:c0:11:22:33", "fredrik"))
    ok(vaxelctl(laptop, "site", "pull", "-o", str(site_file)))
    reload(with_file)
    with_file.stop()
    with_file.start()
    assert [v[:2] for v in versions(laptop)] == [(2, True), (1, False)]
    assert json.loads(ok(vaxelctl(laptop, "status", "--json")))["site_warning"] is None
    assert vaxelctl(laptop, "site", "diff", str(site_file)).returncode == 0
    site_file.write_text(
        site_file.read_text().replace('name = "Revisionsbyrån Demo AB"', 'name = "Kontor C"')
    )
    ok(vaxelctl(laptop, "site", "push", str(site_file)))  # push rewrites the file's mark (version 3)
    reload(with_file)
    assert [v[:2] for v in versions(laptop)][:2] == [(3, True), (2, False)]
    assert json.loads(ok(vaxelctl(laptop, "status", "--json")))["site_warning"] is None
