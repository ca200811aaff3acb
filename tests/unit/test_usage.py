"""Usage: the access-log parser, aggregation per site, the over-quota flag, CSV and the Indonesian PDF."""

import csv
import io
import shutil
import subprocess
from datetime import datetime, timezone

import pytest

from provisioner import usage
from provisioner.config import Config, default_offices
from provisioner.errors import UserError
from provisioner.store import open_store
from provisioner.store.models import Event, SiteRow
from provisioner.targets.usage_probe import WEB_USAGE, count_month, db_sizes
from test_records import add_site  # tests/unit is on the path (no package)

LOG = [
    '203.0.113.1 - - [21/Nov/2026:10:00:01 +0000] "GET / HTTP/1.1" 200 512 "-" "curl/8.0"',
    '203.0.113.1 - - [21/Nov/2026:10:00:02 +0000] "GET /big.bin HTTP/1.1" 200 1048576 "-" "python-requests"',
    '203.0.113.1 - - [21/Nov/2026:10:00:03 +0000] "GET / HTTP/1.1" 301 - "-" "curl/8.0"',
    '203.0.113.1 - - [21/Nov/2026:10:00:04 +0000] "GET /x HTTP/1.1" 503 299 "-" "a \\"quoted\\" agent"',
    '203.0.113.1 - - [31/Oct/2026:23:59:59 +0000] "GET / HTTP/1.1" 200 999 "-" "last month"',
    '203.0.113.1 - - [01/Nov/2025:00:00:00 +0000] "GET / HTTP/1.1" 200 999 "-" "a year ago"',
    'garbage line',
    '',
]


def test_count_month_reads_the_combined_format():
    counted = count_month(LOG, "2026-11")
    assert counted["requests"] == 4
    assert counted["bytes"] == 512 + 1048576 + 0 + 299
    assert counted["status"] == {"2xx": 2, "3xx": 1, "5xx": 1}
    assert counted["unparsed"] == 1
    assert count_month(LOG, "2026-10")["requests"] == 1


def test_the_probe_program_carries_the_parser_and_compiles():
    program = WEB_USAGE.replace("__COUNT__", __import__("inspect").getsource(count_month))
    compile(program.replace("__INPUT__", repr('{"sites": [], "month": "2026-11"}')), "probe", "exec")


def test_db_sizes_refuses_names_that_were_not_derived():
    with pytest.raises(ValueError):
        db_sizes(None, ["x'; DROP DATABASE y; --"])


class FakeReader:
    def __init__(self, web, db):
        self.web_data, self.db_data, self.calls = web, db, []

    def web(self, host, sites, month):
        self.calls.append(("web", host, sorted(s["fqdn"] for s in sites), month))
        return {s["fqdn"]: self.web_data[s["fqdn"]] for s in sites if s["fqdn"] in self.web_data}

    def db(self, host, databases):
        self.calls.append(("db", host, sorted(databases)))
        return {d: self.db_data.get(d, 0) for d in databases}


