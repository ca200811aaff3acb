"""provisioner/certificates.py without a CA or hosts: names covered, facts of a certificate,
the weekly limit counted per registered domain, reuse, activation, retirement, and the
DNS-01 publisher grouping challenge records by zone (one PATCH per zone)."""

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioner import certificates, tls
from provisioner.certificates import Certificates, PowerDnsChallenges, covers, describe
from provisioner.config import Config, default_offices
from provisioner.errors import AcmeError, Conflict, HostError
from provisioner.inventory import load_inventory
from provisioner.secretbox import SecretBox
from provisioner.store.models import CertificateRow, Event
from provisioner.targets.dns import ACCOUNT, DnsTarget

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
T1 = "satu.tarakankota.go.id"
T2 = "dua.tarakankota.go.id"
T3 = "tiga.tarakankota.go.id"
B1 = "satu.bulelengkab.go.id"


# --- helpers -------------------------------------------------------------------

class TestCa:
    """A throwaway CA that signs certificates with any validity."""

    __test__ = False

    def __init__(self, name="Unit Test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Unit Org")])
        now = dt.datetime.now(UTC)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, names, days_left: float, san=True) -> tuple[str, str, str, x509.Certificate]:
        """(cert PEM, chain PEM, key PEM, cert) for `names`, expiring in `days_left` days."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                   .issuer_name(self.name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=days_left)))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                            critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return (cert.public_bytes(serialization.Encoding.PEM).decode(),
                self.cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem, cert)


def _site(fqdn, request_id="TST-2024-0001", office=None):
    office = office or ("buleleng" if fqdn.endswith("bulelengkab.go.id") else "tarakan")
    return SimpleNamespace(fqdn=fqdn, request_id=request_id, office=office)


def _config(tmp_path, **acme) -> Config:
    config = Config(offices=default_offices(), state_dir=tmp_path)
    hosting = config.hosting
    return config.model_copy(update={"hosting": hosting.model_copy(update={
        "acme": hosting.acme.model_copy(update=acme), "tls_dir": tmp_path / "ca"})})


def _with_source(config: Config, source: str) -> Config:
    return config.model_copy(update={"hosting": config.hosting.model_copy(update={"tls_source": source})})


@pytest.fixture
def box(tmp_path):
    return SecretBox(tmp_path / "secret.key")


@pytest.fixture
def ca():
    return TestCa()


def _certs(config, store, box, dns=None) -> Certificates:
    return Certificates(config, store, None, dns, box)


def _record(certs, ca, fqdn, days_left=90, source="acme", names=None):
    """A recorded certificate (pending, key sealed) through the module's own recording."""
    cert, chain, key, parsed = ca.issue(names or [fqdn], days_left)
    bundle = certs._record(_site(fqdn), cert, chain, key, source, "new")
    return bundle, key, parsed


def _set_issued_at(store, serial, when):
    with store.session() as session:
        row = session.query(CertificateRow).filter_by(serial=serial).one()
        row.issued_at = when


# --- covers / describe ---------------------------------------------------------

@pytest.mark.parametrize("names, fqdn, expected", [
    (["simkes.tarakankota.go.id"], "simkes.tarakankota.go.id", True),
    (["SIMKES.tarakankota.go.id."], "simkes.TARAKANKOTA.go.id", True),
    (["*.tarakankota.go.id"], "simkes.tarakankota.go.id", True),
    (["*.tarakankota.go.id"], "a.simkes.tarakankota.go.id", False),  # one label deep only
    (["*.tarakankota.go.id"], "tarakankota.go.id", False),  # not the base name
    (["*.simkes.tarakankota.go.id"], "simkes.tarakankota.go.id", False),
    (["www.simkes.tarakankota.go.id"], "simkes.tarakankota.go.id", False),
    (["other.go.id", "*.bulelengkab.go.id"], "sipandu.bulelengkab.go.id", True),
    ([], "simkes.tarakankota.go.id", False),
    (["*.go.id"], "evil.tarakankota.go.id", False),
])
def test_covers_exact_names_and_wildcards_one_label_deep(names, fqdn, expected):
    assert covers(names, fqdn) is expected


