"""Backups against the real lab: restic on the controller, the repository on backup1 over SFTP.

Three sites of one office, shared by the module's tests (in order): A (PHP, database) with
content and a row, B (no database) and C (PHP, database), C being the new name a copy of A
is restored into. The module's repositories live in their own directory on backup1
(/srv/restic/test-<random>/<office>), removed at the end. Each test says which point of
the issue's "Done when" it proves; retention on snapshots with given dates is
tests/unit/test_backup.py (a local repository: it needs 21 snapshots, too slow over SFTP).
"""

import json
import secrets
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import urllib3
from click.testing import CliRunner

from provisioner.backup import records
from provisioner.backup.run import Backups
from provisioner.cli import main
from provisioner.config import load_config
from provisioner.lab import guard
from provisioner.store.models import SiteRow

BACKUP = "backup1"


def _cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _checksum(out: str) -> str:
    return out.rsplit("--checksum ", 1)[1].split()[0]


def _page(office, record) -> tuple[int, bytes]:
    guard.require_lab_route(record["public_ip"])
    pool = urllib3.HTTPSConnectionPool(record["public_ip"], 443, timeout=10, retries=False,
                                       server_hostname=record["fqdn"], assert_hostname=record["fqdn"],
                                       cert_reqs="CERT_REQUIRED", ca_certs=office.hosting.ca_file())
    response = pool.request("GET", "/", headers={"Host": record["fqdn"]}, redirect=False)
    return response.status, response.data


def _sql(lab_host, db_host: str, db: str, query: str) -> str:
    return lab_host(db_host).check_output(f"mysql -N -B {db} -e \"{query}\"")


@pytest.fixture(scope="module")
def lab(module_office, lab_host):
    office = module_office
    directory = f"/srv/restic/test-{secrets.token_hex(4)}"
    # The module's own repositories, and the whole of them read back by verify (they are small).
    (office.home / "provisioner.yaml").write_text(
        f"backup:\n  repository: sftp:restic@10.77.0.51:{directory}/{{office}}\n  read_data: all\n")
    ids = [office.through_review("tarakan-simkes.yaml"), office.through_review("tarakan-simkes.yaml", database="false"),
           office.through_review("tarakan-simkes.yaml")]
    for request_id in ids:
        office.approve_without_hook(request_id)
    records_ = {r["request_id"]: r for r in office.hosting.apply(ids).sites}
    a, b, c = (records_[i] for i in ids)
    content = f"<h1>Dinas Kesehatan {secrets.token_hex(6)}</h1>\n"
    home = f"/srv/www/{a['fqdn']}"
    web = lab_host(a["web_host"])
    web.check_output(f"runuser -u {a['sftp_user']} -- sh -c 'printf %s \"$0\" > {home}/public/index.html' "
                     f"'{content}'")
    # Incompressible bulk, so the first snapshot has a size to compare the second one with.
    web.check_output(f"runuser -u {a['sftp_user']} -- sh -c 'mkdir -p {home}/public/unduhan && "
                     f"head -c 24000000 /dev/urandom > {home}/public/unduhan/laporan.bin'")
    _sql(lab_host, a["db_host"], a["db_name"],
         "CREATE TABLE berita (id INT PRIMARY KEY, judul VARCHAR(100)); "
         "INSERT INTO berita VALUES (1, 'Rapat koordinasi'), (2, 'Posyandu')")
    config = load_config()
    made = SimpleNamespace(office=office, config=config, a=a, b=b, c=c, content=content, home=home,
                           directory=directory,
                           backups=Backups(config, office.store, hosting=office.hosting))
    yield made
    lab_host(BACKUP).run(f"rm -rf -- {directory}")


def test_a_site_backed_up_deleted_and_dropped_is_restored_and_served_again(lab, lab_host):
    a, office = lab.a, lab.office
    code, out = _cli("backup", "run", "--site", a["fqdn"])
    assert code == 0, out
    assert f"files  {a['web_host']}:{lab.home} (tar, nice/ionice)" in out and "mysqldump --single-transaction" in out
    code, out = _cli("backup", "run", "--site", a["fqdn"], "--apply", "--checksum", _checksum(out))
    assert code == 0 and f"ok      {a['fqdn']}: files" in out, out
    (first,) = [r for r in records.snapshots(office.store, a["fqdn"]) if r.kind == "files"]
    lab.first_added = first.bytes_added
    web = lab_host(a["web_host"])
    before = web.check_output(f"stat -c '%U:%G %a' {lab.home}/public/unduhan/laporan.bin {lab.home}/public")
    # Behind the toolkit's back: the files deleted, the database dropped.
    lab_host(a["web_host"]).check_output(f"rm -rf {lab.home}/public/index.html {lab.home}/public/unduhan")
    lab_host(a["db_host"]).check_output(f"mysql -e 'DROP DATABASE {a['db_name']}'")
    assert _page(office, a)[0] != 200 or _page(office, a)[1] != lab.content.encode()
    code, out = _cli("backup", "restore", a["fqdn"])
    assert code == 0 and "back up" in out and f"replaces database {a['db_name']}" in out, out
    code, out = _cli("backup", "restore", a["fqdn"], "--apply", "--checksum", _checksum(out))
    assert code == 0, out
    assert "undo: provision backup restore" in out and "rows per table as recorded" in out
    status, body = _page(office, a)
    assert status == 200 and body == lab.content.encode()
    assert _sql(lab_host, a["db_host"], a["db_name"], "SELECT judul FROM berita WHERE id = 1") == "Rapat koordinasi"
    assert web.check_output(f"stat -c '%U:%G %a' {lab.home}/public/unduhan/laporan.bin {lab.home}/public") == before
    assert lab_host(a["web_host"]).check_output(f"stat -c '%U:%G %a' {lab.home}") == f"root:{a['sftp_user']} 750"
    # The restore proved the snapshots, and the site's own DB account logs in.
    rows = [r for r in records.snapshots(office.store, a["fqdn"]) if r.run_id == first.run_id]
    assert all(r.verified_at for r in rows)
    (event,) = [e for e in office.events("backup_restored") if e.payload["fqdn"] == a["fqdn"]]
    assert event.payload["checks"]["db_login"] and event.payload["undo"]["files"]


