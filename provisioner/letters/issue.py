"""Which letter a request gets, what it says, and where it is written.

A rejected request gets the reply letter (surat balasan) with the reason
recorded at the decision; a provisioned site gets the letter notifying its
configuration data (SOP hosting step 7). The letter is rendered from the
configuration record and the inventory, never from secrets: passwords go only
to the separate credentials sheet. Each letter is recorded in the event log
with its number, files and the sha256 of the PDF.
"""

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from provisioner.errors import ConfigError, NotFound, StateError
from provisioner.files import write_atomic
from provisioner.inventory import load_inventory
from provisioner.letters import numbering, render
from provisioner.request import validate
from provisioner.sop import cited as cited_sop
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import RequestRow, SiteRow, StepRecord

FILE_NAMES = {"configuration": "surat-konfigurasi", "reply": "surat-balasan"}
SUBJECTS = {"configuration": "Pemberitahuan Data dan Konfigurasi Hosting"}

# What the reply letter says was asked for, per SOP.
REPLIES = {
    "hosting": ("Balasan Permohonan Hosting dan Subdomain",
                "permohonan layanan hosting dan subdomain {fqdn} belum dapat kami penuhi"),
    "website": ("Balasan Permohonan Pembuatan/Pemutakhiran Website",
                "permohonan pembuatan/pemutakhiran website {fqdn} belum dapat kami penuhi"),
    "konsultasi-aplikasi": ("Balasan Permohonan Penyediaan Aplikasi",
                            "permohonan penyediaan aplikasi {name} belum dapat kami penuhi"),
    "aplikasi-api": ("Balasan Permohonan Pembuatan/Pengembangan Aplikasi",
                     "berdasarkan hasil analisa tim programmer, aplikasi {name} yang dimohonkan "
                     "belum dapat dibangun"),
}

OBLIGATIONS = (
    "menjaga kerahasiaan data akses (nama pengguna dan kata sandi SFTP serta basis data), "
    "tidak membagikannya kepada pihak yang tidak berwenang, dan segera melapor apabila data "
    "akses diduga telah diketahui pihak lain;",
    "menjaga aplikasi tetap mutakhir: memasang pembaruan keamanan aplikasi, kerangka kerja "
    "(framework), plugin dan pustaka yang digunakan, serta tidak menempatkan berkas cadangan "
    "atau berkas konfigurasi yang memuat kata sandi di direktori dokumen;",
    "melaporkan setiap insiden keamanan informasi (peretasan, perubahan tampilan, malware) atau "
    "gangguan layanan kepada {office} paling lambat 1 x 24 jam sejak diketahui;",
    "menggunakan layanan hosting hanya untuk keperluan kedinasan sesuai permohonan.",
)


@dataclass(frozen=True)
class IssuedLetter:
    request: str
    kind: str
    number: str
    date: str
    pdf: str
    html: str
    sha256: str
    new_number: bool

    def as_dict(self) -> dict:
        return asdict(self)


def letters_dir(config) -> Path:
    return config.home() / "letters"


@dataclass(frozen=True)
class Draft:
    """A letter numbered and written as HTML, not yet a PDF: rendering the PDF is the costly part,
    and needs nothing but `document` (so a batch renders its drafts side by side)."""
    request: str
    kind: str
    number: str
    date: str
    document: str
    pdf_path: Path
    html_path: Path
    new_number: bool
    sop: str
    sop_document: str


def issue(config, store, request_id: str, kind: str | None = None, out: Path | None = None,
          reason: str | None = None, source: str = "cli", now: datetime | None = None) -> IssuedLetter:
    """Render the request's letter (the kind its state calls for, or `kind`) to PDF and HTML."""
    draft = prepare(config, store, request_id, kind=kind, out=out, reason=reason, source=source, now=now)
    return finish(store, draft, render.pdf(draft.document), source=source)