def test_describe_a_lab_ca_certificate_from_pem_and_der(tmp_path):
    tls.ensure_lab_ca(tmp_path)
    got = tls.issue_server_certificate(tmp_path, ["simkes.tarakankota.go.id", "www.simkes.tarakankota.go.id"])
    cert = x509.load_pem_x509_certificate(got.cert.encode())
    facts = describe(got.cert)
    assert facts["issuer"] == tls.CA_NAME
    assert facts["issuer_org"] is None
    assert facts["serial"] == f"{cert.serial_number:x}"
    assert facts["names"] == ["simkes.tarakankota.go.id", "www.simkes.tarakankota.go.id"]
    assert dt.datetime.fromisoformat(facts["not_after"]) == cert.not_valid_after_utc
    assert dt.datetime.fromisoformat(facts["not_before"]) == cert.not_valid_before_utc
    assert dt.datetime.fromisoformat(facts["not_after"]).tzinfo is not None
    # The same facts from DER, and from bytes.
    der = cert.public_bytes(serialization.Encoding.DER)
    assert describe(der) == facts == describe(got.cert.encode())
    # Nothing of the key in the facts.
    assert "PRIVATE" not in repr(facts)


def test_describe_without_subject_alternative_names_falls_back_to_the_common_name(ca):
    pem, _chain, _key, cert = ca.issue(["legacy.tarakankota.go.id"], 30, san=False)
    facts = describe(pem)
    assert facts["names"] == ["legacy.tarakankota.go.id"]
    assert facts["issuer"] == "Unit Test CA" and facts["issuer_org"] == "Unit Org"


# --- the weekly limit ----------------------------------------------------------

def test_slots_count_earlier_names_of_the_batch_per_registered_domain(tmp_path, store, box, ca):
    certs = _certs(_config(tmp_path, weekly_limit=2), store, box)
    first, _key, _cert = _record(certs, ca, "lama.tarakankota.go.id")
    issued = certs.rows("lama.tarakankota.go.id")[0].issued_at

    slots = certs.slots([T1, B1, T2, T3])
    # One in the ledger + T1 of this batch = 2: T2 and T3 refused; Buleleng counts apart.
    assert slots[T1] is None and slots[B1] is None
    for fqdn in (T2, T3):
        slot = slots[fqdn]
        assert slot is not None and not slot.allowed
        assert slot.registered_domain == "tarakankota.go.id"
        assert (slot.used, slot.limit) == (2, 2)
    # The batch's own names count as issued now; the recorded one is the oldest, so its
    # seventh day is when a slot opens again.
    assert slots[T2].next_slot == issued + dt.timedelta(days=7)

    # Only the ledger counts across calls: slots() itself records nothing.
    assert certs.slots([T1])[T1] is None


def test_slots_drop_issuances_older_than_a_week_and_ignore_other_sources(tmp_path, store, box, ca):
    certs = _certs(_config(tmp_path, weekly_limit=1), store, box)
    old, _k, _c = _record(certs, ca, "lama.tarakankota.go.id")
    _set_issued_at(store, old.serial, dt.datetime.now(UTC) - dt.timedelta(days=7, minutes=1))
    _record(certs, ca, "labca.tarakankota.go.id", source="lab-ca")  # not the CA's count
    assert certs.slots([T1]) == {T1: None}

    recent, _k, _c = _record(certs, ca, "baru.tarakankota.go.id")
    six_days_ago = dt.datetime.now(UTC) - dt.timedelta(days=6)
    _set_issued_at(store, recent.serial, six_days_ago)
    slot = certs.slots([T1, B1])
    assert slot[B1] is None
    assert slot[T1].used == 1 and slot[T1].next_slot == six_days_ago + dt.timedelta(days=7)


def test_configured_registered_domains_pool_the_count(tmp_path, store, box, ca):
    # One registered domain over both zones (as if both cities sat under one parent).
    certs = _certs(_config(tmp_path, weekly_limit=1, registered_domains=["go.id"]), store, box)
    slots = certs.slots([T1, B1])
    assert slots[T1] is None
    assert slots[B1] is not None and slots[B1].registered_domain == "go.id"
    bundle, _k, _c = _record(certs, ca, T1)
    assert certs.rows(T1)[0].registered_domain == "go.id"


def test_slots_with_another_tls_source_never_refuse(tmp_path, store, box):
    certs = _certs(_with_source(_config(tmp_path, weekly_limit=1), "lab-ca"), store, box)
    assert certs.slots([T1, T2, T3]) == {T1: None, T2: None, T3: None}


# --- the records: pending, reused, activated ---------------------------------------

def test_recorded_certificate_is_pending_with_its_key_sealed(tmp_path, store, box, ca):
    certs = _certs(_config(tmp_path), store, box)
    bundle, key, cert = _record(certs, ca, T1)
    (row,) = certs.rows(T1)
    assert row.state == "pending" and row.source == "acme"
    assert row.serial == f"{cert.serial_number:x}" == bundle.serial
    assert row.registered_domain == "tarakankota.go.id"
    assert row.names == [T1] and row.issuer == "Unit Test CA"
    assert "PRIVATE KEY" not in row.key_sealed and key not in row.key_sealed
    assert box.open(row.key_sealed) == key == bundle.key
    with store.session() as session:
        (event,) = session.query(Event).filter_by(kind="certificate_issued").all()
        assert event.payload["serial"] == bundle.serial and "PRIVATE" not in repr(event.payload)
    assert certs.current(T1).serial == bundle.serial and certs.active(T1) is None


