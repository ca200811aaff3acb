"""Website deploys without hosts: the plan, the checksum, pruning, the switch back, the records, the SOP action."""

import io
import tarfile
from dataclasses import replace

import pytest

from provisioner import records
from provisioner.config import Config, Website as WebsiteSettings, default_offices
from provisioner.errors import HostError, NotFound, StateError, UserError, Waiting
from provisioner.hosting import Hosting
from provisioner.naming import site_names
from provisioner.site import DesiredSite
from provisioner.store import open_store
from provisioner.website import deploy as deploy_module, layout
from provisioner.website.deploy import Website, prune_list
from provisioner.website.layout import FIRST_RELEASE, LiveLayout
from test_records import add_site  # tests/unit is on the path (no package)

R1, R2, R3 = "20261201-080000-aaaaaa", "20261202-080000-bbbbbb", "20261203-080000-cccccc"


@pytest.fixture
def office(tmp_path, monkeypatch):
    config = Config(offices=default_offices(), state_dir=tmp_path, website=WebsiteSettings(keep_releases=3,
                                                                                          shared=["uploads"]))
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    fqdn = add_site(store, "simkes")
    names = site_names("simkes", "tarakankota.go.id")
    site = DesiredSite(request_id="HST-1", office="tarakan", label="simkes", zone="tarakankota.go.id", names=names,
                       web_host="web1", web_address="10.77.0.21", db_host="db1", public_ip="203.0.113.10",
                       dedicated_ip=False, php=True, php_version="8.2", database=True, tls=True, quota_mb=500,
                       bandwidth_kbps=0)
    monkeypatch.setattr(Hosting, "recorded_sites", lambda self, fqdns: [site])
    live = {"layout": LiveLayout(home=True, public="dir", public_target=None, current=None)}
    monkeypatch.setattr(layout, "read", lambda host, home: live["layout"])
    calls = []
    monkeypatch.setattr(deploy_module.runner, "run_playbook",
                        lambda playbook, inventory, hosts, extravars=None, **kw: calls.append(extravars))
    archive = tmp_path / "site.tar.gz"
    with tarfile.open(archive, "w:gz") as out:
        for name, data in (("index.php", b"<?php echo 'ok';"), (".release-marker", b"rilis-1\n"),
                           (".shared", b"storage/app\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    yield config, store, fqdn, live, calls, archive
    store.close()


def test_a_first_deploy_plan_says_everything_it_will_do(office):
    config, store, fqdn, live, calls, archive = office
    planned = Website(config, store, actor="t").deploy(fqdn, str(archive), run="php artisan migrate",
                                                       health="/healthz", do_apply=False)
    text = planned.render()
    assert planned.convert and planned.current == FIRST_RELEASE
    assert f"public/ becomes release {FIRST_RELEASE}" in text
    assert planned.health_url == f"https://{fqdn}/healthz" and planned.expect == "rilis-1"
    assert planned.backup == {"host": "db1", "database": site_names("simkes", "tarakankota.go.id").db_name,
                              "directory": f"/var/backups/provisioner/{fqdn}"}
    assert [link["path"] for link in planned.shared] == ["storage/app", "uploads"]
    assert planned.shared[0]["target"] == "../../../shared/storage/app"
    assert "'php artisan migrate' as" in text and planned.content.sha256 in text and "3 files" in text
    assert planned.prune == [] and not calls  # a plan changes nothing
    # The release id is given at the apply; the checksum covers the rest and is stable.
    again = Website(config, store, actor="t").deploy(fqdn, str(archive), run="php artisan migrate",
                                                     health="/healthz", do_apply=False)
    assert again.checksum == planned.checksum and f"checksum {planned.checksum}" in text
    other = Website(config, store, actor="t").deploy(fqdn, str(archive), health="/healthz", do_apply=False)
    assert other.checksum != planned.checksum


def test_pruning_keeps_the_newest_and_never_the_current_release():
    assert prune_list([R1, R2, R3], R3, keep=3) == [R1]
    assert prune_list([FIRST_RELEASE, R1, R2, R3], R1, keep=3) == [FIRST_RELEASE, R2]
    assert prune_list([R1], R1, keep=2) == []
    assert prune_list([], None, keep=5) == []


def test_a_checksum_that_is_not_the_reviewed_one_is_refused_before_any_change(office):
    config, store, fqdn, live, calls, archive = office
    with pytest.raises(StateError, match="the plan changed since it was reviewed"):
        Website(config, store, actor="t").deploy(fqdn, str(archive), checksum="0" * 64)
    assert not calls


def test_apply_stages_backs_up_switches_checks_and_prunes(office, monkeypatch):
    config, store, fqdn, live, calls, archive = office
    live["layout"] = LiveLayout(home=True, public="link", public_target="current", current=R3,
                                releases=[R1, R2, R3])
    commands = []

    def fake_ssh(host, command, stdin="", sudo=False, timeout=120.0):
        commands.append((host.name, command))
        return 0, f"{'a' * 64}  /var/backups/provisioner/x.sql\n1234\n", ""

    monkeypatch.setattr(deploy_module.ssh, "run", fake_ssh)
    monkeypatch.setattr(Website, "_health", lambda self, site, path, expect: {"url": "u", "status": 200,
                                                                              "marker": expect})
    work = Website(config, store, actor="operator")
    planned = work.deploy(fqdn, str(archive), do_apply=False)
    assert planned.prune == [R1]
    result = work.deploy(fqdn, str(archive), checksum=planned.checksum)
    actions = [c["website_release__action"] for c in calls]
    assert actions == ["stage", "switch", "prune"]
    release = result.payload["release"]
    assert calls[0]["website_release__release"] == release and calls[2]["website_release__prune"] == [R1]
    assert [host for host, _ in commands] == ["db1"] and "mysqldump --single-transaction" in commands[0][1]
    assert result.payload["backup"]["sha256"] == "a" * 64 and result.payload["previous"] == R3
    shown = records.site_show(store, fqdn)
    assert shown["record"]["release"] == release and shown["record"]["release_by"] == "operator"
    assert shown["record"]["release_sha256"] == planned.content.sha256
    assert any(e["kind"] == "website_deployed" for e in shown["history"])
    row = next(r for r in records.configuration_records(store) if r["fqdn"] == fqdn)
    assert row["release_result"] == "deployed"


def test_a_failed_health_check_switches_back_and_records_the_failure(office, monkeypatch):
    config, store, fqdn, live, calls, archive = office
    live["layout"] = LiveLayout(home=True, public="link", public_target="current", current=R2, releases=[R1, R2])
    monkeypatch.setattr(deploy_module.ssh, "run", lambda *a, **k: (0, f"{'b' * 64}  f\n10\n", ""))

    def unhealthy(self, site, path, expect):
        raise HostError(f"{site.fqdn}: the health check failed: status 500")

    monkeypatch.setattr(Website, "_health", unhealthy)
    monkeypatch.setattr(Website, "_answers", lambda self, site, path: 200)
    with pytest.raises(HostError, match="status 500"):
        Website(config, store, actor="t").deploy(fqdn, str(archive))
    new = calls[0]["website_release__release"]
    assert [(c["website_release__action"], c["website_release__release"]) for c in calls][1:] == \
        [("switch", new), ("switch", R2), ("prune", R2)]
    # The failed release is removed, the one switched back to kept as current.
    assert calls[3]["website_release__prune"] == [new]
    record = records.site_show(store, fqdn)["record"]
    assert record["release"] == R2 and record["release_result"].endswith("failed")
    failed = [e for e in records.site_show(store, fqdn)["history"] if e["kind"] == "website_deploy_failed"]
    assert failed[0]["payload"]["switched_back"] == {"release": R2, "status": 200}
    assert failed[0]["payload"]["removed"] == {"release": new, "removed": True}
    assert "status 500" in failed[0]["payload"]["reason"]


def test_a_failed_command_switches_nothing(office, monkeypatch):
    config, store, fqdn, live, calls, archive = office
    live["layout"] = LiveLayout(home=True, public="link", public_target="current", current=R2, releases=[R1, R2])
    outputs = iter([(0, f"{'c' * 64}  f\n10\n", ""), (3, "migration failed: table exists\n", "")])
    monkeypatch.setattr(deploy_module.ssh, "run", lambda *a, **k: next(outputs))
    with pytest.raises(HostError, match="the command exited 3; nothing was switched: migration failed"):
        Website(config, store, actor="t").deploy(fqdn, str(archive), run="php artisan migrate")
    # Nothing switched; the staged release removed (current stays R2).
    assert [(c["website_release__action"], c["website_release__release"]) for c in calls] == \
        [("stage", calls[0]["website_release__release"]), ("prune", R2)]
    assert calls[1]["website_release__prune"] == [calls[0]["website_release__release"]]


def test_rollback_plans_the_previous_release_and_refuses_unknown_ones(office):
    config, store, fqdn, live, calls, archive = office
    live["layout"] = LiveLayout(home=True, public="link", public_target="current", current=R3,
                                releases=[R1, R2, R3])
    work = Website(config, store, actor="t")
    planned = work.rollback(fqdn, do_apply=False)
    assert (planned.current, planned.target) == (R3, R2) and "current " + R3 + " -> " + R2 in planned.render()
    assert work.rollback(fqdn, to=R1, do_apply=False).target == R1
    with pytest.raises(NotFound, match="has no release"):
        work.rollback(fqdn, to="20200101-000000-ffffff", do_apply=False)
    with pytest.raises(StateError, match="already the current one"):
        work.rollback(fqdn, to=R3, do_apply=False)
    with pytest.raises(StateError, match="the plan changed"):
        work.rollback(fqdn, checksum="1" * 64)
    assert not calls


def test_only_a_provisioned_site_gets_content(office):
    config, store, fqdn, live, calls, archive = office
    suspended = add_site(store, "arsip", state="suspended")
    with pytest.raises(StateError, match="unsuspend it first"):
        Website(config, store, actor="t").deploy(suspended, str(archive), do_apply=False)
    with pytest.raises(NotFound, match="no site"):
        Website(config, store, actor="t").deploy("none.tarakankota.go.id", str(archive), do_apply=False)
    with pytest.raises(UserError, match="--health"):
        Website(config, store, actor="t").deploy(fqdn, str(archive), health="no-slash", do_apply=False)


def test_the_sop_action_spawns_the_hosting_and_waits_without_a_site(office, monkeypatch):
    config, store, fqdn, live, calls, archive = office
    from provisioner.sop import spawn
    from provisioner.sop.hooks import ActionContext
    from provisioner.website.sop import install_website_action

    spawned = []
    monkeypatch.setattr(spawn, "spawn_hosting", lambda config, store, parent, source="cli": spawned.append(parent)
                        or "HST-2026-0001")

    class Request:
        id, service = "WEB-2026-0001", "website"
        website = type("W", (), {"fqdn": "dinkes.tarakankota.go.id", "source": str(archive), "ref": None,
                                 "health_check": "/"})()

    ctx = ActionContext(request=Request, sop=None, step=None, branch=None, reason=None, config=config, store=store)
    with pytest.raises(Waiting, match="hosting request HST-2026-0001 provisions it"):
        install_website_action(ctx)
    assert spawned == ["WEB-2026-0001"]
    Request.website.fqdn = fqdn
    # A request's local source needs website.source_roots: none configured, refused before any fetch.
    with pytest.raises(UserError, match="none is configured"):
        install_website_action(replace(ctx, request=Request))
    def rooted(*roots):
        return replace(ctx, config=config.model_copy(update={"website": config.website.model_copy(
            update={"source_roots": list(roots)})}))

    with pytest.raises(UserError, match="not under website.source_roots"):
        install_website_action(replace(rooted(str(archive.parent / "elsewhere")), request=Request))
    assert not calls
    # With a live site and the source under a root, the same action deploys (here to the faked host).
    ctx = rooted(str(archive.parent))
    monkeypatch.setattr(deploy_module.ssh, "run", lambda *a, **k: (0, f"{'d' * 64}  f\n10\n", ""))
    monkeypatch.setattr(Website, "_health", lambda self, site, path, expect: {"url": "u", "status": 200,
                                                                              "marker": expect})
    result = install_website_action(replace(ctx, request=Request))
    assert result["fqdn"] == fqdn and result["health"]["status"] == 200 and not spawned[1:]
    events = [e for e in records.site_show(store, fqdn)["history"] if e["kind"] == "website_deployed"]
    assert events[0]["request_id"] == "WEB-2026-0001"


def test_two_deploys_of_one_site_never_interleave(office):
    """While one apply holds the site's lock (another thread here), a second deploy is refused."""
    import threading

    from provisioner import locks

    config, store, fqdn, live, calls, archive = office
    held, release = threading.Event(), threading.Event()

    def other_apply():
        with locks.held(store, [f"site:{fqdn}"]):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_apply)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(StateError, match=f"site:{fqdn} is locked"):
            Website(config, store, actor="t").deploy(fqdn, str(archive))
    finally:
        release.set()
        thread.join()
    assert not calls


def test_an_archive_made_with_dot_paths_is_read(tmp_path):
    """`tar -czf x.tar.gz -C dir .` names members ./index.php and has a ./ entry."""
    import subprocess

    from provisioner.website import source

    tree = tmp_path / "content"
    (tree / "css").mkdir(parents=True)
    (tree / "index.php").write_text("<?php echo 1;")
    (tree / "css" / "a.css").write_text("body{}")
    subprocess.run(["tar", "-czf", str(tmp_path / "c.tar.gz"), "-C", str(tree), "."], check=True)
    work = tmp_path / "work"
    work.mkdir()
    content = source.fetch(source.parse_source(str(tmp_path / "c.tar.gz")), work,
                           source.Limits(100, 10**6, 100), 60)
    assert [e.path for e in content.entries] == ["css", "css/a.css", "index.php"]


def test_an_adopted_site_is_refused(office):
    from provisioner.adopted import ORIGIN
    from provisioner.store.models import SiteRow

    config, store, fqdn, live, calls, archive = office
    with store.session() as session:
        row = session.get(SiteRow, fqdn)
        row.config = {**row.config, "origin": ORIGIN}
    with pytest.raises(StateError, match="adopted site"):
        Website(config, store, actor="t").deploy(fqdn, str(archive), do_apply=False)


def test_a_request_source_is_checked_under_the_roots_with_symlinks_resolved(tmp_path):
    from provisioner.website.source import SourceSpec, local_source_problem

    root, other = tmp_path / "root", tmp_path / "other"
    root.mkdir()
    other.mkdir()
    (other / "site.tar.gz").write_bytes(b"x")
    (root / "site.tar.gz").write_bytes(b"x")
    (root / "sneaky.tar.gz").symlink_to(other / "site.tar.gz")
    roots = [str(root)]
    assert local_source_problem(SourceSpec(str(root / "site.tar.gz"), None, "archive"), roots) is None
    assert "not under website.source_roots" in local_source_problem(
        SourceSpec(str(root / "sneaky.tar.gz"), None, "archive"), roots)
    assert "not under" in local_source_problem(SourceSpec(f"file://{other}", None, "git"), roots)
    assert local_source_problem(SourceSpec("https://git.example.go.id/web/a.git", "v1", "git"), []) is None


def test_a_failed_deploy_never_counts_and_rollback_goes_to_the_last_live_release(office, monkeypatch):
    config, store, fqdn, live, calls, archive = office
    work = Website(config, store, actor="t")
    # R1 was live, R2 deployed (live, replacing R1), R3's deploy failed (its removal failed too).
    work._event("HST-1", "website_deployed", fqdn=fqdn, release=R1, previous=FIRST_RELEASE)
    work._event("HST-1", "website_deployed", fqdn=fqdn, release=R2, previous=R1)
    work._event("HST-1", "website_deploy_failed", fqdn=fqdn, release=R3, previous=R2)
    live["layout"] = LiveLayout(home=True, public="link", public_target="current", current=R2,
                                releases=[FIRST_RELEASE, R1, R2, R3])
    planned = work.deploy(fqdn, str(archive), do_apply=False)
    # keep_releases 3: R3 is removed and does not count; the new one, R2 and R1 are kept.
    assert planned.prune == [FIRST_RELEASE, R3]
    assert work.rollback(fqdn, do_apply=False).target == R1
    # After a rollback to R1, the default target is the release that was live before it (R2), not
    # the one before by name.
    work._event("HST-1", "website_rolled_back", fqdn=fqdn, release=R1, previous=R2)
    live["layout"] = LiveLayout(home=True, public="link", public_target="current", current=R1,
                                releases=[FIRST_RELEASE, R1, R2, R3])
    assert work.rollback(fqdn, do_apply=False).target == R2


def test_a_failed_rollback_switches_back_and_records_it(office, monkeypatch):
    config, store, fqdn, live, calls, archive = office
    live["layout"] = LiveLayout(home=True, public="link", public_target="current", current=R3,
                                releases=[R1, R2, R3])

    def unhealthy(self, site, path, expect):
        raise HostError(f"{site.fqdn}: the health check failed: status 502")

    monkeypatch.setattr(Website, "_health", unhealthy)
    monkeypatch.setattr(Website, "_answers", lambda self, site, path: 200)
    with pytest.raises(HostError, match="status 502"):
        Website(config, store, actor="t").rollback(fqdn)
    assert [(c["website_release__action"], c["website_release__release"]) for c in calls] == \
        [("switch", R2), ("switch", R3)]
    failed = [e for e in records.site_show(store, fqdn)["history"] if e["kind"] == "website_deploy_failed"]
    assert failed[-1]["payload"]["action"] == "rollback"
    assert failed[-1]["payload"]["switched_back"] == {"release": R3, "status": 200}


def test_a_shared_path_through_a_link_of_the_release_is_refused(office, tmp_path):
    from provisioner.errors import ValidationError

    config, store, fqdn, live, calls, archive = office
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as out:
        for name, target in (("storage", "elsewhere"),):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            out.addfile(info)
        info = tarfile.TarInfo(".shared")
        info.size = len(b"storage/app\n")
        out.addfile(info, io.BytesIO(b"storage/app\n"))
    with pytest.raises(ValidationError, match="storage is a symlink in the release"):
        Website(config, store, actor="t").deploy(fqdn, str(bad), do_apply=False)


def test_a_release_the_switch_back_may_have_left_live_is_kept(office, monkeypatch):
    config, store, fqdn, live, calls, archive = office
    live["layout"] = LiveLayout(home=True, public="link", public_target="current", current=R2, releases=[R1, R2])
    monkeypatch.setattr(deploy_module.ssh, "run", lambda *a, **k: (0, f"{'b' * 64}  f\n10\n", ""))

    def down(self, *args):
        raise HostError("no answer")

    monkeypatch.setattr(Website, "_health", down)
    monkeypatch.setattr(Website, "_answers", down)
    with pytest.raises(HostError, match="no answer"):
        Website(config, store, actor="t").deploy(fqdn, str(archive))
    assert [c["website_release__action"] for c in calls] == ["stage", "switch", "switch"]
    (failed,) = [e for e in records.site_show(store, fqdn)["history"] if e["kind"] == "website_deploy_failed"]
    assert failed["payload"]["switched_back"]["error"] == "no answer"
    assert failed["payload"]["removed"]["removed"] is False
