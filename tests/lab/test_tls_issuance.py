"""ACME issuance through hosting against the lab's Pebble (ca1): a new site's certificate,
DNS-01 for several names with one PATCH per zone, the weekly limit, revocation on removal,
and HTTP-01 for an office that chooses it.

A site costs the lab most of a minute to provision and remove, so the module provisions
one batch (`batch`: two tarakan sites and one buleleng site in ONE apply, in a state home
of its own with fresh request ids and labels) that the tests share in this file's order:
test 1 looks at the first tarakan site, test 2 at the whole batch and its PATCHes, test 3
adds sites next to the batch (which took tarakankota.go.id's last slot of the week),
test 4 removes the buleleng site and test 5 renews the second tarakan site. A test that
changes a site is the last one to look at it. Every site is removed when the module ends.
"""

import json
import time
from types import SimpleNamespace

import dns.message
import dns.query
import dns.rdatatype
import dns.rcode
import pytest
import requests
from click.testing import CliRunner

from provisioner import certificates, naming
from provisioner.cli import main
from provisioner.errors import StateError
from provisioner.hosting import Hosting
from provisioner.issuance_limit import WINDOW
from provisioner.lab import guard, topology
from provisioner.store.models import CertificateRow, Event
from provisioner.targets.dns import DnsTarget

from labkit import PDNS, api_headers

ROOTS = topology.ACME_ROOTS  # /var/lib/provisioner-lab/acme/roots.pem
LAB_CA = topology.STATE_DIR / "ca" / "ca.crt"  # Pebble's own HTTPS (directory and management)
NAMESERVERS = ("10.77.0.11", "10.77.0.12")
WEB_HOSTS = topology.hosts_of("web")
DB_HOSTS = topology.hosts_of("db")


def _shared_address(web_host: str) -> str:
    """The address a web server shares among its sites."""
    return str(topology.host(web_host).public_addresses[0].ip)
CHALLENGE = "_acme-challenge"
TARAKAN = "tarakankota.go.id"
# The batch is applied under this weekly limit: its two tarakan sites take the whole week.
WEEKLY_LIMIT = 2


def _require_pebble() -> None:
    guard.require_lab_route(topology.acme_host().address)
    assert ROOTS.exists(), f"{ROOTS} missing: is ca1 (Pebble) part of this lab?"


@pytest.fixture(autouse=True)
def pebble_up(lab_up):
    _require_pebble()


# --- the module's office and its batch ------------------------------------------------

@pytest.fixture(scope="module")
def batch(module_office):
    """Two tarakan sites and a buleleng one, applied together under WEEKLY_LIMIT, with every
    PATCH sent to the DNS API during that apply recorded as (zone, [(name, type, changetype)])."""
    _require_pebble()
    office = module_office
    assert office.config.hosting.tls_source == "acme"  # the lab's default: the production path
    limited = Hosting(_with_acme(office.config, weekly_limit=WEEKLY_LIMIT), office.store)
    patches = []
    real_patch = DnsTarget._patch

    def recorded(self, zone, rrsets):
        patches.append((zone, [(r["name"].rstrip("."), r["type"], r["changetype"]) for r in rrsets]))
        return real_patch(self, zone, rrsets)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DnsTarget, "_patch", recorded)
        fqdns, result = _provisioned(office, "tarakan-simkes.yaml", "tarakan-simkes.yaml", "buleleng-sipandu.yaml",
                                     hosting=limited)
    return SimpleNamespace(office=office, limited=limited, fqdns=fqdns, result=result, patches=patches,
                           records={r["fqdn"]: r for r in result.sites})


# --- helpers -------------------------------------------------------------------

def _provisioned(office, *examples, hosting=None, **site):
    """Requests through review and approval, applied together; returns the fqdns in order."""
    ids = [office.through_review(example, **site) for example in examples]
    for request_id in ids:
        office.approve_without_hook(request_id)
    result = (hosting or office.hosting).apply(ids)
    fqdns = {r["fqdn"]: r for r in result.sites}
    by_id = {r["request_id"]: r["fqdn"] for r in fqdns.values()}
    return [by_id[i] for i in ids], result


def _approved(office, example, **site) -> str:
    request_id = office.through_review(example, **site)
    office.approve_without_hook(request_id)
    return request_id


def _fqdn_of(office, request_id) -> str:
    (request,) = office.hosting.load_requests([request_id], provisioning=False)
    return request.site.fqdn


def _txt_at(address: str, name: str) -> tuple[str, list[str]]:
    guard.require_lab_route(address)
    answer = dns.query.udp(dns.message.make_query(name, dns.rdatatype.TXT), address, timeout=3)
    values = [b"".join(r.strings).decode() for rrset in answer.answer if rrset.rdtype == dns.rdatatype.TXT
              for r in rrset]
    return dns.rcode.to_text(answer.rcode()), values


