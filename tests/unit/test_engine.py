from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from provisioner.errors import ActionError, Conflict, NotFound, PermissionDenied, StateError, UserError
from provisioner.store.migrate import current_revision
from provisioner.store.models import Event

from conftest import EXAMPLES, WITA


def at(day, hour, minute=0, month=8):
    return datetime(2024, month, day, hour, minute, tzinfo=WITA)


def through_review(engine, clock, raw):
    """Submit and record steps 2-4 of the hosting SOP on Tue 2024-08-13."""
    clock.now = at(13, 8, 0)
    engine.submit(raw, "tarakan-simkes.yaml")
    for ref, role, minute in (("agenda", "bagian_umum", 2), ("disposisi", "kadis", 4),
                              ("pengkajian", "bidang_aplikasi", 9)):
        clock.now = at(13, 8, minute)
        engine.record_step("HST-2024-0007", ref, role)


def statuses(engine):
    return {s["key"]: s["status"] for s in engine.show("HST-2024-0007")["steps"]}


def test_full_hosting_flow_runs_the_bound_actions_once(engine, clock, actions, simkes_bytes):
    through_review(engine, clock, simkes_bytes)
    assert actions.calls == []  # nothing automated before the decision
    clock.now = at(13, 8, 30)
    outcome = engine.decide("HST-2024-0007", True, "kadis")
    assert outcome.changed
    assert [a["action"] for a in outcome.actions] == ["provision_site", "render_letter"]
    assert actions.count("provision_site") == 1 and actions.count("render_letter") == 1
    shown = engine.show("HST-2024-0007")
    assert shown["state"] == "approved" and shown["current_step"] == "kirim_laporan"
    by = {s["key"]: s["by"] for s in shown["steps"]}
    assert by["konfigurasi_server"] == "system" and by["keputusan"] == "kadis"

    again = engine.decide("HST-2024-0007", True, "kadis")
    assert not again.changed and "already approved" in again.message
    assert actions.count("provision_site") == 1  # the hook is idempotent
    assert engine.resume("HST-2024-0007").changed is False

    for ref, role in (("8", "bidang_aplikasi"), ("9", "bidang_aplikasi"), ("10", "opd")):
        clock.now += timedelta(minutes=1)
        engine.record_step("HST-2024-0007", ref, role)
    shown = engine.show("HST-2024-0007")
    assert shown["state"] == "done" and shown["current_step"] is None
    assert all(s["status"] == "done" for s in shown["steps"])
    with pytest.raises(StateError):
        engine.decide("HST-2024-0007", False, "kadis", reason="late change of mind")
    kinds = [e["kind"] for e in engine.events("HST-2024-0007")]
    assert kinds.count("decided") == 1 and kinds.count("action_done") == 2


def test_rejection_goes_to_the_reply_letter(engine, clock, actions, simkes_bytes):
    through_review(engine, clock, simkes_bytes)
    with pytest.raises(UserError, match="needs --reason"):
        engine.decide("HST-2024-0007", False, "kadis")
    engine.decide("HST-2024-0007", False, "kadis", reason="Kuota server penuh")
    assert actions.calls == [("render_reply_letter", "HST-2024-0007", "keputusan", "tidak")]
    shown = engine.show("HST-2024-0007")
    assert shown["state"] == "rejected" and shown["current_step"] == "selesai"
    assert statuses(engine)["konfigurasi_server"] == "skipped"
    with pytest.raises(StateError, match="decided the other way"):
        engine.decide("HST-2024-0007", True, "kadis")
    engine.record_step("HST-2024-0007", "selesai", "opd")
    assert engine.show("HST-2024-0007")["state"] == "done"


def test_steps_follow_order_and_role(engine, clock, simkes_bytes):
    engine.submit(simkes_bytes, "f.yaml")
    with pytest.raises(StateError, match="next step is 2 \\(agenda\\)"):
        engine.record_step("HST-2024-0007", "disposisi", "kadis")
    with pytest.raises(PermissionDenied, match="done by bagian_umum"):
        engine.record_step("HST-2024-0007", "agenda", "kadis")
    with pytest.raises(UserError, match="not a role"):
        engine.record_step("HST-2024-0007", "agenda", "lurah")
    with pytest.raises(StateError, match="use `provision decide"):
        engine.record_step("HST-2024-0007", "keputusan", "kadis")
    with pytest.raises(StateError, match="done by the toolkit"):
        engine.record_step("HST-2024-0007", "konfigurasi_server", "bidang_aplikasi")
    with pytest.raises(StateError, match="next step is 2"):
        engine.decide("HST-2024-0007", True, "kadis")
    with pytest.raises(NotFound):
        engine.record_step("HST-2024-9999", "agenda", "bagian_umum")
    with pytest.raises(UserError, match="in the future"):
        engine.record_step("HST-2024-0007", "agenda", "bagian_umum", at=clock.now + timedelta(hours=1))
    with pytest.raises(UserError, match="before the previous step"):
        engine.record_step("HST-2024-0007", "agenda", "bagian_umum", at=clock.now - timedelta(hours=1))
    engine.record_step("HST-2024-0007", "2", "bagian_umum")
    with pytest.raises(StateError, match="already recorded"):
        engine.record_step("HST-2024-0007", "agenda", "bagian_umum")
    # Nothing of the refused attempts reached the log.
    kinds = [e["kind"] for e in engine.events("HST-2024-0007")]
    assert kinds == ["request_submitted", "step_recorded", "step_recorded"]


