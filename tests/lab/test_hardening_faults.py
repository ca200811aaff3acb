"""Faults injected on the real lab: each ends with a complete site or a clean rollback, a clear
state, and the other sites still serving (checked over HTTP).

PowerDNS stopped (during the web step; before an approval), slow past the
timeout, answering 5xx, a failed NOTIFY, a wrong API key; the web host
unreachable while the database host works and the database host unreachable;
the process killed after each saga step in turn; a credential rotation that
fails; a removal that fails midway. Configtest failing is in test_hosting.py
(test_configtest_failure_rolls_back_and_other_sites_keep_serving).

Every fault is undone in a finally block: PowerDNS started, sshd started again
(from outside the host, through its namespaces, since SSH is what is down).
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest
import requests
from click.testing import CliRunner

from provisioner import credentials, verify
from provisioner.cli import main
from provisioner.errors import ConfigError, HostError
from provisioner.hosting import STEPS, rotate_credentials
from provisioner.lab import guard, hosts, lifecycle, topology
from provisioner.lifecycle import Lifecycle
from provisioner.store.models import IPAllocation

from labkit import PDNS, ROOT, Office, api_headers

# The addresses the web servers share among their sites (not a dedicated one).
SHARED = {str(p.ip) for h in topology.hosts_of("web") for p in h.public_addresses}
PDNS_URL = f"http://{topology.primary_ns().address}:{topology.PDNS_API_PORT}/api/v1"


# -- faults and how they are undone ------------------------------------------------

def on_lab(host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    guard.require_lab_route(topology.host(host).address)
    return subprocess.run(["ssh", "-F", str(topology.SSH_CONFIG), host, "sudo", "-n", *command.split()],
                          capture_output=True, text=True, timeout=120, check=check)


def pdns_answers() -> bool:
    try:
        return requests.get(f"{PDNS}/zones", headers=api_headers(), timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_for(what, check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come back")
        time.sleep(0.5)


class PowerDns:
    def stop(self) -> None:
        on_lab("ns1", "service pdns stop")
        assert not pdns_answers()


@contextlib.contextmanager
def powerdns_stoppable():
    """PowerDNS on ns1 may be stopped inside; it is running again afterwards, whatever happened."""
    try:
        yield PowerDns()
    finally:
        if not pdns_answers():
            on_lab("ns1", "service pdns start")
            wait_for("the PowerDNS API", pdns_answers)


def dns_answers(host: str) -> bool:
    """The name server on the host answers an SOA query for the lab zone."""
    address = str(topology.host(host).address)
    guard.require_lab_route(address)
    try:
        dns.query.udp(dns.message.make_query("tarakankota.go.id", dns.rdatatype.SOA), address, timeout=2.0)
    except (OSError, dns.exception.Timeout):
        return False
    return True


@contextlib.contextmanager
def nameserver_stopped(host: str):
    """PowerDNS on a secondary stopped inside (it misses every change); running again afterwards."""
    try:
        on_lab(host, "service pdns stop")
        assert not dns_answers(host), f"PowerDNS on {host} still answers after it was stopped"
        yield
    finally:
        if not dns_answers(host):
            on_lab(host, "service pdns start")
            wait_for(f"PowerDNS on {host}", lambda: dns_answers(host))


def ssh_answers(host: str) -> bool:
    return on_lab(host, "true", check=False).returncode == 0


@contextlib.contextmanager
def sshd_stoppable(host: str):
    """The host's sshd may be stopped inside (the host unreachable for the toolkit); started again after.

    It is started from outside, entering the host's namespaces, since SSH is what is down.
    """
    def stop() -> None:
        on_lab(host, "service ssh stop")
        assert not ssh_answers(host)

    try:
        yield stop
    finally:
        if not ssh_answers(host):
            pid = hosts.init_pid(topology.host(host))
            subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-p", "-n", "-r", "-w",
                            "/usr/sbin/service", "ssh", "start"], capture_output=True, check=True, timeout=60)
            wait_for(f"sshd on {host}", lambda: ssh_answers(host))


@contextlib.contextmanager
def at_step(when: str, step: str, action):
    """Inside, `action` runs at the saga's fault point (when, step), as a fault striking at that moment.

    An injection that fails (or never happens) fails the test: pytest.fail is not an
    Exception, so the saga cannot take it for a failed step and compensate it.
    """
    from provisioner import faults

    original = faults.point
    injected = []

    def point(w, s):
        if (w, s) == (when, step) and not injected:
            try:
                action()
            except Exception as err:  # noqa: BLE001 - reported as the test's own failure
                pytest.fail(f"the fault at {when} {step} could not be injected: {err!r}", pytrace=False)
            injected.append((w, s))
        original(w, s)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(faults, "point", point)
        yield
    if not injected:
        pytest.fail(f"the fault point {when} {step} was never reached", pytrace=False)


class Proxy:
    """A PowerDNS API proxy on 127.0.0.1 that misbehaves per HTTP method.

    rules[method] = a status to answer instead of forwarding, or ("late", seconds, n): forward
    the first n requests, then answer only after `seconds` (the change is made, the client
    has given up).
    """

    def __init__(self):
        self.rules: dict = {}
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.seen.append(self.command)
                rule = proxy.rules.get(self.command)
                if isinstance(rule, int):
                    return self._send(rule, json.dumps({"error": "injected by the test proxy"}).encode())
                guard.require_lab_route(topology.primary_ns().address)
                upstream = requests.request(self.command, PDNS_URL + self.path[len("/api/v1"):], data=body,
                                            headers={"X-API-Key": self.headers.get("X-API-Key", ""),
                                                     "Content-Type": "application/json"}, timeout=10)
                if isinstance(rule, tuple) and rule[2] > 0:
                    proxy.rules[self.command] = (rule[0], rule[1], rule[2] - 1)
                    time.sleep(rule[1])
                self._send(upstream.status_code, upstream.content)

            def _send(self, status, data):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (the timeout case)

            do_GET = do_PATCH = do_PUT = _relay

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy():
    p = Proxy()
    yield p
    p.close()


def office_through(office: Office, monkeypatch, api_url: str, key: str | None = None) -> Office:
    """The same state home with the inventory's PowerDNS API URL (and key) replaced, a 1 s API timeout."""
    inventory = office.home / "inventory"
    shutil.copytree(ROOT / "inventory" / "lab", inventory)
    hosts_file = inventory / "hosts.yml"
    hosts_file.write_text(hosts_file.read_text().replace(PDNS_URL, api_url))
    if key is not None:
        key_file = office.home / "pdns-api-key"
        key_file.write_text(key)
        group = inventory / "group_vars" / "nameservers.yml"
        group.write_text(group.read_text().replace(str(topology.PDNS_API_KEY_FILE), str(key_file)))
    config = office.home / "faulty.yaml"
    config.write_text(f"hosting:\n  inventory: {inventory}\n  dns_api_timeout: 1\n")
    monkeypatch.setenv("PROVISIONER_CONFIG", str(config))
    return Office(office.home)


