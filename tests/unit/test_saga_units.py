"""The saga's failure handling without hosts: steps replaced by a recorder that fails on cue.

What runs on the hosts is shown by tests/lab/test_hardening_faults.py; here the
bookkeeping: which sites are undone, in which order, what state and events
they end with, when an address goes back to the pool.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest

from provisioner import ipam, naming
from provisioner.changes import Create, Update
from provisioner.errors import HostError
from provisioner.hosting import Hosting
from provisioner.plan import Plan
from provisioner.site import DesiredSite
from provisioner.store import open_store
from provisioner.sop.sla import utcnow
from provisioner.store.models import Event, IPAllocation, RequestRow, SiteRow

ZONE = "tarakankota.go.id"


def make_site(label: str, number: int, dedicated: bool = True) -> DesiredSite:
    """A site with its own fixed request number (unique within a test)."""
    return DesiredSite(
        request_id=f"HST-2024-{number:04d}", office="tarakan", label=label, zone=ZONE,
        names=naming.site_names(label, ZONE), web_host="web1", web_address="10.77.0.21", db_host="db1",
        public_ip="203.0.113.10", dedicated_ip=dedicated, php=True, php_version="8.2", database=True, tls=False,
        quota_mb=1024, bandwidth_kbps=0)


def new_site_plan(sites) -> Plan:
    changes = []
    for s in sites:
        changes += [Create("db", "db1", s.fqdn, "database", s.names.db_name),
                    Create("web", "web1", s.fqdn, "system user", s.names.user),
                    Create("dns", ZONE, s.fqdn, "A record", s.fqdn)]
        if s.dedicated_ip:
            changes.append(Create("ip", "web1", s.fqdn, "public IP", s.public_ip))
    return Plan(changes=changes, sites=[s.fqdn for s in sites])


class Steps:
    """Stands in for Hosting.run_step: records (step, state, sites) and raises where told."""

    def __init__(self):
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []
        self.fail: dict[tuple[str, str, str], BaseException] = {}

    def __call__(self, step, sites, plan, passwords, state="present"):
        fqdns = tuple(s.fqdn for s in sites)
        self.calls.append((step, state, fqdns))
        for fqdn in fqdns:
            if (step, state, fqdn) in self.fail:
                raise self.fail[(step, state, fqdn)]
        return {}


@pytest.fixture
def work(config, tmp_path, monkeypatch):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    hosting = Hosting(config, store)
    steps = Steps()
    monkeypatch.setattr(hosting, "run_step", steps)
    hosting.steps = steps
    yield hosting
    store.close()


def unreadable(sites):
    raise HostError("ns1: PowerDNS API: connection refused")


def start(work, sites, plan, live=False):
    with work.store.session() as session:
        for site in sites:
            session.add(RequestRow(id=site.request_id, service="hosting", office="tarakan", fqdn=site.fqdn,
                                   sha256="0" * 64, content=b"", source="test", submitted_at=utcnow(),
                                   state="approved", decision="approve", current_step=None))
    for site in sites:
        if site.dedicated_ip:
            ipam.allocate(work.store, work.inventory, work.inventory.host("web1"), site.fqdn, site.request_id)
    previous = work.saga.record_start(sites, plan)
    if live:
        with work.store.session() as session:
            for site in sites:
                row = session.get(SiteRow, site.fqdn)
                row.provisioned_at = row.created_at
        previous = {s.fqdn: {"state": "provisioned", "live": True} for s in sites}
    return previous


def row(work, fqdn) -> SiteRow:
    with work.store.session() as session:
        return session.get(SiteRow, fqdn)


def events(work, kind, fqdn) -> list[dict]:
    with work.store.session() as session:
        return [e.payload for e in session.query(Event).filter(Event.kind == kind) if e.payload.get("fqdn") == fqdn]


def allocated(work, fqdn) -> bool:
    with work.store.session() as session:
        return session.query(IPAllocation).filter(IPAllocation.fqdn == fqdn).count() == 1


def test_any_exception_in_a_step_is_undone_only_for_its_site_and_the_others_go_on(work, monkeypatch):
    a, b = make_site("alpha", 101), make_site("beta", 102)
    plan = new_site_plan([a, b])
    previous = start(work, [a, b], plan)
    # Not a toolkit error: a bug or a library's own exception must be compensated the same way.
    work.steps.fail[("web", "present", b.fqdn)] = KeyError("vhost")
    monkeypatch.setattr(work, "removal_plan", unreadable)

    failures = work.saga.run([a, b], plan, {}, previous)

    assert list(failures) == [b.fqdn]
    assert isinstance(failures[b.fqdn], HostError) and "step web failed: KeyError" in str(failures[b.fqdn])
    # The batch failed, so web ran once more per site; only beta's own run failed.
    assert ("web", "present", (a.fqdn,)) in work.steps.calls and ("web", "present", (b.fqdn,)) in work.steps.calls
    undone = [(step, fqdns) for step, state, fqdns in work.steps.calls if state == "absent"]
    assert undone == [("web", (b.fqdn,)), ("db", (b.fqdn,)), ("ip", (b.fqdn,))]
    assert ("dns", "present", (a.fqdn,)) in work.steps.calls
    assert not any(step == "dns" and b.fqdn in fqdns for step, _, fqdns in work.steps.calls)
    assert row(work, b.fqdn).state == "failed" and "KeyError" in row(work, b.fqdn).reason
    assert [e["step"] for e in events(work, "saga_compensated", b.fqdn)] == ["web", "db", "ip"]
    assert not allocated(work, b.fqdn)
    # Alpha is untouched by beta's failure: still on its way, its address kept.
    assert row(work, a.fqdn).state == "provisioning" and allocated(work, a.fqdn)
    assert events(work, "saga_compensated", a.fqdn) == []


def test_db_and_web_run_side_by_side_and_are_recorded_as_if_one_after_the_other(work):
    import threading

    a, b = make_site("eta", 111), make_site("theta", 112)
    plan = new_site_plan([a, b])
    previous = start(work, [a, b], plan)
    # Each of the two steps waits for the other: run one after another, the first would time out.
    together = threading.Barrier(2, timeout=10)
    steps = work.steps

    def side_by_side(step, sites, plan, passwords, state="present"):
        if step in ("db", "web") and state == "present":
            together.wait()
        return steps(step, sites, plan, passwords, state)

    work.run_step = side_by_side
    assert work.saga.run([a, b], plan, {}, previous) == {}
    with work.store.session() as session:
        done = [(e.payload["fqdn"], e.payload["step"]) for e in
                session.query(Event).filter(Event.kind == "saga_done").order_by(Event.id)]
    assert done == [(a.fqdn, "ip"), (b.fqdn, "ip"), (a.fqdn, "db"), (b.fqdn, "db"), (a.fqdn, "web"),
                    (b.fqdn, "web"), (a.fqdn, "dns"), (b.fqdn, "dns")]


def test_a_site_whose_db_step_fails_is_undone_of_what_web_built_beside_it(work, monkeypatch):
    a, b = make_site("iota", 113), make_site("kappa", 114)
    plan = new_site_plan([a, b])
    previous = start(work, [a, b], plan)
    work.steps.fail[("db", "present", b.fqdn)] = HostError("db1: Access denied")
    monkeypatch.setattr(work, "removal_plan", unreadable)  # the undo goes by what ran

    failures = work.saga.run([a, b], plan, {}, previous)

    assert list(failures) == [b.fqdn] and "Access denied" in str(failures[b.fqdn])
    # Its web step ran beside the failed db step: that is undone too, and never recorded done.
    assert [(step, fqdns) for step, state, fqdns in work.steps.calls if state == "absent"] == [
        ("web", (b.fqdn,)), ("db", (b.fqdn,)), ("ip", (b.fqdn,))]
    assert [e["step"] for e in events(work, "saga_done", b.fqdn)] == ["ip"]
    assert [e["step"] for e in events(work, "saga_done", a.fqdn)] == ["ip", "db", "web", "dns"]
    assert not any(step == "dns" and b.fqdn in fqdns for step, _, fqdns in work.steps.calls)
    assert row(work, b.fqdn).state == "failed"


def test_a_compensation_that_fails_leaves_attention_and_keeps_the_address(work, monkeypatch):
    site = make_site("gamma", 103)
    plan = new_site_plan([site])
    previous = start(work, [site], plan)
    work.steps.fail[("dns", "present", site.fqdn)] = HostError("PowerDNS API on ns1: HTTP 500 (tried 3 times)")
    # The undo itself breaks in every way, including with a non-toolkit exception.
    work.steps.fail[("dns", "absent", site.fqdn)] = HostError("PowerDNS API on ns1: connection refused")
    work.steps.fail[("ip", "absent", site.fqdn)] = RuntimeError("ssh died")
    monkeypatch.setattr(work, "removal_plan", unreadable)

    failures = work.saga.run([site], plan, {}, previous)  # never raises

    assert list(failures) == [site.fqdn]
    undone = [step for step, state, _ in work.steps.calls if state == "absent"]
    assert undone == ["dns", "web", "db", "ip"]
    r = row(work, site.fqdn)
    assert r.state == "attention"
    assert "not undone: dns" in r.reason and "ip (step ip failed: RuntimeError: ssh died)" in r.reason
    assert events(work, "site_failed", site.fqdn)[0]["remaining"] == ["dns", "ip"]
    # The address is not known to be down: it stays allocated.
    assert allocated(work, site.fqdn)


def test_the_undo_follows_the_live_state_when_it_can_be_read(work, monkeypatch):
    site = make_site("delta", 104)
    plan = new_site_plan([site])
    previous = start(work, [site], plan)
    work.steps.fail[("web", "present", site.fqdn)] = HostError("ansible run timed out on web1; it was stopped")
    from provisioner.changes import Delete
    from provisioner.plan import REMOVAL_ORDER

    # Live: the timed-out web step did leave a user, the database is there, the address is not up.
    live = Plan(changes=[Delete("web", "web1", site.fqdn, "system user and SFTP account", site.names.user),
                         Delete("db", "db1", site.fqdn, "database", site.names.db_name)],
                sites=[site.fqdn], order=REMOVAL_ORDER)
    monkeypatch.setattr(work, "removal_plan", lambda sites: live)

    work.saga.run([site], plan, {}, previous)

    assert [step for step, state, _ in work.steps.calls if state == "absent"] == ["web", "db"]
    assert row(work, site.fqdn).state == "failed"
    # Read from the hosts: the address is not up, so it goes back to the pool.
    assert not allocated(work, site.fqdn)


def test_what_the_undo_leaves_because_it_is_not_the_sites_is_named_in_its_failure(work, monkeypatch):
    site = make_site("gamma", 105)
    plan = new_site_plan([site])
    previous = start(work, [site], plan)
    work.steps.fail[("web", "present", site.fqdn)] = HostError(f"{site.names.home} exists and is not a directory")
    from provisioner.changes import Delete
    from provisioner.plan import REMOVAL_ORDER

    note = f"left: {site.names.home} is not the site's: a file owned by root"
    live = Plan(changes=[Delete("web", "web1", site.fqdn, "system user and SFTP account", site.names.user)],
                sites=[site.fqdn], order=REMOVAL_ORDER, notes={site.fqdn: note})
    monkeypatch.setattr(work, "removal_plan", lambda sites: live)

    work.saga.run([site], plan, {}, previous)

    # The file stays (no step for it), the site fails for its own reason, and what was left is said.
    assert row(work, site.fqdn).state == "failed"
    (failed,) = events(work, "site_failed", site.fqdn)
    assert failed["note"] == note and site.names.home in failed["reason"]


def test_a_site_that_was_live_is_not_undone_and_keeps_its_state(work, monkeypatch):
    site = make_site("epsilon", 105, dedicated=False)
    plan = Plan(changes=[Update("web", "web1", site.fqdn, "vhost", "/etc/apache2/sites-available/x.conf")],
                sites=[site.fqdn])
    previous = start(work, [site], plan, live=True)
    work.steps.fail[("web", "present", site.fqdn)] = HostError("configtest failed")
    monkeypatch.setattr(work, "removal_plan", unreadable)

    failures = work.saga.run([site], plan, {}, previous)

    assert list(failures) == [site.fqdn]
    assert [c for c in work.steps.calls if c[1] == "absent"] == []
    assert row(work, site.fqdn).state == "provisioned"
    assert "configtest failed" in events(work, "site_update_failed", site.fqdn)[0]["reason"]


def test_no_site_is_left_provisioning_when_the_apply_stops(work):
    site = make_site("zeta", 106, dedicated=False)
    plan = new_site_plan([site])
    previous = start(work, [site], plan)
    assert row(work, site.fqdn).state == "provisioning"
    work.saga.settle([site], previous, "HostError: web1 unreachable")
    r = row(work, site.fqdn)
    assert r.state == "attention" and "run it again" in r.reason
    # The reason names what stopped the apply, not a generic phrase.
    assert "(HostError: web1 unreachable)" in r.reason
    assert events(work, "site_apply_interrupted", site.fqdn)


def test_an_interrupted_apply_leaves_no_site_provisioning(work, monkeypatch):
    """Even a KeyboardInterrupt in the middle of a step (not a failure to undo) settles the site."""
    site = make_site("eta", 107, dedicated=False)
    start(work, [site], Plan(sites=[site.fqdn]))
    request = type("R", (), {"id": site.request_id,
                             "site": type("S", (), {"fqdn": site.fqdn, "dedicated_ip": False})()})()
    monkeypatch.setattr(work, "load_requests", lambda ids: [request])
    monkeypatch.setattr(work, "desired", lambda reqs, allocate=False: [site])
    monkeypatch.setattr(work, "read_live", lambda sites: None)
    monkeypatch.setattr(work, "compute_plan", lambda sites, live: new_site_plan([site]))
    monkeypatch.setattr(work, "ensure_passwords", lambda sites: {site.fqdn: {}})
    work.steps.fail[("web", "present", site.fqdn)] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        work.apply(["HST-2024-0001"])
    assert row(work, site.fqdn).state == "attention"
    assert "(KeyboardInterrupt)" in row(work, site.fqdn).reason
    assert events(work, "site_apply_interrupted", site.fqdn)


def test_a_timed_out_batch_is_not_run_again_per_site(work, monkeypatch):
    a, b = make_site("theta", 108, dedicated=False), make_site("iota", 109, dedicated=False)
    plan = new_site_plan([a, b])
    previous = start(work, [a, b], plan)
    stuck = HostError("ansible run timed out on db1; it was stopped")
    stuck.timed_out = True
    work.steps.fail[("db", "present", a.fqdn)] = stuck
    monkeypatch.setattr(work, "removal_plan", unreadable)

    failures = work.saga.run([a, b], plan, {}, previous)

    assert sorted(failures) == sorted([a.fqdn, b.fqdn])
    assert [c for c in work.steps.calls if c[:2] == ("db", "present")] == [("db", "present", (a.fqdn, b.fqdn))]
    # What the hung run may have made is undone for both, from what it touched.
    assert sorted(c[2] for c in work.steps.calls if c[:2] == ("db", "absent")) == sorted([(a.fqdn,), (b.fqdn,)])


# -- review fixes: no state to go back to is `provisioning` ------------------------------

def test_a_site_a_killed_run_left_provisioning_is_never_put_back_to_provisioning(work, monkeypatch):
    live, new = make_site("kappa", 110, dedicated=False), make_site("lambda", 111, dedicated=False)
    update = Plan(changes=[Update("web", "web1", s.fqdn, "vhost", f"/etc/apache2/sites-available/{s.fqdn}.conf")
                           for s in (live, new)], sites=[live.fqdn, new.fqdn])
    start(work, [live, new], update)  # the killed run: both left `provisioning`, one had gone live before
    with work.store.session() as session:
        session.get(SiteRow, live.fqdn).provisioned_at = utcnow()
    monkeypatch.setattr(work, "removal_plan", unreadable)

    previous = work.saga.record_start([live, new], update)  # the next run

    assert previous[live.fqdn]["state"] == "provisioned" and previous[new.fqdn]["state"] == "attention"
    work.steps.fail[("web", "present", live.fqdn)] = HostError("configtest failed")
    work.saga.run([live], update, {}, previous)
    assert row(work, live.fqdn).state == "provisioned"
    work.saga.settle([new], previous, "stopped")
    assert row(work, new.fqdn).state == "attention"


# -- review fixes: a removal is read back before the address is released ------------------

def removal_of(site, *targets) -> Plan:
    from provisioner.changes import Delete
    from provisioner.plan import REMOVAL_ORDER

    kinds = {"dns": ("A record", site.fqdn), "web": ("vhost", site.fqdn), "db": ("database", site.names.db_name),
             "ip": ("public IP", site.public_ip)}
    host = {"dns": ZONE, "web": "web1", "db": "db1", "ip": "web1"}
    return Plan(changes=[Delete(t, host[t], site.fqdn, *kinds[t]) for t in targets], sites=[site.fqdn],
                order=REMOVAL_ORDER)


@pytest.fixture
def removal(work, monkeypatch):
    """A provisioned dedicated site ready to remove; `reads` are what each removal_plan call returns."""
    from provisioner import verify

    site = make_site("mu", 112)
    start(work, [site], new_site_plan([site]))
    with work.store.session() as session:
        r = session.get(SiteRow, site.fqdn)
        r.state, r.provisioned_at = "provisioned", utcnow()
    reads = [removal_of(site, "dns", "web", "db", "ip")]
    monkeypatch.setattr(work, "recorded_sites", lambda fqdns: [site])
    monkeypatch.setattr(work, "removal_plan", lambda sites: reads.pop(0) if len(reads) > 1 else reads[0])
    monkeypatch.setattr(verify, "dns_gone", lambda inventory, s: {"ns1": "no A record", "ns2": "no A record"})
    return site, reads


def test_a_removal_with_the_address_still_up_is_attention_and_keeps_the_address(work, removal):
    site, reads = removal
    reads.append(removal_of(site, "ip"))  # the read-back: the address is still on web1

    with pytest.raises(HostError, match="still on the hosts after removal: Delete ip .*public IP"):
        work.remove([site.fqdn])

    r = row(work, site.fqdn)
    assert r.state == "attention" and allocated(work, site.fqdn)
    (incomplete,) = events(work, "removal_incomplete", site.fqdn)
    assert any("public IP" in line for line in incomplete["remaining"])
    assert events(work, "site_removed", site.fqdn) == []


def test_a_name_server_still_answering_after_removal_keeps_the_site_in_attention(work, removal, monkeypatch):
    from provisioner import verify

    site, reads = removal
    reads.append(removal_of(site))  # nothing left on the hosts ...

    def still(inventory, s):  # ... but a name server still has the A record
        raise HostError(f"{s.fqdn}: ns2 still answers ['203.0.113.10'] (authoritative=True)")

    monkeypatch.setattr(verify, "dns_gone", still)
    with pytest.raises(HostError, match="ns2 still answers"):
        work.remove([site.fqdn])
    assert row(work, site.fqdn).state == "attention" and allocated(work, site.fqdn)


def test_a_complete_removal_is_read_back_then_released_and_removed(work, removal):
    site, reads = removal
    reads.append(removal_of(site))

    checks = work.remove([site.fqdn])

    assert checks == {site.fqdn: {"dns": {"ns1": "no A record", "ns2": "no A record"}, "hosts": "nothing left"}}
    assert row(work, site.fqdn).state == "removed" and not allocated(work, site.fqdn)
    assert [step for step, state, _ in work.steps.calls] == ["dns", "web", "db", "ip"]


def test_lifecycle_removal_uses_the_hosting_read_back_and_records_it_once(work, removal, config, monkeypatch):
    from provisioner.lifecycle import Lifecycle, LifecyclePlan

    site, reads = removal
    reads.append(removal_of(site, "db"))
    lifecycle = Lifecycle(config, work.store, actor="operator")
    lifecycle.hosting = work
    monkeypatch.setattr(lifecycle, "plan_remove",
                        lambda fqdn: LifecyclePlan("remove", fqdn, "provisioned", removal_of(site, "dns")))

    with pytest.raises(HostError, match="still on the hosts after removal"):
        lifecycle.remove(site.fqdn, reason="closed")

    assert len(events(work, "removal_incomplete", site.fqdn)) == 1
    assert [e["action"] for e in events(work, "maintenance_failed", site.fqdn)] == ["remove"]
    assert row(work, site.fqdn).state == "attention" and allocated(work, site.fqdn)


# -- review fixes: any verification error is recorded -------------------------------------

def test_a_verification_that_breaks_with_any_exception_is_recorded(work, monkeypatch):
    from provisioner import verify

    site = make_site("nu", 113, dedicated=False)
    start(work, [site], new_site_plan([site]))

    def broken(*args, **kwargs):
        raise KeyError("dns")

    monkeypatch.setattr(verify, "verify_site", broken)
    with pytest.raises(HostError, match="step verify failed: KeyError"):
        work.verify_and_record(site, new_site_plan([site]), {})
    r = row(work, site.fqdn)
    assert r.state == "attention" and "verification failed" in r.reason
    assert "KeyError" in events(work, "verification_failed", site.fqdn)[0]["error"]


# -- review fixes: an outage is not retried per site; one live read; one TLS key -------------

@pytest.mark.parametrize("flag", ["connection", "unreachable", "unchanged"])
def test_a_failure_that_is_not_about_one_site_is_not_run_again_per_site(work, monkeypatch, flag):
    a, b = make_site("xi", 114, dedicated=False), make_site("omicron", 115, dedicated=False)
    plan = new_site_plan([a, b])
    previous = start(work, [a, b], plan)
    outage = HostError("PowerDNS API on ns1: change to zone tarakankota.go.id: connection refused (tried 3 times)")
    setattr(outage, flag, True)
    work.steps.fail[("dns", "present", a.fqdn)] = outage
    reads = []
    monkeypatch.setattr(work, "removal_plan", lambda sites: reads.append([s.fqdn for s in sites]) or unreadable(sites))

    failures = work.saga.run([a, b], plan, {}, previous)

    assert sorted(failures) == sorted([a.fqdn, b.fqdn])
    assert [c for c in work.steps.calls if c[:2] == ("dns", "present")] == [("dns", "present", (a.fqdn, b.fqdn))]
    # One read of the live state for both undos.
    assert reads == [[a.fqdn, b.fqdn]]


def _lab_ca_work(work, tmp_path):
    """The same Hosting with certificates from a lab CA made in tmp_path (real certificates)."""
    from provisioner import tls

    tls.ensure_lab_ca(tmp_path / "ca")
    work.config = work.config.model_copy(update={"hosting": work.config.hosting.model_copy(
        update={"tls_source": "lab-ca", "tls_dir": tmp_path / "ca"})})
    return work


def test_a_certificate_is_obtained_once_per_apply_and_reused_by_the_next(work, tmp_path, monkeypatch):
    work = _lab_ca_work(work, tmp_path)
    site = make_site("pi", 116, dedicated=False)
    plan = Plan(changes=[Create("web", "web1", site.fqdn, "TLS certificate", site.fqdn)], sites=[site.fqdn])
    previous = start(work, [site], plan)
    orders = []
    obtain = work.certs.obtain
    monkeypatch.setattr(work.certs, "obtain", lambda sites, reason="new": orders.append(
        [s.fqdn for s in sites]) or obtain(sites, reason))

    assert work.obtain_certificates([site], plan, {}, previous) == {}
    first = work.step_secrets([site], plan, {}, "web")
    again = work.step_secrets([site], plan, {}, "web")
    work.issued = {}  # a later apply: the recorded certificate is installed again, not ordered again
    assert work.obtain_certificates([site], plan, {}, previous) == {}
    later = work.step_secrets([site], plan, {}, "web")

    assert orders == [[site.fqdn]]
    assert first["tls"] == again["tls"] == later["tls"]
    assert "BEGIN CERTIFICATE" in first["tls"][site.fqdn]["cert"]
    (stored,) = work.certs.rows(site.fqdn)
    assert stored.state == "pending" and "PRIVATE KEY" not in stored.key_sealed


def test_a_site_whose_certificate_cannot_be_had_fails_before_anything_is_built(work, monkeypatch):
    from provisioner.errors import AcmeError

    site, other = make_site("rho", 119, dedicated=False), make_site("tau", 120, dedicated=False)
    plan = Plan(changes=[Create("web", "web1", s.fqdn, "TLS certificate", s.fqdn) for s in (site, other)],
                sites=[site.fqdn, other.fqdn])
    previous = start(work, [site, other], plan)
    monkeypatch.setattr(work, "live_removal", lambda sites: Plan(sites=[s.fqdn for s in sites]))
    refused = AcmeError("ACME CA https://ca.test/dir: ordering a certificate for rho: rejectedIdentifier: no",
                        url="https://ca.test/dir", code="rejectedIdentifier")
    bundle = SimpleNamespace(serial="ab", secrets=lambda: {"cert": "c", "key": "k", "chain": ""})
    monkeypatch.setattr(work.certs, "obtain", lambda sites, reason="new": (
        {other.fqdn: bundle}, {site.fqdn: refused}))
    monkeypatch.setattr("provisioner.certificates.chain_problem", lambda bundle, fqdn, trust: None)

    errors = work.obtain_certificates([site, other], plan, {}, previous)

    assert list(errors) == [site.fqdn] and "rejectedIdentifier" in str(errors[site.fqdn])
    assert row(work, site.fqdn).state == "failed" and "rejectedIdentifier" in row(work, site.fqdn).reason
    assert work.steps.calls == []  # nothing was built for it, so nothing to undo
    assert events(work, "saga_failed", site.fqdn)[0]["step"] == "tls"
    assert events(work, "saga_done", other.fqdn)[0]["serial"] == "ab"


# -- review fixes: an apply refused before it starts keeps no address ---------------------

@pytest.mark.parametrize("refusal", ["conflict", "checksum"])
def test_an_apply_refused_before_it_starts_gives_its_new_address_back(work, monkeypatch, refusal):
    from provisioner.errors import Conflict, StateError

    site, kept = make_site("rho", 117), make_site("sigma", 118)
    with work.store.session() as session:
        for s in (site, kept):
            session.add(RequestRow(id=s.request_id, service="hosting", office="tarakan", fqdn=s.fqdn,
                                   sha256="0" * 64, content=b"", source="test", submitted_at=utcnow(),
                                   state="approved", decision="approve", current_step=None))
    # `kept` held its address before this apply: that one is not this apply's to give back.
    ipam.allocate(work.store, work.inventory, work.inventory.host("web1"), kept.fqdn, kept.request_id)
    requests = [type("R", (), {"id": s.request_id, "site": s})() for s in (site, kept)]
    monkeypatch.setattr(work, "load_requests", lambda ids: requests)
    monkeypatch.setattr(work, "place", lambda r: (work.inventory.host("web1"), None))

    def desired(reqs, allocate=False):
        for s in (site, kept):
            ipam.allocate(work.store, work.inventory, work.inventory.host("web1"), s.fqdn, s.request_id)
        return [site, kept]

    def compute_plan(sites, live):
        if refusal == "conflict":
            raise Conflict(f"{site.fqdn}: found vhost {site.fqdn} on web1, not created by the toolkit")
        return new_site_plan(sites)

    monkeypatch.setattr(work, "desired", desired)
    monkeypatch.setattr(work, "read_live", lambda sites: None)
    monkeypatch.setattr(work, "compute_plan", compute_plan)
    monkeypatch.setattr(work, "refusals", lambda sites, live: {})  # a refusal of the whole batch

    with pytest.raises(Conflict if refusal == "conflict" else StateError):
        work.apply([site.request_id, kept.request_id], checksum="0" * 64)

    assert not allocated(work, site.fqdn) and allocated(work, kept.fqdn)
    assert row(work, site.fqdn) is None and work.steps.calls == []


# -- review fixes: a rotation that stops midway keeps and shows what it rotated -----------

@pytest.fixture
def rotation(work, config, monkeypatch):
    """A provisioned site with stored passwords; the hosts replaced by recorders."""
    from provisioner import credentials, hosting

    site = make_site("tau", 119, dedicated=False)
    start(work, [site], new_site_plan([site]))
    with work.store.session() as session:
        r = session.get(SiteRow, site.fqdn)
        r.state, r.provisioned_at = "provisioned", utcnow()
    old, _ = credentials.ensure(work.store, work.box, site.fqdn, site.request_id,
                                {"sftp": site.names.user, "db": site.names.db_user})
    seen = SimpleNamespace(load=[], set=[], fail_login=set())
    monkeypatch.setattr(Hosting, "load_requests", lambda self, ids, provisioning=True: seen.load.append(
        provisioning) or [type("R", (), {"id": site.request_id, "site": site})()])
    monkeypatch.setattr(Hosting, "desired", lambda self, requests, allocate=False: [site])
    monkeypatch.setattr(hosting, "_set_password", lambda work_, s, kind, password: seen.set.append((kind, password)))

    def login(work_, s, kind, password):
        if (kind, password) in seen.fail_login or (kind, "new") in seen.fail_login and password != old[kind]:
            raise HostError(f"{kind} login refused")

    monkeypatch.setattr(hosting, "_login", login)
    return site, old, seen


def test_a_rotation_that_fails_after_one_account_names_it_and_writes_its_sheet(work, config, rotation, monkeypatch):
    from provisioner import credentials
    from provisioner.hosting import rotate_credentials

    site, old, seen = rotation
    seen.fail_login.add(("sftp", "new"))  # db (first) rotates; sftp's new password is refused
    written, write_sheet = [], credentials.write_sheet
    monkeypatch.setattr(credentials, "write_sheet",
                        lambda *a, **kw: written.append(dict(a[3])) or write_sheet(*a, **kw))

    with pytest.raises(HostError) as caught:
        rotate_credentials(config, work.store, site.fqdn)

    message = str(caught.value)
    assert "rotating the sftp password failed" in message and "already rotated: db" in message
    sheet = Path(message.split("credentials sheet ")[1].split(")")[0])
    stored = credentials.get(work.store, work.box, site.fqdn)
    assert stored["sftp"] == old["sftp"] and stored["db"] != old["db"]
    assert sheet.exists() and [w["Kata sandi basis data"] for w in written] == [stored["db"]]
    # The approval is not checked again for a site that exists (its SOP may have moved on).
    assert seen.load == [False]


def test_a_rotation_whose_store_fails_puts_the_old_password_back(work, config, rotation, monkeypatch):
    from provisioner import credentials
    from provisioner.hosting import rotate_credentials

    site, old, seen = rotation

    def broken(*args, **kwargs):
        raise OSError("database is locked")

    monkeypatch.setattr(credentials, "replace", broken)
    with pytest.raises(HostError, match="rotating the db password failed: .*database is locked.*put back and works"):
        rotate_credentials(config, work.store, site.fqdn, kinds=("db",))
    assert seen.set[-1] == ("db", old["db"])
    assert credentials.get(work.store, work.box, site.fqdn)["db"] == old["db"]


def test_a_certificate_that_would_not_verify_stops_its_site_before_it_is_built(work, tmp_path, monkeypatch):
    work = _lab_ca_work(work, tmp_path)
    site = make_site("upsilon", 121, dedicated=False)
    plan = Plan(changes=[Create("web", "web1", site.fqdn, "TLS certificate", site.fqdn)], sites=[site.fqdn])
    previous = start(work, [site], plan)
    monkeypatch.setattr(work, "live_removal", lambda sites: Plan(sites=[s.fqdn for s in sites]))
    # The certificate is real, but checked against a CA that did not sign it.
    from provisioner import tls

    tls.ensure_lab_ca(tmp_path / "stranger")
    monkeypatch.setattr(work, "ca_file", lambda: str(tmp_path / "stranger" / "ca.crt"))

    errors = work.obtain_certificates([site], plan, {}, previous)

    assert "does not verify" in str(errors[site.fqdn])
    assert row(work, site.fqdn).state == "failed" and work.steps.calls == []
    (stored,) = work.certs.rows(site.fqdn)
    assert stored.state == "failed"  # kept for the CA's count, never installed
    assert site.fqdn not in work.issued


# -- a batch: refusals per site, verification side by side, progress -----------------------

class Recorder:
    """A Progress that keeps every call."""

    def __init__(self):
        self.calls = []

    def begin(self, total, what):
        self.calls.append(("begin", total, what))

    def step(self, fqdns, step):
        self.calls.append(("step", tuple(fqdns), step))

    def done(self, fqdn, ok, detail=""):
        self.calls.append(("done", fqdn, ok, detail))

    def end(self):
        self.calls.append(("end",))


def faked_batch(work, monkeypatch, sites, refused=None):
    """apply() over these sites with the hosts, the CA and the outside checks faked."""
    with work.store.session() as session:
        for s in sites:
            session.add(RequestRow(id=s.request_id, service="hosting", office="tarakan", fqdn=s.fqdn,
                                   sha256="0" * 64, content=b"", source="test", submitted_at=utcnow(),
                                   state="approved", decision="approve", current_step=None))
    requests = [SimpleNamespace(id=s.request_id, site=s) for s in sites]

    def desired(reqs, allocate=False):
        for s in sites:
            if allocate and s.dedicated_ip:
                ipam.allocate(work.store, work.inventory, work.inventory.host("web1"), s.fqdn, s.request_id)
        return list(sites)

    monkeypatch.setattr(work, "load_requests", lambda ids: requests)
    monkeypatch.setattr(work, "place", lambda r: (work.inventory.host("web1"), work.inventory.host("db1")))
    monkeypatch.setattr(work, "desired", desired)
    monkeypatch.setattr(work, "read_live", lambda sites: None)
    monkeypatch.setattr(work, "refusals", lambda sites, live: {
        s.fqdn: refused[s.fqdn] for s in sites if refused and s.fqdn in refused})
    monkeypatch.setattr(work, "compute_plan", lambda sites, live: new_site_plan(sites))
    monkeypatch.setattr(work, "ensure_passwords", lambda sites: {s.fqdn: {} for s in sites})
    monkeypatch.setattr(work, "sheets", lambda pairs: {s.fqdn: Path(f"/sheets/{s.fqdn}.pdf") for s, _p in pairs})
    monkeypatch.setattr(work, "removal_plan", unreadable)
    work.progress = Recorder()
    return [s.request_id for s in sites]


def test_verification_runs_side_by_side_and_one_sites_failure_is_its_own(work, monkeypatch):
    import threading

    from provisioner.verify import Verification, VerificationFailed

    a, b, c = make_site("kappa", 131, dedicated=False), make_site("lambda", 132), make_site("mu", 133)
    ids = faked_batch(work, monkeypatch, [a, b, c])
    # Each check waits for the others: a check run one after another would never get past it.
    together = threading.Barrier(3, timeout=10)

    def check(site, passwords, fresh):
        together.wait()
        assert fresh  # never live before: the placeholder page is expected
        if site.fqdn == b.fqdn:
            raise VerificationFailed(f"{site.fqdn}: ns1 answers nothing")
        return Verification(site.fqdn, {"dns": {"ns1": [site.public_ip]}}), None

    monkeypatch.setattr(work, "check_from_outside", check)
    with pytest.raises(HostError, match=r"1 of 3 sites failed: .*lambda.*ns1 answers nothing; provisioned: "):
        work.apply(ids)
    assert row(work, a.fqdn).state == "provisioned" and row(work, c.fqdn).state == "provisioned"
    assert row(work, b.fqdn).state == "attention" and "ns1 answers nothing" in row(work, b.fqdn).reason
    assert events(work, "site_provisioned", c.fqdn)[0]["record"]["verified"] == {"dns": {"ns1": [c.public_ip]}}


def test_the_verification_results_come_back_per_site_in_the_sites_order(work, monkeypatch):
    sites = [make_site(f"v{i}", 140 + i, dedicated=False) for i in range(5)]
    previous = start(work, sites, new_site_plan(sites))
    assert previous
    from provisioner.verify import Verification

    def check(site, passwords, fresh):
        if site.fqdn == sites[1].fqdn:
            raise KeyError("tls")
        return Verification(site.fqdn, {"http": {"http": 200}}), None

    monkeypatch.setattr(work, "check_from_outside", check)
    outcomes = work.verify_sites(sites, new_site_plan(sites), {s.fqdn: {} for s in sites})
    assert list(outcomes) == [s.fqdn for s in sites]
    assert "step verify failed: KeyError" in str(outcomes[sites[1].fqdn])
    assert all(outcomes[s.fqdn][1] is True for s in sites if s is not sites[1])  # first time live


def test_progress_hears_of_every_step_and_every_site_once(work, monkeypatch):
    from provisioner.verify import Verification

    a, b = make_site("omikron", 151, dedicated=False), make_site("pi", 152, dedicated=False)
    ids = faked_batch(work, monkeypatch, [a, b])
    work.steps.fail[("web", "present", b.fqdn)] = HostError("configtest failed")
    monkeypatch.setattr(work, "check_from_outside", lambda s, p, fresh: (Verification(s.fqdn), None))
    with pytest.raises(HostError, match="configtest failed"):
        work.apply(ids)
    calls = work.progress.calls
    assert calls[0] == ("begin", 2, "hosting") and calls[-1] == ("end",)
    steps = [(c[2], c[1]) for c in calls if c[0] == "step"]
    assert steps == [("db", (a.fqdn, b.fqdn)), ("web", (a.fqdn, b.fqdn)), ("dns", (a.fqdn,)), ("verify", (a.fqdn,))]
    done = [c[1:] for c in calls if c[0] == "done"]
    assert done == [(b.fqdn, False, "configtest failed"), (a.fqdn, True, "")]


def test_progress_ends_even_when_the_apply_stops(work, monkeypatch):
    site = make_site("rho", 153, dedicated=False)
    ids = faked_batch(work, monkeypatch, [site])
    work.steps.fail[("db", "present", site.fqdn)] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        work.apply(ids)
    assert work.progress.calls[0] == ("begin", 1, "hosting") and work.progress.calls[-1] == ("end",)


def test_a_site_refused_in_a_batch_fails_alone_untouched_and_gives_its_address_back(work, monkeypatch):
    from provisioner.errors import Conflict
    from provisioner.verify import Verification

    foreign, fine = make_site("sigma", 161), make_site("tau", 162)
    conflict = Conflict(f"{foreign.fqdn}: found vhost {foreign.fqdn} on web1, not created by the toolkit; "
                        "nothing touched")
    ids = faked_batch(work, monkeypatch, [foreign, fine], refused={foreign.fqdn: conflict})
    monkeypatch.setattr(work, "check_from_outside", lambda s, p, fresh: (Verification(s.fqdn), None))
    with pytest.raises(HostError, match=rf"1 of 2 sites failed: {foreign.fqdn}: found vhost .*provisioned: "
                                        rf"{fine.fqdn}"):
        work.apply(ids)
    assert not any(foreign.fqdn in fqdns for _step, _state, fqdns in work.steps.calls)
    assert row(work, fine.fqdn).state == "provisioned" and allocated(work, fine.fqdn)
    # No record for a name someone else has on the hosts (a record would make it look like ours).
    assert row(work, foreign.fqdn) is None and not allocated(work, foreign.fqdn)
    assert "not created by the toolkit" in events(work, "apply_refused", foreign.fqdn)[0]["error"]
    assert ("done", foreign.fqdn, False, str(conflict)) in work.progress.calls


def test_a_suspended_site_in_a_batch_is_refused_alone_and_stays_suspended(work, monkeypatch):
    from provisioner.verify import Verification

    paused, fine = make_site("upsilon", 171, dedicated=False), make_site("phi", 172, dedicated=False)
    ids = faked_batch(work, monkeypatch, [paused, fine])
    now = utcnow()
    with work.store.session() as session:
        session.add(SiteRow(fqdn=paused.fqdn, request_id=paused.request_id, office="tarakan", zone=ZONE,
                            label=paused.label, state="suspended", reason="unpaid", web_host="web1", db_host="db1",
                            public_ip=paused.public_ip, dedicated_ip=False, config=paused.record(),
                            plan_checksum=None, created_at=now, provisioned_at=now, updated_at=now))
    monkeypatch.setattr(work, "desired", lambda reqs, allocate=False: [r.site for r in reqs])
    monkeypatch.setattr(work, "check_from_outside", lambda s, p, fresh: (Verification(s.fqdn), None))
    planned, _ = work.plan(ids)  # the plan a reviewer reads says so, and binds the apply
    assert "is suspended (unpaid)" in planned.notes[paused.fqdn] and not planned.for_site(paused.fqdn)
    with pytest.raises(HostError, match=rf"{paused.fqdn} is suspended \(unpaid\)"):
        work.apply(ids, checksum=planned.checksum)
    assert row(work, paused.fqdn).state == "suspended" and row(work, fine.fqdn).state == "provisioned"
    assert not any(paused.fqdn in fqdns for _step, _state, fqdns in work.steps.calls)
    assert events(work, "apply_refused", paused.fqdn)