def test_resubmission(engine, simkes_bytes):
    assert engine.submit(simkes_bytes, "a.yaml").changed
    assert not engine.submit(simkes_bytes, "a.yaml").changed
    with pytest.raises(Conflict, match="other content"):
        engine.submit(simkes_bytes.replace(b"quota_mb: 2048", b"quota_mb: 4096"), "a.yaml")
    with pytest.raises(Conflict, match="already requested by HST-2024-0007"):
        engine.submit(simkes_bytes.replace(b"HST-2024-0007", b"HST-2024-0008"), "b.yaml")


def test_failed_action_leaves_attention_and_resumes(engine, clock, actions, simkes_bytes):
    through_review(engine, clock, simkes_bytes)
    actions.fail.add("provision_site")
    with pytest.raises(ActionError, match="broke on purpose"):
        engine.decide("HST-2024-0007", True, "kadis")
    shown = engine.show("HST-2024-0007")
    assert shown["state"] == "attention" and shown["current_step"] == "konfigurasi_server"
    assert actions.count("render_letter") == 0
    with pytest.raises(StateError, match="an action failed"):
        engine.record_step("HST-2024-0007", "kirim_laporan", "bidang_aplikasi")
    actions.fail.clear()
    assert engine.resume("HST-2024-0007").changed
    shown = engine.show("HST-2024-0007")
    assert shown["state"] == "approved" and shown["current_step"] == "kirim_laporan"
    assert actions.count("provision_site") == 2 and actions.count("render_letter") == 1


def test_sla_breach_across_weekend_and_holiday(engine, clock, simkes_bytes):
    """The 2-day server step starts Tue 2024-12-24 10:00; Natal (Wed 25), cuti
    bersama (Thu 26) and the weekend do not count, so it is due Mon 30 10:00.
    Provisioning that ends Tue 31 10:30 is late by Mon 10:00-16:00 plus Tue
    07:30-10:30: 9 working hours."""
    dec = lambda d, h, m=0: datetime(2024, 12, d, h, m, tzinfo=WITA)
    raw = simkes_bytes.replace(b"HST-2024-0007", b"HST-2024-0099")
    clock.now = dec(24, 9, 0)
    engine.submit(raw, "f.yaml")
    for ref, role, minute in (("agenda", "bagian_umum", 3), ("disposisi", "kadis", 5),
                              ("pengkajian", "bidang_aplikasi", 10)):
        clock.now = dec(24, 9, minute)
        engine.record_step("HST-2024-0099", ref, role)

    def slow_provisioning(ctx):
        clock.now = dec(31, 10, 30)  # the work took until next Tuesday
        return {}

    engine.actions.register("provision_site", slow_provisioning, replace=True)
    clock.now = dec(24, 10, 0)  # 20 working minutes after the 30-minute decision was due
    engine.decide("HST-2024-0099", True, "kadis")
    steps = {s["key"]: s for s in engine.show("HST-2024-0099")["steps"]}
    assert steps["keputusan"]["deadline"] == dec(24, 9, 40)
    assert steps["keputusan"]["late_minutes"] == 20 and steps["keputusan"]["breach"]
    server = steps["konfigurasi_server"]
    assert server["planned_start"] == dec(24, 10, 0)
    assert server["deadline"] == dec(30, 10, 0)
    assert server["ended_at"] == dec(31, 10, 30)
    assert server["breach"] and server["late_minutes"] == 9 * 60
    assert server["late"] == "9h 00m working time"
    # The letter step starts when provisioning really ended.
    assert steps["surat_pemberitahuan"]["planned_start"] == dec(31, 10, 30)


def test_late_step_pushes_the_following_ones(engine, clock, simkes_bytes):
    clock.now = at(23, 16, 0)  # Friday
    engine.submit(simkes_bytes, "f.yaml")
    clock.now = at(26, 8, 0)  # Monday 08:00: agenda (3 min, due Fri 16:03) is late
    engine.record_step("HST-2024-0007", "agenda", "bagian_umum")
    shown = {s["key"]: s for s in engine.show("HST-2024-0007", now=at(26, 8, 0))["steps"]}
    assert shown["agenda"]["deadline"] == at(23, 16, 3)
    # 27 minutes on Friday (16:03-16:30) and 30 on Monday (07:30-08:00).
    assert shown["agenda"]["late_minutes"] == 57
    # The next step starts when the late one ended, not when it was due.
    assert shown["disposisi"]["planned_start"] == at(26, 8, 0)
    assert shown["disposisi"]["deadline"] == at(26, 8, 2)
    assert shown["pengkajian"]["status"] == "planned"
    assert shown["pengkajian"]["planned_start"] == at(26, 8, 2)
    overdue = engine.overdue(now=at(26, 9, 0))
    assert [(o["request"], o["key"], o["late_minutes"]) for o in overdue] == [("HST-2024-0007", "disposisi", 58)]


