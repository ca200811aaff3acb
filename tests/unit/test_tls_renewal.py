"""`tls status` and `tls renew` without hosts: which certificates are due, the cap, force, the CA's
limit, the checksum; the apply path's bookkeeping with real lab-CA certificates, the web role and
the outside check replaced by fakes; the timer and cron files shipped in deploy/.

The real renewal (Pebble, Apache's graceful reload, a client polling) is tests/lab/test_tls_renewal.py.
"""

import configparser
import datetime as dt
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner import certificates, tls, tls_renewal
from provisioner.cli import main
from provisioner.errors import HostError, StateError
from provisioner.secretbox import SecretBox
from provisioner.sop.sla import utcnow
from provisioner.store import open_store
from provisioner.store.models import CertificateRow, Event, RequestRow, SiteRow

ROOT = Path(__file__).resolve().parents[2]
ZONE = "tarakankota.go.id"
EXAMPLE = (ROOT / "examples" / "tarakan-simkes.yaml").read_text()


def with_acme(config, **acme):
    return config.model_copy(update={"hosting": config.hosting.model_copy(
        update={"acme": config.hosting.acme.model_copy(update=acme)})})


class Served:
    """Stands in for certificates.served: the facts a client would see, by fqdn (None: nothing answers)."""

    def __init__(self):
        self.facts: dict[str, dict | None] = {}
        self.calls: list[str] = []

    def set(self, fqdn, serial, days, trusted=True, names=None, issuer="Pebble Intermediate CA"):
        not_after = utcnow() + dt.timedelta(days=days)
        names = names or [fqdn]
        self.facts[fqdn] = {"issuer": issuer, "issuer_org": None, "serial": serial, "names": names,
                            "not_before": (not_after - dt.timedelta(days=90)).isoformat(),
                            "not_after": not_after.isoformat(), "days_left": round(days, 1),
                            "covers": certificates.covers(names, fqdn), "trusted": trusted,
                            "trust_error": None if trusted else "unable to get local issuer certificate"}

    def __call__(self, address, fqdn, trust, port=443, timeout=10.0):
        self.calls.append(fqdn)
        facts = self.facts.get(fqdn)
        if facts is None:
            raise HostError(f"{fqdn}: no TLS answer at {address}:{port}: connection refused")
        return dict(facts)


@pytest.fixture
def served(monkeypatch):
    fake = Served()
    monkeypatch.setattr(certificates, "served", fake)
    return fake


def add_site(store, label, number, state="provisioned", tls_on=True, public_ip="203.0.113.10"):
    """A recorded site with its stored request (the shipped example with its own id and label)."""
    fqdn = f"{label}.{ZONE}"
    request_id = f"HST-2024-{number:04d}"
    content = re.sub(r"(?m)^id: .*$", f"id: {request_id}", EXAMPLE)
    content = re.sub(r"(?m)^  subdomain: .*$", f"  subdomain: {label}", content)
    now = utcnow()
    with store.session() as session:
        session.add(RequestRow(id=request_id, service="hosting", office="tarakan", fqdn=fqdn, sha256="0" * 64,
                               content=content.encode(), source="test", submitted_at=now, state="done",
                               decision="approve", current_step=None))
        session.flush()
        session.add(SiteRow(fqdn=fqdn, request_id=request_id, office="tarakan", zone=ZONE, label=label, state=state,
                            web_host="web1", db_host="db1", public_ip=public_ip, dedicated_ip=False,
                            config={"fqdn": fqdn, "tls": tls_on}, plan_checksum=None, created_at=now,
                            provisioned_at=now, updated_at=now))
    return fqdn


def add_cert(store, box, fqdn, serial, days, state="active", source="acme", issued_days_ago=60, request_id=None):
    now = utcnow()
    with store.session() as session:
        session.add(CertificateRow(
            fqdn=fqdn, request_id=request_id, source=source, serial=serial, issuer="Pebble Intermediate CA",
            names=[fqdn], registered_domain=ZONE if source == "acme" else None,
            not_before=now - dt.timedelta(days=issued_days_ago), not_after=now + dt.timedelta(days=days),
            issued_at=now - dt.timedelta(days=issued_days_ago), state=state, cert_pem="(pem)", chain_pem="",
            key_sealed=box.seal("(key)")))


