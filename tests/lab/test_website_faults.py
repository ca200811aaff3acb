"""Website deploys that break midway, against the real lab: the live site stays whole.

One PHP site with a database and TLS, shared by the module's tests (in order):
a first deploy, a deploy while MariaDB is stopped on the database host (the
backup fails, nothing is switched, a rerun deploys), and a deploy whose
`provision` process is killed with SIGKILL while it stages the release (the
stale lock is taken over, `current` stays on a whole release, a rerun cleans
the leftovers up).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from provisioner.errors import HostError
from provisioner.store.models import Lock

from test_website_deploy import _get, _site_files, _tar, site  # noqa: F401 - `site` is the module fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _served(site) -> str:
    response = _get(site, "/")
    assert response.status == 200, response.status
    return response.data.decode().splitlines()[0]


def _current(web, site) -> str:
    return web.check_output(f"readlink {site.home}/current")


def _leftovers(web, site) -> list[str]:
    """The dot entries a stopped deploy leaves in releases/ (.<id>.tar, .<id>.partial)."""
    names = web.check_output(f"ls -1A {site.home}/releases").split()
    return [n for n in names if n.startswith(".")]


def test_a_first_deploy(site, lab_host):
    result = site.website.deploy(site.fqdn, _tar(site.work / "satu.tar.gz", _site_files("rilis-satu")),
                                 health="/healthz.txt")
    assert result.payload["backup"]["path"].endswith(f"-{result.payload['release']}.sql")
    assert _served(site) == "rilis-satu"
    site.first = result.payload["release"]


def test_a_stopped_database_fails_the_backup_and_switches_nothing(site, lab_host):
    web, db = lab_host(site.web_host), lab_host(site.db_host)
    before = _current(web, site)
    archive = _tar(site.work / "tanpa-db.tar.gz", _site_files("rilis-tanpa-db"))
    failed_before = len(site.office.events("website_deploy_failed"))
    db.run("service mariadb stop")
    try:
        assert not db.run("mysqladmin ping").succeeded
        with pytest.raises(HostError, match="database backup of .* failed") as err:
            site.website.deploy(site.fqdn, archive, health="/healthz.txt")
        assert "nothing was switched" in str(err.value)
        assert _current(web, site) == before
        assert _served(site) == "rilis-satu"
        assert _leftovers(web, site) == []
        # The failed dump leaves no half-written file next to the good backups.
        assert ".part" not in db.check_output(f"ls -1A /var/backups/provisioner/{site.fqdn}")
        failed = site.office.events("website_deploy_failed")[failed_before:]
        (event,) = [e for e in failed if e.payload["fqdn"] == site.fqdn]
        assert "database backup" in event.payload["reason"] and event.payload["switched_back"] is None
        assert event.payload["backup"] is None and event.payload["health"]["status"] is None
        # The staged release was never live: it is removed, not left to become a rollback target.
        assert event.payload["removed"] == {"release": event.payload["release"], "removed": True}
        assert not web.file(f"{site.home}/releases/{event.payload['release']}").exists
    finally:
        db.run("service mariadb start")
    deadline = time.monotonic() + 60
    while not db.run("mysqladmin ping").succeeded:
        assert time.monotonic() < deadline, "mariadb did not come back"
        time.sleep(0.5)
    result = site.website.deploy(site.fqdn, archive, health="/healthz.txt")
    assert _served(site) == "rilis-tanpa-db"
    assert _current(web, site) == f"releases/{result.payload['release']}"
    assert db.check_output(f"sha256sum {result.payload['backup']['path']}").split()[0] == \
        result.payload["backup"]["sha256"]
    assert _leftovers(web, site) == []


def test_a_deploy_killed_while_staging_leaves_a_whole_release_live(site, lab_host):
    web = lab_host(site.web_host)
    before = _current(web, site)
    marker_before = _served(site)
    # Enough incompressible bytes that staging (copy, then extraction) takes a moment.
    files = _site_files("rilis-terbunuh") | {f"media/{i}.bin": os.urandom(1024 * 1024) for i in range(24)}
    archive = _tar(site.work / "terbunuh.tar.gz", files)
    env = dict(os.environ, PYTHONPATH=ROOT)
    # Its own session, so the kill reaches the ansible run it starts too, as a crash of the controller would.
    proc = subprocess.Popen([sys.executable, "-m", "provisioner.cli", "website", "deploy", site.fqdn,
                             "--source", archive, "--health", "/healthz.txt", "--apply"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Staging has started once a dot entry (.<id>.tar, then .<id>.partial) appears in releases/.
        seen = web.run(f"timeout 120 sh -c 'until ls -1A {site.home}/releases | grep -q \"^\\.\"; "
                       f"do sleep 0.02; done; ls -1A {site.home}/releases'")
        assert seen.rc == 0, (seen.stdout, proc.poll())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # The killed process still holds the site's lock in the records; no command is needed to free it.
    with site.office.store.session() as session:
        lock = session.get(Lock, f"site:{site.fqdn}")
        assert lock is not None and lock.holder.split(":")[1] == str(proc.pid)
    # A remote step that outlived its controller may finish; wait until the site user runs nothing.
    user = site.record["sftp_user"]
    deadline = time.monotonic() + 60
    while web.run(f"pgrep -u {user} -x tar").rc == 0:
        assert time.monotonic() < deadline, "the killed deploy's extraction still runs"
        time.sleep(0.5)
    current = _current(web, site)
    release = current.split("/", 1)[1]
    assert web.file(f"{site.home}/{current}").is_directory and not release.startswith(".")
    assert web.file(f"{site.home}/{current}/index.php").exists
    served = _served(site)
    # Killed while staging, it never reached the switch; either way the live release is a whole one.
    assert (current, served) == (before, marker_before) or served == "rilis-terbunuh", (current, served)

    # The killed holder's lock is stale (its process is gone): the rerun takes it over.
    result = site.website.deploy(site.fqdn, archive, health="/healthz.txt")
    assert _served(site) == "rilis-terbunuh"
    assert _current(web, site) == f"releases/{result.payload['release']}"
    assert _leftovers(web, site) == []
    shown = site.website.releases(site.fqdn)
    assert shown["leftovers"] == [] and shown["current"] == result.payload["release"]
    with site.office.store.session() as session:
        assert session.get(Lock, f"site:{site.fqdn}") is None
    # What the killed deploy staged was never live: a rollback goes back to the release that was.
    if current == before:
        assert site.website.rollback(site.fqdn, do_apply=False).target == release