def test_reusable_refuses_a_certificate_inside_the_renewal_window(tmp_path, store, box, ca):
    certs = _certs(_config(tmp_path, renew_within_days=30), store, box)
    _record(certs, ca, T1, days_left=29)
    assert certs.current(T1) is not None
    assert certs.reusable(T1) is None  # due for renewal: a new one is ordered instead

    good, key, _c = _record(certs, ca, T2, days_left=60)
    reused = certs.reusable(T2)
    assert reused is not None and reused.serial == good.serial and reused.key == key
    # Judged at a later time, the same certificate is inside the window.
    assert certs.reusable(T2, now=dt.datetime.now(UTC) + dt.timedelta(days=31)) is None


def test_reusable_refuses_other_names_other_sources_and_dropped_keys(tmp_path, store, box, ca):
    certs = _certs(_config(tmp_path), store, box)
    _record(certs, ca, T1, names=["lain.tarakankota.go.id"])  # recorded under T1, does not cover it
    assert certs.reusable(T1) is None
    _record(certs, ca, T2, source="lab-ca")  # the office switched to acme since
    assert certs.reusable(T2) is None
    bundle, _k, _c = _record(certs, ca, T3)
    with store.session() as session:
        session.query(CertificateRow).filter_by(serial=bundle.serial).one().key_sealed = None
    assert certs.reusable(T3) is None


def test_activate_supersedes_the_older_rows(tmp_path, store, box, ca):
    certs = _certs(_config(tmp_path), store, box)
    old, _k, _c = _record(certs, ca, T1)
    certs.activate(T1, old.serial, "TST-2024-0001")
    assert certs.active(T1).serial == old.serial
    _set_issued_at(store, old.serial, dt.datetime.now(UTC) - dt.timedelta(days=60))
    new, _k, _c = _record(certs, ca, T1)
    assert certs.current(T1).serial == new.serial  # pending, newest
    assert certs.active(T1).serial == old.serial  # still the one served

    certs.activate(T1, "ffff", "TST-2024-0001")  # not one of ours: nothing changes
    assert {r.serial: r.state for r in certs.rows(T1)} == {old.serial: "active", new.serial: "pending"}

    certs.activate(T1, new.serial, "TST-2024-0001")
    states = {r.serial: (r.state, r.ended_at is not None) for r in certs.rows(T1)}
    assert states == {old.serial: ("superseded", True), new.serial: ("active", False)}
    with store.session() as session:
        active = [e.payload["serial"] for e in session.query(Event).filter_by(kind="certificate_active")]
    assert active == [old.serial, new.serial]
    certs.activate(T1, new.serial, "TST-2024-0001")  # seen again: no second event
    with store.session() as session:
        assert session.query(Event).filter_by(kind="certificate_active").count() == 2


def test_discard_marks_only_a_pending_certificate_failed(tmp_path, store, box, ca):
    certs = _certs(_config(tmp_path), store, box)
    bundle, _k, _c = _record(certs, ca, T1)
    certs.discard(T1, bundle.serial, "TST-2024-0001", "configtest refused")
    (row,) = certs.rows(T1)
    assert row.state == "failed" and row.ended_at is not None
    assert certs.current(T1) is None
    certs.discard(T1, bundle.serial, "TST-2024-0001", "again")
    with store.session() as session:
        assert session.query(Event).filter_by(kind="certificate_not_installed").count() == 1


# --- retirement ------------------------------------------------------------------

def test_retire_lab_ca_rows_drops_the_keys_without_asking_any_ca(tmp_path, store, box, monkeypatch):
    config = _with_source(_config(tmp_path), "lab-ca")
    tls.ensure_lab_ca(config.hosting.tls_dir)
    certs = _certs(config, store, box)

    def no_ca(self):
        raise AssertionError("a lab-ca certificate must not reach an ACME CA")

    monkeypatch.setattr(Certificates, "client", no_ca)
    bundles, errors = certs.obtain([_site(T1)])
    assert errors == {} and set(bundles) == {T1}
    (row,) = certs.rows(T1)
    assert row.source == "lab-ca" and row.registered_domain is None and row.key_sealed
    certs.activate(T1, row.serial, "TST-2024-0001")

    assert certs.retire(T1, "TST-2024-0001") == []
    (row,) = certs.rows(T1)
    assert row.state == "removed" and row.key_sealed is None and row.ended_at is not None
    with store.session() as session:
        kinds = [e.kind for e in session.query(Event).filter(Event.kind.like("certificate_%"))]
    assert kinds == ["certificate_issued", "certificate_active", "certificate_removed"]
    assert certs.retire(T1, "TST-2024-0001") == []  # nothing left to do
    with store.session() as session:
        assert session.query(Event).filter_by(kind="certificate_removed").count() == 1