@pytest.fixture
def box(config):
    return SecretBox(config.key_file())


def served_site(store, box, served, label: str, number: int, serial: str, days: int, **cert) -> str:
    """A recorded site whose recorded certificate `serial` is also the one served."""
    fqdn = add_site(store, label, number)
    add_cert(store, box, fqdn, serial, days=days, **cert)
    served.set(fqdn, serial, days)
    return fqdn


# -- which certificates are due --------------------------------------------------------------


def test_due_are_the_expiring_and_those_not_served_as_recorded_soonest_first(config, store, box, served):
    soon = served_site(store, box, served, "soon", 1, "a1", days=10)
    fine = served_site(store, box, served, "fine", 2, "b1", days=60)
    expired = served_site(store, box, served, "gone", 3, "c1", days=-2)
    # Obtained by an apply that failed later: good, recorded, not yet served -> installed again, no order.
    other = add_site(store, "other", 4)
    add_cert(store, box, other, "d0", days=20, state="superseded", issued_days_ago=70)
    add_cert(store, box, other, "d1", days=80, state="pending", issued_days_ago=1)
    served.set(other, "d0", 20)
    untrusted = add_site(store, "untrusted", 5)
    add_cert(store, box, untrusted, "e1", days=70)
    served.set(untrusted, "e1", 70, trusted=False)
    silent = add_site(store, "silent", 6)  # nothing answers, the record says it expires soon
    add_cert(store, box, silent, "f1", days=5)
    unknown = add_site(store, "unknown", 7)  # nothing answers and nothing recorded
    add_site(store, "plain", 8, tls_on=False)  # no TLS: not looked at
    removed = add_site(store, "removed", 9, state="removed")
    served.set(removed, "zz", 1)

    planned = tls_renewal.plan_renewals(tls_renewal.Hosting(config, store))

    assert planned.within == 30 and planned.checked == 7
    assert [d.fqdn for d in planned.due] == [expired, silent, soon, untrusted, other]
    why = {d.fqdn: d for d in planned.due}
    assert why[expired].reason == "expired" and why[soon].reason == "expires within 30 days"
    assert why[silent].reason == "expires within 30 days" and why[silent].serial == "f1"
    assert "not trusted" in why[untrusted].reason and not why[untrusted].reuse
    assert "is not the recorded one (d1)" in why[other].reason and why[other].reuse and why[other].serial == "d1"
    assert fine not in why and planned.deferred == [] and planned.refused == []
    assert list(planned.unknown) == [unknown] and "connection refused" in planned.unknown[unknown]
    # The plan lists each with its web host, serial, expiry and reason, as an Update the audit can merge.
    changes = {c.site: c for c in planned.plan.changes}
    assert changes[soon].action == "Update" and changes[soon].kind == "TLS certificate"
    assert changes[soon].host == "web1" and changes[soon].detail["serial"] == "a1"
    assert changes[other].detail["renewal"] == "install recorded"
    text = planned.render()
    assert soon in text and "expires within 30 days" in text and planned.checksum in text


def test_within_and_a_certificate_that_does_not_cover_the_name(config, store, box, served):
    a = served_site(store, box, served, "alpha", 11, "a1", days=45)
    b = add_site(store, "beta", 12)
    add_cert(store, box, b, "b1", days=80)
    served.set(b, "b1", 80, names=["other.tarakankota.go.id"])
    work = tls_renewal.Hosting(config, store)

    assert [d.fqdn for d in tls_renewal.plan_renewals(work).due] == [b]
    assert "does not cover" in tls_renewal.plan_renewals(work).due[0].reason
    assert [d.fqdn for d in tls_renewal.plan_renewals(work, within=50).due] == [a, b]
    assert [d.fqdn for d in tls_renewal.plan_renewals(work, site=a, within=50).due] == [a]
    with pytest.raises(StateError, match="not a provisioned or suspended site"):
        tls_renewal.plan_renewals(work, site=f"nope.{ZONE}")


