"""The audit's comparison without hosts: every finding kind, its severity and fix line, formats, exit codes."""

import csv
import dataclasses
import io
import json
import os

import pytest
from click.testing import CliRunner

from provisioner import audit, audit_report, certificates, naming
from provisioner.audit import Observed, Report, compare
from provisioner.cli import main
from provisioner.errors import StateError
from provisioner.hosting import Live
from provisioner.site import DesiredSite, sha256
from provisioner.store import open_store
from provisioner.store.models import Event
from provisioner.targets import db as db_target
from provisioner.targets import probe
from provisioner.targets import web as web_target
from provisioner.targets.dns import DnsTarget

ZONE = "tarakankota.go.id"
WEB_ADDR = "10.77.0.21"
SHARED = "203.0.113.10"


def make_site(label="simkes", dedicated=False, ip=SHARED, php=True, database=True, tls=True) -> DesiredSite:
    return DesiredSite(
        request_id="HST-2024-0007", office="tarakan", label=label, zone=ZONE, names=naming.site_names(label, ZONE),
        web_host="web1", web_address=WEB_ADDR, db_host="db1" if database else None, public_ip=ip,
        dedicated_ip=dedicated, php=php, php_version="8.2", database=database, tls=tls, quota_mb=1024,
        bandwidth_kbps=0)


def rrset(name, rtype, contents, ours=False):
    comments = [{"content": "provisioner: request X", "account": "provisioner"}] if ours else []
    return {"name": name, "type": rtype, "ttl": 300, "records": [{"content": c, "disabled": False} for c in contents],
            "comments": comments}


def served_facts(fqdn, days_left=60.0, names=None, trusted=True, trust_error=None, issuer="Pebble Intermediate-CA 1",
                 issuer_org=None):
    """What certificates.served() returns for a certificate ending `days_left` days from 2026-06-01."""
    from datetime import datetime, timedelta, timezone

    not_after = datetime(2026, 6, 1, tzinfo=timezone.utc) + timedelta(days=days_left)
    names = [fqdn] if names is None else names
    return {"issuer": issuer, "issuer_org": issuer_org, "serial": "1f", "names": names,
            "not_before": (not_after - timedelta(days=90)).isoformat(), "not_after": not_after.isoformat(),
            "days_left": days_left, "covers": certificates.covers(names, fqdn), "trusted": trusted, "trust_error": trust_error}


def clean_world(sites):
    """Live data exactly as the records say, and the records themselves."""
    apex = ZONE + "."
    zone = {(apex, "SOA"): rrset(apex, "SOA", ["ns1.x. hostmaster.x. 1 10800 3600 604800 3600"]),
            (apex, "NS"): rrset(apex, "NS", [f"ns1.{apex}", f"ns2.{apex}"]),
            (f"ns1.{apex}", "A"): rrset(f"ns1.{apex}", "A", ["10.77.0.11"]),
            (f"ns2.{apex}", "A"): rrset(f"ns2.{apex}", "A", ["10.77.0.12"])}
    web = {"web1": {"sites": {}, "addresses": ["10.77.0.21", SHARED, "127.0.0.1"],
                    "kept_addresses": sorted(s.public_ip for s in sites if s.dedicated_ip),
                    "default_vhosts": {s.public_ip: [80, 443] for s in sites}}}
    db = {"db1": {"databases": {}}}
    ns, records = {}, {}
    for s in sites:
        n = s.names
        zone[(s.fqdn + ".", "A")] = rrset(s.fqdn + ".", "A", [s.public_ip], ours=True)
        if s.dedicated_ip:
            web["web1"]["addresses"].append(s.public_ip)
        web["web1"]["sites"][s.fqdn] = {
            "user": {"home": n.home, "shell": "/usr/sbin/nologin"}, "sftp": True,
            "home": {"owner": "root", "group": n.user, "mode": "0750"},
            "docroot": {"owner": n.user, "group": n.user, "mode": "0750"},
            "logdir": {"owner": "root", "group": "adm", "mode": "0750"},
            "vhost_sha256": sha256(s.vhost()), "vhost_enabled": True, "server_names": [s.fqdn],
            "document_roots": [n.docroot], "pool_sha256": sha256(s.pool()) if s.php else None, "tls_cert": s.tls}
        if s.database:
            account = f"`{n.db_user}`@`{WEB_ADDR}`"
            db["db1"]["databases"][n.db_name] = {
                "exists": True, "user_hosts": [WEB_ADDR],
                "grants": [f"GRANT USAGE ON *.* TO {account}", db_target.expected_grant(s)]}
        ns[s.fqdn] = {name: {"addresses": [s.public_ip], "authoritative": True, "error": None}
                      for name in ("ns1", "ns2")}
        records[s.fqdn] = s.record()
    served = {s.fqdn: served_facts(s.fqdn) for s in sites if s.tls}
    observed = Observed(live=Live(web=web, db=db, dns={ZONE: zone}), ns=ns, nameservers=["ns1", "ns2"],
                        served=served, trust="/etc/provisioner/acme-roots.pem")
    return observed, records


@pytest.fixture
def world():
    sites = [make_site(), make_site("sipandu", dedicated=True, ip="203.0.113.130", database=False, php=False,
                                    tls=False)]
    observed, records = clean_world(sites)
    return sites, observed, records


def run(world):
    sites, observed, records = world
    return compare(sites, records, observed, [ZONE])


def test_a_clean_world_has_no_finding(world):
    assert run(world) == []


SIMKES = f"simkes.{ZONE}"
SIPANDU = f"sipandu.{ZONE}"


def _web(o, fqdn=SIMKES):
    return o.live.web["web1"]["sites"][fqdn]


