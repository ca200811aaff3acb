"""Many approved requests through the SOP together: Engine.resume_many, batch forms, letters side by side."""

import hashlib
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from provisioner.errors import HostError, StateError
from provisioner.sop.engine import Engine
from provisioner.sop.hooks import ACTIONS, ActionRegistry
from provisioner.store import open_store

from conftest import EXAMPLES
from test_engine import at
from test_webhook import serving  # noqa: F401 - the fixture


def raw_request(n, subdomain=None):
    """The simkes example as request HST-2024-00<n> for its own subdomain."""
    return ((EXAMPLES / "tarakan-simkes.yaml").read_bytes()
            .replace(b"HST-2024-0007", f"HST-2024-{n:04d}".encode())
            .replace(b"subdomain: simkes", f"subdomain: {subdomain or f'app{n}'}".encode()))


def reviewed(engine, clock, numbers):
    """Requests taken through steps 1-4: each waits on the decision."""
    ids = []
    for n in numbers:
        clock.now = at(13, 8, 0)
        request_id = engine.submit(raw_request(n), f"r{n}.yaml").request_id
        for ref, role, minute in (("agenda", "bagian_umum", 2), ("disposisi", "kadis", 4),
                                  ("pengkajian", "bidang_aplikasi", 9)):
            clock.now = at(13, 8, minute)
            engine.record_step(request_id, ref, role)
        ids.append(request_id)
    clock.now = at(13, 8, 30)
    return ids


def approved(engine, clock, numbers):
    """Requests taken through review and approved; their actions not run yet (as the webhook's window does)."""
    ids = reviewed(engine, clock, numbers)
    for request_id in ids:
        outcome = engine.decide(request_id, True, "kadis", run_actions=False)
        assert outcome.changed and outcome.actions == []
    return ids


class BatchProvisioning:
    """A stand-in provisioning batch form: records each call's request ids; `fail` names the
    requests whose site fails (their answer is the error, as provision_sites_action gives it)."""

    def __init__(self, registry):
        self.calls = []
        self.fail = {}
        registry.register_batch("provision_site", self)

    def __call__(self, contexts):
        self.calls.append([c.request.id for c in contexts])
        return {c.request.id: HostError(self.fail[c.request.id]) if c.request.id in self.fail
                else {"fqdn": c.request.fqdn} for c in contexts}


@pytest.fixture
def batch(actions):
    return BatchProvisioning(actions.registry)


def test_a_batch_form_runs_once_and_each_request_moves_on_by_itself(engine, clock, actions, batch):
    ids = approved(engine, clock, [11, 12, 13])
    batch.fail["HST-2024-0012"] = "app12.tarakankota.go.id: step web failed: configtest refused"
    outcomes = engine.resume_many(ids)
    assert batch.calls == [ids]  # one call for the three
    assert actions.count("provision_site") == 0  # never the per-request form
    assert [c[1] for c in actions.calls if c[0] == "render_letter"] == ["HST-2024-0011", "HST-2024-0013"]
    for ok in ("HST-2024-0011", "HST-2024-0013"):
        assert outcomes[ok].error is None
        assert [a["action"] for a in outcomes[ok].actions] == ["provision_site", "render_letter"]
        shown = engine.show(ok)
        assert shown["state"] == "approved" and shown["current_step"] == "kirim_laporan"
    failed = outcomes["HST-2024-0012"]
    assert "configtest refused" in str(failed.error) and "konfigurasi_server" in str(failed.error)
    shown = engine.show("HST-2024-0012")
    assert shown["state"] == "attention" and shown["current_step"] == "konfigurasi_server"
    kinds = [e["kind"] for e in engine.events("HST-2024-0012")]
    assert kinds[-2:] == ["action_started", "action_failed"]
    # Recorded exactly as a resume of one request records it: the failed one resumes alone.
    batch.fail.clear()
    outcome = engine.resume("HST-2024-0012", force=True)
    assert [a["action"] for a in outcome.actions] == ["provision_site", "render_letter"]
    assert engine.show("HST-2024-0012")["current_step"] == "kirim_laporan"