class FakeAcme:
    def __init__(self, refuse=False):
        self.revoked, self.refuse = [], refuse

    def revoke(self, cert_pem, reason="unspecified"):
        if self.refuse:
            raise AcmeError("ACME CA https://ca.example/dir: revoking: unauthorized: no", code="unauthorized")
        self.revoked.append((describe(cert_pem)["serial"], reason))


def test_retire_acme_rows_revokes_the_valid_ones_and_keeps_refusals_on_record(tmp_path, store, box, ca):
    certs = _certs(_config(tmp_path), store, box)
    expired, _k, _c = _record(certs, ca, T1, days_left=-1)
    old, _k, _c = _record(certs, ca, T1)
    new, _k, _c = _record(certs, ca, T1)
    certs.activate(T1, new.serial, "TST-2024-0001")
    fake = FakeAcme()
    certs._acme = fake
    assert certs.retire(T1, "TST-2024-0001") == []
    assert sorted(fake.revoked) == sorted([(old.serial, "cessationOfOperation"),
                                           (new.serial, "cessationOfOperation")])
    states = {r.serial: r.state for r in certs.rows(T1)}
    assert states == {expired.serial: "removed", old.serial: "revoked", new.serial: "revoked"}
    assert all(r.key_sealed is None for r in certs.rows(T1))

    refused, _k, _c = _record(certs, ca, T2)
    certs._acme = FakeAcme(refuse=True)
    problems = certs.retire(T2, "TST-2024-0002")
    assert len(problems) == 1 and refused.serial in problems[0] and "unauthorized" in problems[0]
    (row,) = certs.rows(T2)
    assert row.state == "removed" and row.key_sealed is None  # the key goes even so
    with store.session() as session:
        event = session.query(Event).filter_by(kind="certificate_removed", request_id="TST-2024-0002").one()
    assert "unauthorized" in event.payload["revocation_failed"]


# --- DNS-01 through PowerDNS ---------------------------------------------------------

class RecordingDns(DnsTarget):
    """The real DnsTarget grouping with the API replaced by a zone kept in memory: reads
    answer from it, PATCHes are kept and applied to it."""

    def __init__(self, inventory, zones=None):
        super().__init__(inventory)
        self.live = zones or {}
        self.patches: list[tuple[str, list]] = []

    def read(self, zones):
        return {z: dict(self.live.get(z, {})) for z in sorted(set(zones))}

    def _patch(self, zone, rrsets):
        self.patches.append((zone, [dict(r) for r in rrsets]))
        for rrset in rrsets:
            key = (rrset["name"], rrset["type"])
            if rrset["changetype"] == "DELETE":
                self.live.get(zone, {}).pop(key, None)
            else:
                self.live.setdefault(zone, {})[key] = dict(rrset)
        return None


@pytest.fixture
def inventory():
    return load_inventory(ROOT / "inventory" / "lab" / "hosts.yml")


ZONES = ["bulelengkab.go.id", "tarakankota.go.id"]
RECORDS = {
    f"_acme-challenge.{T1}": ["v-t1"],
    f"_acme-challenge.{T2}": ["v-t2"],
    f"_acme-challenge.{B1}": ["v-b1"],
    # A wildcard and its base name share one record: two values.
    f"_acme-challenge.{T3}": ["v-t3a", "v-t3b"],
}