def _db(o):
    return o.live.db["db1"]["databases"][naming.site_names("simkes", ZONE).db_name]


def _grant_global(o):
    _db(o)["grants"][0] = f"GRANT SELECT ON *.* TO `{naming.site_names('simkes', ZONE).db_user}`@`{WEB_ADDR}`"


def _grant_option(o):
    _db(o)["grants"][1] += " WITH GRANT OPTION"


def _grant_other_db(o):
    user = naming.site_names("simkes", ZONE).db_user
    _db(o)["grants"].append(f"GRANT SELECT ON `mysql`.* TO `{user}`@`{WEB_ADDR}`")


def _ours_but_unrecorded(o):
    o.live.dns[ZONE][(f"old.{ZONE}.", "A")] = rrset(f"old.{ZONE}.", "A", ["203.0.113.10"], ours=True)


CASES = {
    "dns-missing": ("critical", SIMKES, lambda o: o.live.dns[ZONE].pop((SIMKES + ".", "A"))),
    "dns-address": ("critical", SIMKES, lambda o: o.live.dns[ZONE][(SIMKES + ".", "A")]["records"][0].update(
        content="203.0.113.99")),
    "dns-foreign": ("high", SIMKES, lambda o: o.live.dns[ZONE][(SIMKES + ".", "A")].update(comments=[])),
    "dns-answer": ("high", SIMKES, lambda o: o.ns[SIMKES]["ns2"].update(addresses=[], authoritative=True)),
    "dns-extra": ("medium", None, lambda o: o.live.dns[ZONE].__setitem__(
        (f"x.{ZONE}.", "TXT"), rrset(f"x.{ZONE}.", "TXT", ['"hello"']))),
    "ip-missing": ("critical", SIPANDU, lambda o: o.live.web["web1"]["addresses"].remove("203.0.113.130")),
    "ip-shared-missing": ("critical", None, lambda o: o.live.web["web1"]["addresses"].remove(SHARED)),
    "ip-not-persistent": ("medium", SIPANDU, lambda o: o.live.web["web1"]["kept_addresses"].remove("203.0.113.130")),
    "user-missing": ("critical", SIMKES, lambda o: _web(o).update(user=None)),
    "sftp-missing": ("high", SIMKES, lambda o: _web(o).update(sftp=False)),
    "docroot-missing": ("critical", SIMKES, lambda o: _web(o).update(docroot=None)),
    "docroot-owner-mode": ("medium", SIMKES, lambda o: _web(o)["docroot"].update(owner="root")),
    "home-owner-mode": ("high", SIMKES, lambda o: _web(o)["home"].update(mode="0755")),
    "default-vhost-missing": ("high", None, lambda o: o.live.web["web1"]["default_vhosts"].pop(SHARED)),
    "logdir-missing": ("high", SIMKES, lambda o: _web(o).update(logdir=None)),
    "pool-missing": ("high", SIMKES, lambda o: _web(o).update(pool_sha256=None)),
    "pool-changed": ("medium", SIMKES, lambda o: _web(o).update(pool_sha256="f" * 64)),
    "tls-missing": ("high", SIMKES, lambda o: _web(o).update(tls_cert=False)),
    "tls-expired": ("critical", SIMKES, lambda o: o.served.__setitem__(SIMKES, served_facts(
        SIMKES, days_left=-3.2, trusted=False, trust_error="certificate has expired"))),
    "tls-expiring": ("high", SIMKES, lambda o: o.served.__setitem__(SIMKES, served_facts(SIMKES, days_left=8.0))),
    "tls-name": ("high", SIMKES, lambda o: o.served.__setitem__(SIMKES, served_facts(
        SIMKES, names=[f"other.{ZONE}"]))),
    "tls-issuer": ("high", SIMKES, lambda o: o.served.__setitem__(SIMKES, served_facts(
        SIMKES, trusted=False, trust_error="self-signed certificate", issuer=SIMKES))),
    "tls-unreachable": ("high", SIMKES, lambda o: o.served.__setitem__(SIMKES, {
        "error": f"{SIMKES}: no TLS answer at {SHARED}:443: [Errno 111] Connection refused"})),
    "vhost-missing": ("critical", SIMKES, lambda o: _web(o).update(vhost_sha256=None)),
    "vhost-disabled": ("critical", SIMKES, lambda o: _web(o).update(vhost_enabled=False)),
    "vhost-changed": ("medium", SIMKES, lambda o: _web(o).update(vhost_sha256="e" * 64)),
    "db-missing": ("critical", SIMKES, lambda o: _db(o).update(exists=False)),
    "db-user-host": ("high", SIMKES, lambda o: _db(o)["user_hosts"].append("%")),
    "grant-missing": ("critical", SIMKES, lambda o: _db(o)["grants"].pop(1)),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_drift_is_one_finding_with_severity_and_fix(world, kind):
    severity, site, change = CASES[kind]
    change(world[1])
    findings = run(world)
    assert [(f.kind, f.severity, f.site) for f in findings] == [(kind, severity, site)]
    (finding,) = findings
    assert finding.fix and "\n" not in finding.fix
    assert finding.expected != finding.found
    if site is not None and kind not in ("dns-foreign", "dns-answer", "tls-unreachable", "ip-not-persistent"):
        assert finding.fix.endswith(f"provision audit --fix --apply --site {site}")


def test_an_edited_vhost_names_servername_docroot_and_content(world):
    _web(world[1]).update(vhost_sha256="e" * 64, server_names=["evil.example"], document_roots=["/tmp"])
    kinds = {(f.kind, f.severity) for f in run(world)}
    assert kinds == {("vhost-servername", "high"), ("vhost-docroot", "high"), ("vhost-changed", "medium")}


def test_a_world_writable_docroot_is_high(world):
    _web(world[1])["docroot"]["mode"] = "0777"
    (finding,) = run(world)
    assert (finding.kind, finding.severity, finding.found) == ("docroot-owner-mode", "high",
                                                               f"owner {naming.site_names('simkes', ZONE).user}, "
                                                               "mode 0777")


@pytest.mark.parametrize("widen, severity", [(_grant_global, "critical"), (_grant_option, "high"),
                                             (_grant_other_db, "high")])
def test_a_grant_wider_than_recorded_is_a_finding(world, widen, severity):
    widen(world[1])
    (finding,) = run(world)
    assert (finding.kind, finding.severity) == ("grant-wider", severity)
    assert finding.expected == db_target.expected_grant(world[0][0])
    assert "PASSWORD" not in finding.found


def test_a_missing_db_user_is_one_finding_not_a_grant_finding_too(world):
    _db(world[1]).update(user_hosts=[], grants=[])
    assert [f.kind for f in run(world)] == ["db-user-missing"]


def test_a_missing_a_record_hides_the_name_server_answers_it_explains(world):
    world[1].live.dns[ZONE].pop((SIMKES + ".", "A"))
    world[1].ns[SIMKES]["ns1"].update(addresses=[], authoritative=True)
    assert [f.kind for f in run(world)] == ["dns-missing"]


def test_an_unanswered_query_names_the_name_server(world):
    world[1].ns[SIPANDU]["ns1"] = {"addresses": [], "authoritative": False, "error": "no answer (Timeout)"}
    (finding,) = run(world)
    assert (finding.kind, finding.host, finding.found) == ("dns-answer", "ns1", "no answer (Timeout)")


def test_extra_records_a_record_of_the_toolkit_that_no_record_explains(world):
    _ours_but_unrecorded(world[1])
    (finding,) = run(world)
    assert (finding.kind, finding.what, finding.site) == ("dns-extra", f"A record old.{ZONE}", None)
    assert "delete it through the PowerDNS API" in finding.fix


def test_extra_records_are_explained_by_any_site_not_removed(world):
    sites, observed, records = world
    _ours_but_unrecorded(observed)
    explained = {ZONE: {SIMKES, SIPANDU, f"old.{ZONE}"}}
    assert compare(sites, records, observed, [ZONE], explained=explained) == []
    # With --site the zone-wide search is skipped.
    observed.live.dns[ZONE][(f"x.{ZONE}.", "TXT")] = rrset(f"x.{ZONE}.", "TXT", ['"x"'])
    assert compare(sites[:1], records, observed, [ZONE], extras=False) == []


def test_the_record_not_the_template_is_what_a_vhost_is_compared_with(world):
    sites, observed, records = world
    records[SIMKES] = dict(records[SIMKES], vhost_sha256="a" * 64)
    _web(observed)["vhost_sha256"] = "a" * 64
    assert compare(sites, records, observed, [ZONE]) == []


def test_a_suspended_site_is_held_to_its_suspended_vhost(world):
    sites, observed, records = world
    suspended = dataclasses.replace(sites[0], suspended=True)
    _web(observed)["vhost_sha256"] = sha256(suspended.vhost())
    assert compare([suspended, sites[1]], records, observed, [ZONE]) == []
    assert [f.kind for f in compare(sites, records, observed, [ZONE])] == ["vhost-changed"]


def _served(world, fqdn=SIMKES, **facts):
    world[1].served[fqdn] = served_facts(fqdn, **facts)
    return run(world)


def test_a_healthy_certificate_is_no_finding_and_a_site_without_tls_is_not_read(world):
    sites, observed, _ = world
    assert set(observed.served) == {SIMKES} and not sites[1].tls
    assert _served(world, days_left=audit.EXPIRING_DAYS + 0.1) == []
    assert _served(world, names=[f"*.{ZONE}"]) == []  # a wildcard one label deep covers it
    observed.served.pop(SIMKES)
    assert run(world) == []  # not read: no opinion (the real audit reads every TLS site)


def test_expiry_findings_carry_the_date_and_the_days_left(world):
    (finding,) = _served(world, days_left=8.0)
    assert (finding.kind, finding.target, finding.host) == ("tls-expiring", "web", "web1")
    assert finding.found == "expires 2026-06-09 (8.0 days left)"
    assert finding.expected == "at least 21 days left"
    assert finding.fix == f"renew: provision audit --fix --apply --site {SIMKES}"
    (finding,) = _served(world, days_left=audit.EXPIRING_DAYS - 0.1)
    assert finding.kind == "tls-expiring"
    (finding,) = _served(world, days_left=-3.2, trusted=False, trust_error="certificate has expired")
    assert (finding.kind, finding.severity, finding.found) == ("tls-expired", "critical",
                                                               "expired 2026-05-28 (3.2 days ago)")


def test_a_foreign_certificate_for_another_name_is_two_findings(world):
    findings = _served(world, names=["evil.example"], trusted=False, issuer="evil.example",
                       issuer_org="Somebody", trust_error="self-signed certificate")
    assert [(f.kind, f.severity) for f in findings] == [("tls-issuer", "high"), ("tls-name", "high")]
    issuer, name = findings
    assert name.found == "names evil.example" and SIMKES in name.expected
    assert issuer.found == "issuer evil.example (Somebody): self-signed certificate"
    assert "/etc/provisioner/acme-roots.pem" in issuer.expected


def test_an_expired_certificate_from_another_ca_is_both(world):
    findings = _served(world, days_left=-1.0, trusted=False, trust_error="unable to get local issuer certificate")
    assert sorted(f.kind for f in findings) == ["tls-expired", "tls-issuer"]


def test_nothing_on_443_names_the_address_and_the_host(world):
    world[1].served[SIMKES] = {"error": "no TLS answer at 203.0.113.10:443: timed out"}
    (finding,) = run(world)
    assert (finding.kind, finding.host, finding.found) == ("tls-unreachable", "web1",
                                                           "no TLS answer at 203.0.113.10:443: timed out")
    assert "203.0.113.10:443" in finding.expected and "apache2ctl -S" in finding.fix


def test_acme_challenge_records_of_the_toolkit_are_not_drift_but_others_are(world):
    name = f"_acme-challenge.x.{ZONE}."
    world[1].live.dns[ZONE][(name, "TXT")] = rrset(name, "TXT", ['"token"'], ours=True)
    assert run(world) == []
    world[1].live.dns[ZONE][(name, "TXT")] = rrset(name, "TXT", ['"token"'])
    (finding,) = run(world)
    assert (finding.kind, finding.what) == ("dns-extra", f"TXT record _acme-challenge.x.{ZONE}")


def test_the_report_carries_the_certificate_figures(world):
    sites, observed, _ = world
    figures = audit.certificate_figures({**observed.served, "x." + ZONE: {"error": "refused"}})
    report = Report(findings=[], sites=[SIMKES], zones=[ZONE], certificates=figures)
    data = json.loads(audit_report.to_json(report))
    assert data["certificates"][SIMKES] == {"issuer": "Pebble Intermediate-CA 1", "issuer_org": None,
                                            "names": [SIMKES], "not_after": "2026-07-31T00:00:00+00:00",
                                            "days_left": 60.0, "trusted": True}
    assert data["certificates"]["x." + ZONE] == {"error": "refused"}


def test_served_certificates_reads_each_tls_site_and_keeps_errors(monkeypatch):
    from provisioner.errors import HostError

    calls = []

    def fake_served(address, fqdn, trust):
        calls.append((address, fqdn, trust))
        if fqdn.startswith("down."):
            raise HostError(f"{fqdn}: no TLS answer at {address}:443: refused")
        return served_facts(fqdn)

    monkeypatch.setattr(audit.certificates, "served", fake_served)
    sites = [make_site(), make_site("down", ip="203.0.113.131"), make_site("plain", tls=False)]
    got = audit.served_certificates(sites, "/ca.pem")
    assert sorted(calls) == [("203.0.113.10", SIMKES, "/ca.pem"), ("203.0.113.131", f"down.{ZONE}", "/ca.pem")]
    assert got[SIMKES]["covers"] and got[f"down.{ZONE}"] == {"error": f"down.{ZONE}: no TLS answer at "
                                                                       "203.0.113.131:443: refused"}
    assert f"plain.{ZONE}" not in got


def test_findings_sort_by_severity_first(world):
    _web(world[1]).update(vhost_sha256="e" * 64, vhost_enabled=False)
    world[1].live.web["web1"]["addresses"].remove("203.0.113.130")
    assert [f.severity for f in run(world)] == ["critical", "critical", "medium"]


# -- the fix plan -------------------------------------------------------------------


class FakeWork:
    """Hosting's plan machinery without hosts: the targets' real plan functions."""

    def __init__(self):
        self.dns = DnsTarget.__new__(DnsTarget)
        self.dns.ttl = 300

    def compute_plan(self, sites, live):
        from provisioner.plan import Plan
        from provisioner.targets import ip as ip_target

        changes = (ip_target.plan(sites, live.web) + db_target.plan(sites, live.db)
                   + web_target.plan(sites, live.web) + self.dns.plan(sites, live.dns))
        return Plan(changes=changes, sites=[s.fqdn for s in sites])


class Row:
    def __init__(self, state="provisioned"):
        self.state = state


def test_the_fix_plan_restores_each_drift_the_lab_test_makes(world):
    sites, observed, records = world
    o = observed
    o.live.dns[ZONE].pop((SIMKES + ".", "A"))
    _web(o)["vhost_sha256"] = "e" * 64
    _grant_global(o)
    _web(o)["sftp"] = False
    o.live.web["web1"]["addresses"].remove("203.0.113.130")
    findings = compare(sites, records, o, [ZONE])
    plan, refused = audit.fix_plan(FakeWork(), sites, o.live, {s.fqdn: Row() for s in sites}, findings)
    assert refused == {}
    got = {(c.action, c.target, c.kind, c.site) for c in plan.changes}
    assert got == {("Create", "dns", "A record", SIMKES), ("Update", "web", "vhost", SIMKES),
                   ("Update", "db", "grant", SIMKES), ("Create", "web", "SFTP account", SIMKES),
                   ("Create", "ip", "public IP", SIPANDU)}
    grant = next(c for c in plan.changes if c.kind == "grant")
    assert grant.detail["extra"] == [_db(o)["grants"][0]]


def test_a_missing_default_vhost_is_restored_by_one_site_on_its_address(world):
    sites, observed, records = world
    observed.live.web["web1"]["default_vhosts"] = {}
    findings = compare(sites, records, observed, [ZONE])
    assert sorted((f.kind, f.what) for f in findings) == [
        ("default-vhost-missing", "default vhost of 203.0.113.10"),
        ("default-vhost-missing", "default vhost of 203.0.113.130")]
    plan, refused = audit.fix_plan(FakeWork(), sites, observed.live, {s.fqdn: Row() for s in sites}, findings)
    assert refused == {}
    assert {(c.action, c.kind, c.name, c.site) for c in plan.changes} == {
        ("Create", "default vhost", SHARED, SIMKES), ("Create", "default vhost", "203.0.113.130", SIPANDU)}


def test_only_port_80_of_a_default_vhost_is_still_missing(world):
    world[1].live.web["web1"]["default_vhosts"][SHARED] = [80]
    (finding,) = run(world)
    assert (finding.kind, finding.found) == ("default-vhost-missing", "only port 80")


def test_the_fix_leaves_suspended_and_foreign_sites_alone(world):
    sites, observed, records = world
    observed.live.dns[ZONE][(SIMKES + ".", "A")]["comments"] = []
    _web(observed, SIPANDU)["vhost_enabled"] = False
    findings = compare(sites, records, observed, [ZONE])
    rows = {SIMKES: Row(), SIPANDU: Row("suspended")}
    plan, refused = audit.fix_plan(FakeWork(), sites, observed.live, rows, findings)
    assert plan.empty and set(refused) == {SIMKES, SIPANDU}
    assert "did not create" in refused[SIMKES] and "suspended" in refused[SIPANDU]


def test_db_plan_revokes_a_grant_option_too():
    site = make_site()
    account = f"`{site.names.db_user}`@`{WEB_ADDR}`"
    live = {"db1": {"databases": {site.names.db_name: {
        "exists": True, "user_hosts": [WEB_ADDR],
        "grants": [f"GRANT USAGE ON *.* TO {account}", db_target.expected_grant(site) + " WITH GRANT OPTION"]}}}}
    (change,) = db_target.plan([site], live)
    assert (change.action, change.kind) == ("Update", "grant")


def test_the_db_probe_strips_password_hashes_before_they_leave_the_host():
    import re

    line = next(x for x in probe.DB_PROBE.splitlines() if x.startswith("IDENTIFIED"))
    scope = {"re": re}
    exec(line, scope)

    def strip(grant):
        return scope["IDENTIFIED"].sub("", grant)
    assert strip("GRANT USAGE ON *.* TO `u`@`h` IDENTIFIED BY PASSWORD '*0123ABCD'") == "GRANT USAGE ON *.* TO `u`@`h`"
    assert strip("GRANT SELECT ON *.* TO `u`@`h` IDENTIFIED BY PASSWORD '*AB' WITH GRANT OPTION") == \
        "GRANT SELECT ON *.* TO `u`@`h` WITH GRANT OPTION"
    assert strip("GRANT USAGE ON *.* TO `u`@`h` IDENTIFIED VIA ed25519 USING 'a WITH b' OR unix_socket") == \
        "GRANT USAGE ON *.* TO `u`@`h`"


def test_the_web_probe_reads_servername_and_documentroot(tmp_path):
    start = probe.WEB_PROBE.index("def directives")
    end = probe.WEB_PROBE.index("try:\n    sftp_members")
    scope = {}
    exec(probe.WEB_PROBE[start:end], scope)
    vhost = tmp_path / "a.conf"
    vhost.write_text(make_site().vhost())
    assert scope["directives"](str(vhost)) == ([SIMKES], [make_site().names.docroot])
    assert scope["directives"](str(tmp_path / "none.conf")) == ([], [])


def test_the_web_probe_reads_the_enabled_default_vhosts(tmp_path):
    start = probe.WEB_PROBE.index("def default_vhosts")
    end = probe.WEB_PROBE.index("try:\n    sftp_members")
    scope = {"os": os}
    exec(probe.WEB_PROBE[start:end], scope)
    conf = tmp_path / "defaults.conf"
    conf.write_text("# x\n<VirtualHost 203.0.113.10:80>\n</VirtualHost>\n<VirtualHost 203.0.113.10:443>\n"
                    "</VirtualHost>\n<VirtualHost 203.0.113.130:80>\n")
    enabled = tmp_path / "enabled.conf"
    assert scope["default_vhosts"](str(conf), str(enabled)) == {}
    enabled.symlink_to(conf)
    assert scope["default_vhosts"](str(conf), str(enabled)) == {"203.0.113.10": [80, 443], "203.0.113.130": [80]}


# -- reports and the command --------------------------------------------------------


def _report(world, drift=True):
    if drift:
        _web(world[1])["vhost_sha256"] = "e" * 64
        world[1].live.dns[ZONE][(f"x.{ZONE}.", "TXT")] = rrset(f"x.{ZONE}.", "TXT", ['"<b>&"'])
    return Report(findings=run(world), sites=[SIMKES, SIPANDU], zones=[ZONE])


def test_json_csv_and_html_carry_every_finding(world):
    report = _report(world)
    data = json.loads(audit_report.to_json(report))
    assert data["clean"] is False and data["counts"]["medium"] == 2
    assert {f["kind"] for f in data["findings"]} == {"vhost-changed", "dns-extra"}
    rows = list(csv.DictReader(io.StringIO(audit_report.to_csv(report))))
    assert [r["kind"] for r in rows] == [f.kind for f in report.findings]
    assert list(rows[0]) == list(audit.FIELDS)
    html = audit_report.to_html(report)
    assert "<b>&" not in html and "&lt;b&gt;&amp;" in html
    assert html.count('<tr class="medium">') == 2


def test_a_clean_report(world):
    report = _report(world, drift=False)
    assert report.clean and report.exit_code == 0
    assert "No finding" in audit_report.to_html(report)
    assert audit_report.to_csv(report).strip() == ",".join(audit.FIELDS)


def test_exit_code_after_a_fix_is_that_of_the_second_audit(world):
    report = _report(world)
    assert report.exit_code == 1
    report.after = []
    assert report.exit_code == 0 and report.as_dict()["after"]["clean"] is True


def test_audit_run_event_holds_counts_only(tmp_path, world):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        audit._record_run(store, _report(world), None)
        with store.session() as session:
            (event,) = session.query(Event).filter(Event.kind == "audit_run")
        assert event.payload == {"sites": 2, "zones": 1, "findings": 2,
                                 "counts": {"critical": 0, "high": 0, "medium": 2, "low": 0}, "only": None}
    finally:
        store.close()


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISIONER_HOME", str(tmp_path))
    monkeypatch.delenv("PROVISIONER_STATE_URL", raising=False)
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "html"])
@pytest.mark.parametrize("drift, code", [(True, 1), (False, 0)])
def test_the_command_exits_1_on_drift_and_0_when_clean(cli_env, monkeypatch, world, fmt, drift, code):
    report = _report(world, drift)
    monkeypatch.setattr("provisioner.cli.audit.run_audit", lambda config, store, site=None: report)
    result = CliRunner().invoke(main, ["audit", "--format", fmt])
    assert result.exit_code == code, result.output
    if fmt == "table":
        assert ("drift: 2 finding(s)" if drift else "clean:") in result.output
    if fmt == "json":
        assert json.loads(result.output)["clean"] is (not drift)