def test_nothing_due_is_said_per_request_and_a_second_run_changes_nothing(engine, clock, actions, batch):
    ids = approved(engine, clock, [21, 22])
    engine.resume_many(ids)
    again = engine.resume_many(ids)
    assert batch.calls == [ids]
    assert all(not o.changed and o.error is None and "no action is due" in o.message for o in again.values())


def test_a_batch_that_raises_fails_every_request_in_it(engine, clock, actions, batch):
    ids = approved(engine, clock, [31, 32])

    def broken(contexts):
        raise StateError("the plan changed since it was reviewed")
    actions.registry.register_batch("provision_site", broken)
    outcomes = engine.resume_many(ids)
    assert all("the plan changed" in str(o.error) for o in outcomes.values())
    assert {engine.show(i)["state"] for i in ids} == {"attention"}
    assert actions.count("render_letter") == 0


def test_a_missing_answer_is_never_taken_as_done(engine, clock, actions):
    ids = approved(engine, clock, [41, 42])
    actions.registry.register_batch("provision_site", lambda contexts: {contexts[0].request.id: {}})
    outcomes = engine.resume_many(ids)
    assert outcomes[ids[0]].error is None
    assert "gave no result for HST-2024-0042" in str(outcomes[ids[1]].error)
    assert engine.show(ids[1])["state"] == "attention"


def test_a_replaced_action_drops_its_batch_form():
    registry = ACTIONS.copy()
    assert registry.batch("provision_site") is not None
    registry.register("provision_site", lambda ctx: {}, replace=True)
    # A stand-in for the single action must never be bypassed by the real batch form.
    assert registry.batch("provision_site") is None
    assert ActionRegistry().batch("render_letter") is None


def test_without_a_batch_form_each_request_runs_alone(engine, clock, actions):
    ids = approved(engine, clock, [51, 52])
    outcomes = engine.resume_many(ids)
    assert actions.count("provision_site") == 2 and actions.count("render_letter") == 2
    assert all(o.error is None for o in outcomes.values())


def test_waiting_on_lists_the_requests_whose_sop_waits_on_provisioning(engine, clock, actions, batch):
    ids = approved(engine, clock, [61, 62, 63])
    clock.now = at(13, 8, 0)
    engine.submit(raw_request(64), "r64.yaml")  # not yet decided: not listed
    assert engine.waiting_on("provision_site") == ids
    batch.fail["HST-2024-0062"] = "broke"
    engine.resume_many(ids[:2])
    # A failed one still waits on provisioning (a rerun retries it); a provisioned one does not.
    assert engine.waiting_on("provision_site") == ids[1:]


pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")