def test_at_most_max_renewals_a_run_the_rest_deferred(config, store, box, served):
    config = with_acme(config, max_renewals=2)
    sites = []
    for number, days in enumerate([20, 5, 12], start=21):
        fqdn = add_site(store, f"s{number}", number)
        add_cert(store, box, fqdn, f"{number:x}", days=days)
        served.set(fqdn, f"{number:x}", days)
        sites.append(fqdn)

    planned = tls_renewal.plan_renewals(tls_renewal.Hosting(config, store))

    assert [d.fqdn for d in planned.due] == [sites[1], sites[2]]  # 5 and 12 days left
    (deferred,) = planned.deferred
    assert deferred.fqdn == sites[0] and "at most 2 renewals a run" in deferred.note
    assert planned.plan.notes == {sites[0]: deferred.note}


def test_forced_sites_are_due_whatever_their_dates_and_get_a_new_order(config, store, box, served):
    a = served_site(store, box, served, "alpha", 31, "a1", days=80)
    b = served_site(store, box, served, "beta", 32, "b1", days=85)

    planned = tls_renewal.plan_renewals(tls_renewal.Hosting(config, store), force_sites=[b])

    (due,) = planned.due
    assert due.fqdn == b and due.reason == "renewal asked for (forced)" and not due.reuse


def test_the_cas_weekly_limit_refuses_with_the_next_slot_and_orders_nothing(config, store, box, served):
    config = with_acme(config, weekly_limit=2)
    first = add_site(store, "first", 41)
    add_cert(store, box, first, "a1", days=3, issued_days_ago=6)  # counts until tomorrow
    served.set(first, "a1", 3)
    second = add_site(store, "second", 42)
    add_cert(store, box, second, "b1", days=4, issued_days_ago=80)  # long out of the window
    served.set(second, "b1", 4)
    third = add_site(store, "third", 43)
    add_cert(store, box, third, "c1", days=9, issued_days_ago=90)
    served.set(third, "c1", 9)
    # A recorded certificate installed again is no new order: the limit does not hold it back.
    fourth = add_site(store, "fourth", 44)
    add_cert(store, box, fourth, "d0", days=20, state="superseded", issued_days_ago=70)
    add_cert(store, box, fourth, "d1", days=80, state="pending", issued_days_ago=2)  # counted: 2 of 2 now
    served.set(fourth, "d0", 20)

    planned = tls_renewal.plan_renewals(tls_renewal.Hosting(config, store))

    assert [d.fqdn for d in planned.due] == [fourth]
    assert [d.fqdn for d in planned.refused] == [first, second, third]
    note = planned.refused[0].note
    assert f"the CA's limit for {ZONE} is reached (2 of 2 certificates in 7 days)" in note
    tomorrow = utcnow() + dt.timedelta(days=1)
    assert f"the next slot opens at {tomorrow:%Y-%m-%d}" in note


def test_the_limit_counts_the_earlier_orders_of_the_same_run(config, store, box, served):
    config = with_acme(config, weekly_limit=1)
    a = add_site(store, "alpha", 51)
    add_cert(store, box, a, "a1", days=3, issued_days_ago=80)
    served.set(a, "a1", 3)
    b = add_site(store, "beta", 52)
    add_cert(store, box, b, "b1", days=6, issued_days_ago=80)
    served.set(b, "b1", 6)

    planned = tls_renewal.plan_renewals(tls_renewal.Hosting(config, store))

    assert [d.fqdn for d in planned.due] == [a] and [d.fqdn for d in planned.refused] == [b]


def test_the_checksum_binds_the_apply_to_the_reviewed_plan(config, store, box, served):
    a = served_site(store, box, served, "alpha", 61, "a1", days=10)

    first = tls_renewal.renew(config, store)
    assert not first.applied and [d.fqdn for d in first.plan.due] == [a]
    assert tls_renewal.renew(config, store).plan.checksum == first.plan.checksum  # stable
    b = served_site(store, box, served, "beta", 62, "b1", days=12)
    with pytest.raises(StateError, match="changed since it was reviewed"):
        tls_renewal.renew(config, store, apply=True, checksum=first.plan.checksum)
    with store.session() as session:  # refused before anything was done
        assert session.query(Event).count() == 0
        assert session.query(CertificateRow).count() == 2


# -- status --------------------------------------------------------------------------------


