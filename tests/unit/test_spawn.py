"""spawn_hosting: the linked hosting request made from a website or application request."""

import json
import stat
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from provisioner.errors import NotFound, StateError
from provisioner.request import validate
from provisioner.sop import hooks
from provisioner.sop.spawn import linked_child, requests_dir, spawn_hosting

from conftest import EXAMPLES, WITA

API = (EXAMPLES / "buleleng-api-sipandu.yaml").read_bytes()
ANALYSIS = EXAMPLES / "data" / "analisa-sipandu.yaml"


def _api_to_decision(engine, clock, approve=True, raw=API):
    clock.now = datetime(2024, 9, 3, 9, 0, tzinfo=WITA)
    engine.submit(raw, "api.yaml")
    for ref, role in (("2", "kadis"), ("3", "kabid"), ("4", "kasi"), ("5", "kasi"), ("6", "programmer")):
        clock.now += timedelta(minutes=5)
        engine.record_step("KOM-2024-0044", ref, role, data_file=ANALYSIS if ref == "6" else None)
    clock.now += timedelta(minutes=5)
    engine.decide("KOM-2024-0044", approve, "kasi", reason="Dapat dibangun tim" if approve else "Tim penuh")
    return "KOM-2024-0044"


def _spawn(engine, clock, parent):
    return spawn_hosting(engine.config, engine.store, parent, at=clock.now, actions=engine.actions, clock=clock)


def test_spawn_makes_submits_and_links_the_hosting_request_once(engine, clock, config):
    parent = _api_to_decision(engine, clock)
    child = _spawn(engine, clock, parent)
    assert child == "HST-2024-0001"
    path = requests_dir(config) / f"{child}.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    request = validate(path.read_bytes(), config, source=str(path), spawned=True)
    assert request.service == "hosting" and request.linked_request == parent
    assert request.site.fqdn == "perizinan.bulelengkab.go.id" and request.site.quota_mb == 2048
    assert request.purpose == ("Hosting untuk aplikasi SIPANDU - Sistem Informasi Pelayanan Terpadu "
                               "(permohonan KOM-2024-0044)")
    assert request.letter.number == "000.7/431/DPMPTSP/2024" and request.contact.nip == "198503172010011004"
    shown = engine.show(child)
    assert shown["sop"] == "hosting-buleleng" and shown["current_step"] == "agenda"
    assert shown["linked_to"] == parent and linked_child(engine.store, parent) == child
    assert [e["payload"]["request"] for e in engine.events(parent) if e["kind"] == "hosting_spawned"] == [child]
    assert [e["payload"]["linked_request"] for e in engine.events(child)
            if e["kind"] == "hosting_spawned"] == [parent]

    # Idempotent: a second call names the first request and makes nothing.
    assert _spawn(engine, clock, parent) == child
    assert [r["id"] for r in engine.list_requests()] == [parent, child]


def test_numbers_follow_the_highest_of_the_year(engine, clock, simkes_bytes):
    clock.now = datetime(2024, 9, 3, 8, 0, tzinfo=WITA)
    engine.submit(simkes_bytes.replace(b"HST-2024-0007", b"HST-2024-0041"), "h.yaml")
    parent = _api_to_decision(engine, clock)
    assert _spawn(engine, clock, parent) == "HST-2024-0042"


def test_spawn_is_refused_before_approval_and_without_hosting(engine, clock):
    with pytest.raises(NotFound):
        _spawn(engine, clock, "KOM-2024-0044")
    parent = _api_to_decision(engine, clock, approve=False)
    with pytest.raises(StateError, match="KOM-2024-0044 is not approved"):
        _spawn(engine, clock, parent)
    konsultasi = (EXAMPLES / "tarakan-konsultasi-simpeg.yaml").read_bytes()
    clock.now += timedelta(minutes=5)
    engine.submit(konsultasi, "k.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step("KON-2024-0015", ref, role)
    clock.now += timedelta(minutes=3)
    engine.decide("KON-2024-0015", True, "bidang_aplikasi")
    with pytest.raises(StateError, match=r"KON-2024-0015 \(konsultasi-aplikasi\) gives no application.hosting"):
        _spawn(engine, clock, "KON-2024-0015")
    assert linked_child(engine.store, "KON-2024-0015") is None


def test_a_website_request_spawns_its_hosting(engine, clock, config):
    clock.now = datetime(2024, 8, 13, 8, 0, tzinfo=WITA)
    engine.submit((EXAMPLES / "tarakan-website-dinkes.yaml").read_bytes(), "w.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step("WEB-2024-0012", ref, role)
    with pytest.raises(StateError, match="not approved"):
        _spawn(engine, clock, "WEB-2024-0012")
    clock.now += timedelta(minutes=3)
    engine.decide("WEB-2024-0012", True, "bidang_aplikasi")
    child = _spawn(engine, clock, "WEB-2024-0012")
    request = validate((requests_dir(config) / f"{child}.yaml").read_bytes(), config, spawned=True)
    assert request.site.fqdn == "dinkes.tarakankota.go.id" and request.site.php_version == "8.2"
    assert request.purpose == "Hosting untuk website dinkes.tarakankota.go.id (permohonan WEB-2024-0012)"
    with pytest.raises(StateError, match="is itself the hosting request of WEB-2024-0012"):
        _spawn(engine, clock, child)


def test_cli_spawn_hosting(tmp_path, monkeypatch):
    from provisioner.cli import main

    for name in ("render_analysis", "render_reply_letter"):  # the documents are tested with the letters
        monkeypatch.setitem(hooks.ACTIONS._actions, name, lambda ctx: {})
    monkeypatch.setenv("PROVISIONER_STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setenv("PROVISIONER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    assert run("request", "submit", EXAMPLES / "buleleng-api-sipandu.yaml", "--at", "2024-09-03T09:00").exit_code == 0
    times = iter(f"2024-09-03T09:{m:02d}" for m in range(5, 60, 5))
    for ref, role in (("2", "kadis"), ("3", "kabid"), ("4", "kasi"), ("5", "kasi")):
        assert run("step", "KOM-2024-0044", ref, "--by", role, "--at", next(times)).exit_code == 0
    missing = run("step", "KOM-2024-0044", "6", "--by", "programmer", "--at", next(times))
    assert missing.exit_code == 2 and "needs --data FILE" in missing.output
    assert run("step", "KOM-2024-0044", "6", "--by", "programmer", "--at", "2024-09-03T09:30",
               "--data", ANALYSIS).exit_code == 0
    refused = run("request", "spawn-hosting", "KOM-2024-0044")
    assert refused.exit_code == 2 and "not approved" in refused.output
    assert run("decide", "KOM-2024-0044", "--approve", "--by", "kasi", "--reason", "Dapat dibangun",
               "--at", "2024-09-03T09:40").exit_code == 0
    made = json.loads(run("request", "spawn-hosting", "KOM-2024-0044", "--json").output)
    assert made["created"] and made["hosting_request"].startswith("HST-")
    assert made["file"].startswith(str(tmp_path / "home" / "requests"))
    again = run("request", "spawn-hosting", "KOM-2024-0044")
    assert again.exit_code == 0 and "was made earlier; nothing done" in again.output
    shown = run("request", "show", made["hosting_request"])
    assert "perizinan.bulelengkab.go.id" in shown.output
