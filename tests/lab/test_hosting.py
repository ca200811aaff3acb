"""`provision hosting` against the real lab: plan, apply, verify, refuse, roll back, resume.

Every test works on its own requests (fresh ids and labels made from the
shipped examples). The tests that only need a live site to look at (or to
rotate) share one (`live_site`), since each site costs a provisioning and a
removal. The tests that leave sites behind make them in the module's state
home (`module_office`), so all are removed in one run at the end; they only
look at their own sites (by request id or name) in it.
"""

import json
import os
import re
import secrets
import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from click.testing import CliRunner

from provisioner import credentials
from provisioner.cli import main
from provisioner.errors import Conflict, HostError, StateError
from provisioner.lab import guard, topology
from provisioner.store.models import IPAllocation, SiteRow

from labkit import PDNS, Office, api_headers

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str, host: str):
    guard.require_lab_route(urlsplit(url).hostname)
    return requests.get(url, headers={"Host": host}, timeout=5, allow_redirects=False)


def _shared_address(office, web_host: str) -> str:
    """The shared public address of a web host (its inventory's public_ip)."""
    return str(office.hosting.inventory.host(web_host).vars["public_ip"])


@pytest.fixture(scope="module")
def live_site(module_office):
    """One site provisioned for the module, shared by the tests that need a live site but not a
    fresh provisioning: the bystander of the configtest failure, the secrets scan and the
    rotation. Each looks at it on the lab; the passwords and credentials sheet are those of its
    apply (captured here), so a rotation by one test does not change what another checks."""
    request_id = module_office.through_review("tarakan-simkes.yaml", tls="false")
    module_office.approve_without_hook(request_id)
    result = module_office.hosting.apply([request_id])
    (site,) = result.sites
    passwords = credentials.get(module_office.store, module_office.hosting.box, site["fqdn"])
    return {"office": module_office, "site": site, "sheet": Path(result.sheets[site["fqdn"]]),
            "passwords": passwords}


def test_both_examples_through_the_sop_and_the_approval_hook(module_office, lab_host):
    """Approval by the head runs provisioning by itself; every outside check passes."""
    office = module_office  # the module's state home: its sites are removed with the others at the end
    tarakan = office.through_review("tarakan-simkes.yaml")
    buleleng = office.through_review("buleleng-sipandu.yaml")
    for request_id in (tarakan, buleleng):
        outcome = office.engine.decide(request_id, True, "kadis")
        assert outcome.actions and outcome.actions[0]["action"] == "provision_site"
        shown = office.engine.show(request_id)
        steps = {s["key"]: s for s in shown["steps"]}
        assert steps["konfigurasi_server"]["ended_at"] is not None
        assert shown["current_step"] != "konfigurasi_server"
    sites = {r.request_id: r for r in (office.site(f) for f in _fqdns(office)) if r}
    t, b = sites[tarakan], sites[buleleng]
    assert t.state == b.state == "provisioned"
    assert t.zone == "tarakankota.go.id" and b.zone == "bulelengkab.go.id"
    # The shared address of its web server for Tarakan's site, a dedicated one from the pool of
    # its web server for Buleleng's (placement may put them on different web servers).
    assert t.public_ip == _shared_address(office, t.web_host)
    assert b.dedicated_ip and ip_address(b.public_ip) in topology.DEDICATED_POOL
    first, last = topology.host(b.web_host).dedicated_pool
    assert first <= ip_address(b.public_ip) <= last
    assert b.public_ip in lab_host(b.web_host).check_output("ip -o -4 addr show dev eth0")
    for row in (t, b):
        web = lab_host(row.web_host)
        record = row.config
        for field in ("fqdn", "public_ip", "web_host", "names", "php_version", "db_name", "sftp_user",
                      "tls", "quota_mb", "bandwidth_kbps"):
            assert field in record
        assert row.plan_checksum and row.provisioned_at
        assert web.user(record["sftp_user"]).exists
        docroot = web.file(record["names"]["docroot"])
        assert docroot.user == record["sftp_user"] and docroot.mode == 0o750
        home = web.file(record["names"]["home"])
        assert (home.user, home.group, home.mode) == ("root", record["sftp_user"], 0o750)
        assert web.file(record["names"]["logdir"]).user == "root"
        assert web.file(f"/etc/apache2/sites-enabled/{row.fqdn}.conf").exists
        provisioned = [e for e in office.events("site_provisioned") if e.payload["fqdn"] == row.fqdn]
        assert set(provisioned[0].payload["record"]["verified"]) >= {"dns", "http", "sftp"}