@pytest.fixture
def office(tmp_path):
    config = Config(offices=default_offices(), state_dir=tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    sites = {
        "big": add_site(store, "simkes", quota=1),
        "small": add_site(store, "arsip", state="suspended", quota=100),
        "static": add_site(store, "sipandu", zone="bulelengkab.go.id", dedicated="203.0.113.131", db=False,
                           office="buleleng", quota=50),
        "gone": add_site(store, "lama", state="removed"),
    }
    yield config, store, sites
    store.close()


def _reader(sites):
    from provisioner.naming import site_names

    return FakeReader(
        web={sites["big"]: {"disk_bytes": 3 * 1024 * 1024, "requests": 1200, "bytes": 5_000_000,
                            "status": {"2xx": 1100, "3xx": 100}},
             sites["small"]: {"disk_bytes": 10_000, "requests": 7, "bytes": 2100, "status": {"5xx": 7}},
             sites["static"]: {"disk_bytes": None, "requests": 0, "bytes": 0, "status": {}}},
        db={site_names("simkes", "tarakankota.go.id").db_name: 2_097_152})


def test_collect_reads_each_host_once_and_flags_over_quota(office):
    config, store, sites = office
    reader = _reader(sites)
    report = usage.collect(config, store, "2026-11", reader=reader)
    assert sorted(c[0] for c in reader.calls) == ["db", "web"]  # one read per host (read at once)
    by = {s.fqdn: s for s in report.sites}
    assert sites["gone"] not in by
    assert by[sites["big"]].over_quota and by[sites["big"]].quota_used_percent == 300.0
    assert by[sites["big"]].db_bytes == 2_097_152
    assert not by[sites["small"]].over_quota and by[sites["small"]].state == "suspended"
    assert by[sites["static"]].db_bytes is None and not by[sites["static"]].over_quota
    only = usage.collect(config, store, "2026-11", office="buleleng", reader=_reader(sites))
    assert [s.fqdn for s in only.sites] == [sites["static"]]


def test_a_written_report_keeps_each_sites_measured_bytes_for_placement(office, tmp_path):
    config, store, sites = office
    usage.write(config, store, usage.collect(config, store, "2026-11", reader=_reader(sites)), tmp_path / "out")
    with store.session() as session:
        big, small, static = (session.get(SiteRow, sites[k]) for k in ("big", "small", "static"))
        assert (big.disk_bytes, big.db_bytes) == (3 * 1024 * 1024, 2_097_152) and big.usage_measured_at
        assert (small.disk_bytes, small.db_bytes) == (10_000, 0)
        assert (static.disk_bytes, static.usage_measured_at) == (None, None)  # nothing measured
    # A later report that cannot measure a site keeps its last figure.
    unread = _reader(sites)
    unread.web_data.pop(sites["big"])
    usage.write(config, store, usage.collect(config, store, "2026-12", reader=unread), tmp_path / "out")
    with store.session() as session:
        assert session.get(SiteRow, sites["big"]).disk_bytes == 3 * 1024 * 1024


def test_every_host_is_read_at_once_and_the_report_keeps_its_order(office):
    import threading

    config, store, sites = office
    reader = _reader(sites)
    # web1 (simkes, arsip), web2 (sipandu) and db1 each wait for the others: read one after
    # another, the first would wait forever (the barrier's timeout breaks it).
    together = threading.Barrier(3, timeout=10)
    with store.session() as session:
        session.get(SiteRow, sites["static"]).web_host = "web2"
    web, db = reader.web, reader.db

    def web_together(host, items, month):
        together.wait()
        return web(host, items, month)

    def db_together(host, names):
        together.wait()
        return db(host, names)

    reader.web, reader.db = web_together, db_together
    report = usage.collect(config, store, "2026-11", reader=reader)
    # By office, then name, whichever host answered first.
    assert [s.fqdn for s in report.sites] == [sites["static"], sites["small"], sites["big"]]
    assert {c[1] for c in reader.calls} == {"web1", "web2", "db1"}
    assert next(s for s in report.sites if s.fqdn == sites["static"]).web_host == "web2"


def test_month_is_checked():
    assert usage.parse_month("2026-11") == "2026-11"
    assert usage.parse_month(None, datetime(2026, 2, 3, tzinfo=timezone.utc)) == "2026-02"
    for bad in ("2026-13", "11-2026", "2026/11"):
        with pytest.raises(UserError):
            usage.parse_month(bad)
    assert usage.period("2026-11") == "Bulan November 2026"


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_report_files_csv_and_indonesian_pdf(office, tmp_path):
    config, store, sites = office
    report = usage.collect(config, store, "2026-11", reader=_reader(sites))
    written = {w["office"]: w for w in usage.write(config, store, report, tmp_path / "out")}
    assert set(written) == {"tarakan", "buleleng"}
    tarakan = written["tarakan"]
    assert tarakan["over_quota"] == [sites["big"]]
    rows = list(csv.DictReader(io.StringIO(open(tarakan["csv"], encoding="utf-8-sig").read())))
    big = next(r for r in rows if r["fqdn"] == sites["big"])
    assert (big["over_quota"], big["requests"], big["bytes_served"], big["disk_bytes"]) == ("yes", "1200",
                                                                                           "5000000", "3145728")
    text = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", tarakan["pdf"], "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "LAPORAN PENGGUNAAN HOSTING" in text and "Bulan November 2026" in text
    assert sites["big"] in text and "Melebihi kuota" in text and "Ditangguhkan" in text
    assert "1.200" in text  # Indonesian thousands separator
    assert "NIP." in text
    with store.session() as session:
        events = session.query(Event).filter(Event.kind == "usage_reported").all()
    assert {e.payload["office"] for e in events} == {"tarakan", "buleleng"}
    assert all(e.payload["sop_record"] == "usage" for e in events)


def test_the_web_probe_runs_on_a_host_layout(tmp_path):
    """The program sent to web hosts, run here on a site's home and rotated logs."""
    import gzip
    import inspect
    import json
    import sys

    home, logdir = tmp_path / "srv" / "a.z", tmp_path / "logs" / "a.z"
    (home / "public").mkdir(parents=True)
    (home / "public" / "big.bin").write_bytes(b"x" * 50_000)
    logdir.mkdir(parents=True)
    (logdir / "access.log").write_text("\n".join(LOG[:2]) + "\n")
    (logdir / "access.log.1").write_text(LOG[2] + "\n")
    with gzip.open(logdir / "access.log.2.gz", "wt") as out:
        out.write(LOG[3] + "\n" + LOG[4] + "\n")
    (logdir / "error.log").write_text(LOG[0] + "\n")  # not an access log: not counted
    data = {"sites": [{"fqdn": "a.z", "home": str(home), "logdir": str(logdir)},
                      {"fqdn": "gone.z", "home": str(tmp_path / "none"), "logdir": str(tmp_path / "none")}],
            "month": "2026-11"}
    program = WEB_USAGE.replace("__COUNT__", inspect.getsource(count_month)).replace(
        "__INPUT__", repr(json.dumps(data)))
    out = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, check=True)
    sites = json.loads(out.stdout)["sites"]
    assert sites["a.z"]["requests"] == 4 and sites["a.z"]["bytes"] == 512 + 1048576 + 299
    assert sites["a.z"]["disk_bytes"] >= 50_000
    assert sites["a.z"]["logs"] == ["access.log", "access.log.1", "access.log.2.gz"]
    assert sites["gone.z"]["disk_bytes"] is None and sites["gone.z"]["requests"] == 0