def _challenge_gone_everywhere(fqdn: str, wait: float = 15.0) -> dict:
    """The TXT answers for _acme-challenge.<fqdn> at both name servers once none serves it
    (the secondary may lag a NOTIFY behind); asserts they are empty."""
    name = f"{CHALLENGE}.{fqdn}"
    deadline = time.monotonic() + wait
    while True:
        seen = {ns: _txt_at(ns, name) for ns in NAMESERVERS}
        if all(not values for _rcode, values in seen.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for ns, (rcode, values) in seen.items():
        assert values == [], f"{ns} still serves {name}: {values}"
        assert rcode in ("NXDOMAIN", "NOERROR")
    return seen


def _zone_rrsets(zone: str) -> dict:
    response = requests.get(f"{PDNS}/zones/{zone}.", headers=api_headers(), timeout=10)
    response.raise_for_status()
    return {(r["name"], r["type"]): r for r in response.json()["rrsets"]}


def _pebble_status(serial: str) -> dict:
    guard.require_lab_route(topology.acme_host().address)
    response = requests.get(f"{topology.ACME_MANAGEMENT_URL}/cert-status-by-serial/{serial}",
                            verify=str(LAB_CA), timeout=10)
    assert response.status_code == 200, (serial, response.status_code, response.text[:200])
    return response.json()


def _certificate_events(office, kind, fqdn):
    return [e for e in office.events(kind) if e.payload.get("fqdn") == fqdn]


def _with_acme(config, **acme):
    hosting = config.hosting
    return config.model_copy(update={"hosting": hosting.model_copy(update={
        "acme": hosting.acme.model_copy(update=acme)})})


# --- 1. a new site gets Pebble's certificate -------------------------------------------

def test_a_new_tls_site_gets_a_trusted_certificate_from_pebble(batch, lab_host):
    office = batch.office
    assert office.config.hosting.tls_source == "acme"  # the lab's default: the production path
    fqdn = batch.fqdns[0]
    row = office.site(fqdn)
    assert row.state == "provisioned"

    served = certificates.served(row.public_ip, fqdn, ROOTS)
    assert served["covers"] and fqdn in served["names"]
    assert served["trusted"], served["trust_error"]
    assert "Pebble" in served["issuer"]
    assert served["days_left"] > 30  # this Pebble issues for years; the figure is what matters
    # The root it chains to is the running Pebble's (its management interface says which).
    root = requests.get(f"{topology.ACME_MANAGEMENT_URL}/roots/0", verify=str(LAB_CA), timeout=10)
    assert root.status_code == 200 and root.text.strip() in ROOTS.read_text()
    # Not merely trusted by something: the lab CA alone does not verify it.
    assert not certificates.served(row.public_ip, fqdn, LAB_CA)["trusted"]

    (cert,) = office.hosting.certs.rows(fqdn)
    assert cert.state == "active" and cert.source == "acme"
    assert cert.serial == served["serial"] and cert.names == [fqdn]
    assert cert.registered_domain == TARAKAN
    assert cert.key_sealed and "-----BEGIN" not in cert.key_sealed and "PRIVATE" not in cert.key_sealed
    assert "PRIVATE" not in cert.cert_pem + cert.chain_pem
    assert office.hosting.box.open(cert.key_sealed).startswith("-----BEGIN PRIVATE KEY-----")

    (issued,) = _certificate_events(office, "certificate_issued", fqdn)
    assert issued.payload["serial"] == cert.serial and issued.payload["tls_source"] == "acme"
    assert issued.payload["registered_domain"] == TARAKAN
    assert "challenge_cleanup_failed" not in issued.payload
    recorded = row.config["certificate"]
    assert recorded["issuer"] == served["issuer"] and recorded["not_after"] == served["not_after"]
    assert recorded["serial"] == cert.serial and recorded["source"] == "acme"
    assert batch.records[fqdn]["verified"]["certificate"]["trusted"] is True

    # The challenge record is gone from both name servers and from the zone itself.
    _challenge_gone_everywhere(fqdn)
    assert (f"{CHALLENGE}.{fqdn}.", "TXT") not in _zone_rrsets(row.zone)
    # The web host holds the certificate with its chain, and the key only root may read.
    web = lab_host(row.web_host)
    key_file = web.file(f"/etc/ssl/provisioner/{fqdn}.key")
    assert key_file.exists and key_file.user == "root" and key_file.mode & 0o077 == 0
    assert cert.cert_pem.strip() in web.file(f"/etc/ssl/provisioner/{fqdn}.crt").content_string

    audited = CliRunner().invoke(main, ["audit", "--format", "json"])
    assert audited.exit_code in (0, 1), audited.output
    findings = json.loads(audited.stdout)["findings"]
    extra = [f for f in findings if f["kind"] == "dns-extra" and (fqdn in f["what"] or CHALLENGE in f["what"])]
    assert extra == []
    assert [f for f in findings if f["site"] == fqdn] == []


# --- 2. one PATCH per zone for a batch ---------------------------------------------------

def test_dns01_for_several_names_uses_one_patch_per_zone(batch):
    office = batch.office
    t1, t2, b1 = batch.fqdns
    challenge = [(zone, rrsets) for zone, rrsets in batch.patches
                 if any(n.startswith(CHALLENGE + ".") for n, _t, _c in rrsets)]
    expected_names = {TARAKAN: {f"{CHALLENGE}.{t1}", f"{CHALLENGE}.{t2}"},
                      "bulelengkab.go.id": {f"{CHALLENGE}.{b1}"}}
    # Publish: one PATCH per zone with every name of the batch; cleanup: one per zone again.
    assert [zone for zone, _r in challenge] == ["bulelengkab.go.id", TARAKAN,
                                                "bulelengkab.go.id", TARAKAN], challenge
    for i, (zone, rrsets) in enumerate(challenge):
        assert {n for n, _t, _c in rrsets} == expected_names[zone]
        assert {t for _n, t, _c in rrsets} == {"TXT"}
        assert {c for _n, _t, c in rrsets} == ({"REPLACE"} if i < 2 else {"DELETE"})
    # Every site got its own certificate from that one batch, served and trusted.
    for fqdn in batch.fqdns:
        row = office.site(fqdn)
        assert row.state == "provisioned"
        served = certificates.served(row.public_ip, fqdn, ROOTS)
        assert served["trusted"] and served["covers"] and "Pebble" in served["issuer"]
        assert [e.payload["serial"] for e in _certificate_events(office, "certificate_issued", fqdn)] \
            == [served["serial"]]
        _challenge_gone_everywhere(fqdn)


# --- 3. the weekly limit ------------------------------------------------------------------

def test_the_weekly_limit_holds_the_next_site_back_with_the_date_of_the_next_slot(batch, lab_host):
    office, limited = batch.office, batch.limited

    # The last slot of the week went to the batch's second tarakan site: under WEEKLY_LIMIT,
    # both tarakan sites of the one apply got a certificate, and they are all the week counts.
    firsts = [row for fqdn in batch.fqdns[:2] for row in office.hosting.certs.rows(fqdn)]
    assert [c.state for c in firsts] == ["active", "active"]
    with office.store.session() as session:
        counted = session.query(CertificateRow).filter(CertificateRow.source == "acme",
                                                       CertificateRow.registered_domain == TARAKAN).count()
    assert counted == WEEKLY_LIMIT == len(firsts)
    next_slot = min(c.issued_at for c in firsts) + WINDOW  # the week of the oldest certificate counted

    # The next one waits: refused before anything is built, with the date of the next slot.
    waiting_id = _approved(office, "tarakan-simkes.yaml")
    waiting = _fqdn_of(office, waiting_id)
    plan, _sites = limited.plan([waiting_id])
    assert "waits for a certificate" in plan.notes[waiting] and plan.changes == []
    with pytest.raises(StateError) as refused:
        limited.apply([waiting_id])
    message = str(refused.value)
    assert "waits for a certificate" in message and waiting in message
    assert f"{next_slot:%Y-%m-%d %H:%M}" in message and TARAKAN in message
    row = office.site(waiting)
    assert row.state == "waiting" and "waits for a certificate" in row.reason
    assert f"{next_slot:%Y-%m-%d %H:%M}" in row.reason
    (event,) = _certificate_events(office, "tls_issuance_waiting", waiting)
    assert event.payload["reason"] == row.reason
    assert office.hosting.certs.rows(waiting) == []
    # Nothing of it on any web or database server, or in DNS.
    names = naming.site_names(waiting.split(".", 1)[0], TARAKAN)
    for web in map(lab_host, (h.name for h in WEB_HOSTS)):
        assert not web.file(f"/etc/apache2/sites-available/{waiting}.conf").exists
        assert not web.file(f"/etc/ssl/provisioner/{waiting}.crt").exists
        assert not web.file(names.docroot).exists and not web.user(names.user).exists
    for db in map(lab_host, (h.name for h in DB_HOSTS)):
        assert names.db_name not in db.check_output("mysql -N -e 'SHOW DATABASES'").split()
    assert not any(name == f"{waiting}." for name, _t in _zone_rrsets(TARAKAN))
    with office.store.session() as session:
        assert session.query(Event).filter(Event.request_id == waiting_id, Event.kind == "apply_started").count() == 0

    # A request that allows it goes live over HTTP now, and says so in the plan.
    optional_id = _approved(office, "tarakan-simkes.yaml", tls="true\n  tls_optional: true")
    optional = _fqdn_of(office, optional_id)
    result = limited.apply([optional_id])
    assert "goes live over HTTP" in result.plan.notes[optional]
    assert f"{next_slot:%Y-%m-%d %H:%M}" in result.plan.notes[optional]
    row = office.site(optional)
    assert row.state == "provisioned" and row.public_ip == _shared_address(row.web_host)
    assert row.config["tls"] is False and "certificate" not in row.config
    guard.require_lab_route(row.public_ip)
    page = requests.get(f"http://{row.public_ip}/", headers={"Host": optional}, timeout=10, allow_redirects=False)
    assert page.status_code == 200
    web = lab_host(row.web_host)
    vhost = web.file(f"/etc/apache2/sites-available/{optional}.conf").content_string
    assert ":443>" not in vhost and "SSLEngine" not in vhost
    assert not web.file(f"/etc/ssl/provisioner/{optional}.crt").exists
    assert office.hosting.certs.rows(optional) == []
    # Until a hosting run gives it HTTPS, the audit says so (and not that its vhost drifted).
    from provisioner.audit import audit

    findings = [f for f in audit(limited.config, office.store, site=optional).findings]
    assert [f.kind for f in findings] == ["tls-deferred"]
    assert "next slot" in findings[0].found and optional_id in findings[0].fix


# --- 4. removal revokes ---------------------------------------------------------------------

def test_removal_revokes_the_certificate_at_pebble_and_drops_the_key(batch, lab_host):
    office = batch.office
    fqdn = batch.fqdns[2]  # the buleleng site: no later test looks at it
    (cert,) = office.hosting.certs.rows(fqdn)
    before = _pebble_status(cert.serial)
    assert before["Status"].lower() == "valid"
    web = lab_host(office.site(fqdn).web_host)
    assert web.file(f"/etc/ssl/provisioner/{fqdn}.key").exists

    office.hosting.remove([fqdn])

    (cert,) = office.hosting.certs.rows(fqdn)
    assert cert.state == "revoked" and cert.key_sealed is None and cert.ended_at is not None
    assert office.site(fqdn).state == "removed"
    for suffix in ("crt", "key"):
        assert not web.file(f"/etc/ssl/provisioner/{fqdn}.{suffix}").exists
    after = _pebble_status(cert.serial)
    assert after["Status"].lower() == "revoked", after
    (event,) = _certificate_events(office, "certificate_revoked", fqdn)
    assert event.payload["serial"] == cert.serial and "revocation_failed" not in event.payload


# --- 5. HTTP-01 for an office that chooses it -------------------------------------------------

def test_http01_renewal_is_validated_over_port_80_of_the_site(batch, lab_host, monkeypatch):
    from provisioner import tls_renewal

    office = batch.office
    fqdn = batch.fqdns[1]  # the second tarakan site: no later test looks at it
    (old,) = office.hosting.certs.rows(fqdn)
    offices = dict(office.config.offices)
    offices["tarakan"] = offices["tarakan"].model_copy(update={"tls_challenge": "http-01"})
    http01 = office.config.model_copy(update={"offices": offices})

    patches = []
    real_patch = DnsTarget._patch

    def recorded(self, zone, rrsets):
        patches.append([r["name"] for r in rrsets])
        return real_patch(self, zone, rrsets)

    monkeypatch.setattr(DnsTarget, "_patch", recorded)
    result = tls_renewal.renew(http01, office.store, site=fqdn, within=100000, apply=True)
    assert result.failed == {}, result.failed  # on failure: what Pebble said about port 80
    (renewed,) = result.renewed
    assert renewed["old_serial"] == old.serial and renewed["serial"] != old.serial
    # No DNS record was touched: the CA validated over HTTP.
    assert patches == []

    row = office.site(fqdn)
    served = certificates.served(row.public_ip, fqdn, ROOTS)
    assert served["serial"] == renewed["serial"] and served["trusted"] and served["covers"]
    states = {r.serial: r.state for r in office.hosting.certs.rows(fqdn)}
    assert states == {old.serial: "superseded", renewed["serial"]: "active"}
    issued = _certificate_events(office, "certificate_issued", fqdn)
    assert [e.payload["reason"] for e in issued] == ["new", "renewal"]
    # Pebble fetched its token over plain HTTP from the site's docroot, and got it.
    web = lab_host(row.web_host)
    log = web.check_output("cat %s", f"{row.config['names']['logdir']}/access.log")
    fetched = [line for line in log.splitlines() if "/.well-known/acme-challenge/" in line and "Pebble" in line]
    assert fetched and all('" 200 ' in line for line in fetched), log[-3000:]
    # The token directory exists only while the order is validated.
    assert not web.file(f"{row.config['names']['docroot']}/.well-known/acme-challenge").exists