def test_powerdns_challenges_one_patch_per_zone_then_wait_at_every_name_server(inventory, monkeypatch):
    dns = RecordingDns(inventory)
    asked = []

    def served(address, name):
        asked.append((address, name))
        return set(RECORDS[name]) if len(asked) > 2 else set()  # the first answers lag behind

    monkeypatch.setattr(certificates, "_txt", served)
    monkeypatch.setattr(certificates.ssh, "check_route", lambda address: None)
    monkeypatch.setattr(certificates.time, "sleep", lambda s: None)
    publisher = PowerDnsChallenges(dns, inventory, ZONES, timeout=30)
    publisher.publish(RECORDS)

    assert [zone for zone, _r in dns.patches] == ["bulelengkab.go.id", "tarakankota.go.id"]
    by_zone = {zone: {r["name"]: r for r in rrsets} for zone, rrsets in dns.patches}
    assert set(by_zone["bulelengkab.go.id"]) == {f"_acme-challenge.{B1}."}
    assert set(by_zone["tarakankota.go.id"]) == {f"_acme-challenge.{n}." for n in (T1, T2, T3)}
    t3 = by_zone["tarakankota.go.id"][f"_acme-challenge.{T3}."]
    assert t3["type"] == "TXT" and t3["changetype"] == "REPLACE" and t3["ttl"] == 60
    assert [r["content"] for r in t3["records"]] == ['"v-t3a"', '"v-t3b"']
    assert t3["comments"][0]["account"] == ACCOUNT
    # Every name asked at every name server of the inventory.
    nameservers = {h.address for h in inventory.group("nameservers")}
    assert len(nameservers) == 2
    assert {(a, n) for a, n in asked} == {(a, n) for a in nameservers for n in RECORDS}

    dns.patches.clear()
    publisher.cleanup(RECORDS)
    assert [zone for zone, _r in dns.patches] == ["bulelengkab.go.id", "tarakankota.go.id"]
    for _zone, rrsets in dns.patches:
        assert {r["changetype"] for r in rrsets} == {"DELETE"}
    assert sum(len(rrsets) for _z, rrsets in dns.patches) == 4
    assert dns.live == {"bulelengkab.go.id": {}, "tarakankota.go.id": {}}


def test_powerdns_challenges_time_out_naming_the_name_server(inventory, monkeypatch):
    dns = RecordingDns(inventory)
    monkeypatch.setattr(certificates, "_txt", lambda address, name: {"stale"})
    monkeypatch.setattr(certificates.ssh, "check_route", lambda address: None)
    monkeypatch.setattr(certificates.time, "sleep", lambda s: None)
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(certificates.time, "monotonic", lambda: next(clock))
    publisher = PowerDnsChallenges(dns, inventory, ZONES, timeout=20)
    with pytest.raises(HostError, match=r"ns1 does not serve the ACME challenge after 20 s \(answers \['stale'\]\)"):
        publisher.publish({f"_acme-challenge.{T1}": ["v-t1"]})


def test_powerdns_challenges_never_replace_nor_delete_a_foreign_txt_record(inventory):
    name = f"_acme-challenge.{T1}."
    foreign = {"name": name, "type": "TXT", "ttl": 300, "records": [{"content": '"by hand"', "disabled": False}],
               "comments": []}
    dns = RecordingDns(inventory, {"tarakankota.go.id": {(name, "TXT"): foreign}})
    publisher = PowerDnsChallenges(dns, inventory, ZONES)
    records = {f"_acme-challenge.{T1}": ["v-t1"]}
    with pytest.raises(Conflict, match="did not create"):
        publisher.publish(records)
    assert dns.patches == []
    # The ACME client cleans up after a failed publish too: that must leave the foreign record.
    publisher.cleanup(records)
    assert dns.patches == []
    assert dns.live["tarakankota.go.id"][(name, "TXT")] == foreign


def test_a_challenge_outside_the_managed_zones_is_refused(inventory):
    dns = RecordingDns(inventory)
    from provisioner.errors import ConfigError

    with pytest.raises(ConfigError, match="none of the managed zones"):
        dns.challenges({"_acme-challenge.example.org": ["v"]}, ZONES)
    assert dns.patches == []


def test_a_bundle_is_checked_against_the_trust_before_it_is_installed(tmp_path):
    from provisioner import tls

    tls.ensure_lab_ca(tmp_path / "ca")
    tls.ensure_lab_ca(tmp_path / "other")
    got = tls.issue_from_lab_ca(tmp_path / "ca", "simkes.tarakankota.go.id")
    bundle = certificates.Bundle(cert=got.cert, chain=got.chain, key=got.key, serial="1", not_after=None)

    assert certificates.chain_problem(bundle, "simkes.tarakankota.go.id", tmp_path / "ca" / "ca.crt") is None
    wrong_name = certificates.chain_problem(bundle, "other.tarakankota.go.id", tmp_path / "ca" / "ca.crt")
    assert "subjectAltName" in wrong_name
    assert "does not verify" in certificates.chain_problem(bundle, "simkes.tarakankota.go.id",
                                                           tmp_path / "other" / "ca.crt")
    assert "cannot be read" in certificates.chain_problem(bundle, "simkes.tarakankota.go.id", tmp_path / "none.pem")
    assert "PRIVATE KEY" not in repr(bundle)