def _fqdns(office):
    with office.store.session() as session:
        return [r.fqdn for r in session.query(SiteRow)]


def test_plan_shows_every_change_and_a_rerun_changes_nothing(module_office, lab_host):
    office = module_office  # the module's state home: its site is removed with the others at the end
    request_id = office.through_review("tarakan-simkes.yaml")
    office.approve_without_hook(request_id)
    plan, (site,) = office.hosting.plan([request_id])
    kinds = {(c.target, c.kind) for c in plan.changes}
    assert kinds >= {("db", "database"), ("db", "database user"), ("db", "grant"), ("web", "system user"),
                     ("web", "docroot"), ("web", "PHP-FPM pool"), ("web", "SFTP account"), ("web", "vhost"),
                     ("web", "TLS certificate"), ("dns", "A record")}
    vhost = next(c for c in plan.changes if c.kind == "vhost")
    assert f"ServerName {site.fqdn}" in vhost.detail["content"]
    # Planning touched nothing (on the web server the plan places the site on).
    web = lab_host(site.web_host)
    assert not web.user(site.names.user).exists
    assert office.site(site.fqdn) is None

    with pytest.raises(StateError, match="plan changed"):
        office.hosting.apply([request_id], checksum="0" * 64)
    assert not web.user(site.names.user).exists

    first = office.hosting.apply([request_id], checksum=plan.checksum)
    assert first.changed and first.plan.checksum == plan.checksum
    assert first.sheets[site.fqdn]
    again = office.hosting.apply([request_id])
    assert not again.changed and again.plan.empty and again.sheets == {}
    assert office.hosting.plan([request_id])[0].empty
    # The live vhost is byte for byte what the plan showed.
    assert office.site(site.fqdn).web_host == site.web_host
    live = web.file(f"/etc/apache2/sites-available/{site.fqdn}.conf").content_string
    assert live == vhost.detail["content"]


