"""Usage data and reports (the SOP's "data dan laporan penggunaan hosting").

For one month, per live site: disk used by its home against its quota, its
database size, and the HTTP requests and bytes served from its Apache access
logs. Read in bulk (one SSH session per web host and per database host),
written as CSV and as an Indonesian report (PDF, with its HTML beside it) per
office, and recorded in the event log. Each site's disk and database bytes are
also kept on its record, where placement reads them (provisioner/placement.py).
"""

import csv
import hashlib
import io
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import select

from provisioner import parallel
from provisioner.errors import UserError
from provisioner.inventory import load_inventory
from provisioner.letters import render
from provisioner.files import write_atomic
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import SiteRow
from provisioner.targets import usage_probe

MB = 1024 * 1024
# Sites that have something on the hosts to measure.
MEASURED_STATES = ("provisioned", "suspended", "attention")
CSV_COLUMNS = ("month", "fqdn", "office", "state", "web_host", "db_host", "quota_mb", "disk_bytes", "disk_mb",
               "quota_used_percent", "over_quota", "db_name", "db_bytes", "db_mb", "requests", "bytes_served",
               "mb_served", "status_2xx", "status_3xx", "status_4xx", "status_5xx", "last_backup_at",
               "backup_bytes")
STATE_LABELS = {"provisioned": "Aktif", "suspended": "Ditangguhkan", "attention": "Perlu perhatian"}


@dataclass
class SiteUsage:
    fqdn: str
    office: str
    state: str
    web_host: str
    db_host: str | None
    quota_mb: int
    disk_bytes: int | None
    db_name: str | None
    db_bytes: int | None
    requests: int
    bytes_served: int
    status: dict = field(default_factory=dict)
    # The latest backup (provisioner.backup): when, and the size of its files and dump.
    last_backup_at: datetime | None = None
    backup_bytes: int | None = None

    @property
    def over_quota(self) -> bool:
        return self.disk_bytes is not None and self.quota_mb > 0 and self.disk_bytes > self.quota_mb * MB

    @property
    def quota_used_percent(self) -> float | None:
        if self.disk_bytes is None or not self.quota_mb:
            return None
        return round(100.0 * self.disk_bytes / (self.quota_mb * MB), 1)

    def as_dict(self) -> dict:
        return asdict(self) | {"over_quota": self.over_quota, "quota_used_percent": self.quota_used_percent}


@dataclass
class UsageReport:
    month: str
    generated_at: datetime
    sites: list[SiteUsage]

    def for_office(self, office: str) -> list[SiteUsage]:
        return [s for s in self.sites if s.office == office]

    def as_dict(self) -> dict:
        return {"month": self.month, "generated_at": self.generated_at.isoformat(timespec="seconds"),
                "sites": [s.as_dict() for s in self.sites]}


def parse_month(text: str | None, now: datetime | None = None) -> str:
    if text is None:
        now = now or utcnow()
        return f"{now.year:04d}-{now.month:02d}"
    if not usage_probe.MONTH.fullmatch(text):
        raise UserError(f"--month: {text!r} is not a month like 2026-11")
    return text


def period(month: str) -> str:
    """"Bulan November 2026"."""
    year, number = month.split("-")
    return f"Bulan {render.MONTHS[int(number) - 1]} {year}"


class Reader:
    """The live reads; tests replace it with canned data."""

    def __init__(self, inventory):
        self.inventory = inventory

    def web(self, host: str, sites: list[dict], month: str) -> dict:
        return usage_probe.web_usage(self.inventory.host(host), sites, month)["sites"]

    def db(self, host: str, databases: list[str]) -> dict[str, int]:
        return usage_probe.db_sizes(self.inventory.host(host), databases)


def collect(config, store, month: str, office: str | None = None, reader=None) -> UsageReport:
    query = select(SiteRow).where(SiteRow.state.in_(MEASURED_STATES)).order_by(SiteRow.office, SiteRow.fqdn)
    if office:
        config.office(office)  # an unknown office is a ConfigError
        query = query.where(SiteRow.office == office)
    with store.session() as session:
        rows = list(session.scalars(query))
    reader = reader or Reader(load_inventory(config.hosting.inventory))
    by_web: dict[str, list[dict]] = {}
    by_db: dict[str, list[str]] = {}
    for row in rows:
        names = (row.config or {}).get("names") or {}
        by_web.setdefault(row.web_host, []).append(
            {"fqdn": row.fqdn, "home": names["home"], "logdir": names["logdir"]})
        # An adopted site's database keeps the name it was found with; one the probe cannot read
        # safely is left unmeasured rather than failing the whole report.
        if row.db_host and usage_probe.DB_NAME.fullmatch((row.config or {}).get("db_name") or ""):
            by_db.setdefault(row.db_host, []).append(row.config["db_name"])
    # Each host's read is an SSH round-trip: every host is read at once, results in a stable order.
    web_hosts, db_hosts = sorted(by_web), sorted(by_db)
    read = parallel.each(lambda job: reader.web(job[1], by_web[job[1]], month) if job[0] == "web"
                         else reader.db(job[1], by_db[job[1]]),
                         [("web", h) for h in web_hosts] + [("db", h) for h in db_hosts])
    web = dict(zip(web_hosts, read[:len(web_hosts)]))
    db = dict(zip(db_hosts, read[len(web_hosts):]))
    from provisioner.backup import status as backups

    backed_up = backups.last_backups(store, [row.fqdn for row in rows])
    sites = []
    for row in rows:
        config_record = row.config or {}
        seen = web[row.web_host].get(row.fqdn) or {}
        db_name = config_record.get("db_name") if row.db_host else None
        sites.append(SiteUsage(
            fqdn=row.fqdn, office=row.office, state=row.state, web_host=row.web_host, db_host=row.db_host,
            quota_mb=int(config_record.get("quota_mb") or 0), disk_bytes=seen.get("disk_bytes"),
            db_name=db_name, db_bytes=db.get(row.db_host, {}).get(db_name) if db_name else None,
            requests=int(seen.get("requests", 0)), bytes_served=int(seen.get("bytes", 0)),
            status=dict(seen.get("status", {})),
            last_backup_at=(backed_up.get(row.fqdn) or {}).get("at"),
            backup_bytes=(backed_up.get(row.fqdn) or {}).get("bytes")))
    return UsageReport(month=month, generated_at=utcnow(), sites=sites)