def test_an_adopted_sites_database_is_measured_under_the_name_it_was_found_with(office, monkeypatch):
    from provisioner.inventory import Host
    from provisioner.store.models import SiteRow
    from provisioner.targets import usage_probe

    config, store, sites = office
    with store.session() as session:
        row = session.get(SiteRow, sites["big"])
        # As `provision import` records it: the office's own names (not [a-z][a-z0-9]*).
        row.config = dict(row.config, origin="adopted", db_name="db_simkes-lama")
    sent = []

    def run(host, command, stdin=None, sudo=False):
        sent.append((host.name, command, stdin))
        return 0, "db_simkes-lama\t4096\n", ""

    monkeypatch.setattr(usage_probe.ssh, "run", run)

    class Reader(usage.Reader):
        def web(self, host, items, month):
            return {}

    inventory = type("I", (), {"host": lambda self, name: Host(name, ("db",), {})})()
    report = usage.collect(config, store, "2026-11", reader=Reader(inventory))
    by = {s.fqdn: s for s in report.sites}
    assert by[sites["big"]].db_name == "db_simkes-lama" and by[sites["big"]].db_bytes == 4096
    ((host, command, query),) = sent
    assert host == "db1" and "'db_simkes-lama')" in query and query.count(";") == 1


def test_db_sizes_escapes_what_it_quotes(monkeypatch):
    from provisioner.targets import usage_probe

    assert usage_probe._quoted("a'b\\") == "'a''b\\\\'"
    with pytest.raises(ValueError):
        db_sizes(None, ["db_x' OR '1'='1"])