def test_status_compares_served_with_recorded_and_reports_silence(config, store, box, served):
    a = add_site(store, "alpha", 71)
    add_cert(store, box, a, "a1", days=40, request_id="HST-2024-0071")
    served.set(a, "a1", 40)
    b = add_site(store, "beta", 72)
    add_cert(store, box, b, "b1", days=40)
    served.set(b, "ff", 70)  # someone put another certificate there
    c = add_site(store, "gamma", 73)  # nothing answers

    rows = {r["fqdn"]: r for r in tls_renewal.status(config, store)}

    assert rows[a]["served"]["issuer"] == "Pebble Intermediate CA" and rows[a]["matches"] is True
    assert rows[a]["recorded"]["serial"] == "a1" and 39.9 <= rows[a]["recorded"]["days_left"] <= 40
    assert rows[a]["error"] is None and rows[a]["last_failure"] is None
    assert rows[b]["matches"] is False
    assert rows[c]["served"] is None and "connection refused" in rows[c]["error"] and rows[c]["matches"] is None

    # A renewal failure shows until a later renewal succeeds.
    from provisioner.store.events import add_event

    with store.session() as session:
        add_event(session, None, "certificate_renewed", fqdn=a, old_serial="a0", serial="a1")
        add_event(session, None, "tls_renewal_failed", fqdn=a, reason="ACME CA down", serial="a1")
    (row,) = tls_renewal.status(config, store, site=a)
    assert row["last_failure"]["reason"] == "ACME CA down" and row["last_failure"]["serial"] == "a1"
    with store.session() as session:
        add_event(session, None, "certificate_renewed", fqdn=a, old_serial="a1", serial="a2")
    (row,) = tls_renewal.status(config, store, site=a)
    assert row["last_failure"] is None


def test_status_cli_prints_a_table_and_json_and_exits_0(config, store, box, served, monkeypatch, tmp_path):
    a = served_site(store, box, served, "alpha", 81, "a1", days=40)
    add_site(store, "beta", 82)  # nothing answers: reported, exit 0
    monkeypatch.setattr("provisioner.cli.tls.load_config", lambda path: config)
    monkeypatch.setattr("provisioner.cli.tls.open_store", lambda url: store)

    shown = CliRunner().invoke(main, ["tls", "status"])
    as_json = CliRunner().invoke(main, ["tls", "status", "--json"])

    assert shown.exit_code == 0, shown.output
    assert a in shown.output and "Pebble Intermediate CA" in shown.output and "no TLS answer" in shown.output
    assert as_json.exit_code == 0 and '"days_left": 40' in as_json.output


# -- the apply path's bookkeeping ------------------------------------------------------------


class FakeWeb:
    """Stands in for the web role: records each run; the installed certificates become served."""

    def __init__(self, served: Served):
        self.served, self.runs, self.fail, self.serve_other = served, [], None, set()

    def __call__(self, inventory_path, sites, secrets, state="present", artifact_dir=None, rotate=False,
                 timeout=None):
        self.runs.append({"sites": [s.fqdn for s in sites], "suspended": [s.suspended for s in sites],
                          "tls": sorted(secrets["tls"])})
        if self.fail:
            raise self.fail
        for fqdn, files in secrets["tls"].items():
            facts = certificates.describe(files["cert"])
            if fqdn in self.serve_other:
                continue  # the host keeps serving the old one
            self.served.facts[fqdn] = facts | {"days_left": 90.0, "covers": True, "trusted": True,
                                               "trust_error": None}


@pytest.fixture
def lab_ca(config, tmp_path):
    tls.ensure_lab_ca(tmp_path / "ca")
    return config.model_copy(update={"hosting": config.hosting.model_copy(
        update={"tls_source": "lab-ca", "tls_dir": tmp_path / "ca"})})


@pytest.fixture
def web(monkeypatch, served):
    fake = FakeWeb(served)
    monkeypatch.setattr(tls_renewal.web_target, "apply", fake)
    monkeypatch.setattr(tls_renewal, "SERVED_WAIT", 0.0)
    return fake


def events(store, kind):
    with store.session() as session:
        return [e.payload for e in session.query(Event).filter(Event.kind == kind).order_by(Event.id)]