@pdftotext
def test_letters_rendered_side_by_side_keep_distinct_gapless_numbers(config, tmp_path, clock, monkeypatch):
    """Real letters from a pool of processes (PARALLEL_FROM lowered so a few suffice);
    provisioning is a stand-in that records the site the way hosting does."""
    from provisioner.letters import render
    from test_letters import Office, pdf_text

    monkeypatch.setattr(render, "PARALLEL_FROM", 2)
    monkeypatch.setattr(render.os, "cpu_count", lambda: 3)  # a pool even on one CPU
    office = Office(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    office.engine.clock = clock
    ids = approved(office.engine, clock, [71, 72, 73, 74, 75, 76])
    outcomes = office.engine.resume_many(ids, options={"letters_dir": tmp_path / "letters"})
    numbers = {}
    for request_id in ids:
        ran = outcomes[request_id].actions
        assert outcomes[request_id].error is None, outcomes[request_id].error
        assert [a["action"] for a in ran] == ["provision_site", "render_letter"]
        letter = ran[1]["result"]
        pdf = (tmp_path / "letters" / f"{request_id}-surat-konfigurasi.pdf").read_bytes()
        # The PDF a worker rendered is the one written and recorded, and it is this request's letter.
        assert pdf.startswith(b"%PDF") and hashlib.sha256(pdf).hexdigest() == letter["sha256"]
        assert f"app{request_id[-2:]}.tarakankota.go.id" in pdf_text(tmp_path / "letters" /
                                                                    f"{request_id}-surat-konfigurasi.pdf")
        numbers[request_id] = letter["number"]
    urut = sorted(int(n.split("/")[1]) for n in numbers.values())
    assert urut == list(range(1, 7))  # distinct and gapless, whichever process took which
    office.store.close()


# -- provision_sites_action and `provision hosting --all-approved` --------------------------

class FakeHosting:
    """Hosting with the apply's observable behaviour and no host: one call per apply, progress
    per site, the sites it verifies recorded provisioned, an error naming the ones that failed."""

    applies = []
    plans = []
    fail = {}
    lone_error = HostError  # what an apply of one failing site raises

    def __init__(self, config, store, source="cli", progress=None):
        from provisioner.progress import Progress

        self.store, self.progress = store, progress or Progress()

    def _fqdns(self, ids):
        from provisioner.store.models import RequestRow

        with self.store.session() as session:
            return [session.get(RequestRow, i).fqdn for i in ids]

    def load_requests(self, ids):
        """The real approval check (no request objects needed here)."""
        from provisioner.config import load_config
        from provisioner.sop.binding import check_hosting_approval
        from provisioner.store.models import RequestRow

        with self.store.session() as session:
            for request_id in ids:
                check_hosting_approval(session, load_config(None), session.get(RequestRow, request_id))
        return ids

    def plan(self, ids):
        from provisioner.plan import Plan

        FakeHosting.plans.append(list(ids))
        return Plan(sites=self._fqdns(ids)), []

    def apply(self, ids, checksum=None):
        from provisioner.hosting import ApplyResult
        from provisioner.plan import Plan
        from provisioner.sop.sla import utcnow
        from provisioner.store.models import SiteRow

        FakeHosting.applies.append(list(ids))
        fqdns = self._fqdns(ids)
        self.progress.begin(len(ids), "hosting")
        self.progress.step(fqdns, "web")
        result = ApplyResult(plan=Plan(sites=fqdns), changed=True)
        failed = {}
        for request_id, fqdn in zip(ids, fqdns):
            if fqdn in FakeHosting.fail:
                failed[fqdn] = FakeHosting.fail[fqdn]
                self.progress.done(fqdn, False, failed[fqdn])
                continue
            now = utcnow()
            with self.store.session() as session:
                session.merge(SiteRow(fqdn=fqdn, request_id=request_id, office="tarakan", zone="tarakankota.go.id",
                                      label=fqdn.split(".")[0], state="provisioned", web_host="web1",
                                      db_host="db1", public_ip="203.0.113.10", dedicated_ip=False, config={},
                                      plan_checksum="0" * 64, created_at=now, provisioned_at=now, updated_at=now))
            result.sites.append({"fqdn": fqdn, "public_ip": "203.0.113.10", "web_host": "web1",
                                 "verified": {"dns": {}, "http": {}}})
            self.progress.done(fqdn, True)
        self.progress.end()
        if failed:
            if len(failed) == 1 and not result.sites:
                raise FakeHosting.lone_error(next(iter(failed.values())))
            raise HostError(f"{len(failed)} of {len(ids)} sites failed: "
                            + "; ".join(f"{f}: {why}" for f, why in failed.items()))
        return result


@pytest.fixture
def fake_hosting(monkeypatch):
    import provisioner.hosting

    monkeypatch.setattr(provisioner.hosting, "Hosting", FakeHosting)
    monkeypatch.setattr(FakeHosting, "applies", [])
    monkeypatch.setattr(FakeHosting, "plans", [])
    monkeypatch.setattr(FakeHosting, "fail", {})
    monkeypatch.setattr(FakeHosting, "lone_error", HostError)
    return FakeHosting


def test_the_batch_form_makes_one_apply_and_answers_per_site(engine, clock, actions, fake_hosting):
    actions.registry.register_batch("provision_site", ACTIONS.batch("provision_site"))
    ids = approved(engine, clock, [81, 82, 83])
    fake_hosting.fail["app82.tarakankota.go.id"] = "step db failed: the database host refused"
    seen = []
    outcomes = engine.resume_many(ids, options={"results": seen})
    assert fake_hosting.applies == [ids]
    assert isinstance(seen[0], HostError) and "1 of 3 sites failed" in str(seen[0])
    assert outcomes[ids[0]].actions[0]["result"] == {"fqdn": "app81.tarakankota.go.id", "public_ip": "203.0.113.10",
                                                      "changed": None, "checksum": "0" * 64}
    # The failed site's own reason, not the batch's summary of every failure.
    assert str(outcomes[ids[1]].error.__cause__) == "step db failed: the database host refused"
    assert [o.error is None for o in outcomes.values()] == [True, False, True]
    assert actions.count("render_letter") == 2


def test_a_lone_request_fails_with_the_apply_error_as_it_was(engine, clock, actions, fake_hosting):
    actions.registry.register_batch("provision_site", ACTIONS.batch("provision_site"))
    (request_id,) = approved(engine, clock, [85])
    fake_hosting.fail["app85.tarakankota.go.id"] = "the API key was refused (HTTP 401)"
    outcome = engine.resume_many([request_id])[request_id]
    assert str(outcome.error) == ("HST-2024-0085: step 6 (konfigurasi_server): action provision_site failed: "
                                  "the API key was refused (HTTP 401)")


@pytest.fixture
def cli(tmp_path, monkeypatch, fake_hosting, clock):
    """`provision` through click's runner on a SQLite state file, hosting faked, letters stand-ins;
    returns (invoke, engine) where the engine on the same database makes the approved requests."""
    from click.testing import CliRunner

    from provisioner.cli import main
    from provisioner.config import load_config
    from provisioner.sop import hooks

    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("PROVISIONER_STATE_URL", url)
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    letters = []

    def letter(ctx):
        letters.append(ctx.request.id)
        return {"number": f"400.14/{len(letters)}/DKISP/2024"}
    monkeypatch.setitem(hooks.ACTIONS._actions, "render_letter", letter)
    store = open_store(url)
    engine = Engine(load_config(None), store, clock=clock)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    yield invoke, engine, letters
    store.close()


def test_all_approved_applies_once_and_sums_up_each_request(cli, clock, fake_hosting):
    invoke, engine, letters = cli
    ids = approved(engine, clock, [91, 92, 93])
    fake_hosting.fail["app92.tarakankota.go.id"] = "step web failed: [Errno 111] configtest refused"
    result = invoke("hosting", "--all-approved", "--apply")
    assert result.exit_code == 6, result.output
    assert fake_hosting.applies == [ids]
    assert letters == ["HST-2024-0091", "HST-2024-0093"]
    out = result.output
    assert "hosting: 3 site(s)" in out and "[2/3] app92.tarakankota.go.id: failed" in out  # plain progress
    assert "3 requests, 1 failed" in out
    assert "failed: HST-2024-0092 (app92.tarakankota.go.id): step web failed: [Errno 111] configtest refused" in out
    assert out.rstrip().splitlines()[-1] == ("error: 1 of 3 requests failed: HST-2024-0092 "
                                             "(app92.tarakankota.go.id): step web failed: [Errno 111] "
                                             "configtest refused")
    assert engine.show("HST-2024-0091")["current_step"] == "kirim_laporan"
    assert engine.show("HST-2024-0092")["state"] == "attention"
    # The failed one still waits on provisioning: the next --all-approved takes it alone.
    fake_hosting.fail.clear()
    again = invoke("hosting", "--all-approved", "--apply")
    assert again.exit_code == 0, again.output
    assert fake_hosting.applies[-1] == ["HST-2024-0092"] and "provisioned at 203.0.113.10" in again.output
    assert invoke("hosting", "--all-approved", "--apply").output.strip() == \
        "no approved request waits on provisioning: nothing to do"


def test_the_json_summary_is_one_document(cli, clock, fake_hosting):
    import json

    invoke, engine, _ = cli
    ids = approved(engine, clock, [94, 95])
    result = invoke("hosting", *ids, "--apply", "--json")
    assert result.exit_code == 0
    body = result.output[result.output.index("{"):]  # progress lines (stderr) come first
    data = json.loads(body)
    assert [(r["request"], r["result"], r["letter"]) for r in data["requests"]] == [
        ("HST-2024-0094", "provisioned", "400.14/1/DKISP/2024"), ("HST-2024-0095", "provisioned", "400.14/2/DKISP/2024")]
    assert len(data["applies"]) == 1 and len(data["applies"][0]["sites"]) == 2


def test_a_provisioned_request_given_with_approved_ones_is_in_the_same_apply(cli, clock, fake_hosting):
    invoke, engine, _ = cli
    first, second = approved(engine, clock, [96, 97])
    assert invoke("hosting", first, "--apply").exit_code == 0
    result = invoke("hosting", first, second, "--apply")
    assert result.exit_code == 0, result.output
    # One plan for both, as reviewed: the provisioned one converges in the same apply.
    assert fake_hosting.applies[-1] == [second, first]
    assert engine.show(second)["current_step"] == "kirim_laporan"


def test_plan_mode_shows_one_plan_for_all(cli, clock, fake_hosting):
    invoke, engine, _ = cli
    ids = approved(engine, clock, [98, 99])
    result = invoke("hosting", "--all-approved")
    assert result.exit_code == 0 and "dry run: nothing was changed" in result.output
    assert fake_hosting.plans == [ids] and fake_hosting.applies == []


@pytest.mark.parametrize("args, message", [
    (("HST-2024-0001", "--all-approved"), "not both"),
    ((), "or --all-approved"),
])
def test_ids_and_all_approved_are_refused_together_and_one_is_needed(cli, args, message):
    invoke, _, _ = cli
    result = invoke("hosting", *args)
    assert result.exit_code == 2 and message in result.output


# -- the webhook's batching window ------------------------------------------------------------

class Gate:
    """The batch window as a test holds it: the batch waits until the test opens it."""

    def __init__(self):
        self._open = threading.Semaphore(0)

    def __call__(self, window):
        assert window == 2.0
        assert self._open.acquire(timeout=60), "the test never opened the window"

    def open(self):
        self._open.release()


def _until(condition, what):
    """Wait (at most a minute) for something another thread does; fail naming it if it never happens."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_approvals_within_the_window_are_provisioned_as_one_batch(engine, clock, actions, batch, serving):
    from test_webhook import post

    ids = reviewed(engine, clock, [101, 102, 103, 104])
    batch.fail["HST-2024-0102"] = "app102.tarakankota.go.id: step db failed: db1 refused"
    gate = Gate()
    server = serving(engine, batch_window=2.0, batch_wait=gate)

    def approve(request_id, n):
        body = {"request": request_id, "sha256": hashlib.sha256(raw_request(n)).hexdigest(), "decision": "approve"}
        return post(server, body, post_id=f"post-batch-{n}")

    with ThreadPoolExecutor(3) as senders:
        answers = {i: senders.submit(approve, i, n) for i, n in zip(ids[:3], (101, 102, 103))}
        # Each decision is recorded before its post is answered; provisioning waits for the window.
        _until(lambda: sorted(server.batcher.gathering()) == ids[:3], "three approvals gathered")
        assert {engine.show(i)["state"] for i in ids[:3]} == {"approved"} and batch.calls == []
        gate.open()
        replies = {i: answer.result(timeout=60) for i, answer in answers.items()}
    assert [sorted(call) for call in batch.calls] == [ids[:3]]  # one batch with the three
    for ok in ("HST-2024-0101", "HST-2024-0103"):
        status, reply = replies[ok]
        assert status == 200 and reply["request"] == ok and reply["message"] == f"{ok} approved"
        assert [a["action"] for a in reply["actions"]] == ["provision_site", "render_letter"]
    status, reply = replies["HST-2024-0102"]
    assert status == 502 and reply["decided"] is True and "db1 refused" in reply["error"]
    assert engine.show("HST-2024-0102")["state"] == "attention"
    assert engine.show("HST-2024-0101")["current_step"] == "kirim_laporan"

    # One after the window: its own batch.
    with ThreadPoolExecutor(1) as senders:
        answer = senders.submit(approve, ids[3], 104)
        _until(lambda: server.batcher.gathering() == [ids[3]], "the fourth approval gathered")
        gate.open()
        status, reply = answer.result(timeout=60)
    assert status == 200 and [sorted(call) for call in batch.calls] == [ids[:3], [ids[3]]]
    # A resent approval is a replay, and a second approval of a decided request runs nothing.
    assert approve(ids[0], 101)[0] == 409


def test_without_a_window_each_approval_is_provisioned_as_it_arrives(engine, clock, actions, batch, serving):
    from test_webhook import post

    (request_id,) = reviewed(engine, clock, [105])
    server = serving(engine)  # batch_window 0: as before, the post waits for its own actions
    assert server.batcher is None
    body = {"request": request_id, "sha256": hashlib.sha256(raw_request(105)).hexdigest(), "decision": "approve"}
    status, reply = post(server, body, post_id="post-single-105")
    assert status == 200 and [a["action"] for a in reply["actions"]] == ["provision_site", "render_letter"]
    assert actions.count("provision_site") == 1 and batch.calls == []


def test_the_window_is_configured_and_zero_turns_it_off():
    from provisioner.config import Webhook
    from pydantic import ValidationError as PydanticError

    assert Webhook().batch_window_seconds == 2.0 and Webhook(batch_window_seconds=0).batch_window_seconds == 0
    with pytest.raises(PydanticError, match="batch_window_seconds"):
        Webhook(batch_window_seconds=-1)


def test_a_named_request_without_an_approval_refuses_the_batch_before_anything_runs(cli, clock, fake_hosting):
    invoke, engine, letters = cli
    ids = approved(engine, clock, [110, 111])
    (unapproved,) = reviewed(engine, clock, [112])
    result = invoke("hosting", *ids, unapproved, "--apply")
    assert result.exit_code == 2 and "no approval" in result.output, result.output
    assert fake_hosting.applies == [] and letters == []
    assert {engine.show(i)["state"] for i in ids} == {"approved"}
    assert [e["kind"] for e in engine.events(ids[0])].count("action_started") == 0


def test_one_request_fails_as_it_always_did_one_line_and_its_own_exit_code(cli, clock, fake_hosting):
    from provisioner.errors import Conflict

    invoke, engine, _ = cli
    (request_id,) = approved(engine, clock, [113])
    assert invoke("hosting", request_id, "--apply").exit_code == 0
    fake_hosting.fail["app113.tarakankota.go.id"] = "app113.tarakankota.go.id: a vhost the toolkit did not create"
    fake_hosting.lone_error = Conflict
    rerun = invoke("hosting", request_id, "--apply")  # provisioned already: applied without its SOP
    assert rerun.exit_code == 5
    assert rerun.output.splitlines() == ["error: app113.tarakankota.go.id: a vhost the toolkit did not create"]
    (fresh,) = approved(engine, clock, [114])
    fake_hosting.fail["app114.tarakankota.go.id"] = "step web failed: configtest refused"
    first = invoke("hosting", fresh, "--apply")  # through its SOP: the step's failure, exit 6
    assert first.exit_code == 6 and first.output.splitlines() == [
        "error: HST-2024-0114: step 6 (konfigurasi_server): action provision_site failed: "
        "step web failed: configtest refused"]
