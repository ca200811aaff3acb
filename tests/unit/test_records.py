"""Configuration and IP/subdomain records: listing, history, exports read back with csv and openpyxl."""

import csv
import io
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from provisioner import records
from provisioner.cli import main
from provisioner.errors import NotFound
from provisioner.naming import site_names
from provisioner.store.events import add_event
from provisioner.store.models import IPAllocation, RequestRow, SiteRow

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=timezone.utc)


def add_site(store, label, zone="tarakankota.go.id", state="provisioned", dedicated=None, quota=500, db=True,
             request_id=None, office="tarakan"):
    names = site_names(label, zone)
    request_id = request_id or f"HST-2026-{abs(hash(label)) % 10000:04d}"
    config = {"fqdn": names.fqdn, "names": {"home": names.home, "docroot": names.docroot, "logdir": names.logdir,
                                            "user": names.user},
              "php_version": "8.2", "db_name": names.db_name if db else None,
              "db_user": names.db_user if db else None, "sftp_user": names.user, "tls": True, "quota_mb": quota,
              "bandwidth_kbps": 0}
    with store.session() as session:
        session.add(RequestRow(id=request_id, service="hosting", office=office, fqdn=names.fqdn, sha256="0" * 64,
                               content=b"", source="test", submitted_at=T0, state="done", decision="approve",
                               current_step=None))
        session.flush()
        session.add(SiteRow(fqdn=names.fqdn, request_id=request_id, office=office, zone=zone, label=label,
                            state=state, web_host="web1", db_host="db1" if db else None,
                            public_ip=dedicated or "203.0.113.10", dedicated_ip=bool(dedicated), config=config,
                            plan_checksum="c" * 64, created_at=T0, provisioned_at=T0, updated_at=T0,
                            reason="Situs diretas" if state == "suspended" else None))
        if dedicated and state != "removed":
            session.add(IPAllocation(address=dedicated, pool="web1", fqdn=names.fqdn, web_host="web1",
                                     allocated_at=T0))
        add_event(session, request_id, "site_provisioned", fqdn=names.fqdn)
    return names.fqdn


@pytest.fixture
def sites(store):
    return {
        "live": add_site(store, "simkes"),
        "suspended": add_site(store, "arsip", state="suspended"),
        "removed": add_site(store, "lama", zone="bulelengkab.go.id", state="removed", dedicated="203.0.113.130",
                            office="buleleng"),
        "dedicated": add_site(store, "sipandu", zone="bulelengkab.go.id", dedicated="203.0.113.131", db=False,
                              office="buleleng"),
    }


def test_the_list_keeps_removed_sites_with_their_state(store, sites):
    listed = {r["fqdn"]: r for r in records.site_list(store)}
    assert set(listed) == set(sites.values())
    assert listed[sites["removed"]]["state"] == "removed"
    assert listed[sites["suspended"]]["reason"] == "Situs diretas"
    assert [r["fqdn"] for r in records.site_list(store, "removed")] == [sites["removed"]]


def test_show_has_the_record_and_every_event_of_the_site(store, sites):
    fqdn = sites["live"]
    with store.session() as session:
        row = session.get(SiteRow, fqdn)
        add_event(session, row.request_id, "site_suspended", actor="budi", sop_record="maintenance", fqdn=fqdn,
                  reason="x")
        # An event without the request id that still names the site (a later re-provision).
        add_event(session, None, "usage_reported", fqdn=fqdn)
        add_event(session, None, "usage_reported", fqdn=sites["suspended"])
    shown = records.site_show(store, fqdn)
    assert shown["record"]["fqdn"] == fqdn and shown["record"]["docroot"].endswith("/public")
    assert [e["kind"] for e in shown["history"]] == ["site_provisioned", "site_suspended", "usage_reported"]
    assert shown["history"][1]["actor"] == "budi"
    with pytest.raises(NotFound):
        records.site_show(store, "nothing.tarakankota.go.id")