def test_apply_installs_every_renewal_in_one_run_checks_and_records(lab_ca, store, box, served, web):
    a = served_site(store, box, served, "alpha", 91, "a1", days=10, source="lab-ca")
    b = add_site(store, "beta", 92, state="suspended")
    add_cert(store, box, b, "b1", days=12, source="lab-ca")
    served.set(b, "b1", 12)

    result = tls_renewal.renew(lab_ca, store, apply=True)

    assert result.failed == {} and result.ok and [r["fqdn"] for r in result.renewed] == [a, b]
    # One web role run for both: one configtest and one graceful reload per web host.
    assert web.runs == [{"sites": [a, b], "suspended": [False, True], "tls": [a, b]}]
    for fqdn, old in ((a, "a1"), (b, "b1")):
        new = served.facts[fqdn]["serial"]
        assert new != old
        rows = {r.serial: r.state for r in tls_renewal.Hosting(lab_ca, store).certs.rows(fqdn)}
        assert rows == {old: "superseded", new: "active"}
        with store.session() as session:
            record = session.get(SiteRow, fqdn).config
        assert record["certificate"]["serial"] == new and record["certificate"]["source"] == "lab-ca"
        assert record["tls"] is True  # the rest of the record kept
    renewed = events(store, "certificate_renewed")
    assert [(e["fqdn"], e["old_serial"]) for e in renewed] == [(a, "a1"), (b, "b1")]
    with store.session() as session:
        assert session.query(Event).filter(Event.kind == "certificate_issued").count() == 2
    assert not tls_renewal.renew(lab_ca, store).plan.due  # nothing due any more


def test_a_failed_install_discards_the_run_and_the_old_certificates_keep_serving(lab_ca, store, box, served, web):
    a = served_site(store, box, served, "alpha", 101, "a1", days=10, source="lab-ca")
    web.fail = HostError("web1: apache2ctl configtest refused the new configuration: AH00526")

    result = tls_renewal.renew(lab_ca, store, apply=True)

    assert result.renewed == [] and "configtest refused" in result.failed[a]
    assert served.facts[a]["serial"] == "a1"
    rows = {r.serial: r.state for r in tls_renewal.Hosting(lab_ca, store).certs.rows(a)}
    assert rows.pop("a1") == "active" and list(rows.values()) == ["failed"]
    (failed,) = events(store, "tls_renewal_failed")
    assert failed["fqdn"] == a and failed["serial"] == "a1" and failed["stage"] == "install"
    assert "configtest refused" in failed["reason"]
    assert len(events(store, "certificate_not_installed")) == 1
    # Still due: the next run tries again.
    assert [d.fqdn for d in tls_renewal.renew(lab_ca, store).plan.due] == [a]


def test_a_certificate_installed_but_not_served_is_discarded_the_others_go_on(lab_ca, store, box, served, web):
    a = served_site(store, box, served, "alpha", 111, "a1", days=10, source="lab-ca")
    b = served_site(store, box, served, "beta", 112, "b1", days=11, source="lab-ca")
    web.serve_other = {a}

    result = tls_renewal.renew(lab_ca, store, apply=True)

    assert [r["fqdn"] for r in result.renewed] == [b]
    assert "serial a1 is served" in result.failed[a]
    (failed,) = events(store, "tls_renewal_failed")
    assert failed["stage"] == "check" and failed["new_serial"] != "a1"
    states = {r.serial: r.state for r in tls_renewal.Hosting(lab_ca, store).certs.rows(a)}
    assert states["a1"] == "active" and states[failed["new_serial"]] == "failed"


def test_an_order_that_fails_is_recorded_and_the_others_are_installed(lab_ca, store, box, served, web, monkeypatch):
    a = served_site(store, box, served, "alpha", 121, "a1", days=10, source="lab-ca")
    b = served_site(store, box, served, "beta", 122, "b1", days=11, source="lab-ca")
    obtain = certificates.Certificates.obtain

    def refuse_alpha(self, sites, reason="new"):
        assert reason == "renewal"
        bundles, errors = obtain(self, [s for s in sites if s.fqdn != a], reason)
        return bundles, errors | {a: HostError("ACME CA https://ca.test/dir: cannot connect: refused")}

    monkeypatch.setattr(certificates.Certificates, "obtain", refuse_alpha)

    result = tls_renewal.renew(lab_ca, store, apply=True)

    assert [r["fqdn"] for r in result.renewed] == [b] and "cannot connect" in result.failed[a]
    assert web.runs[0]["tls"] == [b]
    (failed,) = events(store, "tls_renewal_failed")
    assert failed["stage"] == "order" and failed["serial"] == "a1"


