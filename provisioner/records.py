"""The SOP's records of hosting: configuration records, IP and subdomain records, history.

Read from the state database only (no host is contacted). Removed sites stay
in every listing and export with their state, so the archive shows what was
hosted, where and when, after a site is gone. Exports are CSV (the csv module)
or XLSX (openpyxl) for the office's archive.
"""

import csv
import io
from datetime import datetime
from pathlib import Path

from sqlalchemy import Text, or_, select, type_coerce

from provisioner.errors import NotFound, ProvisionerError, UserError
from provisioner.files import write_atomic
from provisioner.sop import cited as cited_sop
from provisioner.store.models import Event, IPAllocation, RequestRow, SiteRow

# Column -> how to read it from a site row (and its config record).
CONFIGURATION_COLUMNS = (
    "fqdn", "state", "reason", "request_id", "office", "zone", "web_host", "db_host", "public_ip",
    "dedicated_ip", "docroot", "php_version", "db_name", "db_user", "sftp_user", "tls", "quota_mb",
    "bandwidth_kbps", "plan_checksum", "created_at", "provisioned_at", "updated_at", "sop",
) + (
    # The live release of the site's content (provisioner.website): the last deploy or rollback.
    "release", "release_source", "release_ref", "release_commit", "release_sha256", "release_at", "release_by",
    "release_result",
)
DEPLOY_EVENTS = ("website_deployed", "website_deploy_failed", "website_rolled_back")
IP_COLUMNS = (
    "subdomain", "zone", "label", "public_ip", "ip_type", "ip_held", "ip_allocated_at", "web_host", "state",
    "request_id", "office", "updated_at",
)
RECORDS = {"configuration": CONFIGURATION_COLUMNS, "ip": IP_COLUMNS}
FORMATS = ("csv", "xlsx")


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _rows(store, state: str | None = None) -> list[SiteRow]:
    query = select(SiteRow).order_by(SiteRow.zone, SiteRow.fqdn)
    if state:
        query = query.where(SiteRow.state == state)
    with store.session() as session:
        return list(session.scalars(query))


def sop_citations(store, config, rows: list[SiteRow]) -> dict[str, str]:
    """fqdn -> the SOP its office ran its request under, as the records cite it.

    The SOP recorded when the request was submitted (each office's own document,
    never another office's), not the one the configuration names today; a request
    from before the submission recorded it is cited from the configuration. Empty
    without a configuration or when neither names an SOP.
    """
    if config is None or not rows:
        return {}
    with store.session() as session:
        ids = {r.request_id for r in rows}
        services = dict(session.execute(select(RequestRow.id, RequestRow.service).where(
            RequestRow.id.in_(ids))).all())
        recorded = cited_sop.submitted(session, ids)
    out = {}
    for row in rows:
        try:
            out[row.fqdn] = cited_sop.citation(config, row.office, services.get(row.request_id),
                                               recorded.get(row.request_id))
        except ProvisionerError:
            out[row.fqdn] = ""
    return out


def deploys(store, fqdns=None) -> dict[str, dict]:
    """fqdn -> the last website deploy, failed deploy or rollback recorded for it (its event)."""
    query = select(Event).where(Event.kind.in_(DEPLOY_EVENTS)).order_by(Event.at, Event.id)
    with store.session() as session:
        events = list(session.scalars(query))
    last = {}
    for event in events:
        fqdn = (event.payload or {}).get("fqdn")
        if fqdn and (fqdns is None or fqdn in fqdns):
            last[fqdn] = event
    return {fqdn: deploy_columns(event) for fqdn, event in last.items()}


def deploy_columns(event: Event | None) -> dict:
    """The release columns of a configuration record from the site's last website event.

    A failed deploy was switched back: the release shown stays the one it replaced.
    """
    if event is None:
        return {k: "" for k in CONFIGURATION_COLUMNS[CONFIGURATION_COLUMNS.index("release"):]}
    p = event.payload or {}
    failed = event.kind == "website_deploy_failed"
    live = (p.get("switched_back") or {}).get("release") or p.get("previous") if failed else p.get("release")
    return {"release": live or "", "release_source": "" if failed else p.get("source") or "",
            "release_ref": "" if failed else p.get("ref") or "", "release_commit": "" if failed else p.get("commit") or "",
            "release_sha256": "" if failed else p.get("sha256") or "", "release_at": _time(event.at),
            "release_by": event.actor, "release_result": {"website_deployed": "deployed",
                                                          "website_rolled_back": "rolled back"}.get(
                event.kind, f"deploy of {p.get('release')} failed")}


def configuration_record(row: SiteRow, sop: str = "", deploy: dict | None = None) -> dict:
    config = row.config or {}
    names = config.get("names") or {}
    return {
        "fqdn": row.fqdn, "state": row.state, "reason": row.reason or "", "request_id": row.request_id,
        "office": row.office, "zone": row.zone, "web_host": row.web_host, "db_host": row.db_host or "",
        "public_ip": row.public_ip or "", "dedicated_ip": bool(row.dedicated_ip),
        "docroot": names.get("docroot", ""), "php_version": config.get("php_version") or "",
        "db_name": config.get("db_name") or "", "db_user": config.get("db_user") or "",
        "sftp_user": config.get("sftp_user") or "", "tls": bool(config.get("tls")),
        "quota_mb": config.get("quota_mb"), "bandwidth_kbps": config.get("bandwidth_kbps"),
        "plan_checksum": row.plan_checksum or "", "created_at": _time(row.created_at),
        "provisioned_at": _time(row.provisioned_at), "updated_at": _time(row.updated_at), "sop": sop,
        **(deploy or deploy_columns(None)),
    }


