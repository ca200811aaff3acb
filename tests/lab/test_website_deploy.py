"""Website deploys against the real lab: releases, a git ref, rollback, a failed health check, unsafe archives.

One PHP site with a database and TLS, shared by the module's tests (in order):
an archive deploy (the first one converts the placeholder public/ into a
release), an update from a git tag with a command, `releases`, a rollback, a
deploy whose health check fails and is switched back, and every kind of unsafe
archive refused with the live site untouched.
"""

import io
import json
import os
import re
import secrets
import stat
import subprocess
import tarfile
import zipfile
from types import SimpleNamespace

import pytest
import urllib3
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.errors import HostError, ValidationError
from provisioner.lab import guard, topology
from provisioner.website.deploy import Website
from provisioner.sop.spawn import linked_child
from provisioner.website.layout import FIRST_RELEASE

from labkit import EXAMPLES, HUMAN_STEPS

INDEX_PHP = (b"<?php\nheader('Content-Type: text/plain');\n"
             b"echo trim(file_get_contents(__DIR__ . '/.release-marker')), \"\\n\";\n"
             b"echo 'basedir=', ini_get('open_basedir'), \"\\n\";\n"
             b"echo 'file=', realpath(__FILE__), \"\\n\";\n"
             b"@mkdir(__DIR__ . '/uploads/berkas');\n"
             b"echo 'shared=', file_put_contents(__DIR__ . '/uploads/berkas/tulis.txt', 'ok') ? 'ok' : 'no', \"\\n\";\n")


def _tar(path, files: dict) -> str:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return str(path)


def _site_files(marker: str) -> dict:
    """A PHP site whose index and health file show its release marker."""
    return {"index.php": INDEX_PHP, ".release-marker": marker.encode() + b"\n", "healthz.txt": marker.encode(),
            ".shared": b"uploads\n", "css/site.css": b"body{}"}


def _get(site, path: str = "/"):
    record = site.record
    guard.require_lab_route(record["public_ip"])
    pool = urllib3.HTTPSConnectionPool(record["public_ip"], 443, timeout=10, retries=False,
                                       server_hostname=record["fqdn"], assert_hostname=record["fqdn"],
                                       cert_reqs="CERT_REQUIRED", ca_certs=site.office.hosting.ca_file())
    return pool.request("GET", path, headers={"Host": record["fqdn"]}, redirect=False)


def _cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _releases_on_host(web, home: str) -> str:
    return web.check_output(f"ls -1a {home}/releases")


@pytest.fixture(scope="module")
def site(module_office, tmp_path_factory, lab_host):
    """One PHP site with a database and TLS; its database backups are removed with it."""
    office = module_office
    request_id = office.through_review("tarakan-simkes.yaml")
    office.approve_without_hook(request_id)
    (record,) = office.hosting.apply([request_id]).sites
    made = SimpleNamespace(office=office, record=record, fqdn=record["fqdn"], home=f"/srv/www/{record['fqdn']}",
                           work=tmp_path_factory.mktemp("konten"), website=Website(office.config, office.store,
                                                                                   actor="operator"),
                           fqdns=[record["fqdn"]],
                           # The servers placement gave the site (its record says which).
                           web_host=record["web_host"], db_host=record["db_host"])
    yield made
    # The module's sites may be on either database server: their deploy backups go from each.
    for db in (h.name for h in topology.hosts_of("db")):
        for fqdn in made.fqdns:
            lab_host(db).run(f"rm -rf -- /var/backups/provisioner/{fqdn}")