def test_ip_records_say_which_addresses_are_still_held(store, sites):
    ips = {r["subdomain"]: r for r in records.ip_records(store)}
    assert ips[sites["dedicated"]]["ip_type"] == "dedicated" and ips[sites["dedicated"]]["ip_held"]
    assert ips[sites["removed"]]["ip_type"] == "dedicated" and not ips[sites["removed"]]["ip_held"]
    assert ips[sites["removed"]]["public_ip"] == "203.0.113.130"
    assert ips[sites["live"]]["ip_type"] == "shared" and ips[sites["live"]]["ip_held"]


@pytest.mark.parametrize("which", ["configuration", "ip"])
def test_csv_export_reads_back(store, sites, tmp_path, which):
    out = tmp_path / "x" / f"{which}.csv"
    written = records.export(store, which, "csv", out)
    assert written["rows"] == 4
    text = out.read_bytes().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(records.RECORDS[which])
    key = "fqdn" if which == "configuration" else "subdomain"
    by = {r[key]: r for r in rows}
    assert by[sites["removed"]]["state"] == "removed"
    if which == "configuration":
        assert by[sites["dedicated"]]["dedicated_ip"] == "yes" and by[sites["live"]]["quota_mb"] == "500"
    else:
        assert by[sites["removed"]]["ip_held"] == "no"


@pytest.mark.parametrize("which", ["configuration", "ip"])
def test_xlsx_export_reads_back(store, sites, tmp_path, which):
    out = tmp_path / f"{which}.xlsx"
    records.export(store, which, "xlsx", out)
    sheet = load_workbook(out).active
    values = list(sheet.values)
    assert list(values[0]) == list(records.RECORDS[which])
    assert len(values) == 5
    states = {row[0]: row[values[0].index("state")] for row in values[1:]}
    assert states[sites["removed"]] == "removed" and states[sites["suspended"]] == "suspended"


def test_cli_list_show_export(store, sites, state_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISIONER_STATE_URL", state_url)
    monkeypatch.setenv("PROVISIONER_HOME", str(tmp_path))
    runner = CliRunner()
    listed = runner.invoke(main, ["site", "list"])
    assert listed.exit_code == 0 and sites["removed"] in listed.output
    shown = runner.invoke(main, ["site", "show", sites["live"]])
    assert shown.exit_code == 0 and "site_provisioned" in shown.output
    missing = runner.invoke(main, ["site", "show", "nope.tarakankota.go.id"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    out = tmp_path / "ip.xlsx"
    exported = runner.invoke(main, ["site", "export", "--format", "xlsx", "--records", "ip", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert load_workbook(out).active.max_row == 5


def test_records_cite_each_offices_own_sop(store, sites, config, tmp_path):
    cited = {r["fqdn"]: r["sop"] for r in records.configuration_records(store, config=config)}
    assert cited[sites["live"]] == "SOP Layanan Hosting Nomor 067/28/SOP/DKISP/2022, DKISP Kota Tarakan"
    assert cited[sites["dedicated"]] == "SOP Layanan Hosting, Dinas Kominfosanti Kabupaten Buleleng"
    assert records.site_show(store, sites["dedicated"], config)["record"]["sop"] == cited[sites["dedicated"]]
    out = tmp_path / "configuration.csv"
    records.export(store, "configuration", "csv", out, config)
    rows = {r["fqdn"]: r for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig")))}
    assert rows[sites["removed"]]["sop"] == cited[sites["removed"]] and "067/28" not in rows[sites["removed"]]["sop"]


def test_records_cite_the_sop_recorded_at_submission_not_todays(store, config):
    """The office issued a new document number since: a site keeps citing the one its request ran under."""
    fqdn = add_site(store, "simkes", request_id="HST-2026-0001")
    with store.session() as session:
        add_event(session, "HST-2026-0001", "request_submitted", service="hosting", office="tarakan", fqdn=fqdn,
                  sop="hosting", sop_document="012/3/SOP/DKISP/2019", sop_title="Layanan Hosting")
    cited = {r["fqdn"]: r["sop"] for r in records.configuration_records(store, config=config)}
    assert cited[fqdn] == "SOP Layanan Hosting Nomor 012/3/SOP/DKISP/2019, DKISP Kota Tarakan"
    assert records.site_show(store, fqdn, config)["record"]["sop"] == cited[fqdn]