def record_measurements(store, report: UsageReport) -> None:
    """Keep each site's measured disk and database bytes on its record: placement counts them
    in its host's load. A figure not measured this time (a host unreadable) keeps the last one."""
    with store.session() as session:
        for site in report.sites:
            row = session.get(SiteRow, site.fqdn)
            if row is None or (site.disk_bytes is None and site.db_bytes is None):
                continue
            if site.disk_bytes is not None:
                row.disk_bytes = site.disk_bytes
            if site.db_bytes is not None:
                row.db_bytes = site.db_bytes
            row.usage_measured_at = report.generated_at


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 2)


def csv_rows(report: UsageReport, sites: list[SiteUsage]) -> list[dict]:
    out = []
    for s in sites:
        out.append({
            "month": report.month, "fqdn": s.fqdn, "office": s.office, "state": s.state, "web_host": s.web_host,
            "db_host": s.db_host or "", "quota_mb": s.quota_mb, "disk_bytes": s.disk_bytes,
            "disk_mb": _mb(s.disk_bytes), "quota_used_percent": s.quota_used_percent,
            "over_quota": "yes" if s.over_quota else "no", "db_name": s.db_name or "", "db_bytes": s.db_bytes,
            "db_mb": _mb(s.db_bytes), "requests": s.requests, "bytes_served": s.bytes_served,
            "mb_served": _mb(s.bytes_served),
            **{f"status_{k}": s.status.get(k, 0) for k in ("2xx", "3xx", "4xx", "5xx")},
            "last_backup_at": s.last_backup_at.isoformat(timespec="seconds") if s.last_backup_at else None,
            "backup_bytes": s.backup_bytes,
        })
    return out


def to_csv(report: UsageReport, sites: list[SiteUsage]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    for row in csv_rows(report, sites):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _angka(value: float | None, digits: int = 2) -> str:
    """A decimal the Indonesian way: 1.234,56."""
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}"
    return text.replace(",", "_").replace(".", ",").replace("_", ".")


def report_html(config, report: UsageReport, office_key: str, day: date) -> str:
    office = config.office(office_key)
    profile = office.letters
    sites = report.for_office(office_key)
    rows = []
    for s in sites:
        notes = []
        if s.over_quota:
            notes.append("Melebihi kuota")
        if s.disk_bytes is None:
            notes.append("Direktori tidak ditemukan")
        rows.append({
            "fqdn": s.fqdn, "state": STATE_LABELS.get(s.state, s.state), "quota": render.ribuan(s.quota_mb),
            "disk": _angka(_mb(s.disk_bytes)), "percent": _angka(s.quota_used_percent, 1),
            "db": _angka(_mb(s.db_bytes)) if s.db_name else "-", "requests": render.ribuan(s.requests),
            "served": _angka(_mb(s.bytes_served)), "over": s.over_quota, "note": "; ".join(notes) or "-",
        })
    summary = {
        "sites": len(sites), "over": sum(1 for s in sites if s.over_quota),
        "requests": render.ribuan(sum(s.requests for s in sites)),
        "served": _angka(_mb(sum(s.bytes_served for s in sites))),
        "disk": _angka(_mb(sum(s.disk_bytes or 0 for s in sites))),
    }
    return render.html("laporan-penggunaan.html", office=office, profile=profile,
                       logo=render.logo_uri(profile.logo) if profile else None, period=period(report.month),
                       month=report.month, rows=rows, summary=summary, date=day,
                       generated=report.generated_at.astimezone(office.tz))


def write(config, store, report: UsageReport, out: Path | None = None, source: str = "cli",
          actor: str = "system", offices: list[str] | None = None) -> list[dict]:
    """Per office with sites (or each of `offices`): <out>/laporan-penggunaan-<office>-<month>.{csv,pdf,html}."""
    directory = Path(out) if out else config.home() / "reports"
    record_measurements(store, report)
    written = []
    for office_key in sorted(offices or {s.office for s in report.sites}):
        office = config.office(office_key)
        if office.letters is None:
            raise UserError(f"office {office_key!r} has no letter profile for the report's kop")
        stem = directory / f"laporan-penggunaan-{office_key}-{report.month}"
        sites = report.for_office(office_key)
        document = report_html(config, report, office_key, report.generated_at.astimezone(office.tz).date())
        data = render.pdf(document)
        files = {"csv": stem.with_suffix(".csv"), "pdf": stem.with_suffix(".pdf"), "html": stem.with_suffix(".html")}
        write_atomic(files["csv"], to_csv(report, sites))
        write_atomic(files["html"], document.encode())
        write_atomic(files["pdf"], data)
        entry = {"office": office_key, "month": report.month, "sites": len(sites),
                 "over_quota": [s.fqdn for s in sites if s.over_quota],
                 **{k: str(v) for k, v in files.items()}, "pdf_sha256": hashlib.sha256(data).hexdigest()}
        with store.session() as session:
            add_event(session, None, "usage_reported", actor=actor, source=source, sop_record="usage", **entry)
        written.append(entry)
    return written