def ip_record(row: SiteRow, allocation: IPAllocation | None) -> dict:
    return {
        "subdomain": row.fqdn, "zone": row.zone, "label": row.label, "public_ip": row.public_ip or "",
        "ip_type": "dedicated" if row.dedicated_ip else "shared",
        # A dedicated address is held while its allocation exists; removal releases it.
        "ip_held": bool(allocation) if row.dedicated_ip else row.state != "removed",
        "ip_allocated_at": _time(allocation.allocated_at) if allocation else "",
        "web_host": row.web_host, "state": row.state, "request_id": row.request_id, "office": row.office,
        "updated_at": _time(row.updated_at),
    }


def configuration_records(store, state: str | None = None, config=None) -> list[dict]:
    rows = _rows(store, state)
    cited = sop_citations(store, config, rows)
    deployed = deploys(store)
    return [configuration_record(r, cited.get(r.fqdn, ""), deployed.get(r.fqdn)) for r in rows]


def ip_records(store) -> list[dict]:
    with store.session() as session:
        allocations = {a.fqdn: a for a in session.scalars(select(IPAllocation))}
    return [ip_record(r, allocations.get(r.fqdn)) for r in _rows(store)]


def site_list(store, state: str | None = None) -> list[dict]:
    """One line per recorded site, removed ones included."""
    return [{k: r[k] for k in ("fqdn", "state", "request_id", "office", "public_ip", "dedicated_ip", "web_host",
                               "db_host", "quota_mb", "updated_at", "reason")}
            for r in configuration_records(store, state)]


def history(store, row: SiteRow) -> list[dict]:
    """Every event of the site: its request's, and any that name the site (e.g. after a re-provision)."""
    # The payload is JSON text with sorted keys and ", "/": " separators (JSONText).
    names_site = f'%"fqdn": "{row.fqdn}"%'
    payload = type_coerce(Event.payload, Text)  # compare the stored text, not a JSON-encoded pattern
    query = (select(Event).where(or_(Event.request_id == row.request_id, payload.like(names_site)))
             .order_by(Event.at, Event.id))
    with store.session() as session:
        events = list(session.scalars(query))
    return [{"id": e.id, "at": _time(e.at), "kind": e.kind, "actor": e.actor, "source": e.source,
             "request_id": e.request_id, "payload": e.payload} for e in events]


def site_row(store, fqdn: str) -> SiteRow:
    """A site's configuration record; NotFound when it was never recorded."""
    with store.session() as session:
        row = session.get(SiteRow, fqdn)
    if row is None:
        raise NotFound(f"no site {fqdn!r} in the records")
    return row


def site_show(store, fqdn: str, config=None) -> dict:
    with store.session() as session:
        row = session.get(SiteRow, fqdn)
        allocation = session.get(IPAllocation, row.public_ip) if row and row.public_ip else None
    if row is None:
        raise NotFound(f"no site {fqdn!r} in the records")
    if allocation is not None and allocation.fqdn != fqdn:
        allocation = None
    sop = sop_citations(store, config, [row]).get(fqdn, "")
    return {"record": configuration_record(row, sop, deploys(store, {fqdn}).get(fqdn)), "ip": ip_record(row, allocation),
            "config": row.config,
            "history": history(store, row)}


def table(store, records: str, config=None) -> tuple[tuple[str, ...], list[dict]]:
    if records == "configuration":
        return CONFIGURATION_COLUMNS, configuration_records(store, config=config)
    if records == "ip":
        return IP_COLUMNS, ip_records(store)
    raise UserError(f"unknown records {records!r}; use one of {', '.join(RECORDS)}")


def to_csv(columns, rows) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("yes" if v is True else "no" if v is False else v) for k, v in row.items()})
    # A BOM so spreadsheet programs read the UTF-8 correctly.
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(columns, rows, title: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = title[:31]
    sheet.append(list(columns))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append([row[c] if row[c] is not None else "" for c in columns])
    sheet.freeze_panes = "A2"
    for index, column in enumerate(columns, start=1):
        width = max([len(column)] + [len(str(r[column] or "")) for r in rows])
        sheet.column_dimensions[sheet.cell(row=1, column=index).column_letter].width = min(width + 2, 70)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def export(store, records: str, fmt: str, out: Path, config=None) -> dict:
    """Write one export file whole (never half) and say what it holds."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; use csv or xlsx")
    columns, rows = table(store, records, config)
    data = to_csv(columns, rows) if fmt == "csv" else to_xlsx(columns, rows, f"{records} records")
    out = Path(out)
    write_atomic(out, data, mode=0o640)
    return {"records": records, "format": fmt, "path": str(out), "rows": len(rows)}