def test_refused_without_an_approval(office, lab_host):
    request_id = office.through_review("tarakan-simkes.yaml")
    runner = CliRunner()
    for args in (["hosting", request_id], ["hosting", request_id, "--apply"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2
        assert "no approval" in result.output and "Traceback" not in result.output
    assert office.site(f"{_label(office, request_id)}.tarakankota.go.id") is None


def _label(office, request_id):
    return re.search(r"subdomain: (\S+)", (office.home / f"{request_id}.yaml").read_text()).group(1)


def test_a_dns_record_that_is_not_ours_is_a_conflict(office, lab_host):
    label = f"t{secrets.token_hex(4)}"
    fqdn = f"{label}.tarakankota.go.id."
    rrset = {"name": fqdn, "type": "A", "ttl": 300, "changetype": "REPLACE",
             "records": [{"content": "203.0.113.250", "disabled": False}]}
    assert requests.patch(f"{PDNS}/zones/tarakankota.go.id.", json={"rrsets": [rrset]}, headers=api_headers(),
                          timeout=5).status_code == 204
    try:
        request_id = office.through_review("tarakan-simkes.yaml", subdomain=label)
        office.approve_without_hook(request_id)
        with pytest.raises(Conflict, match="did not create"):
            office.hosting.apply([request_id])
        (site,) = office.hosting.desired(office.hosting.load_requests([request_id]))
        assert not lab_host(site.web_host).user(site.names.user).exists
        assert office.site(fqdn.rstrip(".")) is None
        zone = requests.get(f"{PDNS}/zones/tarakankota.go.id.", headers=api_headers(), timeout=5).json()
        kept = [r for r in zone["rrsets"] if r["name"] == fqdn and r["type"] == "A"]
        assert [r["content"] for r in kept[0]["records"]] == ["203.0.113.250"]
    finally:
        rrset.update(changetype="DELETE", records=[])
        requests.patch(f"{PDNS}/zones/tarakankota.go.id.", json={"rrsets": [rrset]}, headers=api_headers(), timeout=5)


def test_host_objects_the_toolkit_never_recorded_are_a_conflict(office, lab_host):
    request_id = office.through_review("tarakan-simkes.yaml")
    office.approve_without_hook(request_id)
    (site,) = office.hosting.desired(office.hosting.load_requests([request_id]))
    # On the database server placement gives the site.
    db = lab_host(site.db_host)
    db.check_output(f"mysql -e 'CREATE DATABASE {site.names.db_name}'")
    try:
        with pytest.raises(Conflict, match=f"database {site.names.db_name}"):
            office.hosting.apply([request_id])
        assert not lab_host(site.web_host).user(site.names.user).exists
        assert site.names.db_name in db.check_output("mysql -N -e 'SHOW DATABASES'")
    finally:
        db.check_output(f"mysql -e 'DROP DATABASE IF EXISTS {site.names.db_name}'")


def test_configtest_failure_rolls_back_and_other_sites_keep_serving(module_office, lab_host, live_site):
    office = module_office  # the module's state home: its failed site is removed with the others at the end
    good = live_site["site"]  # a site that worked before: the module's shared one
    assert _get(f"http://{good['public_ip']}/", good["fqdn"]).status_code == 200

    broken = office.through_review("tarakan-simkes.yaml")
    office.approve_without_hook(broken)
    (site,) = office.hosting.desired(office.hosting.load_requests([broken]))
    # Apache is broken on the web server placement gives the new site.
    web = lab_host(site.web_host)
    web.run("echo 'ThisIsNotADirective on' > /etc/apache2/conf-enabled/zz-test-broken.conf")
    try:
        with pytest.raises(HostError):
            office.hosting.apply([broken])
    finally:
        web.run("rm -f /etc/apache2/conf-enabled/zz-test-broken.conf")
    row = office.site(site.fqdn)
    assert row.state == "failed", row.reason
    assert [e.payload["step"] for e in office.events("saga_failed") if e.payload["fqdn"] == site.fqdn] == ["web"]
    # Compensated in reverse: nothing of the new site is left on its web or database server.
    assert not web.file(f"/etc/apache2/sites-available/{site.fqdn}.conf").exists
    assert not web.user(site.names.user).exists
    assert site.names.db_name not in lab_host(site.db_host).check_output("mysql -N -e 'SHOW DATABASES'")
    assert [e.payload["step"] for e in office.events("saga_compensated") if e.payload["fqdn"] == site.fqdn]
    # The site that worked before still serves, and Apache is healthy.
    assert _get(f"http://{good['public_ip']}/", good["fqdn"]).status_code == 200
    assert web.run("apache2ctl configtest").rc == 0


def test_a_crash_between_steps_resumes_cleanly(module_office, lab_host):
    office = module_office  # the module's state home: its site is removed with the others at the end
    request_id = office.through_review("buleleng-sipandu.yaml")
    # sipandu has a dedicated IP and no database: ip -> web -> dns. Cut the power after web.
    env = dict(os.environ, PROVISIONER_FAULT="crash-after:web")
    crashed = subprocess.run([sys.executable, "-m", "provisioner.cli", "decide", request_id, "--approve",
                              "--by", "kadis"], cwd=office.home, env=env, capture_output=True, text=True)
    assert crashed.returncode == 70, crashed.stderr
    (site,) = office.hosting.desired(office.hosting.load_requests([request_id]))
    assert office.site(site.fqdn).state == "provisioning"
    # Its certificate first (nothing built yet), then ip and web.
    assert [e.payload["step"] for e in office.events("saga_intent") if e.payload.get("fqdn") == site.fqdn] \
        == ["tls", "ip", "web"]
    assert [e.payload["step"] for e in office.events("saga_done") if e.payload.get("fqdn") == site.fqdn] \
        == ["tls", "ip", "web"]
    # DNS comes last: the name does not point at the half-made site.
    zone = requests.get(f"{PDNS}/zones/bulelengkab.go.id.", headers=api_headers(), timeout=5).json()
    assert not [r for r in zone["rrsets"] if r["name"] == f"{site.fqdn}."]

    resumed = subprocess.run([sys.executable, "-m", "provisioner.cli", "resume", request_id, "--json"],
                             cwd=office.home, capture_output=True, text=True)
    assert resumed.returncode in (0, 6), resumed.stderr  # 6: the letter step after it may still be pending
    row = office.site(site.fqdn)
    assert row.state == "provisioned"
    # No duplicates: one address, one database user, one A record.
    with office.store.session() as session:
        assert session.query(IPAllocation).filter(IPAllocation.fqdn == site.fqdn).count() == 1
    web = lab_host(row.web_host)
    assert web.check_output(f"getent passwd {site.names.user}").count(site.names.user) == 1
    assert web.check_output("ip -o -4 addr show dev eth0").count(f"{site.public_ip}/") == 1
    zone = requests.get(f"{PDNS}/zones/bulelengkab.go.id.", headers=api_headers(), timeout=5).json()
    a = [r for r in zone["rrsets"] if r["name"] == f"{site.fqdn}." and r["type"] == "A"]
    assert len(a) == 1 and [r["content"] for r in a[0]["records"]] == [site.public_ip]


def test_no_secret_in_logs_artifacts_or_the_state_database(live_site, lab_host):
    # The module's shared site, with the passwords and credentials sheet of its apply.
    office, passwords, sheet = live_site["office"], live_site["passwords"], live_site["sheet"]
    assert set(passwords) == {"db", "sftp"}
    assert sheet.stat().st_mode & 0o777 == 0o600
    sheet_text = subprocess.run(["pdftotext", str(sheet), "-"], capture_output=True, text=True, check=True).stdout
    assert "RAHASIA" in sheet_text and all(p in sheet_text for p in passwords.values())
    scanned = 0
    for path in office.config.artifacts_dir().rglob("*"):
        if path.is_file():
            scanned += 1
            data = path.read_bytes()
            for password in passwords.values():
                assert password.encode() not in data, path
    assert scanned > 10
    state = (office.home / "state.db").read_bytes()
    for password in passwords.values():
        assert password.encode() not in state
    for log in ("/var/log/apache2/error.log", "/var/log/auth.log", "/var/log/syslog"):
        text = lab_host(live_site["site"]["web_host"]).run(f"cat {log} 2>/dev/null").stdout
        assert not any(p in text for p in passwords.values())
    # The key that opens the stored passwords is outside the database, root only.
    assert office.config.key_file().stat().st_mode & 0o077 == 0


def test_credentials_rotate_makes_new_passwords_that_work(live_site, lab_host):
    # The module's shared site (the CLI works in its state home: module_office set PROVISIONER_HOME).
    office, site = live_site["office"], live_site["site"]
    before = credentials.get(office.store, office.hosting.box, site["fqdn"])
    result = CliRunner().invoke(main, ["credentials", "rotate", site["fqdn"], "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["rotated"] == ["db", "sftp"] and set(shown["verified"]) >= {"database", "sftp"}
    after = credentials.get(office.store, office.hosting.box, site["fqdn"])
    assert after["db"] != before["db"] and after["sftp"] != before["sftp"]
    (desired,) = office.hosting.recorded_sites([site["fqdn"]])
    from provisioner import verify

    with pytest.raises(verify.VerificationFailed):
        verify.sftp_login(desired, before["sftp"], office.hosting.inventory.host(desired.web_host))


def test_one_apply_at_a_time_per_site(office):
    from provisioner import locks

    request_id = office.through_review("tarakan-simkes.yaml")
    office.approve_without_hook(request_id)
    (site,) = office.hosting.desired(office.hosting.load_requests([request_id]))
    other = Office(office.home)
    with locks.held(office.store, [f"site:{site.fqdn}"]):
        # A different live holder (here: another machine's) is refused.
        with office.store.session() as session:
            from provisioner.store.models import Lock

            row = session.get(Lock, f"site:{site.fqdn}")
            ours, row.holder = row.holder, "another-machine:1:0123456789abcdef"
        with pytest.raises(StateError, match="another apply is running"):
            other.hosting.apply([request_id])
        with office.store.session() as session:
            session.get(Lock, f"site:{site.fqdn}").holder = ours
