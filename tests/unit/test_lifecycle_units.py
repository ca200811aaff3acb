"""Lifecycle pieces without hosts: states refused, reruns that are no-ops, the suspended vhost, archive checks."""

import gzip
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
    assert "Redirect permanent / https://simkes.tarakankota.go.id/" in suspended
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
