"""Linked hosting requests and waiting actions: who may link, which child counts, how the wait ends."""

from datetime import datetime, timedelta

import pytest

from provisioner.errors import HostError, StateError, ValidationError, Waiting
from provisioner.sop import spawn
from provisioner.sop.spawn import linked_child, requests_dir, spawn_hosting
from provisioner.store.models import SiteRow

from conftest import EXAMPLES, WITA

WEBSITE = (EXAMPLES / "tarakan-website-dinkes.yaml").read_bytes()
API = (EXAMPLES / "buleleng-api-sipandu.yaml").read_bytes()
SIPANDU = (EXAMPLES / "buleleng-sipandu.yaml").read_bytes()
ANALYSIS = EXAMPLES / "data" / "analisa-sipandu.yaml"
DINKES = "dinkes.tarakankota.go.id"
W = "WEB-2024-0012"


def _tick(clock, minutes=5):
    clock.now += timedelta(minutes=minutes)


def _website_approved(engine, clock):
    clock.now = datetime(2024, 8, 13, 9, 0, tzinfo=WITA)
    engine.submit(WEBSITE, "w.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        _tick(clock)
        engine.record_step(W, ref, role)
    _tick(clock)
    engine.decide(W, True, "bidang_aplikasi")


def _api_approved(engine, clock):
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    engine.submit(API, "a.yaml")
    for ref, role in (("2", "kadis"), ("3", "kabid"), ("4", "kasi"), ("5", "kasi"), ("6", "programmer")):
        _tick(clock)
        engine.record_step("KOM-2024-0044", ref, role, data_file=ANALYSIS if ref == "6" else None)
    _tick(clock)
    engine.decide("KOM-2024-0044", True, "kasi", reason="Dapat dibangun tim")
    return "KOM-2024-0044"


def _spawn(engine, clock, parent):
    return spawn_hosting(engine.config, engine.store, parent, at=clock.now, actions=engine.actions, clock=clock)


def _install_waits_for_site(engine, clock, calls, fail_first=False):
    """install_website as the website SOP runs it: spawn the hosting and wait until the site is live."""

    def install(ctx):
        calls.append(ctx.request.id)
        if fail_first and len(calls) == 1:
            raise HostError("the first try broke")
        with engine.store.session() as session:
            site = session.get(SiteRow, DINKES)
        if site is None or site.state != "provisioned":
            child = _spawn(engine, clock, ctx.request.id)
            raise Waiting(f"waiting for {child}")
        return {"release": "r1"}

    def provision(ctx):
        with engine.store.session() as session:
            session.add(SiteRow(fqdn=ctx.request.site.fqdn, state="provisioned", request_id=ctx.request.id,
                                office=ctx.request.office, zone=ctx.request.site.zone, config={},
                                label=ctx.request.site.subdomain, web_host="web1", dedicated_ip=False,
                                created_at=clock.now, updated_at=clock.now))
        return {}

    engine.actions.register("install_website", install, replace=True)
    engine.actions.register("provision_site", provision, replace=True)


def _to_install(engine, clock):
    _website_approved(engine, clock)
    outcome = None
    for ref in ("cek_website", "analisa", "pembuatan"):
        _tick(clock)
        try:
            outcome = engine.record_step(W, ref, "bidang_aplikasi")
        except Exception as err:  # the first install may fail on purpose
            outcome = err
    return outcome


def _through_review(engine, clock, request_id):
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        _tick(clock)
        engine.record_step(request_id, ref, role)
    _tick(clock)


# -- who may link ---------------------------------------------------------------

def test_a_submitted_request_may_not_name_a_linked_request(engine, clock):
    _website_approved(engine, clock)
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    named = SIPANDU.replace(b"purpose:", b"linked_request: WEB-2024-0012\npurpose:")
    with pytest.raises(ValidationError, match="linked_request: set only by `provision request spawn-hosting`"):
        engine.submit(named, "evil.yaml")
    assert [r["id"] for r in engine.list_requests()] == [W]
    assert linked_child(engine.store, W) is None


def test_only_a_hosting_request_for_the_parents_name_and_office_is_its_child(engine, clock):
    """A request linked to the parent but for another name or office is not the hosting it waits for."""
    _website_approved(engine, clock)
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    other = SIPANDU.replace(b"purpose:", b"linked_request: WEB-2024-0012\npurpose:")
    engine.submit(other, "other.yaml", spawned_from=W)  # as a store of an earlier version may hold it
    assert engine.show("KOM-2024-0031")["linked_to"] == W
    assert linked_child(engine.store, W) is None
    child = _spawn(engine, clock, W)
    assert child == "HST-2024-0001" and linked_child(engine.store, W) == child
    row = {r["id"]: r for r in engine.list_requests()}[child]
    assert (row["service"], row["office"], row["fqdn"], row["linked_to"]) == ("hosting", "tarakan", DINKES, W)


def test_the_engine_checks_what_a_spawned_request_names(engine, clock):
    _website_approved(engine, clock)
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    other = SIPANDU.replace(b"purpose:", b"linked_request: WEB-2024-0099\npurpose:")
    with pytest.raises(ValueError, match="naming WEB-2024-0012"):
        engine.submit(other, "x.yaml", spawned_from=W)


# -- a rejected child -----------------------------------------------------------

def test_a_rejected_hosting_request_is_replaced_and_the_wait_says_so(engine, clock):
    calls = []
    _install_waits_for_site(engine, clock, calls)
    outcome = _to_install(engine, clock)
    assert outcome.actions[0]["waiting"] == "waiting for HST-2024-0001"
    _through_review(engine, clock, "HST-2024-0001")
    engine.decide("HST-2024-0001", False, "kadis", reason="Kuota server habis")
    assert linked_child(engine.store, W) is None  # the rejected one will never provision

    _tick(clock)
    resumed = engine.resume(W)
    assert resumed.actions[0]["waiting"] == ("waiting for HST-2024-0002; the previous hosting request "
                                             "HST-2024-0001 was rejected (Kuota server habis)")
    (event,) = [e for e in engine.events(W) if e["kind"] == "action_waiting"][-1:]
    assert "HST-2024-0001 was rejected" in event["payload"]["message"]
    assert linked_child(engine.store, W) == "HST-2024-0002"

    # The new one runs its SOP, provisions, and the website's install finishes.
    _through_review(engine, clock, "HST-2024-0002")
    done = engine.decide("HST-2024-0002", True, "kadis")
    assert (W, "install_website") in [(a.get("request"), a["action"]) for a in done.actions]
    assert engine.show(W)["current_step"] == "laporan"


# -- attention ------------------------------------------------------------------

def test_no_decision_while_an_action_has_failed(engine, clock, actions):
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    engine.submit(API, "a.yaml")
    for ref, role in (("2", "kadis"), ("3", "kabid"), ("4", "kasi"), ("5", "kasi")):
        _tick(clock)
        engine.record_step("KOM-2024-0044", ref, role)
    actions.fail.add("render_analysis")
    _tick(clock)
    with pytest.raises(Exception, match="render_analysis broke on purpose"):
        engine.record_step("KOM-2024-0044", "6", "programmer", data_file=ANALYSIS)
    _tick(clock)
    with pytest.raises(StateError, match=r"KOM-2024-0044: an action failed; fix it and run "
                                         r"`provision request resume KOM-2024-0044` before the next step"):
        engine.decide("KOM-2024-0044", False, "kasi", reason="Tim penuh")
    shown = engine.show("KOM-2024-0044")
    assert (shown["state"], shown["current_step"], shown["decision"]) == ("attention", "keputusan", None)
    assert actions.count("render_analysis") == 1 and actions.count("render_reply_letter") == 0
    actions.fail.clear()
    engine.resume("KOM-2024-0044")
    assert engine.decide("KOM-2024-0044", False, "kasi", reason="Tim penuh").changed


def test_a_failed_action_that_now_waits_leaves_attention(engine, clock):
    calls = []
    _install_waits_for_site(engine, clock, calls, fail_first=True)
    failed = _to_install(engine, clock)
    assert "the first try broke" in str(failed)
    assert engine.show(W)["state"] == "attention"
    _tick(clock)
    assert engine.resume(W).actions[0]["waiting"] == "waiting for HST-2024-0001"
    shown = engine.show(W)
    assert shown["state"] == "approved" and shown["current_step"] == "instalasi"
    assert {s["key"]: s for s in shown["steps"]}["instalasi"]["action_status"] == "waiting"


# -- two spawns at once -----------------------------------------------------------

def test_a_number_taken_meanwhile_moves_to_the_next_and_never_overwrites_its_file(engine, clock, config,
                                                                                  monkeypatch):
    _website_approved(engine, clock)
    api = _api_approved(engine, clock)
    first = _spawn(engine, clock, W)
    assert first == "HST-2024-0001"
    written = (requests_dir(config) / f"{first}.yaml").read_bytes()

    real = spawn._next_id
    stale = iter(["HST-2024-0001"])  # computed before the other spawn registered its request

    def next_id(store, year):
        return next(stale, None) or real(store, year)

    monkeypatch.setattr(spawn, "_next_id", next_id)
    _tick(clock)
    second = _spawn(engine, clock, api)
    assert second == "HST-2024-0002"
    assert (requests_dir(config) / f"{first}.yaml").read_bytes() == written
    assert b"linked_request: KOM-2024-0044" in (requests_dir(config) / f"{second}.yaml").read_bytes()
    assert engine.show(second)["linked_to"] == api and engine.show(first)["linked_to"] == W


def test_a_spawned_hosting_request_provisions_from_the_store(engine, clock):
    """Provisioning reads the stored request under the full rules; the linked_request that
    spawn-hosting wrote is part of what was accepted, not a person's field to refuse."""
    from provisioner.hosting import Hosting

    _website_approved(engine, clock)
    child = _spawn(engine, clock, W)
    _through_review(engine, clock, child)
    engine.decide(child, True, "kadis")
    (request,) = Hosting(engine.config, engine.store).load_requests([child])
    assert request.site.fqdn == DINKES and request.linked_request == W