def test_an_archive_deploy_converts_public_and_serves_php_from_the_release(site, lab_host):
    web = lab_host(site.web_host)
    archive = _tar(site.work / "rilis-1.tar.gz", _site_files("rilis-satu"))
    code, out = _cli("website", "deploy", site.fqdn, "--source", archive, "--health", "/healthz.txt")
    assert code == 0, out
    assert f"public/ becomes release {FIRST_RELEASE}" in out and f"backup    {site.db_host}: mysqldump" in out
    checksum = out.rsplit("--checksum ", 1)[1].split()[0]
    code, out = _cli("website", "deploy", site.fqdn, "--source", archive, "--health", "/healthz.txt",
                     "--apply", "--checksum", checksum, "--by", "operator")
    assert code == 0, out
    body = _get(site).data.decode()
    assert body.splitlines()[0] == "rilis-satu"
    # PHP runs from the release, inside open_basedir (the home), and writes through the shared link.
    assert f"basedir={site.home}/" in body and f"file={site.home}/releases/" in body and "shared=ok" in body
    user = site.record["sftp_user"]
    assert web.file(f"{site.home}/public").is_symlink and web.file(f"{site.home}/current").is_symlink
    assert web.check_output(f"readlink {site.home}/public") == "current"
    assert web.check_output(f"stat -c %U {site.home}/current") == user
    assert web.check_output(f"stat -c %U {site.home}/public") == user
    release = web.check_output(f"readlink {site.home}/current").split("/")[1]
    assert web.check_output(f"stat -c '%U %a' {site.home}/releases/{release}/index.php") == f"{user} 640"
    assert web.check_output(f"stat -c '%U %a' {site.home}/releases/{release}/css") == f"{user} 750"
    assert web.check_output(f"readlink {site.home}/releases/{release}/uploads") == "../../shared/uploads"
    assert web.file(f"{site.home}/shared/uploads/berkas/tulis.txt").exists
    # The placeholder that was public/ is the first release, kept as it was.
    assert web.file(f"{site.home}/releases/{FIRST_RELEASE}/index.html").contains("provisioner placeholder")
    (event,) = [e for e in site.office.events("website_deployed") if e.payload["fqdn"] == site.fqdn]
    backup = event.payload["backup"]
    db = lab_host(site.db_host)
    assert db.check_output(f"stat -c '%U %a' {backup['path']}") == "root 600"
    assert db.check_output(f"sha256sum {backup['path']}").split()[0] == backup["sha256"]
    assert db.check_output(f"stat -c '%U %a' /var/backups/provisioner/{site.fqdn}") == "root 700"
    assert event.payload["health"]["status"] == 200 and event.payload["health"]["marker"] == "rilis-satu"
    site.first = release


def test_an_update_from_a_git_tag_runs_the_command_then_releases_and_rollback(site, lab_host):
    web = lab_host(site.web_host)
    repo = site.work / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "Dinkes", "GIT_AUTHOR_EMAIL": "web@dinkes.tarakankota.go.id",
           "GIT_COMMITTER_NAME": "Dinkes", "GIT_COMMITTER_EMAIL": "web@dinkes.tarakankota.go.id",
           "PATH": os.environ["PATH"], "HOME": str(site.work)}

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                              env=env).stdout.strip()

    git("init", "-q", "-b", "main")
    for name, data in _site_files("rilis-dua").items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    git("add", ".")
    git("commit", "-qm", "rilis dua")
    git("tag", "v2.0")
    commit = git("rev-parse", "HEAD")
    (repo / ".release-marker").write_text("belum-dirilis\n")
    git("commit", "-qam", "after the tag")  # main moves on; the tag is what is deployed

    result = site.website.deploy(site.fqdn, f"{repo}@v2.0", run="echo migrasi > migrasi.txt && id -un",
                                 health="/healthz.txt")
    assert result.payload["commit"] == commit and result.payload["ref"] == "v2.0"
    assert result.payload["command_output"].strip() == site.record["sftp_user"]
    assert _get(site).data.decode().splitlines()[0] == "rilis-dua"
    second = result.payload["release"]
    assert web.file(f"{site.home}/releases/{second}/migrasi.txt").user == site.record["sftp_user"]

    code, out = _cli("website", "releases", site.fqdn, "--json")
    assert code == 0, out
    shown = json.loads(out)
    ids = [r["release"] for r in shown["releases"]]
    assert ids == [FIRST_RELEASE, site.first, second] and shown["current"] == second
    assert {r["release"]: r["commit"] for r in shown["releases"]}[second] == commit

    code, out = _cli("website", "rollback", site.fqdn)
    assert code == 0 and f"current {second} -> {site.first}" in out
    checksum = out.rsplit("--checksum ", 1)[1].split()[0]
    code, out = _cli("website", "rollback", site.fqdn, "--apply", "--checksum", checksum)
    assert code == 0, out
    assert _get(site).data.decode().splitlines()[0] == "rilis-satu"
    code, out = _cli("site", "show", site.fqdn, "--json")
    record = json.loads(out)["record"]
    assert record["release"] == site.first and record["release_result"] == "rolled back"
    site.second = second