def prepare(config, store, request_id: str, kind: str | None = None, out: Path | None = None,
            reason: str | None = None, source: str = "cli", now: datetime | None = None) -> Draft:
    """Everything of a letter but its PDF: checks, its number (taken now), its HTML."""
    with store.session() as session:
        row = session.get(RequestRow, request_id)
        if row is None:
            raise NotFound(f"no request {request_id!r}")
        site = session.scalars(select(SiteRow).where(SiteRow.request_id == request_id)).first()
        decision, service, office_key, state = row.decision, row.service, row.office, row.state
        content = row.content
        # The SOP the request ran under, as its submission recorded it (the office's own,
        # never another office's), not whatever the configuration names today.
        cited = cited_sop.request_sop(config, office_key, service,
                                      cited_sop.submitted(session, [request_id]).get(request_id))
        sop = cited.sop
        approval_key = sop.approval_step.key
        recorded_reason = session.scalars(select(StepRecord.note).where(
            StepRecord.request_id == request_id, StepRecord.step_key == approval_key)).first()
    request = validate(content, config, source=f"stored {request_id}", stored=True)
    office = config.office(office_key)
    profile = office.letters
    if profile is None:
        raise ConfigError(f"office {office_key!r} has no letter profile (offices.{office_key}.letters "
                          f"in {config.source})")
    kind = kind or ("reply" if decision == "reject" else "configuration")
    if kind == "reply":
        if decision != "reject":
            raise StateError(f"{request_id} was not rejected (it is {state}); a reply letter answers a rejection")
        body = _reply(request, reason or recorded_reason)
    else:
        if decision == "reject":
            raise StateError(f"{request_id} was rejected; it gets the reply letter, not a configuration letter")
        if site is None or site.state != "provisioned":
            where = f"its site is {site.state}" if site is not None else f"it is {state} and has no site yet"
            raise StateError(f"{request_id}: no configuration letter yet: {where}; the letter is written "
                             f"once the site is provisioned and verified")
        body = _configuration(config, request, site, office)

    now = now or utcnow()
    issued = numbering.allocate(store, office_key, request_id, kind, now, office.tz, source=source)
    letter_date = issued.issued_at.astimezone(office.tz).date()
    context = dict(body, office=office, profile=profile, logo=render.logo_uri(profile.logo),
                   number=issued.text(profile), date=letter_date, request=request, sop=sop,
                   sop_citation=cited.text)
    document = render.html(f"{FILE_NAMES[kind]}.html", **context)
    directory = Path(out) if out else letters_dir(config)
    stem = f"{request_id}-{FILE_NAMES[kind]}"
    return Draft(request=request_id, kind=kind, number=issued.text(profile), date=letter_date.isoformat(),
                 document=document, pdf_path=directory / f"{stem}.pdf", html_path=directory / f"{stem}.html",
                 new_number=issued.new, sop=sop.name, sop_document=cited.document)


def finish(store, draft: Draft, data: bytes, source: str = "cli") -> IssuedLetter:
    """Write the letter's HTML and PDF (`data`, rendered from draft.document) and record it."""
    write_atomic(draft.html_path, draft.document.encode())
    write_atomic(draft.pdf_path, data)
    digest = hashlib.sha256(data).hexdigest()
    with store.session() as session:
        add_event(session, draft.request, "letter_issued", source=source, letter=draft.kind, number=draft.number,
                  date=draft.date, pdf=str(draft.pdf_path), html=str(draft.html_path), sha256=digest,
                  sop=draft.sop, sop_document=draft.sop_document)
    return IssuedLetter(request=draft.request, kind=draft.kind, number=draft.number, date=draft.date,
                        pdf=str(draft.pdf_path), html=str(draft.html_path), sha256=digest,
                        new_number=draft.new_number)


def _reply(request, reason: str | None) -> dict:
    if not (reason or "").strip():
        raise StateError(f"{request.id}: no reason was recorded at the decision; the reply letter needs one")
    subject, sentence = REPLIES.get(request.service, REPLIES["hosting"])
    # An application request names its application; a website or hosting request its site.
    application = getattr(request, "application", None)
    name = application.name if application is not None else "tersebut"
    return {"subject": subject, "sentence": sentence.format(fqdn=request.fqdn, name=name),
            "reasons": [line.strip() for line in reason.strip().splitlines() if line.strip()]}