def test_events_are_append_only(engine, simkes_bytes):
    engine.submit(simkes_bytes, "f.yaml")
    from alembic.script import ScriptDirectory

    from provisioner.store.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(engine.store.engine) == head
    for statement in ("UPDATE events SET kind = 'forged'", "DELETE FROM events"):
        with pytest.raises(DatabaseError, match="append-only"):
            with engine.store.session() as session:
                session.execute(text(statement))
    with engine.store.session() as session:
        assert {e.kind for e in session.query(Event)} == {"request_submitted", "step_recorded"}


def test_buleleng_request_on_its_own_sop(engine, clock, tmp_path):
    raw = (EXAMPLES / "buleleng-api-sipandu.yaml").read_bytes()
    analysis = tmp_path / "analisa.yaml"
    analysis.write_text("summary: Dapat dikembangkan\nneeds: [Pelacakan berkas]\nrecommendation: Dibangun\n")
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    engine.submit(raw, "b.yaml")
    for ref, role in (("2", "kadis"), ("3", "kabid"), ("4", "kasi"), ("5", "kasi"), ("6", "programmer")):
        clock.now += timedelta(minutes=5)
        engine.record_step("KOM-2024-0044", ref, role, data_file=analysis if ref == "6" else None)
    clock.now += timedelta(minutes=5)
    engine.decide("KOM-2024-0044", False, "kasi", reason="Di luar kapasitas tim")
    assert engine.show("KOM-2024-0044")["current_step"] == "alasan_ke_kabid"
    engine.record_step("KOM-2024-0044", "alasan_ke_kabid", "kasi")
    assert engine.show("KOM-2024-0044")["current_step"] == "serah_terima"


# -- approvals bound to their SOP ------------------------------------------------

def _hosting(engine):
    from provisioner.hosting import Hosting

    return Hosting(engine.config, engine.store)