def test_a_failed_health_check_is_switched_back(site, lab_host):
    web = lab_host(site.web_host)
    before = web.check_output(f"readlink {site.home}/current")
    archive = _tar(site.work / "rusak.tar.gz", _site_files("rilis-rusak") | {"index.php": b"<?php http_response_code(500);"})
    # A short health timeout: the release answers 500 however long it is asked.
    config = site.office.config
    quick = config.model_copy(update={"website": config.website.model_copy(update={"health_timeout": 5})})
    with pytest.raises(HostError, match="health check"):
        Website(quick, site.office.store, actor="operator").deploy(site.fqdn, archive)
    assert web.check_output(f"readlink {site.home}/current") == before
    assert _get(site).data.decode().splitlines()[0] == "rilis-satu"
    (failed,) = [e for e in site.office.events("website_deploy_failed") if e.payload["fqdn"] == site.fqdn]
    assert failed.payload["switched_back"]["release"] == before.split("/")[1]
    assert "status 500" in failed.payload["reason"]


def _malicious(work) -> dict:
    """Every kind of unsafe archive, each with an innocent index next to the bad member."""
    made = {}

    def tar(name, info, data=b""):
        path = work / f"{name}.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            good = tarfile.TarInfo("index.php")
            good.size = 3
            archive.addfile(good, io.BytesIO(b"ok\n"))
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if data else None)
        made[name] = str(path)

    def member(name, kind=tarfile.REGTYPE, mode=0o644, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname = kind, mode, link
        return info

    tar("traversal", member("../../evil.php"), b"x")
    tar("absolute", member("/etc/cron.d/evil"), b"x")
    tar("symlink", member("etc", tarfile.SYMTYPE, 0o777, "../../../../etc"))
    tar("hardlink", member("shadow", tarfile.LNKTYPE, 0o644, "/etc/shadow"))
    tar("device", member("null", tarfile.CHRTYPE, 0o666))
    tar("fifo", member("pipe", tarfile.FIFOTYPE))
    tar("setuid", member("tool", mode=0o4755), b"x")
    tar("setgid", member("tool", mode=0o2755), b"x")
    path = work / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("index.php", b"ok")
        archive.writestr("zeros.bin", b"\0" * (8 * 1024 * 1024))
    made["zip bomb"] = str(path)
    with tarfile.open(work / "tarbomb.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 8 * 1024 * 1024
        archive.addfile(info, io.BytesIO(b"\0" * info.size))
    made["tar bomb"] = str(work / "tarbomb.tar.gz")
    path = work / "banyak.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(20001):
            archive.writestr(f"f/{index}.txt", b"")
    made["too many files"] = str(path)
    path = work / "symlink.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("passwd")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    made["zip symlink"] = str(path)
    return made


RULES = {
    "traversal": "../../evil.php: path leaves the directory", "absolute": "/etc/cron.d/evil: absolute path",
    "symlink": "etc: symlink points outside", "hardlink": "shadow: hard link points outside",
    "device": "null: device file", "fifo": "pipe: FIFO", "setuid": "tool: setuid or setgid bit",
    "setgid": "tool: setuid or setgid bit", "zip bomb": "zeros.bin: compression ratio",
    "tar bomb": "a decompression bomb", "too many files": "more than 20000 files",
    "zip symlink": "passwd: symlink points outside",
}


def test_every_unsafe_archive_is_refused_and_the_live_site_is_untouched(site, lab_host):
    web = lab_host(site.web_host)
    before = (_releases_on_host(web, site.home), web.check_output(f"readlink {site.home}/current"))
    failed_before = len(site.office.events("website_deploy_failed"))
    for kind, archive in _malicious(site.work).items():
        with pytest.raises(ValidationError) as err:
            site.website.deploy(site.fqdn, archive)
        assert RULES[kind] in str(err.value), (kind, str(err.value))
    assert (_releases_on_host(web, site.home), web.check_output(f"readlink {site.home}/current")) == before
    assert not web.file("/srv/www/evil.php").exists and not web.file("/etc/cron.d/evil").exists
    assert _get(site).data.decode().splitlines()[0] == "rilis-satu"
    # Refused before anything reached a host: no deploy was started, so none failed.
    assert len(site.office.events("website_deploy_failed")) == failed_before
    code, out = _cli("website", "deploy", site.fqdn, "--source", str(site.work / "traversal.tar.gz"), "--apply")
    assert code == 2 and "../../evil.php: path leaves the directory" in out


def test_a_website_request_for_a_new_name_runs_through_its_sop_to_a_live_site(site, lab_host):
    """Step 9 spawns the hosting request and waits; the hosting SOP provisions; the content goes live."""
    office, engine = site.office, site.office.engine
    archive = _tar(site.work / "sop.tar.gz", _site_files("rilis-sop"))
    # A request's local source must be under website.source_roots (checked at submit and at step 9).
    config = engine.config
    engine.config = config.model_copy(update={"website": config.website.model_copy(
        update={"source_roots": [str(site.work)]})})
    label, request_id = f"w{secrets.token_hex(4)}", f"WEB-2024-{secrets.randbelow(10000):04d}"
    text = (EXAMPLES / "tarakan-website-dinkes.yaml").read_text()
    text = re.sub(r"(?m)^id: .*$", f"id: {request_id}", text)
    text = re.sub(r"(?m)^  subdomain: .*$", f"  subdomain: {label}", text)
    text = re.sub(r"(?m)^  source: .*$", f"  source: {archive}", text)
    path = site.work / f"{request_id}.yaml"
    path.write_text(text)
    engine.submit(path.read_bytes(), str(path))
    for step, role in HUMAN_STEPS:
        engine.record_step(request_id, step, role)
    engine.decide(request_id, True, "bidang_aplikasi")
    engine.record_step(request_id, "cek_website", "bidang_aplikasi")
    engine.record_step(request_id, "analisa", "bidang_aplikasi")
    engine.record_step(request_id, "pembuatan", "bidang_aplikasi")
    child = linked_child(office.store, request_id)
    assert child is not None
    fqdn = f"{label}.tarakankota.go.id"
    site.fqdns.append(fqdn)
    assert office.site(fqdn) is None  # waiting for its hosting
    for step, role in HUMAN_STEPS:
        engine.record_step(child, step, role)
    engine.decide(child, True, "kadis")  # provisions, then resumes the website request's step 9
    assert office.site(fqdn).state == "provisioned"
    (deployed,) = [e for e in office.events("website_deployed") if e.payload["fqdn"] == fqdn]
    assert deployed.request_id == request_id and deployed.payload["health"]["marker"] == "rilis-sop"
    record = office.site(fqdn)
    served = SimpleNamespace(record={"fqdn": fqdn, "public_ip": record.public_ip}, office=office)
    assert _get(served).data.decode().splitlines()[0] == "rilis-sop"
    engine.config = config  # only request sources differ; the module's other tests use the CLI
