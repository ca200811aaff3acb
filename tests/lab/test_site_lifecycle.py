"""Records, usage and maintenance against the real lab: traffic counted, suspend, unsuspend, remove.

Each test provisions sites of its own (fresh ids and labels from the shipped
examples) in its own state home, and removes what is left afterwards.
"""

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import paramiko
import pytest
import urllib3
from click.testing import CliRunner

from provisioner import credentials, usage
from provisioner.cli import main
from provisioner.errors import StateError
from provisioner.inventory import load_inventory
from provisioner.lab import guard
from provisioner.placement import Placement
from provisioner.store.models import IPAllocation

BIG = 3 * 1024 * 1024  # one upload, larger than the 2 MB quota below




def _provision(office, example: str, **site) -> dict:
    request_id = office.through_review(example, **site)
    office.approve_without_hook(request_id)
    (record,) = office.hosting.apply([request_id]).sites
    return record


def _https(office, record: dict, path: str = "/"):
    """GET over HTTPS at the site's IP with its name, verified against the lab CA."""
    guard.require_lab_route(record["public_ip"])
    pool = urllib3.HTTPSConnectionPool(record["public_ip"], 443, timeout=10, retries=False,
                                       server_hostname=record["fqdn"], assert_hostname=record["fqdn"],
                                       cert_reqs="CERT_REQUIRED", ca_certs=office.hosting.ca_file())
    return pool.request("GET", path, headers={"Host": record["fqdn"]}, redirect=False)


def _http(record: dict, path: str = "/"):
    guard.require_lab_route(record["public_ip"])
    pool = urllib3.HTTPConnectionPool(record["public_ip"], 80, timeout=10, retries=False)
    return pool.request("GET", path, headers={"Host": record["fqdn"]}, redirect=False)


def _sftp_upload(record: dict, password: str, name: str, data: bytes) -> None:
    guard.require_lab_route(record["public_ip"])
    transport = paramiko.Transport(socket.create_connection((record["public_ip"], 22), timeout=10))
    try:
        transport.start_client(timeout=10)
        transport.auth_password(record["sftp_user"], password)
        sftp = paramiko.SFTPClient.from_transport(transport)
        with sftp.open(f"/public/{name}", "wb") as out:
            out.write(data)
    finally:
        transport.close()


def _cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _a_records(ns: str, fqdn: str) -> list[str]:
    guard.require_lab_route(ns)
    answer = dns.query.udp(dns.message.make_query(fqdn, dns.rdatatype.A), ns, timeout=3)
    return [r.address for rrset in answer.answer for r in rrset if rrset.rdtype == dns.rdatatype.A]