# -- what every case checks ----------------------------------------------------------

def serves(site) -> bool:
    """Whether the site (its record, or anything with its fqdn and public_ip) answers at its address."""
    guard.require_lab_route(site.public_ip)
    return requests.get(f"http://{site.public_ip}/", headers={"Host": site.fqdn}, timeout=5,
                        allow_redirects=False).status_code == 200


@pytest.fixture(scope="module")
def bystander(tmp_path_factory):
    """A live site of another agency that must keep serving through every fault."""
    if os.geteuid() != 0:
        pytest.skip("lab tests run as root")
    if not lifecycle.status().bridge:
        message = "the lab is down (run `provision lab up`)"
        if os.environ.get("PROVISIONER_REQUIRE_LAB"):
            pytest.fail(message)  # as tests/lab/conftest.py does: a required lab that is down is an error
        pytest.skip(message)
    home = tmp_path_factory.mktemp("bystander")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("PROVISIONER_STATE_URL", "PROVISIONER_CONFIG"):
            mp.delenv(name, raising=False)
        mp.setenv("PROVISIONER_HOME", str(home))
        mp.chdir(home)
        o = Office(home)
        request_id = o.through_review("buleleng-sipandu.yaml", dedicated_ip="false", tls="false")
        o.approve_without_hook(request_id)
        (site,) = o.hosting.apply([request_id]).sites
    site = SimpleNamespace(fqdn=site["fqdn"], public_ip=site["public_ip"])
    assert serves(site)
    yield site
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVISIONER_HOME", str(home))
        mp.chdir(home)
        o.cleanup()


def a_record(fqdn: str, zone: str) -> list[list[str]]:
    data = requests.get(f"{PDNS}/zones/{zone}.", headers=api_headers(), timeout=5).json()
    return [[r["content"] for r in rr["records"]] for rr in data["rrsets"] if rr["name"] == f"{fqdn}." and rr["type"] == "A"]


