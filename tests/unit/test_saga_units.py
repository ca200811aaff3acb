"""The saga's failure handling without hosts: steps replaced by a recorder that fails on cue.

What runs on the hosts is shown by tests/lab/test_hardening_faults.py; here the
bookkeeping: which sites are undone, in which order, what state and events
they end with, when an address goes back to the pool.
"""


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


def make_site(label: str, dedicated: bool = True) -> DesiredSite:
    return DesiredSite(
        request_id=f"HST-2024-{abs(hash(label)) % 10000:04d}", office="tarakan", label=label, zone=ZONE,
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
    """Stands in for Hosting._run_step: records (step, state, sites) and raises where told."""

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
    monkeypatch.setattr(hosting, "_run_step", steps)
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
    previous = work._record_start(sites, plan)
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
    a, b = make_site("alpha"), make_site("beta")
    plan = new_site_plan([a, b])
    previous = start(work, [a, b], plan)
    # Not a toolkit error: a bug or a library's own exception must be compensated the same way.
    work.steps.fail[("web", "present", b.fqdn)] = KeyError("vhost")
    monkeypatch.setattr(work, "removal_plan", unreadable)

    failures = work._run_saga([a, b], plan, {}, previous)

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


def test_a_compensation_that_fails_leaves_attention_and_keeps_the_address(work, monkeypatch):
    site = make_site("gamma")
    plan = new_site_plan([site])
    previous = start(work, [site], plan)
    work.steps.fail[("dns", "present", site.fqdn)] = HostError("PowerDNS API on ns1: HTTP 500 (tried 3 times)")
    # The undo itself breaks in every way, including with a non-toolkit exception.
    work.steps.fail[("dns", "absent", site.fqdn)] = HostError("PowerDNS API on ns1: connection refused")
    work.steps.fail[("ip", "absent", site.fqdn)] = RuntimeError("ssh died")
    monkeypatch.setattr(work, "removal_plan", unreadable)

    failures = work._run_saga([site], plan, {}, previous)  # never raises

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
    site = make_site("delta")
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

    work._run_saga([site], plan, {}, previous)

    assert [step for step, state, _ in work.steps.calls if state == "absent"] == ["web", "db"]
    assert row(work, site.fqdn).state == "failed"
    # Read from the hosts: the address is not up, so it goes back to the pool.
    assert not allocated(work, site.fqdn)


def test_a_site_that_was_live_is_not_undone_and_keeps_its_state(work, monkeypatch):
    site = make_site("epsilon", dedicated=False)
    plan = Plan(changes=[Update("web", "web1", site.fqdn, "vhost", "/etc/apache2/sites-available/x.conf")],
                sites=[site.fqdn])
    previous = start(work, [site], plan, live=True)
    work.steps.fail[("web", "present", site.fqdn)] = HostError("configtest failed")
    monkeypatch.setattr(work, "removal_plan", unreadable)

    failures = work._run_saga([site], plan, {}, previous)

    assert list(failures) == [site.fqdn]
    assert [c for c in work.steps.calls if c[1] == "absent"] == []
    assert row(work, site.fqdn).state == "provisioned"
    assert "configtest failed" in events(work, "site_update_failed", site.fqdn)[0]["reason"]


def test_no_site_is_left_provisioning_when_the_apply_stops(work):
    site = make_site("zeta", dedicated=False)
    plan = new_site_plan([site])
    previous = start(work, [site], plan)
    assert row(work, site.fqdn).state == "provisioning"
    work._settle([site], previous)
    r = row(work, site.fqdn)
    assert r.state == "attention" and "run it again" in r.reason
    assert events(work, "site_apply_interrupted", site.fqdn)


def test_an_interrupted_apply_leaves_no_site_provisioning(work, monkeypatch):
    """Even a KeyboardInterrupt in the middle of a step (not a failure to undo) settles the site."""
    site = make_site("eta", dedicated=False)
    start(work, [site], Plan(sites=[site.fqdn]))
    request = type("R", (), {"site": type("S", (), {"fqdn": site.fqdn, "dedicated_ip": False})()})()
    monkeypatch.setattr(work, "load_requests", lambda ids: [request])
    monkeypatch.setattr(work, "desired", lambda reqs, allocate=False: [site])
    monkeypatch.setattr(work, "read_live", lambda sites: None)
    monkeypatch.setattr(work, "compute_plan", lambda sites, live: new_site_plan([site]))
    monkeypatch.setattr(work, "_passwords", lambda sites: {site.fqdn: {}})
    work.steps.fail[("web", "present", site.fqdn)] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        work.apply(["HST-2024-0001"])
    assert row(work, site.fqdn).state == "attention"
    assert events(work, "site_apply_interrupted", site.fqdn)


def test_a_timed_out_batch_is_not_run_again_per_site(work, monkeypatch):
    a, b = make_site("theta", dedicated=False), make_site("iota", dedicated=False)
    plan = new_site_plan([a, b])
    previous = start(work, [a, b], plan)
    stuck = HostError("ansible run timed out on db1; it was stopped")
    stuck.timed_out = True
    work.steps.fail[("db", "present", a.fqdn)] = stuck
    monkeypatch.setattr(work, "removal_plan", unreadable)

    failures = work._run_saga([a, b], plan, {}, previous)

    assert sorted(failures) == sorted([a.fqdn, b.fqdn])
    assert [c for c in work.steps.calls if c[:2] == ("db", "present")] == [("db", "present", (a.fqdn, b.fqdn))]
    # What the hung run may have made is undone for both, from what it touched.
    assert sorted(c[2] for c in work.steps.calls if c[:2] == ("db", "absent")) == sorted([(a.fqdn,), (b.fqdn,)])