def nameservers(inventory, zone: str) -> list[str]:
    """The zone's name servers as its NS records name them: ns1.<zone>, ns2.<zone> (primary first)."""
    hosts = sorted(inventory.group("nameservers"), key=lambda h: (h.vars.get("pdns_role") != "primary", h.name))
    return [f"{host.name.split('.')[0]}.{zone}" for host in hosts]


def tls_rows(record: dict, fqdn: str, tz) -> list[tuple[str, str]]:
    """The letter's TLS rows from the configuration record.

    `record["certificate"]` is the certificate served from outside when the site was
    last verified or renewed (issuer, not_after in ISO 8601 UTC, source). Records
    written before it was kept have none: the letter then says so rather than
    guessing an issuer or a date.
    """
    if not record.get("tls"):
        return [("Sertifikat TLS (HTTPS)", "Tidak aktif (HTTP)")]
    rows = [("Sertifikat TLS (HTTPS)", "Aktif, situs dilayani melalui HTTPS")]
    certificate = record.get("certificate")
    if certificate is None:
        return rows + [("Data sertifikat", "Penerbit dan masa berlaku belum tercatat")]
    if not isinstance(certificate, dict):
        raise StateError(f"{fqdn}: configuration record field certificate must be a mapping, "
                         f"not {type(certificate).__name__}")
    issuer = str(certificate.get("issuer") or "").strip()
    if not issuer:
        raise StateError(f"{fqdn}: configuration record field certificate.issuer is empty")
    organization = str(certificate.get("issuer_org") or "").strip()
    if organization and organization != issuer:
        issuer = f"{issuer} ({organization})"
    until = render.waktu(_utc(certificate.get("not_after"), fqdn, "certificate.not_after").astimezone(tz))
    return rows + [("Penerbit sertifikat", issuer), ("Sertifikat berlaku sampai", until)]


def _utc(value, fqdn: str, field: str) -> datetime:
    """An ISO 8601 time from the record; one without an offset is UTC, as the record writes them."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise StateError(f"{fqdn}: configuration record field {field} {value!r} "
                         f"is not an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _configuration(config, request, site: SiteRow, office) -> dict:
    record = site.config or {}
    inventory = load_inventory(config.hosting.inventory)
    tls = bool(record.get("tls"))
    url = f"{'https' if tls else 'http'}://{site.fqdn}/"
    names = record.get("names") or {}
    bandwidth = int(record.get("bandwidth_kbps") or 0)
    quota = int(record.get("quota_mb") or 0)
    rows = [
        ("Subdomain", site.fqdn),
        ("Alamat situs (URL)", url),
        ("Alamat IP publik", f"{site.public_ip} ({'IP khusus' if site.dedicated_ip else 'IP bersama'})"),
        ("Server web", f"{site.web_host} (Apache HTTP Server 2.4)"),
        ("Direktori dokumen (document root)", names.get("docroot", "-")),
        ("Versi PHP", record.get("php_version") or "- (situs statis, tanpa PHP)"),
    ]
    if record.get("db_name"):
        db = inventory.host(site.db_host)
        rows += [("Host basis data", f"{db.address} ({db.name}), port 3306, MariaDB"),
                 ("Nama basis data", record["db_name"]),
                 ("Pengguna basis data", record["db_user"])]
    else:
        rows += [("Basis data", "- (tidak dimohonkan)")]
    rows += [
        ("Host SFTP", site.public_ip),
        ("Port SFTP", "22"),
        ("Pengguna SFTP", record.get("sftp_user") or names.get("user", "-")),
        *tls_rows(record, site.fqdn, office.tz),
        ("Kuota penyimpanan", f"{render.ribuan(quota)} MB"),
        ("Batas bandwidth", f"{render.ribuan(bandwidth)} kbps" if bandwidth else "Tidak dibatasi"),
        ("Name server", ", ".join(nameservers(inventory, site.zone))),
    ]
    return {"subject": SUBJECTS["configuration"], "rows": rows, "url": url,
            "obligations": [o.format(office=office.short_name) for o in OBLIGATIONS]}