def nothing_left(office: Office, lab_host, site, address: str | None = None) -> None:
    """Nothing of the site on the web and database servers placement gave it, nor in DNS or the pool."""
    web = lab_host(site.web_host)
    db = lab_host(site.db_host) if site.database else None
    assert not web.file(f"/etc/apache2/sites-available/{site.fqdn}.conf").exists
    assert not web.file(f"/etc/apache2/sites-enabled/{site.fqdn}.conf").exists
    assert not web.user(site.names.user).exists
    assert not web.file(site.names.home).exists
    if site.database:
        assert site.names.db_name not in db.check_output("mysql -N -e 'SHOW DATABASES'")
        assert not db.check_output(f"mysql -N -e \"SELECT host FROM mysql.user WHERE user='{site.names.db_user}'\"")
    if address and address not in SHARED:
        assert f"{address}/" not in web.check_output("ip -o -4 addr show dev eth0")
    with office.store.session() as session:
        assert session.query(IPAllocation).filter(IPAllocation.fqdn == site.fqdn).count() == 0
    assert a_record(site.fqdn, site.zone) == []


def steps_of(office: Office, kind: str, fqdn: str) -> list[str]:
    return [e.payload["step"] for e in office.events(kind) if e.payload.get("fqdn") == fqdn]


def new_site(office: Office, **fields):
    request_id = office.through_review("tarakan-simkes.yaml", **fields)
    office.approve_without_hook(request_id)
    (site,) = office.hosting.desired(office.hosting.load_requests([request_id]))
    return request_id, site


# -- PowerDNS -----------------------------------------------------------------------

def test_powerdns_stopped_during_the_web_step_is_rolled_back_completely(office, lab_host, bystander):
    request_id, site = new_site(office, dedicated_ip="true", tls="false")
    with powerdns_stoppable() as pdns, at_step("before", "web", pdns.stop):
        with pytest.raises(HostError, match="PowerDNS API on ns1: change to zone tarakankota.go.id: "
                                            "connection refused"):
            office.hosting.apply([request_id])
        row = office.site(site.fqdn)
        assert row.state == "failed", row.reason
    # The undo did not need PowerDNS: the change was refused before it was made.
    assert steps_of(office, "saga_failed", site.fqdn) == ["dns"]
    assert steps_of(office, "saga_compensated", site.fqdn) == ["web", "db", "ip"]
    assert [e.payload["state"] for e in office.events("site_failed")] == ["failed"]
    nothing_left(office, lab_host, site, row.public_ip)
    assert serves(bystander)


def test_decide_with_powerdns_down_says_so_in_one_line(office, bystander):
    request_id = office.through_review("tarakan-simkes.yaml")
    with powerdns_stoppable() as pdns:
        pdns.stop()
        result = CliRunner().invoke(main, ["decide", request_id, "--approve", "--by", "kadis"])
    assert result.exit_code == 6, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output and "requests." not in result.output
    assert "PowerDNS API on ns1" in lines[0] and "connection refused" in lines[0]
    assert office.engine.show(request_id)["state"] == "attention"
    assert serves(bystander)


def test_powerdns_answering_5xx_is_retried_then_rolled_back(office, lab_host, bystander, proxy, monkeypatch):
    faulty = office_through(office, monkeypatch, proxy.url)
    request_id, site = new_site(faulty, tls="false")
    proxy.rules["PATCH"] = 503
    with pytest.raises(HostError, match=r"change to zone tarakankota.go.id: HTTP 503: .*\(tried 3 times\)"):
        faulty.hosting.apply([request_id])
    assert proxy.seen.count("PATCH") == 3
    assert faulty.site(site.fqdn).state == "failed"
    assert steps_of(faulty, "saga_compensated", site.fqdn) == ["web", "db"]
    nothing_left(faulty, lab_host, site)
    assert serves(bystander)


def test_powerdns_slower_than_the_timeout_is_reconciled_from_the_live_zone(office, lab_host, bystander, proxy,
                                                                           monkeypatch):
    faulty = office_through(office, monkeypatch, proxy.url)
    request_id, site = new_site(faulty, tls="false")
    # Each PATCH reaches PowerDNS (the record is written) but its answer comes after the client gave up.
    proxy.rules["PATCH"] = ("late", 2.5, 3)
    with pytest.raises(HostError, match=r"change to zone tarakankota.go.id: no answer in time \(timeout\) "
                                        r"\(tried 3 times\)"):
        faulty.hosting.apply([request_id])
    # The undo read the zone, found the record the timed-out PATCH wrote, and removed it.
    assert steps_of(faulty, "saga_compensated", site.fqdn) == ["dns", "web", "db"]
    assert faulty.site(site.fqdn).state == "failed"
    nothing_left(faulty, lab_host, site)
    assert serves(bystander)