def test_usage_counts_real_traffic_then_suspend_unsuspend_and_remove(office, lab_host):
    record = _provision(office, "tarakan-simkes.yaml", quota_mb="2")
    fqdn, names = record["fqdn"], record["names"]
    row = office.site(fqdn)
    web, db = lab_host(row.web_host), lab_host(row.db_host)

    # Real traffic: an upload over SFTP (disk), then requests over http (redirects) and https (pages, bytes).
    password = credentials.get(office.store, office.hosting.box, fqdn)["sftp"]
    _sftp_upload(record, password, "big.bin", bytes(range(256)) * (BIG // 256))
    for _ in range(5):
        assert _http(record).status == 301
    for _ in range(10):
        assert _https(office, record).status == 200
    for _ in range(3):
        response = _https(office, record, "/big.bin")
        assert response.status == 200 and len(response.data) == BIG
    assert _https(office, record, "/missing").status == 404
    db.check_output(f"mysql {record['db_name']} -e "
                    "\"CREATE TABLE laporan (id INT PRIMARY KEY, isi VARCHAR(40)); "
                    "INSERT INTO laporan VALUES (1, 'arsip-uji-lifecycle')\"")

    report = usage.collect(office.config, office.store, usage.parse_month(None))
    (mine,) = [s for s in report.sites if s.fqdn == fqdn]
    assert mine.requests >= 19  # 5 + 10 + 3 + 1, plus the checks of the apply itself
    assert mine.bytes_served >= 3 * BIG
    assert mine.status.get("3xx", 0) >= 5 and mine.status.get("4xx", 0) >= 1
    assert mine.disk_bytes >= BIG and mine.over_quota and mine.quota_used_percent > 100
    assert mine.db_bytes > 0
    written = usage.write(office.config, office.store, report)
    pdf_text = subprocess.run(["pdftotext", "-layout", written[0]["pdf"], "-"], capture_output=True, text=True,
                              check=True).stdout
    assert "LAPORAN PENGGUNAAN HOSTING" in pdf_text and fqdn in pdf_text and "Melebihi kuota" in pdf_text
    # The measured bytes stay on the record, and placement weighs the site's hosts with them.
    kept = office.site(fqdn)
    assert kept.disk_bytes == mine.disk_bytes and kept.db_bytes == mine.db_bytes and kept.usage_measured_at
    placement = Placement(office.store, load_inventory(office.config.hosting.inventory))
    assert placement.load("web")[kept.web_host].bytes >= BIG and placement.load("db")[kept.db_host].bytes > 0
    code, out = _cli("report", "usage", "--json")
    assert code == 0 and any(s["fqdn"] == fqdn and s["over_quota"] for s in json.loads(out)["sites"])

    # Suspend: the plan first (nothing changes), then exactly that; 503 from outside; a rerun is a no-op.
    code, out = _cli("site", "suspend", fqdn, "--reason", "Melebihi kuota penyimpanan")
    assert code == 0 and "Update web" in out and "R=503" in out and "dry run" in out
    assert _https(office, record).status == 200
    checksum = out.rsplit("--checksum ", 1)[1].split()[0]
    code, out = _cli("site", "suspend", fqdn, "--reason", "Melebihi kuota penyimpanan", "--apply",
                     "--checksum", checksum, "--by", "kabid")
    assert code == 0, out
    assert _https(office, record).status == 503
    assert office.site(fqdn).state == "suspended" and office.site(fqdn).reason == "Melebihi kuota penyimpanan"
    code, out = _cli("site", "suspend", fqdn, "--reason", "lagi", "--apply")
    assert code == 0 and "already suspended" in out
    assert len(office.events("site_suspended")) == 1
    # A rerun of hosting must not quietly bring a suspended site back.
    with pytest.raises(StateError, match="suspended"):
        office.hosting.apply([record["request_id"]])
    assert _https(office, record).status == 503

    code, out = _cli("site", "unsuspend", fqdn, "--apply", "--by", "kabid")
    assert code == 0, out
    response = _https(office, record)
    assert response.status == 200 and b"provisioner placeholder" in response.data
    code, out = _cli("site", "unsuspend", fqdn, "--apply")
    assert code == 0 and "not suspended" in out

    # Remove: archive first, then DNS, vhost, pool, users, database; the record stays.
    code, out = _cli("site", "remove", fqdn)
    assert code == 0 and f"Backup {row.db_host}" in out and "Delete dns" in out, out
    assert web.user(names["user"]).exists
    code, out = _cli("site", "remove", fqdn, "--reason", "Permohonan penutupan dari OPD", "--apply", "--by", "kabid")
    assert code == 0, out
    (archived,) = office.events("site_archived")
    archive = Path(archived.payload["path"])
    assert archive.stat().st_mode & 0o777 == 0o700
    sums = dict(reversed(line.split("  ")) for line in (archive / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {f"database-{record['db_name']}.sql", f"files-{fqdn}.tar.gz"}
    for name, digest in sums.items():
        assert (archive / name).stat().st_mode & 0o777 == 0o600
        assert hashlib.sha256((archive / name).read_bytes()).hexdigest() == digest
    dump = (archive / f"database-{record['db_name']}.sql").read_text()
    assert "CREATE TABLE `laporan`" in dump and "arsip-uji-lifecycle" in dump
    listing = subprocess.run(["tar", "-tzf", str(archive / f"files-{fqdn}.tar.gz")], capture_output=True,
                             text=True, check=True).stdout
    assert f"srv/www/{fqdn}/public/big.bin" in listing and f"var/log/apache2/sites/{fqdn}/access.log" in listing

    for ns in ("10.77.0.11", "10.77.0.12"):
        assert _a_records(ns, fqdn) == []
    assert not web.file(f"/etc/apache2/sites-available/{fqdn}.conf").exists
    assert not web.file(f"/etc/php/8.2/fpm/pool.d/{fqdn}.conf").exists
    assert not web.user(names["user"]).exists and not web.file(names["home"]).exists
    assert record["db_name"] not in db.check_output("mysql -N -e 'SHOW DATABASES'")
    assert record["db_user"] not in db.check_output("mysql -N -e 'SELECT User FROM mysql.user'")
    assert office.site(fqdn).state == "removed"

    code, out = _cli("site", "show", fqdn, "--json")
    shown = json.loads(out)
    assert shown["record"]["state"] == "removed"
    kinds = [e["kind"] for e in shown["history"]]
    for kind in ("site_provisioned", "site_suspended", "site_unsuspended", "site_archived", "site_removed"):
        assert kind in kinds
    removed = next(e for e in shown["history"] if e["kind"] == "site_removed")
    assert removed["actor"] == "kabid" and removed["payload"]["reason"] == "Permohonan penutupan dari OPD"
    assert removed["payload"]["archive"] == str(archive) and removed["payload"]["sop_record"] == "maintenance"
    code, out = _cli("site", "remove", fqdn, "--apply")
    assert code == 0 and "already removed" in out
    code, out = _cli("site", "list", "--state", "removed", "--json")
    assert [s["fqdn"] for s in json.loads(out)] == [fqdn]


def test_removing_a_site_with_a_dedicated_ip_releases_it(office, lab_host):
    record = _provision(office, "buleleng-sipandu.yaml")
    fqdn, address = record["fqdn"], record["public_ip"]
    web = lab_host(office.site(fqdn).web_host)
    assert f"{address}/" in web.check_output("ip -o -4 addr show dev eth0")
    code, out = _cli("site", "remove", fqdn, "--reason", "Layanan dihentikan", "--apply")
    assert code == 0, out
    assert "database" not in out.split("archive:")[1]  # no database to dump, only files
    assert f"{address}/" not in web.check_output("ip -o -4 addr show dev eth0")
    with office.store.session() as session:
        assert session.get(IPAllocation, address) is None
    for ns in ("10.77.0.11", "10.77.0.12"):
        assert _a_records(ns, fqdn) == []
    out_file = office.home / "ip.csv"
    code, _ = _cli("site", "export", "--records", "ip", "--out", str(out_file))
    assert code == 0
    line = next(line for line in out_file.read_text(encoding="utf-8-sig").splitlines() if line.startswith(fqdn))
    assert f",{address},dedicated,no," in line and ",removed," in line