def test_renew_cli_exits_4_when_a_site_failed_and_prints_the_plan(lab_ca, store, box, served, web, monkeypatch):
    a = served_site(store, box, served, "alpha", 131, "a1", days=10, source="lab-ca")
    monkeypatch.setattr("provisioner.cli.tls.load_config", lambda path: lab_ca)
    monkeypatch.setattr("provisioner.cli.tls.open_store", lambda url: store)

    planned = CliRunner().invoke(main, ["tls", "renew"])
    assert planned.exit_code == 0 and a in planned.output and "dry run" in planned.output
    checksum = re.search(r"checksum ([0-9a-f]{64})", planned.output).group(1)
    web.fail = HostError("web1: unreachable")
    failed = CliRunner().invoke(main, ["tls", "renew", "--apply", "--checksum", checksum])
    assert failed.exit_code == 4 and "FAILED" in failed.output
    web.fail = None
    done = CliRunner().invoke(main, ["tls", "renew", "--apply", "--json"])
    assert done.exit_code == 0 and '"renewed": [' in done.output and a in done.output


# -- the daily timer and the cron line --------------------------------------------------------

DEPLOY = ROOT / "deploy"


def _unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(DEPLOY / "systemd" / name)
    return parser


def _parses(argv):
    """The command line as the CLI would take it: `provision` then its arguments."""
    assert Path(argv[0]).name == "provision", argv
    args = [a for a in argv[1:] if a != "--apply"] + ["--help"]  # --help: parse only, run nothing
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (argv, result.output)
    # Every option given is one the command has (click refuses unknown ones before --help as well).
    options = {a.split("=")[0] for a in argv[1:] if a.startswith("--")}
    for option in options:
        assert option in result.output, (option, result.output)


def test_the_systemd_units_run_the_renewal_daily():
    service, timer = _unit("provisioner-tls-renew.service"), _unit("provisioner-tls-renew.timer")
    assert service["Service"]["Type"] == "oneshot"
    argv = shlex.split(service["Service"]["ExecStart"])
    assert argv[:4] == ["/usr/local/bin/provision", "tls", "renew", "--apply"]
    _parses(argv)
    assert timer["Timer"]["OnCalendar"] == "daily"
    assert timer["Timer"]["RandomizedDelaySec"] == "1h" and timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"].get("Unit", "provisioner-tls-renew.service") == "provisioner-tls-renew.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for name in ("provisioner-tls-renew.service", "provisioner-tls-renew.timer"):
        shutil.copy(DEPLOY / "systemd" / name, tmp_path / name)
    # The service's ExecStart must exist for verify; a stand-in at the same path is not possible
    # without root, so the check runs on a copy that points at this venv's provision.
    service = tmp_path / "provisioner-tls-renew.service"
    provision = shutil.which("provision") or str(ROOT / ".venv" / "bin" / "provision")
    service.write_text(service.read_text().replace("/usr/local/bin/provision", provision))
    run = subprocess.run([analyze, "verify", str(service), str(tmp_path / "provisioner-tls-renew.timer")],
                         capture_output=True, text=True, timeout=60)
    problems = [line for line in (run.stdout + run.stderr).splitlines()
                if "provisioner-tls-renew" in line]
    assert run.returncode == 0 and not problems, run.stdout + run.stderr


def test_the_cron_line_runs_the_renewal_daily_with_jitter():
    lines = [line for line in (DEPLOY / "cron" / "provisioner-tls-renew").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#") and "=" not in line.split()[0]]
    (line,) = lines
    fields = line.split(None, 6)
    minute, hour, dom, month, dow, user, command = fields
    assert (dom, month, dow) == ("*", "*", "*") and minute.isdigit() and hour.isdigit()
    assert user == "root"
    argv = shlex.split(command.split(">")[0])
    assert argv[:4] == ["/usr/local/bin/provision", "tls", "renew", "--apply"]
    assert argv[argv.index("--jitter") + 1] == "3600"
    _parses(argv)