def test_a_failed_notify_keeps_the_site_and_reports_a_stale_secondary(office, lab_host, bystander, proxy,
                                                                      monkeypatch):
    faulty = office_through(office, monkeypatch, proxy.url)
    request_id, site = new_site(faulty, tls="false")
    proxy.rules["PUT"] = 503
    # ns2 down for the apply: it cannot catch up by itself (ns1's own NOTIFY, a SOA check) within
    # the verification's wait, so the stale secondary does not depend on timing.
    with nameserver_stopped("ns2"):
        (record,) = faulty.hosting.apply([request_id]).sites
    row = faulty.site(site.fqdn)
    assert row.state == "provisioned"
    assert [e.payload["step"] for e in faulty.events("dns_notify_failed")] == ["dns"]
    assert a_record(site.fqdn, site.zone) == [[row.public_ip]]
    assert serves(row) and serves(bystander)
    # ns2 never heard of the change: the record and an event say so; the primary serves it.
    stale = faulty.events("dns_secondary_stale")
    assert [e.payload["warning"].split(":")[0] for e in stale] == ["dns-secondary-stale"]
    assert "ns2" in row.reason and record["warnings"] == [stale[0].payload["warning"]]
    assert record["verified"]["dns"]["ns1"] == [row.public_ip]


def test_a_wrong_api_key_is_refused_before_anything_is_touched(office, lab_host, bystander, monkeypatch):
    faulty = office_through(office, monkeypatch, PDNS_URL, key="not-the-key")
    request_id, site = new_site(faulty, tls="false")
    with pytest.raises(ConfigError, match=r"the API key was refused \(HTTP 401\)"):
        faulty.hosting.apply([request_id])
    # Through the CLI (the SOP's action): the same cause, one line.
    result = CliRunner().invoke(main, ["hosting", request_id, "--apply"])
    assert result.exit_code == 6 and len(result.output.strip().splitlines()) == 1
    assert "API key was refused" in result.output and "Traceback" not in result.output
    assert faulty.site(site.fqdn) is None
    nothing_left(faulty, lab_host, site)
    assert serves(bystander)


# -- hosts unreachable --------------------------------------------------------------

def test_unreachable_hosts_leave_a_clear_state_and_a_rerun_completes(office, lab_host, bystander):
    request_id, site = new_site(office, tls="false")
    # The servers placement gives the site are the ones made unreachable.
    web, db = lab_host(site.web_host), lab_host(site.db_host)

    # 1. The database host unreachable: nothing made, but what it holds cannot be read: attention.
    with sshd_stoppable(site.db_host) as stop, at_step("before", "db", stop):
        with pytest.raises(HostError, match=f"unreachable: {site.db_host}"):
            office.hosting.apply([request_id])
    row = office.site(site.fqdn)
    assert row.state == "attention" and "not undone: db" in row.reason
    assert (row.web_host, row.db_host) == (site.web_host, site.db_host)
    assert not web.user(site.names.user).exists
    assert serves(bystander)

    # 2. The web host unreachable while the database host works: the database made is undone.
    with sshd_stoppable(site.web_host) as stop, at_step("before", "web", stop):
        with pytest.raises(HostError, match=f"unreachable: {site.web_host}"):
            office.hosting.apply([request_id])
        assert site.names.db_name not in db.check_output("mysql -N -e 'SHOW DATABASES'")
    assert "db" in steps_of(office, "saga_compensated", site.fqdn)
    row = office.site(site.fqdn)
    assert row.state == "attention" and "not undone: web" in row.reason
    assert not web.user(site.names.user).exists
    assert serves(bystander)

    # 3. Both back: the rerun completes the site, once.
    office.hosting.apply([request_id])
    row = office.site(site.fqdn)
    assert row.state == "provisioned" and serves(row) and serves(bystander)
    assert db.check_output(f"mysql -N -e \"SELECT host FROM mysql.user WHERE user='{site.names.db_user}'\"") \
        .split() == [site.web_address]


# -- a killed process, a failed rotation, a removal that stops midway ------------------

