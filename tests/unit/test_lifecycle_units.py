"""Lifecycle pieces without hosts: states refused, reruns that are no-ops, the suspended vhost, archive checks."""

import gzip
import subprocess
from pathlib import Path
import io
import tarfile
from dataclasses import replace

import pytest

from provisioner.config import Config, default_offices
from provisioner.errors import HostError, StateError
from provisioner.hosting import Hosting
from provisioner.lifecycle import Lifecycle, LifecyclePlan, _check_dump, _check_tar
from provisioner.naming import site_names
from provisioner.plan import Plan
from provisioner.site import DesiredSite
from provisioner.store import open_store
from test_records import add_site  # tests/unit is on the path (no package)


@pytest.fixture
def office(tmp_path):
    config = Config(offices=default_offices(), state_dir=tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield config, store
    store.close()


def test_only_provisioned_or_suspended_sites_are_suspended(office):
    config, store = office
    fqdn = add_site(store, "lama", state="removed")
    with pytest.raises(StateError, match="removed"):
        Lifecycle(config, store, actor="t").plan("suspend", fqdn)


def test_unsuspending_a_site_that_is_not_suspended_is_a_noop_without_hosts(office):
    config, store = office
    fqdn = add_site(store, "simkes")
    planned = Lifecycle(config, store, actor="t").plan("unsuspend", fqdn)
    assert planned.noop and "not suspended" in planned.render()
    result = Lifecycle(config, store, actor="t").unsuspend(fqdn)
    assert not result.changed and result.state == "provisioned"


def test_a_suspension_needs_a_reason(office):
    config, store = office
    with pytest.raises(StateError, match="reason"):
        Lifecycle(config, store, actor="t").suspend("x.tarakankota.go.id", "  ")


def test_hosting_refuses_to_apply_over_a_suspended_site(office):
    config, store = office
    fqdn = add_site(store, "arsip", state="suspended")
    work = Hosting(config, store)

    class Request:
        class site:  # noqa: N801 - stands in for a validated request's site
            pass

    Request.site.fqdn = fqdn
    work.load_requests = lambda ids: [Request]
    with pytest.raises(StateError, match="unsuspend"):
        work.apply(["HST"])


def _site(**changes) -> DesiredSite:
    names = site_names("simkes", "tarakankota.go.id")
    site = DesiredSite(request_id="HST-1", office="tarakan", label="simkes", zone="tarakankota.go.id", names=names,
                       web_host="web1", web_address="10.77.0.21", db_host="db1", public_ip="203.0.113.10",
                       dedicated_ip=False, php=True, php_version="8.2", database=True, tls=True, quota_mb=500,
                       bandwidth_kbps=0)
    return replace(site, **changes)


def test_the_suspended_vhost_answers_503_on_https_and_keeps_everything_else():
    normal, suspended = _site().vhost(), _site(suspended=True).vhost()
    assert "R=503" not in normal and suspended.count("R=503") == 1
    assert 'RedirectMatch permanent "^/(?!\\.well-known/acme-challenge/)(.*)$" ' \
           '"https://simkes.tarakankota.go.id/$1"' in suspended
    assert 'DocumentRoot "/srv/www/simkes.tarakankota.go.id/public"' in suspended


def test_a_removal_plan_lists_the_backups_before_the_changes():
    from provisioner.changes import Delete

    plan = Plan(changes=[Delete("dns", "tarakankota.go.id", "a.z", "A record", "a.z")], sites=["a.z"],
                order=("dns", "web", "db", "ip"))
    planned = LifecyclePlan("remove", "a.z", "provisioned", plan, backups=[
        {"kind": "database", "host": "db1", "source": "adb", "file": "database-adb.sql"}])
    text = planned.render()
    assert text.index("Backup db1") < text.index("Delete dns")
    assert planned.as_dict()["checksum"] == plan.checksum


def test_a_dump_without_its_trailer_is_refused(tmp_path):
    good = tmp_path / "good.sql"
    good.write_bytes(b"CREATE TABLE t (a int);\n-- Dump completed on 2026-11-22 14:00:00\n")
    _check_dump(good)
    cut = tmp_path / "cut.sql"
    cut.write_bytes(b"CREATE TABLE t (a int);\nINSERT INTO t VAL")
    with pytest.raises(HostError, match="incomplete"):
        _check_dump(cut)


def test_a_files_archive_must_hold_the_home(tmp_path):
    path = tmp_path / "files.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("srv/www/a.z")
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
        data = b"<h1>hi</h1>"
        info = tarfile.TarInfo("srv/www/a.z/public/index.html")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    _check_tar(path, "srv/www/a.z")
    with pytest.raises(HostError, match="does not hold"):
        _check_tar(path, "srv/www/b.z")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(gzip.compress(b"not a tar")[:10])
    with pytest.raises(HostError, match="cannot be read"):
        _check_tar(broken, "srv/www/a.z")


def test_backup_writes_private_files_with_sums_and_a_manifest(tmp_path, monkeypatch):
    import hashlib
    import json
    import os

    from provisioner import lifecycle

    site = _site()
    commands = []

    def fake_stream(host, command, path, ok_codes=(0,)):
        commands.append((host, command, ok_codes))
        if command.startswith("mysqldump"):
            data = b"CREATE TABLE `t` (a int);\n-- Dump completed on 2026-11-22\n"
        else:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                info = tarfile.TarInfo(site.names.home.lstrip("/"))
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            data = buffer.getvalue()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return hashlib.sha256(data).hexdigest(), len(data)

    class Inventory:
        def host(self, name):
            return name

    monkeypatch.setattr(lifecycle, "stream_to_file", fake_stream)
    backups = [{"kind": "database", "host": "db1", "source": site.names.db_name,
                "file": f"database-{site.names.db_name}.sql"},
               {"kind": "files", "host": "web1", "source": site.names.home, "file": f"files-{site.fqdn}.tar.gz"}]
    archive = lifecycle.backup(Inventory(), tmp_path / "archive", site, backups, actor="kabid", reason="tutup")
    directory = Path(archive["path"])
    assert directory.parent == tmp_path / "archive" and directory.name.startswith(site.fqdn + "-")
    assert (tmp_path / "archive").stat().st_mode & 0o777 == 0o700 and directory.stat().st_mode & 0o777 == 0o700
    for path in directory.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=directory, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["by"] == "kabid" and manifest["reason"] == "tutup" and len(manifest["files"]) == 2
    assert [c[0] for c in commands] == ["db1", "web1"]
    assert commands[0][1].endswith(f"--databases {site.names.db_name}")
    assert "srv/www/simkes.tarakankota.go.id var/log/apache2/sites/simkes.tarakankota.go.id" in commands[1][1]