def test_the_command_prints_the_fix_plan_and_its_checksum(cli_env, monkeypatch, world):
    sites, observed, records = world
    _web(observed)["sftp"] = False
    report = Report(findings=compare(sites, records, observed, [ZONE]), sites=[SIMKES, SIPANDU], zones=[ZONE])
    plan, refused = audit.fix_plan(FakeWork(), sites, observed.live, {s.fqdn: Row() for s in sites},
                                   report.findings)
    report.fix = {"plan": plan.as_dict(), "rendered": plan.render(), "refused": refused, "by_hand": [],
                  "applied": False}
    seen = {}

    def fake_fix(config, store, site=None, apply=False, checksum=None):
        seen.update(site=site, apply=apply, checksum=checksum)
        return report

    monkeypatch.setattr("provisioner.cli.audit.audit_fix", fake_fix)
    result = CliRunner().invoke(main, ["audit", "--fix"])
    assert result.exit_code == 1
    assert "Create web" in result.output and f"--fix --apply --checksum {plan.checksum}" in result.output
    assert seen == {"site": None, "apply": False, "checksum": None}


@pytest.mark.parametrize("args", [["--apply"], ["--checksum", "abc"], ["--fix", "--format", "csv"]])
def test_the_command_refuses_options_that_do_not_go_together(cli_env, args):
    result = CliRunner().invoke(main, ["audit", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output


# -- the run itself, with the hosts replaced by the world above ------------------------


class Inv:
    def group(self, name):
        return [type("H", (), {"name": n})() for n in ("ns1", "ns2")]


class WorldHosting(FakeWork):
    """Hosting with its reads and apply served from a fake world; apply puts the world right."""

    def __init__(self, store, sites, observed, clean):
        super().__init__()
        self.store, self.sites, self.observed, self.clean = store, sites, observed, clean
        self.config = type("C", (), {"zones": {ZONE: "tarakan"}, "unmanaged_by_zone": lambda self: {}})()
        self.inventory = Inv()
        self.dns.read = lambda zones: self.observed.live.dns
        self.applied = []

    def recorded_sites(self, fqdns):
        return [s for s in self.sites if s.fqdn in fqdns]

    def ca_file(self):
        return self.observed.trust

    def apply(self, request_ids, checksum=None):
        self.applied.append((request_ids, checksum))
        self.observed.live = self.clean.live
        return type("R", (), {"sites": [{"fqdn": s.fqdn, "verified": {"dns": 1, "http": 1}} for s in self.sites]})()


@pytest.fixture
def hosted(tmp_path, monkeypatch, world):
    from datetime import datetime, timezone

    from provisioner.store.models import RequestRow, SiteRow

    sites, observed, records = world
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    now = datetime(2024, 8, 13, tzinfo=timezone.utc)
    with store.session() as session:
        session.add(RequestRow(id="HST-2024-0007", service="hosting", office="tarakan", fqdn=SIMKES, sha256="0" * 64,
                               content=b"", source="t", submitted_at=now, state="done", decision="approve"))
        session.flush()
        for s in sites:
            session.add(SiteRow(fqdn=s.fqdn, request_id=s.request_id, office="tarakan", zone=ZONE, label=s.label,
                                state="provisioned", web_host="web1", db_host=s.db_host, public_ip=s.public_ip,
                                dedicated_ip=s.dedicated_ip, config=records[s.fqdn], created_at=now, updated_at=now))
    clean, _ = clean_world(sites)
    work = WorldHosting(store, sites, observed, clean)
    monkeypatch.setattr(audit.web_target, "read", lambda inventory, sites: work.observed.live.web)
    monkeypatch.setattr(audit.db_target, "read", lambda inventory, sites: work.observed.live.db)
    monkeypatch.setattr(audit, "ns_answers", lambda inventory, sites: work.observed.ns)
    monkeypatch.setattr(audit, "served_certificates", lambda sites, trust: {
        s.fqdn: work.observed.served[s.fqdn] for s in sites if s.fqdn in work.observed.served})
    yield work
    store.close()


def _events(store, kind):
    with store.session() as session:
        return [e.payload for e in session.query(Event).filter(Event.kind == kind)]


def test_audit_reads_the_records_and_logs_the_run(hosted):
    _web(hosted.observed)["sftp"] = False
    report = audit.audit(None, hosted.store, work=hosted)
    assert report.sites == [SIMKES, SIPANDU] and report.zones == [ZONE]
    assert [f.kind for f in report.findings] == ["sftp-missing"]
    assert _events(hosted.store, "audit_run")[-1]["counts"]["high"] == 1
    only = audit.audit(None, hosted.store, site=SIPANDU, work=hosted)
    assert only.sites == [SIPANDU] and only.clean


def test_audit_of_an_unknown_site_is_not_found(hosted):
    from provisioner.errors import NotFound

    with pytest.raises(NotFound):
        audit.audit(None, hosted.store, site=f"nope.{ZONE}", work=hosted)


def test_fix_without_apply_changes_nothing_and_with_apply_audits_again(hosted):
    _web(hosted.observed)["sftp"] = False
    hosted.observed.live.dns[ZONE][(f"x.{ZONE}.", "TXT")] = rrset(f"x.{ZONE}.", "TXT", ['"x"'])
    dry = audit.audit_fix(None, hosted.store, work=hosted)
    assert hosted.applied == [] and not dry.fix["applied"] and dry.exit_code == 1
    assert [c["kind"] for c in dry.fix["plan"]["changes"]] == ["SFTP account"]
    assert [f["kind"] for f in dry.fix["by_hand"]] == ["dns-extra"]
    checksum = dry.fix["plan"]["checksum"]

    from provisioner.errors import StateError

    with pytest.raises(StateError, match="changed since it was reviewed"):
        audit.audit_fix(None, hosted.store, apply=True, checksum="0" * 64, work=hosted)
    assert hosted.applied == []

    done = audit.audit_fix(None, hosted.store, apply=True, checksum=checksum, work=hosted)
    assert hosted.applied == [(["HST-2024-0007"], checksum)]
    assert done.fix["applied"] and done.after == [] and done.exit_code == 0
    assert [e["fqdn"] for e in _events(hosted.store, "audit_fix")] == [SIMKES]
    assert _events(hosted.store, "audit_fix")[0]["findings"] == ["sftp-missing"]


# -- --fix with certificates: the renewal merged into the fix ---------------------------


class FakeRenewals:
    """tls_renewal.renew with the real plan classes: forced sites are due; apply serves a good certificate."""

    def __init__(self, hosted):
        from provisioner import tls_renewal

        self.tls_renewal, self.hosted, self.calls = tls_renewal, hosted, []

    def _plan(self, force_sites):
        from datetime import datetime, timezone

        due = [self.tls_renewal.Due(fqdn=f, web_host="web1", request_id="HST-2024-0007", serial="1f",
                                    not_after=datetime(2026, 7, 31, tzinfo=timezone.utc), days_left=60.0,
                                    reason="renewal asked for (forced)") for f in force_sites]
        return self.tls_renewal.RenewalPlan(within=0, due=due, checked=1)

    def __call__(self, config, store, *, site=None, within=None, apply=False, checksum=None, force_sites=None,
                 jitter=0, source="cli"):
        self.calls.append({"site": site, "within": within, "apply": apply, "force_sites": force_sites})
        planned = self._plan(force_sites or [])
        if checksum and checksum != planned.checksum:
            raise StateError("the renewal plan changed since it was reviewed")
        result = self.tls_renewal.RenewalResult(plan=planned, applied=apply)
        if apply:
            for due in planned.due:
                self.hosted.observed.served[due.fqdn] = served_facts(due.fqdn, days_left=90.0)
                result.renewed.append({"fqdn": due.fqdn, "old_serial": "1f", "serial": "2a",
                                       "not_after": "2026-08-30T00:00:00+00:00", "issuer": "Pebble"})
        return result


@pytest.fixture
def renewals(hosted, monkeypatch):
    fake = FakeRenewals(hosted)
    monkeypatch.setattr(audit.tls_renewal, "renew", fake)
    return fake


def test_fix_plans_a_renewal_for_a_certificate_that_does_not_cover_the_name(hosted, renewals):
    hosted.observed.served[SIMKES] = served_facts(SIMKES, names=["evil.example"])
    dry = audit.audit_fix(None, hosted.store, work=hosted)
    assert renewals.calls == [{"site": None, "within": 0, "apply": False, "force_sites": [SIMKES]}]
    assert [f.kind for f in dry.findings] == ["tls-name"] and dry.fix["by_hand"] == []
    assert f"TLS certificate: {SIMKES} (renew: renewal asked for (forced))" in dry.fix["rendered"]
    assert "Update web web1" in dry.fix["rendered"]
    assert [(c["kind"], c["site"]) for c in dry.fix["plan"]["changes"]] == [("TLS certificate", SIMKES)]
    hosting, renewal = dry.fix["hosting"]["checksum"], dry.fix["renewals"]["checksum"]
    assert dry.fix["plan"]["checksum"] not in (hosting, renewal)
    assert f"checksum {dry.fix['plan']['checksum']}" in dry.fix["rendered"]
    assert hosted.applied == [] and not dry.fix["applied"]

    done = audit.audit_fix(None, hosted.store, apply=True, checksum=dry.fix["plan"]["checksum"], work=hosted)
    assert hosted.applied == []  # nothing but the certificate to put right: no hosting run
    assert renewals.calls[-1] == {"site": None, "within": 0, "apply": True, "force_sites": [SIMKES]}
    assert [r["fqdn"] for r in done.fix["renewed"]] == [SIMKES] and done.fix["not_renewed"] == {}
    assert done.after == [] and done.exit_code == 0
    (event,) = _events(hosted.store, "audit_fix")
    assert event["renewal"] is True and event["findings"] == ["tls-name"]


def test_the_fix_checksum_covers_the_hosting_changes_and_the_renewals(hosted, renewals):
    _web(hosted.observed)["sftp"] = False
    hosted.observed.served[SIMKES] = served_facts(SIMKES, days_left=8.0)
    dry = audit.audit_fix(None, hosted.store, work=hosted)
    assert sorted(c["kind"] for c in dry.fix["plan"]["changes"]) == ["SFTP account", "TLS certificate"]
    combined, hosting = dry.fix["plan"]["checksum"], dry.fix["hosting"]["checksum"]
    renewal_only = audit.fix_checksum(audit.Plan(), renewals._plan([SIMKES]).plan)
    assert combined != hosting and combined != renewal_only

    for stale in (hosting, dry.fix["renewals"]["checksum"], "0" * 64):
        with pytest.raises(StateError, match="changed since it was reviewed"):
            audit.audit_fix(None, hosted.store, apply=True, checksum=stale, work=hosted)
    assert hosted.applied == [] and not any(c["apply"] for c in renewals.calls)

    done = audit.audit_fix(None, hosted.store, apply=True, checksum=combined, work=hosted)
    # The hosting plan is applied with its own checksum, then the renewal.
    assert hosted.applied == [(["HST-2024-0007"], hosting)]
    assert renewals.calls[-1]["apply"] is True and done.fix["renewed"][0]["serial"] == "2a"
    assert done.after == []


def test_without_a_certificate_finding_the_fix_is_as_before(hosted, renewals):
    _web(hosted.observed)["sftp"] = False
    dry = audit.audit_fix(None, hosted.store, work=hosted)
    assert renewals.calls == [] and "renewals" not in dry.fix
    empty = audit.Plan()
    assert audit.fix_checksum(empty, None) == empty.checksum == audit.fix_checksum(empty, audit.Plan())
    assert "TLS certificate" not in dry.fix["rendered"]


def test_unreachable_and_suspended_sites_are_left_to_a_person(hosted, renewals):
    hosted.observed.served[SIMKES] = {"error": "no TLS answer at 203.0.113.10:443: refused"}
    dry = audit.audit_fix(None, hosted.store, work=hosted)
    assert renewals.calls == [] and [f["kind"] for f in dry.fix["by_hand"]] == ["tls-unreachable"]

    from provisioner.store.models import SiteRow

    with hosted.store.session() as session:
        session.get(SiteRow, SIMKES).state = "suspended"
    hosted.observed.served[SIMKES] = served_facts(SIMKES, days_left=-2.0, trusted=False,
                                                  trust_error="certificate has expired")
    hosted.sites[0] = dataclasses.replace(hosted.sites[0], suspended=True)
    _web(hosted.observed)["vhost_sha256"] = sha256(hosted.sites[0].vhost())
    dry = audit.audit_fix(None, hosted.store, work=hosted)
    assert renewals.calls == [] and [f["kind"] for f in dry.fix["by_hand"]] == ["tls-expired"]
    assert "suspended" in dry.fix["refused"][SIMKES]


GRANTS_MYSQL = '''#!{python}
import sys
# SHOW DATABASES / mysql.user with -e; the grants as statements on stdin, one a line.
if "-e" in sys.argv:
    query = sys.argv[sys.argv.index("-e") + 1]
    if query == "SHOW DATABASES":
        print("db_a\\ndb_b")
    else:
        print("ua\\t10.77.0.21\\nua\\t10.77.0.22\\nub\\t10.77.0.21\\nroot\\tlocalhost")
    sys.exit(0)
for line in sys.stdin:
    query = line.strip()[:-1]
    if query.startswith("SELECT '"):
        print(query[len("SELECT '"):-1])
    else:
        account = query[len("SHOW GRANTS FOR "):].replace("'", "")
        print("GRANT USAGE ON *.* TO " + account + " IDENTIFIED BY PASSWORD '*SECRETHASH'")
        print("GRANT ALL PRIVILEGES ON `db_x`.* TO " + account)
'''


def test_the_db_probe_reads_every_accounts_grants_in_one_session(tmp_path):
    import json
    import os
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mysql").write_text(GRANTS_MYSQL.format(python=sys.executable))
    (bin_dir / "mysql").chmod(0o755)
    calls = tmp_path / "calls"
    wrapper = bin_dir / "mysql"
    real = bin_dir / "mysql-real"
    wrapper.rename(real)
    wrapper.write_text(f"#!/bin/sh\necho x >> {calls}\nexec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    data = {"databases": [{"name": "db_a", "user": "ua"}, {"name": "db_b", "user": "ub"},
                          {"name": "db_c", "user": "uc"}]}
    script = probe.DB_PROBE.replace("__INPUT__", repr(json.dumps(data)))
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, check=True,
                         env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"))
    found = json.loads(out.stdout)["databases"]
    assert found["db_a"] == {"exists": True, "user_hosts": ["10.77.0.21", "10.77.0.22"], "grants": [
        "GRANT USAGE ON *.* TO ua@10.77.0.21", "GRANT ALL PRIVILEGES ON `db_x`.* TO ua@10.77.0.21",
        "GRANT USAGE ON *.* TO ua@10.77.0.22", "GRANT ALL PRIVILEGES ON `db_x`.* TO ua@10.77.0.22"]}
    assert found["db_b"]["grants"] == ["GRANT USAGE ON *.* TO ub@10.77.0.21",
                                       "GRANT ALL PRIVILEGES ON `db_x`.* TO ub@10.77.0.21"]
    assert found["db_c"] == {"exists": False, "user_hosts": [], "grants": []}
    assert "SECRETHASH" not in out.stdout
    assert len(calls.read_text().split()) == 3  # databases, accounts, and one session for every grant
