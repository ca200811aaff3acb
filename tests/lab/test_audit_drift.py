"""`provision audit` against the real lab: clean after provisioning, drift made behind the toolkit's
back is found, `--fix --apply` restores it and a second audit is clean.

Two sites of its own (random labels, its own state home), removed afterwards.
(Named apart from tests/unit/test_audit.py: test modules share one name space.)
"""

import json
import secrets

import requests
from click.testing import CliRunner

from provisioner import audit, ipam, runner
from provisioner.cli import main
from provisioner.sop.sla import utcnow
from provisioner.store.models import Event, IPAllocation, SiteRow

from labkit import PDNS, api_headers




def _start_at_a_random_place_in_the_pool(office) -> None:
    """Other tests' stores hand out the first free dedicated address too; two applies racing for it
    would share it, so this store begins at a random place in each web server's pool."""
    for host in office.hosting.inventory.group("web"):
        pool = office.hosting.inventory.public_pool(host)
        with office.store.session() as session:
            for n, address in enumerate(pool[:secrets.randbelow(len(pool) - 20)]):
                session.add(IPAllocation(address=str(address), pool=ipam.pool_lock(host),
                                         fqdn=f"held-elsewhere-{host.name}-{n}.invalid", web_host=host.name,
                                         allocated_at=utcnow()))


def _exact_grants_run(office, site, check=False):
    return runner.run_playbook("db_site.yml", office.hosting.inventory_path, {site.db_host},
                               extravars={"mariadb_site__databases": [site.db_item() | {"exact_grants": True}]},
                               limit=site.db_host, check=check)


def _mine(findings, fqdns):
    return [f for f in findings if f.site in fqdns or any(n in f.what for n in fqdns)]


def _audit_cli(*args):
    return CliRunner().invoke(main, ["audit", *args])


def test_audit_finds_each_drift_and_the_fix_restores_it(office, lab_host):
    _start_at_a_random_place_in_the_pool(office)
    # A PHP site with a database on a dedicated address, and a second one on the shared address.
    first = office.through_review("tarakan-simkes.yaml", dedicated_ip="true", tls="false")
    second = office.through_review("tarakan-simkes.yaml", tls="false")
    for request_id in (first, second):
        office.approve_without_hook(request_id)
    office.hosting.apply([first, second])
    with office.store.session() as session:
        fqdns = sorted(r.fqdn for r in session.query(SiteRow))
    sites = {s.request_id: s for s in office.hosting.recorded_sites(fqdns)}
    a, b = sites[first], sites[second]
    # Each drift is made on the servers placement gave the site (the two may be on different ones).
    web, db, db_b = lab_host(a.web_host), lab_host(a.db_host), lab_host(b.db_host)

    # Clean lab: nothing about our sites (other engineers' records may be extra to this state home).
    report = audit.audit(office.config, office.store)
    assert _mine(report.findings, fqdns) == [], report.findings
    assert set(fqdns) <= set(report.sites)
    for fqdn in fqdns:
        result = _audit_cli("--site", fqdn)
        assert result.exit_code == 0, result.output
        assert "clean:" in result.output

    # Drift behind the toolkit's back.
    rrset = {"name": f"{a.fqdn}.", "type": "A", "changetype": "DELETE", "records": []}
    assert requests.patch(f"{PDNS}/zones/{a.zone}.", json={"rrsets": [rrset]}, headers=api_headers(),
                          timeout=5).status_code == 204
    web.check_output("sh -c %s", f"echo '# edited by hand' >> /etc/apache2/sites-available/{a.fqdn}.conf")
    db.check_output("mysql -e %s", f"GRANT SELECT ON *.* TO '{a.names.db_user}'@'{a.web_address}'")
    web.check_output("gpasswd -d %s sftp-sites", a.names.user)
    cidr = next(w for line in web.check_output("ip -o -4 addr show").splitlines() for w in line.split()
                if w.startswith(f"{a.public_ip}/"))
    web.check_output("ip addr del %s dev eth0", cidr)
    db_b.check_output("mysql -e %s", f"DROP USER '{b.names.db_user}'@'{b.web_address}'")

    # The role's exact_grants is safe in check mode: the wider grant is still there afterwards.
    _exact_grants_run(office, a, check=True)
    show_grants = f"SHOW GRANTS FOR '{a.names.db_user}'@'{a.web_address}'"
    assert "SELECT ON *.*" in db.check_output("mysql -N -e %s", show_grants)

    report = audit.audit(office.config, office.store)
    kinds = {(f.site, f.kind) for f in _mine(report.findings, fqdns)}
    assert kinds == {(a.fqdn, "dns-missing"), (a.fqdn, "vhost-changed"), (a.fqdn, "grant-wider"),
                     (a.fqdn, "sftp-missing"), (a.fqdn, "ip-missing"), (b.fqdn, "db-user-missing")}, kinds
    wider = next(f for f in report.findings if f.kind == "grant-wider")
    assert wider.severity == "critical" and "ON *.*" in wider.found
    as_json = _audit_cli("--format", "json")
    assert as_json.exit_code == 1
    assert "PASSWORD" not in as_json.output and "IDENTIFIED" not in as_json.output
    assert {f["kind"] for f in json.loads(as_json.stdout)["findings"] if f["site"] == b.fqdn} == {"db-user-missing"}

    # The fix: first the plan only, then applied.
    dry = _audit_cli("--fix")
    assert dry.exit_code == 1, dry.output
    assert "dry run" in dry.output and "Create dns" in dry.output
    # a's grant is narrowed on its database server, b's user made again on its own (maybe the other one).
    assert f"Update db  {a.db_host}" in dry.output and f"Create db  {b.db_host}" in dry.output, dry.output
    assert cidr not in web.check_output("ip -o -4 addr show")  # the dry run changed nothing
    checksum = dry.output.rsplit("--checksum ", 1)[1].split()[0]
    fixed = _audit_cli("--fix", "--apply", "--checksum", checksum, "--format", "json")
    shown = json.loads(fixed.stdout)
    assert shown["fix"]["applied"] and set(shown["fix"]["verified"]) == {a.fqdn, b.fqdn}
    after = [f for f in shown["after"]["findings"] if f["site"] in fqdns or any(n in f["what"] for n in fqdns)]
    assert after == []
    # Records outside this state home (other tests' sites) are extra to it; only they may remain.
    assert fixed.exit_code == (1 if shown["after"]["findings"] else 0)

    report = audit.audit(office.config, office.store)
    assert _mine(report.findings, fqdns) == [], report.findings
    grants = db.check_output("mysql -N -e %s", show_grants)
    assert "ON *.*" in grants and "GRANT USAGE ON *.*" in grants and "SELECT ON *.*" not in grants
    assert a.public_ip in web.check_output("ip -o -4 addr show")
    assert _exact_grants_run(office, a).changed.get(a.db_host, 0) == 0  # exact already: nothing to revoke
    assert "# edited by hand" not in web.file(f"/etc/apache2/sites-available/{a.fqdn}.conf").content_string
    assert a.names.user in web.check_output("getent group sftp-sites")
    with office.store.session() as session:
        fixes = session.query(Event).filter(Event.kind == "audit_fix").all()
        runs = session.query(Event).filter(Event.kind == "audit_run").count()
    assert {e.payload["fqdn"] for e in fixes} == {a.fqdn, b.fqdn}
    assert runs >= 6
    assert office.site(a.fqdn).state == office.site(b.fqdn).state == "provisioned"