def test_a_second_backup_after_a_small_change_adds_little(lab, lab_host):
    a = lab.a
    lab_host(a["web_host"]).check_output(
        f"runuser -u {a['sftp_user']} -- sh -c 'echo \"<p>Pembaruan</p>\" >> {lab.home}/public/index.html'")
    lab.content += "<p>Pembaruan</p>\n"
    result = lab.backups.run(a["fqdn"], apply=True)
    assert result.ok, result.as_dict()
    added = result.sites[0].snapshots["files"]["bytes_added"]
    print(f"\nfirst backup of {a['fqdn']}'s files added {lab.first_added} bytes; after a small change the "
          f"second added {added} bytes")
    # restic cuts the tar stream into chunks of 0.5-8 MiB (about 1 MiB on average) by content: the
    # change costs the chunk(s) around it, never the rest of the 24 MB.
    assert added * 6 < lab.first_added


def test_a_restore_into_a_new_name_serves_a_copy(lab, lab_host):
    a, c, office = lab.a, lab.c, lab.office
    code, out = _cli("backup", "restore", a["fqdn"], "--as", c["fqdn"])
    assert code == 0 and f"into {c['fqdn']}" in out and f"/srv/www/{c['fqdn']}" in out, out
    code, out = _cli("backup", "restore", a["fqdn"], "--as", c["fqdn"], "--apply", "--checksum", _checksum(out))
    assert code == 0, out
    status, body = _page(office, c)
    assert status == 200 and body == lab.content.encode()
    assert _sql(lab_host, c["db_host"], c["db_name"], "SELECT COUNT(*) FROM berita") == "2"
    owner = lab_host(c["web_host"]).check_output(f"stat -c %U /srv/www/{c['fqdn']}/public/index.html")
    assert owner == c["sftp_user"]
    # The original is untouched.
    assert _page(office, lab.a)[1] == lab.content.encode()


def test_the_audit_reports_stale_and_unverified_backups_until_run_and_verify(lab):
    b, office = lab.b, lab.office
    with office.store.session() as session:
        row = session.get(SiteRow, b["fqdn"])
        row.provisioned_at = row.provisioned_at - timedelta(days=2)  # live for two days already

    def backup_findings():
        _, out = _cli("audit", "--site", b["fqdn"], "--format", "json")
        return sorted(f["kind"] for f in json.loads(out)["findings"] if f["target"] == "backup")

    assert backup_findings() == ["backup-stale", "backup-unverified"]
    code, out = _cli("backup", "run", "--site", b["fqdn"], "--apply")
    assert code == 0, out
    assert backup_findings() == ["backup-unverified"]
    code, out = _cli("backup", "verify", "--site", b["fqdn"])
    assert code == 0 and f"ok  test restore {b['fqdn']}" in out, out
    assert backup_findings() == []


def test_a_stopped_database_fails_its_site_and_the_others_are_backed_up(lab, lab_host):
    a, b = lab.a, lab.b
    db = lab_host(a["db_host"])
    db.check_output("service mariadb stop")
    try:
        assert not db.run("mysqladmin ping").succeeded
        result = lab.backups.run(apply=True)
    finally:
        db.run("service mariadb start")
        deadline = time.monotonic() + 60
        while not db.run("mysqladmin ping").succeeded:
            assert time.monotonic() < deadline, "mariadb did not come back"
            time.sleep(0.5)
    outcome = {s.fqdn: s for s in result.sites}
    assert not result.ok and not outcome[a["fqdn"]].ok
    assert "mysqldump" in outcome[a["fqdn"]].error
    assert outcome[b["fqdn"]].ok and "files" in outcome[b["fqdn"]].snapshots
    assert "error" not in result.state
    code, out = _cli("backup", "list", a["fqdn"])
    assert code == 0 and "files" in out and "db" in out


def test_a_corrupted_pack_is_found_by_verify(lab, lab_host):
    backup = lab_host(BACKUP)
    repo = f"{lab.directory}/tarakan"
    pack = backup.check_output(f"find {repo}/data -type f -size +100k | head -n 1") or \
        backup.check_output(f"find {repo}/data -type f | head -n 1")
    backup.check_output(f"printf 'rusak-rusak-rusak' | dd of={pack} bs=1 seek=200 conv=notrunc status=none")
    code, out = _cli("backup", "verify", "--sample", "0")
    assert code != 0 and "FAILED  restic check" in out, out
    assert f"Pack ID does not match, want {pack.rsplit('/', 1)[1]}" in out