def _apply_in_subprocess(office: Office, request_id: str, fault: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PROVISIONER_FAULT", None)
    if fault:
        env["PROVISIONER_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "provisioner.cli", "hosting", request_id, "--apply"],
                          cwd=office.home, env=env, capture_output=True, text=True, timeout=900)


def test_killed_after_each_step_then_rotation_and_removal_faults(office, lab_host, bystander, monkeypatch):
    request_id, site = new_site(office, dedicated_ip="true", tls="false")
    web = lab_host(site.web_host)

    # The process dies right after each stage of the saga in turn; each rerun goes on from the live
    # state. The web step runs beside the db step, so the run killed after db had built the web part
    # too (its intent recorded, its done not): the next run finds nothing to do there.
    crashes = (("ip", ["ip"]), ("db", ["ip", "db"]), ("dns", ["ip", "db", "dns"]))
    for step, recorded in crashes:
        crashed = _apply_in_subprocess(office, request_id, f"crash-after:{step}")
        assert crashed.returncode == 70, crashed.stderr
        assert steps_of(office, "saga_done", site.fqdn) == recorded
        if step == "db":
            assert steps_of(office, "saga_intent", site.fqdn) == ["ip", "db", "web"]
            assert web.user(site.names.user).exists  # built beside the db step, before the kill
    # A killed run may leave `provisioning`; the next run never takes it for a state to go back to:
    # each rerun started from a site not yet live, so would settle it in attention, never provisioning.
    started = [e.payload["was"] for e in office.events("apply_started") if e.payload.get("fqdn") == site.fqdn]
    assert started == [None] + ["attention"] * (len(crashes) - 1)
    finished = _apply_in_subprocess(office, request_id, None)
    assert finished.returncode == 0, finished.stderr
    row = office.site(site.fqdn)
    assert row.state == "provisioned" and serves(bystander)
    # One of everything: address, system user, A record, database account.
    with office.store.session() as session:
        assert session.query(IPAllocation).filter(IPAllocation.fqdn == site.fqdn).count() == 1
    assert web.check_output("ip -o -4 addr show dev eth0").count(f"{row.public_ip}/") == 1
    assert web.check_output(f"getent passwd {site.names.user}").count(site.names.user) == 1
    assert a_record(site.fqdn, site.zone) == [[row.public_ip]]
    # Granted to the site's web server alone.
    assert lab_host(row.db_host).check_output(
        f"mysql -N -e \"SELECT host FROM mysql.user WHERE user='{site.names.db_user}'\"").split() \
        == [str(topology.host(row.web_host).address)]
    # No step ran twice: web ran once, in the run killed after db (so it has an intent and no done).
    assert steps_of(office, "saga_done", site.fqdn) == ["ip", "db", "dns"]
    assert steps_of(office, "saga_intent", site.fqdn) == list(STEPS)

    # A rotation that fails after the host took the new SFTP password puts the old one back.
    (desired,) = office.hosting.recorded_sites([site.fqdn])
    before = credentials.get(office.store, office.hosting.box, site.fqdn)
    monkeypatch.setenv("PROVISIONER_FAULT", "fail-after:rotate-sftp")
    with pytest.raises(HostError, match="rotating the sftp password failed: .*the stored password was put back"
                                        ".*already rotated: db \\(new password in the credentials sheet "):
        rotate_credentials(office.config, office.store, site.fqdn)
    monkeypatch.delenv("PROVISIONER_FAULT")
    after = credentials.get(office.store, office.hosting.box, site.fqdn)
    assert after["sftp"] == before["sftp"]
    verify.sftp_login(desired, before["sftp"], office.hosting.inventory.host(row.web_host))  # the stored one works
    # The database account went first and fully: its new password is stored and works.
    assert after["db"] != before["db"]
    verify.database_login(office.hosting.inventory, desired, after["db"])
    failed = office.events("credential_rotation_failed")
    assert [(e.payload["account"], e.payload["old_password_works"]) for e in failed] == [("sftp", True)]
    assert office.site(site.fqdn).state == "provisioned"

    # A removal that stops at the database (its server unreachable) leaves attention with what remains ...
    with sshd_stoppable(row.db_host) as stop, at_step("before", "remove-db", stop):
        with pytest.raises(HostError, match=f"unreachable: {row.db_host}"):
            Lifecycle(office.config, office.store).remove(site.fqdn, reason="fault test")
    row = office.site(site.fqdn)
    assert row.state == "attention" and "removal stopped at step db" in row.reason
    (stopped,) = office.events("removal_incomplete")
    remaining = stopped.payload["remaining"]
    assert any("database" in r for r in remaining) and any("public IP" in r for r in remaining)
    assert not any("vhost" in r or "A record" in r for r in remaining)
    assert not web.user(site.names.user).exists and a_record(site.fqdn, site.zone) == []
    with office.store.session() as session:  # the address is still up, so still allocated
        assert session.query(IPAllocation).filter(IPAllocation.fqdn == site.fqdn).count() == 1
    # ... and a rerun finishes it.
    done = Lifecycle(office.config, office.store).remove(site.fqdn, reason="fault test")
    assert done.state == "removed" and office.site(site.fqdn).state == "removed"
    nothing_left(office, lab_host, site, row.public_ip)
    assert serves(bystander)