def _consultation(engine, clock, request_id="HST-2024-0031"):
    """A Tarakan consultation request approved by bidang_aplikasi in its own SOP."""
    raw = (EXAMPLES / "tarakan-konsultasi-simpeg.yaml").read_bytes().replace(b"KON-2024-0015", request_id.encode())
    clock.now = at(13, 8, 0)
    engine.submit(raw, "konsultasi.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=5)
        engine.record_step(request_id, ref, role)
    clock.now += timedelta(minutes=5)
    engine.decide(request_id, True, "bidang_aplikasi")
    return request_id


def test_hosting_provisions_only_an_approval_of_the_offices_hosting_sop(engine, clock, simkes_bytes):
    through_review(engine, clock, simkes_bytes)
    clock.now = at(13, 8, 30)
    engine.decide("HST-2024-0007", True, "kadis")
    (request,) = _hosting(engine).load_requests(["HST-2024-0007"])
    assert request.service == "hosting"

    consultation = _consultation(engine, clock)
    assert engine.show(consultation)["state"] == "approved"
    with pytest.raises(StateError, match="konsultasi-aplikasi request .* does not provision hosting"):
        _hosting(engine).load_requests([consultation])
    with pytest.raises(StateError, match="does not provision hosting"):
        _hosting(engine).plan([consultation])


def test_an_approval_not_recorded_by_the_decision_role_provisions_nothing(engine, clock, simkes_bytes):
    """A row marked approved without the decision step's own record (by kadis, branch ya) is refused."""
    from provisioner.store.models import RequestRow, StepRecord

    through_review(engine, clock, simkes_bytes)
    with engine.store.session() as session:
        session.get(RequestRow, "HST-2024-0007").decision = "approve"
        session.add(StepRecord(request_id="HST-2024-0007", step_key="keputusan", by="bidang_aplikasi",
                               branch="ya", note=None, ended_at=at(13, 8, 30), source="cli"))
    with pytest.raises(StateError, match=r"no approval at step 5 \(keputusan\) by kadis"):
        _hosting(engine).load_requests(["HST-2024-0007"])


def test_a_removed_sites_old_approval_is_spent(engine, clock, simkes_bytes):
    from provisioner.store.models import SiteRow

    through_review(engine, clock, simkes_bytes)
    clock.now = at(13, 8, 30)
    engine.decide("HST-2024-0007", True, "kadis")
    now = at(13, 9, 0)
    with engine.store.session() as session:
        session.add(SiteRow(fqdn="simkes.tarakankota.go.id", request_id="HST-2024-0007", office="tarakan",
                            zone="tarakankota.go.id", label="simkes", state="removed", web_host="web1",
                            db_host="db1", public_ip="203.0.113.10", dedicated_ip=False, config={},
                            plan_checksum="0" * 64, created_at=now, provisioned_at=now, updated_at=now))
    with pytest.raises(StateError, match="was removed; .* needs a new request"):
        _hosting(engine).load_requests(["HST-2024-0007"])
    # Reading the recorded site (removal, audit) still works.
    assert _hosting(engine).load_requests(["HST-2024-0007"], provisioning=False)
    # And the new request for the same name is accepted at submit.
    clock.now = at(14, 8, 0)
    renewed = simkes_bytes.replace(b"HST-2024-0007", b"HST-2024-0099")
    assert engine.submit(renewed, "renewed.yaml").changed


def test_a_service_the_office_does_not_run_is_refused_at_submit(engine, clock):
    from provisioner.errors import ValidationError

    raw = (EXAMPLES / "invalid" / "buleleng-service.yaml").read_bytes()  # a website request for Buleleng
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    with pytest.raises(ValidationError, match="service: must be a service office buleleng runs"):
        engine.submit(raw, "b.yaml")
    assert engine.list_requests() == []


def test_each_office_runs_and_records_its_own_hosting_sop(engine, clock, simkes_bytes):
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    engine.submit((EXAMPLES / "buleleng-sipandu.yaml").read_bytes(), "b.yaml")
    engine.submit(simkes_bytes, "t.yaml")
    submitted = {e["payload"]["office"]: e["payload"] for r in ("KOM-2024-0031", "HST-2024-0007")
                 for e in engine.events(r) if e["kind"] == "request_submitted"}
    assert submitted["buleleng"]["sop"] == "hosting-buleleng" and submitted["buleleng"]["sop_document"] is None
    assert submitted["tarakan"]["sop"] == "hosting"
    assert submitted["tarakan"]["sop_document"] == "067/28/SOP/DKISP/2022"
    assert engine.show("KOM-2024-0031")["sop"] == "hosting-buleleng"


def _approve(engine, clock, raw, request_id, day):
    """Submit `raw` as `request_id` and take it through to kadis's approval on 2024-08-`day`."""
    clock.now = at(day, 8, 0)
    engine.submit(raw.replace(b"HST-2024-0007", request_id.encode()), f"{request_id}.yaml")
    for ref, role, minute in (("agenda", "bagian_umum", 2), ("disposisi", "kadis", 4),
                              ("pengkajian", "bidang_aplikasi", 9), ):
        clock.now = at(day, 8, minute)
        engine.record_step(request_id, ref, role)
    clock.now = at(day, 8, 30)
    engine.decide(request_id, True, "kadis")


def _provisioned(engine, request_id, fqdn="simkes.tarakankota.go.id", label="simkes"):
    """The site row as provisioning leaves it, owned by `request_id` (the hosts are not needed here)."""
    from provisioner.store.models import SiteRow

    now = at(20, 9, 0)
    with engine.store.session() as session:
        row = session.get(SiteRow, fqdn)
        if row is None:
            session.add(SiteRow(fqdn=fqdn, request_id=request_id, office="tarakan", zone="tarakankota.go.id",
                                label=label, state="provisioned", web_host="web1", db_host="db1",
                                public_ip="203.0.113.10", dedicated_ip=False, config={}, plan_checksum="0" * 64,
                                created_at=now, provisioned_at=now, updated_at=now))
        else:
            row.request_id, row.state, row.provisioned_at = request_id, "provisioned", now


def _remove(engine, fqdn, monkeypatch):
    """Hosting.remove with the hosts left out: nothing live to take down, the records as removal leaves them."""
    from provisioner.hosting import REMOVAL_ORDER, Hosting
    from provisioner.plan import Plan

    work = Hosting(engine.config, engine.store)
    monkeypatch.setattr(work, "removal_plan", lambda sites: Plan(changes=[], sites=[s.fqdn for s in sites],
                                                                order=REMOVAL_ORDER))
    # No host or name server is asked anything: every site reads back as gone.
    monkeypatch.setattr(work, "_read_back", lambda sites: ({s.fqdn: {} for s in sites}, {}), raising=False)
    work.remove([fqdn], actor="test")


def test_every_removed_sites_old_approval_stays_spent_and_the_name_can_be_requested_again(
        engine, clock, simkes_bytes, monkeypatch):
    fqdn = "simkes.tarakankota.go.id"
    _approve(engine, clock, simkes_bytes, "HST-2024-0101", 13)
    _provisioned(engine, "HST-2024-0101")
    _remove(engine, fqdn, monkeypatch)
    _approve(engine, clock, simkes_bytes, "HST-2024-0102", 14)
    _provisioned(engine, "HST-2024-0102")
    _remove(engine, fqdn, monkeypatch)

    # A's site row now names B, yet A's approval is spent all the same.
    for spent in ("HST-2024-0101", "HST-2024-0102"):
        with pytest.raises(StateError, match=f"{spent}: its site {fqdn} was removed; .* needs a new request"):
            _hosting(engine).load_requests([spent])
    # And neither old request holds the name against a third one.
    clock.now = at(15, 8, 0)
    third = simkes_bytes.replace(b"HST-2024-0007", b"HST-2024-0103")
    assert engine.submit(third, "third.yaml").changed
    (request,) = [r for r in engine.list_requests() if r["id"] == "HST-2024-0103"]
    assert request["state"] == "submitted"


def test_a_request_whose_office_no_longer_runs_hosting_is_told_it_does_not_provision_hosting(
        engine, clock, simkes_bytes):
    _approve(engine, clock, simkes_bytes, "HST-2024-0007", 13)
    tarakan = engine.config.offices["tarakan"]
    engine.config = engine.config.model_copy(update={"offices": dict(
        engine.config.offices, tarakan=tarakan.model_copy(update={
            "sops": {k: v for k, v in tarakan.sops.items() if k != "hosting"}}))})
    with pytest.raises(StateError, match=r"HST-2024-0007 is a hosting request .* does not provision hosting, "
                                         r"only an approval in office tarakan's hosting SOP \(none\)"):
        _hosting(engine).load_requests(["HST-2024-0007"])


def test_a_recorded_site_accepted_under_older_rules_can_still_be_read_but_not_provisioned_again(
        engine, clock, simkes_bytes, monkeypatch):
    """A live site whose label breaks a rule added later (-- at 3-4), or whose office dropped the service:
    removal, rotation, letters and the audit read it; provisioning anew obeys today's rules."""
    from provisioner.errors import ValidationError
    from provisioner.request import validate
    from provisioner.store.models import RequestRow

    fqdn = "ab--cd.tarakankota.go.id"
    _approve(engine, clock, simkes_bytes, "HST-2024-0007", 13)
    old = simkes_bytes.replace(b"subdomain: simkes", b"subdomain: ab--cd")
    with engine.store.session() as session:  # as accepted before the rule existed
        row = session.get(RequestRow, "HST-2024-0007")
        row.content, row.fqdn = old, fqdn
    _provisioned(engine, "HST-2024-0007", fqdn=fqdn, label="ab--cd")

    with pytest.raises(ValidationError, match="positions 3-4"):
        validate(old, engine.config)
    assert validate(old, engine.config, stored=True).site.fqdn == fqdn
    (site,) = _hosting(engine).recorded_sites([fqdn])
    assert site.fqdn == fqdn and site.names.user.startswith("ab--cd-")
    with pytest.raises(ValidationError, match="positions 3-4"):
        _hosting(engine).load_requests(["HST-2024-0007"])

    tarakan = engine.config.offices["tarakan"]
    engine.config = engine.config.model_copy(update={"offices": dict(
        engine.config.offices, tarakan=tarakan.model_copy(update={
            "sops": {k: v for k, v in tarakan.sops.items() if k != "hosting"}}))})
    (site,) = _hosting(engine).recorded_sites([fqdn])
    with pytest.raises(StateError, match="does not provision hosting"):
        _hosting(engine).load_requests(["HST-2024-0007"])
    _remove(engine, fqdn, monkeypatch)
    assert _hosting(engine).site_row(fqdn).state == "removed"


def test_the_migration_closes_requests_whose_site_was_removed_before_it(state_url):
    """A store from before closed_at: A removed then B took the name and was removed; C owns a live site."""
    from sqlalchemy import create_engine

    from provisioner.store.migrate import upgrade

    db = create_engine(state_url)
    upgrade(db, "0003")
    assert current_revision(db) == "0003"
    with db.begin() as connection:
        for request_id, fqdn in (("HST-2024-0001", "a.tarakankota.go.id"), ("HST-2024-0002", "a.tarakankota.go.id"),
                                 ("HST-2024-0003", "c.tarakankota.go.id")):
            connection.execute(text(
                "INSERT INTO requests (id, service, office, fqdn, sha256, content, source, submitted_at, state, "
                "decision, current_step) VALUES (:id, 'hosting', 'tarakan', :fqdn, '0', :content, 't', "
                ":submitted, 'approved', 'approve', NULL)"),
                {"id": request_id, "fqdn": fqdn, "content": b"\0", "submitted": datetime(2024, 8, 13)})
        for request_id, day in (("HST-2024-0001", 20), ("HST-2024-0002", 21), ("HST-2024-0003", 22)):
            connection.execute(text("INSERT INTO events (request_id, at, actor, source, kind, payload) "
                                    "VALUES (:id, :at, 'system', 'cli', 'site_removed', '{}')"),
                               {"id": request_id, "at": datetime(2024, 8, day)})
        for fqdn, owner, state in (("a.tarakankota.go.id", "HST-2024-0002", "removed"),
                                   ("c.tarakankota.go.id", "HST-2024-0003", "provisioned")):
            connection.execute(text(
                "INSERT INTO sites (fqdn, request_id, office, zone, label, state, web_host, dedicated_ip, config, "
                "created_at, updated_at) VALUES (:fqdn, :owner, 'tarakan', 'tarakankota.go.id', 'a', :state, "
                "'web1', :dedicated, '{}', :created, :created)"),
                {"fqdn": fqdn, "owner": owner, "state": state, "dedicated": False, "created": datetime(2024, 8, 13)})
    upgrade(db)
    with db.connect() as connection:
        closed = dict(connection.execute(text("SELECT id, closed_at FROM requests")).all())
    db.dispose()
    assert str(closed["HST-2024-0001"]).startswith("2024-08-20")
    assert str(closed["HST-2024-0002"]).startswith("2024-08-21")
    assert closed["HST-2024-0003"] is None  # provisioned again after its removal: still live


# -- issue 12: request shapes at submit, step data, after actions, answered branches, waiting --------

WEBSITE = (EXAMPLES / "tarakan-website-dinkes.yaml").read_bytes()
DINKES = "dinkes.tarakankota.go.id"
DATA = EXAMPLES / "data"


def _website(raw=WEBSITE, request_id="WEB-2024-0012"):
    return raw.replace(b"WEB-2024-0012", request_id.encode())


def _without_hosting(raw):
    return raw.split(b"  hosting:")[0] + b"purpose: Pemutakhiran konten\n"


def _website_to_decision(engine, clock, raw=WEBSITE, request_id="WEB-2024-0012", approve=True):
    clock.now = at(13, 8, 0)
    engine.submit(_website(raw, request_id), f"{request_id}.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step(request_id, ref, role)
    clock.now += timedelta(minutes=3)
    engine.decide(request_id, approve, "bidang_aplikasi", reason="Konten siap" if approve else "Belum lengkap")
    return request_id


def test_a_website_update_for_a_live_hosting_site_is_accepted_and_two_open_ones_are_not(engine, clock, simkes_bytes):
    _approve(engine, clock, simkes_bytes, "HST-2024-0007", 13)
    _provisioned(engine, "HST-2024-0007")
    update = _without_hosting(WEBSITE).replace(b"subdomain: dinkes", b"subdomain: simkes")
    clock.now = at(14, 8, 0)
    assert engine.submit(_website(update, "WEB-2024-0001"), "u1.yaml").changed
    with pytest.raises(Conflict, match="simkes.tarakankota.go.id is already requested by WEB-2024-0001"):
        engine.submit(_website(update, "WEB-2024-0002"), "u2.yaml")
    # Hosting given for a name that has a live site: accepted (the records answer step 6).
    with engine.store.session() as session:
        from provisioner.store.models import RequestRow
        session.get(RequestRow, "WEB-2024-0001").state = "done"  # the first update went through its SOP
    with_hosting = WEBSITE.replace(b"subdomain: dinkes", b"subdomain: simkes")
    assert engine.submit(_website(with_hosting, "WEB-2024-0003"), "u3.yaml").changed
    # And the hosting request for the name still holds it against another hosting request.
    with pytest.raises(Conflict, match="already requested by HST-2024-0007"):
        engine.submit(simkes_bytes.replace(b"HST-2024-0007", b"HST-2024-0008"), "h.yaml")


def test_a_website_for_a_name_without_a_site_needs_its_hosting(engine, clock):
    from provisioner.errors import ValidationError

    clock.now = at(13, 8, 0)
    with pytest.raises(ValidationError) as err:
        engine.submit(_without_hosting(WEBSITE), "w.yaml")
    (problem,) = err.value.problems
    assert (problem.field, problem.rule) == ("website.hosting", f"required: {DINKES} has no site yet; "
                                                                "give the hosting it needs")
    assert problem.line == 19 and err.value.source == "w.yaml"  # the website: section
    assert engine.list_requests() == []
    assert engine.submit(WEBSITE, "w.yaml").changed


def test_applications_without_hosting_never_clash(engine, clock):
    raw = (EXAMPLES / "tarakan-konsultasi-simpeg.yaml").read_bytes()
    clock.now = at(13, 8, 0)
    engine.submit(raw, "a.yaml")
    engine.submit(raw.replace(b"KON-2024-0015", b"KON-2024-0016"), "b.yaml")
    rows = {r["id"]: r for r in engine.list_requests()}
    assert rows["KON-2024-0015"]["fqdn"] == "" and rows["KON-2024-0016"]["office"] == "tarakan"
    submitted = [e for e in engine.events("KON-2024-0016") if e["kind"] == "request_submitted"]
    assert submitted[0]["payload"]["fqdn"] is None


def test_the_records_answer_whether_the_website_exists(engine, clock, simkes_bytes):
    request_id = _website_to_decision(engine, clock)
    with pytest.raises(UserError, match="answered from the configuration records: no provisioned site "
                                        f"{DINKES} is recorded, so the branch is belum_ada"):
        engine.record_step(request_id, "cek_website", "bidang_aplikasi", branch="ada")
    engine.record_step(request_id, "cek_website", "bidang_aplikasi")
    step = {s["key"]: s for s in engine.show(request_id)["steps"]}["cek_website"]
    assert step["branch"] == "belum_ada"

    # A live site by the name: the update branch.
    _approve(engine, clock, simkes_bytes, "HST-2024-0007", 14)
    _provisioned(engine, "HST-2024-0007")
    update = _without_hosting(WEBSITE).replace(b"subdomain: dinkes", b"subdomain: simkes")
    other = _website_to_decision(engine, clock, update, "WEB-2024-0013")
    clock.now = at(14, 9, 0)
    engine.record_step(other, "cek_website", "bidang_aplikasi", branch="ada")
    assert {s["key"]: s for s in engine.show(other)["steps"]}["cek_website"]["branch"] == "ada"


def _consultation_to_analysis(engine, clock):
    raw = (EXAMPLES / "tarakan-konsultasi-simpeg.yaml").read_bytes()
    clock.now = at(13, 8, 0)
    engine.submit(raw, "k.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step("KON-2024-0015", ref, role)
    clock.now += timedelta(minutes=3)
    engine.decide("KON-2024-0015", True, "bidang_aplikasi", reason="Sesuai rencana kerja BKPSDM")
    clock.now += timedelta(minutes=3)
    engine.record_step("KON-2024-0015", "pembelian", "bidang_aplikasi")
    return "KON-2024-0015"


def test_step_data_is_required_refused_or_recorded(engine, clock, actions):
    request_id = _consultation_to_analysis(engine, clock)
    decided = [s for s in engine.show(request_id)["steps"] if s["key"] == "keputusan"][0]
    assert decided["note"] == "Sesuai rencana kerja BKPSDM"  # an approval keeps its reason
    clock.now += timedelta(minutes=3)
    with pytest.raises(UserError, match=r"step 7 \(analisa\) needs --data FILE: the analysis"):
        engine.record_step(request_id, "analisa", "bidang_aplikasi")
    from provisioner.errors import ValidationError

    with pytest.raises(ValidationError, match="needs: required"):
        engine.record_step(request_id, "analisa", "bidang_aplikasi", data_file=DATA / "kak-simpeg.yaml")
    outcome = engine.record_step(request_id, "analisa", "bidang_aplikasi", data_file=DATA / "analisa-simpeg.yaml")
    assert [a["action"] for a in outcome.actions] == ["render_analysis"]
    assert actions.calls[-1] == ("render_analysis", request_id, "analisa", None)
    from provisioner.store.models import StepRecord

    with engine.store.session() as session:
        record = session.query(StepRecord).filter_by(request_id=request_id, step_key="analisa").one()
        assert record.data["needs"][0] == "Satu basis data pegawai untuk seluruh perangkat daerah"
    (event,) = [e for e in engine.events(request_id)
                if e["kind"] == "step_recorded" and e["payload"]["step"] == "analisa"]
    assert event["payload"]["data"]["recommendation"].startswith("Pengadaan aplikasi")
    shown = engine.show(request_id)
    assert shown["current_step"] == "penyusunan_kak" and shown["state"] == "approved"
    clock.now += timedelta(minutes=3)
    engine.record_step(request_id, "penyusunan_kak", "bidang_aplikasi")  # its data is optional
    clock.now += timedelta(minutes=3)
    with pytest.raises(UserError, match=r"--data: step 9 \(lapor_kadis\) takes no data file"):
        engine.record_step(request_id, "lapor_kadis", "bidang_aplikasi", data_file=DATA / "kak-simpeg.yaml")
    assert [c[0] for c in actions.calls].count("render_kak") == 1


def test_an_after_action_runs_once_fails_into_attention_and_resumes_without_moving_on(engine, clock, actions):
    request_id = _consultation_to_analysis(engine, clock)
    actions.fail.add("render_analysis")
    clock.now += timedelta(minutes=3)
    with pytest.raises(ActionError, match="render_analysis failed"):
        engine.record_step(request_id, "analisa", "bidang_aplikasi", data_file=DATA / "analisa-simpeg.yaml")
    shown = engine.show(request_id)
    # The step is recorded and the request moved on; the failed document holds it in attention.
    assert shown["state"] == "attention" and shown["current_step"] == "penyusunan_kak"
    with pytest.raises(StateError, match="an action failed"):
        engine.record_step(request_id, "penyusunan_kak", "bidang_aplikasi")
    actions.fail.clear()
    outcome = engine.resume(request_id)
    assert [a["action"] for a in outcome.actions] == ["render_analysis"]
    shown = engine.show(request_id)
    assert shown["state"] == "approved" and shown["current_step"] == "penyusunan_kak"
    assert not engine.resume(request_id).changed
    clock.now += timedelta(minutes=3)
    engine.record_step(request_id, "penyusunan_kak", "bidang_aplikasi")
    assert actions.count("render_analysis") == 2 and actions.count("render_kak") == 1


def _to_installation(engine, clock, request_id="WEB-2024-0012"):
    _website_to_decision(engine, clock, request_id=request_id)
    for ref in ("cek_website", "analisa", "pembuatan"):
        clock.now += timedelta(minutes=3)
        outcome = engine.record_step(request_id, ref, "bidang_aplikasi")
    return outcome


def test_a_waiting_action_keeps_the_request_and_runs_again_on_resume(engine, clock):
    from provisioner.errors import Waiting

    tries = []

    def install(ctx):
        tries.append(ctx.request.id)
        if len(tries) < 3:
            raise Waiting(f"{ctx.request.website.fqdn} has no live site yet")
        return {"release": "r1"}

    engine.actions.register("install_website", install, replace=True)
    outcome = _to_installation(engine, clock)
    assert outcome.actions == [{"step": "instalasi", "action": "install_website",
                                "waiting": f"{DINKES} has no live site yet"}]
    shown = engine.show("WEB-2024-0012")
    assert shown["state"] == "approved" and shown["current_step"] == "instalasi"
    assert {s["key"]: s for s in shown["steps"]}["instalasi"]["action_status"] == "waiting"
    kinds = [e["kind"] for e in engine.events("WEB-2024-0012")]
    assert kinds.count("action_waiting") == 1 and "action_failed" not in kinds
    with pytest.raises(StateError, match="done by the toolkit"):
        engine.record_step("WEB-2024-0012", "instalasi", "bidang_aplikasi")

    again = engine.resume("WEB-2024-0012")  # still not ready: waiting again, once
    assert again.changed and again.actions[0]["waiting"] and len(tries) == 2
    done = engine.resume("WEB-2024-0012")
    assert done.actions == [{"step": "instalasi", "action": "install_website", "result": {"release": "r1"}}]
    assert engine.show("WEB-2024-0012")["current_step"] == "laporan"
    assert not engine.resume("WEB-2024-0012").changed and len(tries) == 3


def test_provisioning_a_linked_hosting_request_resumes_the_request_it_was_made_for(engine, clock, actions):
    from provisioner.errors import Waiting
    from provisioner.sop.spawn import spawn_hosting

    installed = []

    def install(ctx):
        with engine.store.session() as session:
            from provisioner.store.models import SiteRow
            site = session.get(SiteRow, DINKES)
        if site is None or site.state != "provisioned":
            raise Waiting(f"{DINKES} has no live site yet")
        installed.append(ctx.request.id)
        return {"release": "r1"}

    def provision(ctx):
        _provisioned(engine, ctx.request.id, fqdn=DINKES, label="dinkes")
        return {"fqdn": DINKES}

    engine.actions.register("install_website", install, replace=True)
    engine.actions.register("provision_site", provision, replace=True)
    _to_installation(engine, clock)
    child = spawn_hosting(engine.config, engine.store, "WEB-2024-0012", at=clock.now,
                          actions=engine.actions, clock=clock)
    assert child == "HST-2024-0001"
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step(child, ref, role)
    clock.now += timedelta(minutes=3)
    outcome = engine.decide(child, True, "kadis")
    ran = [(a.get("request"), a["action"]) for a in outcome.actions]
    assert ran[:2] == [(None, "provision_site"), ("WEB-2024-0012", "install_website")]
    assert installed == ["WEB-2024-0012"]
    assert engine.show("WEB-2024-0012")["current_step"] == "laporan"
    assert engine.show(child)["state"] == "approved"


def test_the_parents_failure_never_fails_the_linked_hosting_request(engine, clock, actions):
    from provisioner.errors import HostError, Waiting
    from provisioner.sop.spawn import spawn_hosting

    calls = []

    def install(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise Waiting("no site yet")
        raise HostError("the health check failed")

    engine.actions.register("install_website", install, replace=True)
    _to_installation(engine, clock)
    child = spawn_hosting(engine.config, engine.store, "WEB-2024-0012", at=clock.now,
                          actions=engine.actions, clock=clock)
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step(child, ref, role)
    clock.now += timedelta(minutes=3)
    outcome = engine.decide(child, True, "kadis")
    assert outcome.actions[0]["action"] == "provision_site"
    (failed,) = [a for a in outcome.actions if a.get("request") == "WEB-2024-0012"]
    assert "the health check failed" in failed["error"]
    assert engine.show(child)["state"] == "approved" and engine.show(child)["current_step"] == "kirim_laporan"
    parent = engine.show("WEB-2024-0012")
    assert parent["state"] == "attention" and parent["current_step"] == "instalasi"
    assert "linked_resume_failed" in [e["kind"] for e in engine.events(child)]
    assert "action_failed" in [e["kind"] for e in engine.events("WEB-2024-0012")]


def test_the_migration_adds_linked_to_and_step_data_to_a_store_with_rows(state_url):
    from sqlalchemy import create_engine

    from provisioner.store.migrate import head_revision, upgrade

    db = create_engine(state_url)
    upgrade(db, "0006")
    with db.begin() as connection:
        connection.execute(text(
            "INSERT INTO requests (id, service, office, fqdn, sha256, content, source, submitted_at, state, "
            "decision, current_step) VALUES ('HST-2024-0001', 'hosting', 'tarakan', 'a.tarakankota.go.id', '0', "
            ":content, 't', :at, 'submitted', NULL, 'agenda')"), {"content": b"\0", "at": datetime(2024, 8, 13)})
        connection.execute(text(
            "INSERT INTO step_records (request_id, step_key, by, branch, note, ended_at, source) VALUES "
            "('HST-2024-0001', 'permohonan', 'opd', NULL, NULL, :at, 'cli')"), {"at": datetime(2024, 8, 13)})
    upgrade(db)
    assert current_revision(db) == head_revision()
    with db.connect() as connection:
        assert connection.execute(text("SELECT linked_to FROM requests")).all() == [(None,)]
        assert connection.execute(text("SELECT data FROM step_records")).all() == [(None,)]
    db.dispose()
