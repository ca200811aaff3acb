"""The documents the application and website SOPs produce, beside the letters.

- analysis: the record of the needs analysis (konsultasi-aplikasi step 7,
  aplikasi-api step 6), from the step's `analysis` data and the request;
- kak: the Kerangka Acuan Kerja for procurement (konsultasi-aplikasi step 8),
  as an editable DOCX (provisioner.letters.kak_docx) and a PDF;
- report-<step>: a nota dinas reporting up the chain (konsultasi-aplikasi step
  9, aplikasi-api steps 10-12), from the step's actor to the next level up;
- delegation: the Kasi's nota dinas delegating the work to the programmers
  (aplikasi-api step 8), with the decision and its reasons;
- handover: the berita acara serah terima aplikasi (aplikasi-api step 14);
- website-report: the report of a website deploy (website step 10), read from
  the request's `website_deployed` event.

Each document that carries a number takes it from the office's numbering (a
rerun keeps it and the date it was first given), is written under
letters/<office>/ in the state home, and is recorded as a `document_issued`
event with its files and their sha256. Nothing is invented: a field the
request and the step data do not give is printed as "[diisi oleh ...]".
"""

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from sqlalchemy import select

from provisioner.errors import ConfigError, NotFound, StateError, UserError
from provisioner.files import write_atomic
from provisioner.letters import numbering, render
from provisioner.letters.issue import letters_dir
from provisioner.letters.words import rupiah, tanggal_kata
from provisioner.request import validate
from provisioner.sop import cited as cited_sop
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import Event, LetterNumber, RequestRow, StepRecord

# kind -> (file stem, template, the action that renders it from an SOP step)
DOCUMENTS = {
    "analysis": ("analisa-kebutuhan", "analisa-kebutuhan.html", "render_analysis"),
    "kak": ("kak", "kak.html", "render_kak"),
    "delegation": ("nota-dinas-delegasi", "nota-dinas-delegasi.html", "render_delegation"),
    "handover": ("berita-acara-serah-terima", "berita-acara-serah-terima.html", "render_handover"),
    "website-report": ("laporan-website", "laporan-website.html", "render_website_report"),
}
REPORT = "report"  # report-<step key>: one per reporting step
REPORT_ACTION = "render_report"
# What an action returns for a request accepted before the application services had their own
# shape (it gave `site:`, not `application:`): it has none of the facts these documents are made
# of, and its SOP must not be stranded in attention for them.
PREDATES = "request predates application documents"

# How documents name an SOP role (the SOP files give the short column headings). The office
# head is the letter profile's signer; an office's `letters.positions` names any role in full.
# Otherwise: the head of the unit an SOP role names in full ...
ROLE_TITLES = {
    "bidang_aplikasi": "Kepala Bidang Aplikasi dan Informatika",  # role "Bidang Aplikasi dan Informatika"
    "bagian_umum": "Kepala Subbagian Umum dan Kepegawaian",  # role "Kasubbag Umum dan Kepegawaian"
}
# ... and for a role the SOP names only by its level ("Kabid", "Kasi"), the level with its unit
# left to be written in: an unnamed "Kepala Bidang" is no address.
ROLE_PLACEHOLDERS = {"kabid": "[Kepala Bidang ...]", "kasi": "[Kepala Seksi ...]"}
# Roles without a jabatan of their own: they report with a "laporan" signed by name, not with
# a nota dinas (which goes between officials).
STAFF_ROLES = ("programmer",)
# Who a report goes to: the step's key names the level it reports to (lapor_kasi -> kasi).
REPORT_PREFIX = "lapor_"

WORK = {"new": "pembuatan", "extend": "pengembangan"}
# What the decision means, per SOP and branch, as a document states it ("... memutuskan bahwa <this>").
DECISIONS = {
    "konsultasi-aplikasi": {"ya": "pengadaan aplikasi disetujui dan dapat dilaksanakan",
                            "tidak": "pengadaan aplikasi tidak dapat dilaksanakan"},
    "aplikasi-api": {"ya": "aplikasi dapat dibangun", "tidak": "aplikasi tidak dapat dibangun"},
}


def paragraphs(text: str | None) -> list[str]:
    """A multi-line text as its paragraphs (blank-line separated), each on one line: a YAML block
    keeps the writer's line breaks, which neither a PDF nor a Word paragraph should."""
    return [" ".join(part.split()) for part in (text or "").split("\n\n") if part.strip()]


def flat(text: str | None) -> str | None:
    """A text on one line (None stays None)."""
    return " ".join(text.split()) if text is not None else None


def placeholder(who: str) -> str:
    """What a document prints where its data is missing: never a guess."""
    return f"[diisi oleh {who}]"


@dataclass(frozen=True)
class IssuedDocument:
    request: str
    kind: str
    step: str | None
    number: str
    date: str
    pdf: str
    html: str
    sha256: str
    docx: str | None = None
    docx_sha256: str | None = None
    new_number: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StepFact:
    key: str
    number: int
    activity: str
    actor: str
    by: str
    branch: str | None
    note: str | None
    ended_at: datetime
    data: dict | None


@dataclass
class Facts:
    """What a document is written from: the request, its SOP and every step recorded so far."""
    request: object
    row_state: str
    decision: str | None
    office: object
    profile: object
    sop: object
    citation: str
    steps: dict = field(default_factory=dict)  # step key -> StepFact, in the order recorded
    events: list = field(default_factory=list)  # (kind, at, payload)
    letters: dict = field(default_factory=dict)  # letter/document kind -> its number as printed
    rollbacks: list = field(default_factory=list)  # (at, payload) of every website_rolled_back event

    def step(self, key):
        return self.steps.get(key)

    def data(self, key):
        fact = self.steps.get(key)
        return (fact.data or {}) if fact is not None else {}

    def role(self, key) -> str:
        """A role as documents name it: the office head's position, the office's configured title,
        the head of the unit the SOP names, or a placeholder for a level without its unit."""
        if key == "kadis":
            return self.profile.signer.position
        positions = getattr(self.profile, "positions", None) or {}
        return (positions.get(key) or ROLE_TITLES.get(key) or ROLE_PLACEHOLDERS.get(key)
                or self.sop.roles.get(key, key))

    def signatory(self, key) -> dict:
        """A signature block: the office head's from the letter profile; other officials' names
        are not in the configuration, so their blocks leave the name and NIP to be written in."""
        if key == "kadis":
            signer = self.profile.signer
            return {"position": signer.position, "name": signer.name, "rank": signer.rank,
                    "nip": render.nip(signer.nip)}
        return {"position": self.role(key), "name": None, "rank": None, "nip": None}

    @property
    def decision_step(self):
        return self.steps.get(self.sop.approval_step.key)


def documents_dir(config, office_key: str) -> Path:
    return letters_dir(config) / office_key


def _facts(config, store, request_id: str) -> Facts:
    """Everything a document of the request is written from, read in one transaction."""
    with store.session() as session:
        row = session.get(RequestRow, request_id)
        if row is None:
            raise NotFound(f"no request {request_id!r}")
        recorded = cited_sop.submitted(session, [request_id]).get(request_id)
        cited = cited_sop.request_sop(config, row.office, row.service, recorded)
        records = session.scalars(select(StepRecord).where(StepRecord.request_id == request_id)
                                  .order_by(StepRecord.ended_at, StepRecord.id)).all()
        steps = {}
        for record in records:
            step = cited.sop.step(record.step_key)
            # step_records.data: the validated data file recorded with the step (migration 0007).
            steps[record.step_key] = StepFact(step.key, step.number, step.activity, step.actor, record.by,
                                              record.branch, record.note, record.ended_at,
                                              getattr(record, "data", None))
        events = [(e.kind, e.at, e.payload) for e in session.scalars(
            select(Event).where(Event.request_id == request_id).order_by(Event.id))]
        # A rollback from the command line is recorded on the site's own request, not this one.
        rollbacks = [(e.at, e.payload) for e in session.scalars(
            select(Event).where(Event.kind == "website_rolled_back").order_by(Event.id))] \
            if row.service == "website" else []
        numbers = {n.kind: (n.year, n.number) for n in session.scalars(
            select(LetterNumber).where(LetterNumber.request_id == request_id))}
        content, state, decision, office_key = row.content, row.state, row.decision, row.office
    request = validate(content, config, source=f"stored {request_id}", stored=True)
    office = config.office(office_key)
    if office.letters is None:
        raise ConfigError(f"office {office_key!r} has no letter profile (offices.{office_key}.letters "
                          f"in {config.source})")
    profile = office.letters
    letters = {kind: profile.number_pattern.format(klasifikasi=profile.classification, urut=number, tahun=year)
               for kind, (year, number) in numbers.items()}
    return Facts(request=request, row_state=state, decision=decision, office=office, profile=profile,
                 sop=cited.sop, citation=cited.text, steps=steps, events=events, letters=letters,
                 rollbacks=rollbacks)


def _steps_for(sop, kind: str) -> list:
    """The SOP's steps that make `kind`: those whose `after:` names its action.

    Only what the SOP binds: a step of the same name in an SOP that binds no action to it
    has none of the data the document is made of (an SOP of an earlier version, say).
    """
    action = REPORT_ACTION if kind == REPORT else DOCUMENTS[kind][2]
    return [s for s in sop.steps if getattr(s, "after", None) == action]


def resolve(facts: Facts, kind: str) -> tuple[str, object]:
    """(numbering kind, SOP step) for a document kind as the CLI or an action names it.

    "report" alone is the SOP's one reporting step, or the latest one recorded;
    "report-<step>" names it.
    """
    if kind.startswith(f"{REPORT}-"):
        key = kind[len(REPORT) + 1:]
        steps = [s for s in _steps_for(facts.sop, REPORT) if s.key == key]
        if not steps:
            raise UserError(f"--document {kind}: SOP {facts.sop.name} has no report step {key!r} "
                            f"({_choices(facts.sop)})")
        return f"{REPORT}-{key}", steps[0]
    if kind == REPORT:
        steps = _steps_for(facts.sop, REPORT)
        done = [s for s in steps if s.key in facts.steps]
        if len(steps) == 1 or done:
            step = steps[0] if len(steps) == 1 else done[-1]
            return f"{REPORT}-{step.key}", step
        if not steps:
            raise UserError(f"--document report: SOP {facts.sop.name} has no report step ({_choices(facts.sop)})")
        raise StateError(f"{facts.request.id}: no report step is recorded yet ({_choices(facts.sop)})")
    if kind not in DOCUMENTS:
        raise UserError(f"--document {kind!r}: not a document kind ({_choices(facts.sop)})")
    steps = _steps_for(facts.sop, kind)
    if not steps:
        raise UserError(f"--document {kind}: SOP {facts.sop.name} makes no such document "
                        f"({_choices(facts.sop)})")
    return kind, steps[0]


def _choices(sop) -> str:
    kinds = [k for k in DOCUMENTS if _steps_for(sop, k)]
    kinds += [f"{REPORT}-{s.key}" for s in _steps_for(sop, REPORT)]
    return "documents of this SOP: " + (", ".join(kinds) or "none")


def issue_document(config, store, request_id: str, kind: str, out: Path | None = None, source: str = "cli",
                   now: datetime | None = None) -> IssuedDocument | dict:
    """Render one document of a request; a rerun keeps its number and date.

    Returns a dict instead when there is nothing to write: the handover of a
    rejected request, whose answer is the reply letter; any application document of
    a request stored in the shape from before the application services had theirs
    ({"skipped": PREDATES}).
    """
    facts = _facts(config, store, request_id)
    kind, step = resolve(facts, kind)
    if kind != "website-report" and getattr(facts.request, "application", None) is None:
        return {"skipped": PREDATES, "request": request_id, "document": kind, "step": step.key}
    fact = facts.step(step.key)
    if fact is None:
        raise StateError(f"{request_id}: step {step.number} ({step.key}) is not recorded yet; its document "
                         f"({kind}) is written once it is")
    if kind == "handover" and facts.decision == "reject":
        return _rejected_handover(facts)
    builder = BUILDERS[kind.split("-")[0] if kind.startswith(f"{REPORT}-") else kind]
    body = builder(facts, step)

    # The document is dated when its step was done (a rerun, or a render after a failure, keeps that date).
    issued = numbering.allocate(store, facts.office.key, request_id, kind, now or fact.ended_at or utcnow(),
                                facts.office.tz, source=source)
    profile = facts.profile
    day = issued.issued_at.astimezone(facts.office.tz).date()
    context = dict(body, office=facts.office, profile=profile, logo=render.logo_uri(profile.logo),
                   number=issued.text(profile), date=day, request=facts.request, sop=facts.sop,
                   sop_citation=facts.citation, step=step, fact=fact, placeholder=placeholder)
    stem_name, template, _ = DOCUMENTS.get(kind, (f"laporan-{step.key.replace('_', '-')}",
                                                   "laporan-pelaksanaan.html", REPORT_ACTION))
    document = render.html(template, **context)
    data = render.pdf(document)

    directory = Path(out) if out else documents_dir(config, facts.office.key)
    stem = f"{request_id}-{stem_name}"
    pdf_path, html_path = directory / f"{stem}.pdf", directory / f"{stem}.html"
    write_atomic(html_path, document.encode())
    write_atomic(pdf_path, data)
    digest = hashlib.sha256(data).hexdigest()
    docx_path = docx_digest = None
    if kind == "kak":
        # Imported here: python-docx is only needed for the KAK.
        from provisioner.letters.kak_docx import kak_docx

        docx_bytes = kak_docx(context)
        docx_path = directory / f"{stem}.docx"
        write_atomic(docx_path, docx_bytes)
        docx_digest = hashlib.sha256(docx_bytes).hexdigest()
    number = issued.text(profile)
    with store.session() as session:
        add_event(session, request_id, "document_issued", source=source, document=kind, step=step.key,
                  number=number, date=day.isoformat(), pdf=str(pdf_path), html=str(html_path), sha256=digest,
                  docx=str(docx_path) if docx_path else None, docx_sha256=docx_digest, sop=facts.sop.name)
    return IssuedDocument(request=request_id, kind=kind, step=step.key, number=number, date=day.isoformat(),
                          pdf=str(pdf_path), html=str(html_path), sha256=digest,
                          docx=str(docx_path) if docx_path else None, docx_sha256=docx_digest,
                          new_number=issued.new)


def _rejected_handover(facts: Facts) -> dict:
    reply = facts.letters.get("reply")
    answer = {"answer": "reply", "letter": reply,
              "note": "permohonan tidak disetujui: surat balasan adalah jawabannya; tidak ada serah terima"}
    return answer


# -- the documents' contents --------------------------------------------------

def _application(facts: Facts):
    application = getattr(facts.request, "application", None)
    if application is None:
        raise StateError(f"{facts.request.id}: a {facts.request.service} request without an application "
                         f"section has no application documents")
    return application


def _request_rows(facts: Facts) -> list[tuple[str, str]]:
    """The rows every application document opens with: who asked, by which letter, for what."""
    request, app = facts.request, _application(facts)
    letter = request.letter
    rows = [("Nomor permohonan", request.id),
            ("Perangkat daerah pemohon", request.agency.name),
            ("Surat permohonan", f"Nomor {letter.number} tanggal {render.tanggal(letter.date)} hal {letter.subject}"),
            ("Nama aplikasi", app.name)]
    kind = getattr(app, "kind", None)
    if kind:
        work = WORK.get(kind, kind).capitalize()
        if getattr(app, "extends", None):
            work += f" dari {app.extends}"
        rows.append(("Jenis pekerjaan", work))
    return rows


def _decision(facts: Facts) -> dict | None:
    """The decision with its reasons (the decision step's note), as documents state it."""
    record = facts.decision_step
    if record is None:
        return None
    step = facts.sop.approval_step
    branch = step.branches[record.branch] if record.branch in (step.branches or {}) else None
    reasons = [line.strip() for line in (record.note or "").splitlines() if line.strip()]
    label = branch.label if branch else record.branch
    phrase = DECISIONS.get(facts.sop.name, {}).get(record.branch) or f"{step.activity}: {label}"
    return {"by": facts.role(step.actor), "date": record.ended_at.astimezone(facts.office.tz).date(),
            "label": label, "phrase": phrase, "approved": facts.decision == "approve",
            "reasons": reasons}


def _analysis(facts: Facts, step) -> dict:
    data = facts.data(step.key)
    if not data:
        raise StateError(f"{facts.request.id}: step {step.number} ({step.key}) has no analysis data; "
                         f"record the step with --data FILE (kind analysis)")
    app = _application(facts)
    rows = _request_rows(facts)
    if getattr(app, "scope", None):
        rows.append(("Ruang lingkup yang dimohonkan", flat(app.scope)))
    if getattr(app, "integrations", None):
        rows.append(("Integrasi", ", ".join(app.integrations)))
    return {"subject": "Hasil Analisa Kebutuhan", "rows": rows, "analysis": data,
            "summary": paragraphs(data["summary"]), "recommendation": flat(data["recommendation"]),
            "users": data.get("users") or app.users, "data_text": flat(data.get("data") or app.data),
            "analyst": facts.role(step.actor), "signer": facts.signatory(step.actor),
            "recorded": facts.step(step.key).ended_at.astimezone(facts.office.tz).date()}


def _kak(facts: Facts, step) -> dict:
    app, request = _application(facts), facts.request
    analysis_steps = _steps_for(facts.sop, "analysis")
    analysis = facts.data(analysis_steps[0].key) if analysis_steps else {}
    kak = facts.data(step.key)
    drafter = facts.role(step.actor)
    agency = request.agency.name
    budget = kak.get("budget_rupiah")
    hosting = getattr(app, "hosting", None)
    analysis_number = facts.letters.get("analysis")
    sections = {
        "latar_belakang": paragraphs(app.need) + paragraphs(analysis.get("summary")),
        "maksud": f"Maksud kegiatan ini adalah pengadaan aplikasi {app.name} untuk memenuhi kebutuhan {agency}.",
        "tujuan": list(analysis.get("needs") or []),
        "sasaran": app.users or analysis.get("users"),
        "organisasi": agency,
        "sumber_dana": app.budget_source or placeholder(agency),
        "biaya": rupiah(budget) if budget is not None else placeholder(f"{agency} berdasarkan survei harga"),
        "ruang_lingkup": list(kak.get("scope") or []),
        "lokasi": kak.get("location") or placeholder(drafter),
        "keluaran": list(kak.get("outputs") or []),
        "jangka_waktu": kak.get("duration") or placeholder(drafter),
        "fitur": list(analysis.get("features") or []),
        "data": flat(analysis.get("data") or app.data),
        "risiko": list(analysis.get("risks") or []),
        "rekomendasi": flat(analysis.get("recommendation")),
        "hosting": hosting,
    }
    return {"subject": f"Kerangka Acuan Kerja Pengadaan Aplikasi {app.name}", "kak": sections,
            "drafter": drafter, "signer": facts.signatory(step.actor), "head": facts.signatory("kadis"),
            "drafter_missing": placeholder(drafter), "agency_missing": placeholder(agency),
            "analysis_number": analysis_number,
            "year": facts.step(step.key).ended_at.astimezone(facts.office.tz).year}


def _report_recipient(facts: Facts, step) -> str:
    """The role a report goes to: lapor_kabid -> kabid; otherwise the step after it's actor."""
    if step.key.startswith(REPORT_PREFIX) and step.key[len(REPORT_PREFIX):] in facts.sop.roles:
        return step.key[len(REPORT_PREFIX):]
    following = facts.sop.default_next(step)
    if following is None:
        raise StateError(f"SOP {facts.sop.name}: report step {step.key} has no next step to report to")
    return following.actor


def _timeline(facts: Facts, upto) -> list[dict]:
    rows = []
    for fact in facts.steps.values():
        rows.append({"number": fact.number, "activity": fact.activity,
                     "by": facts.sop.roles.get(fact.by, "Sistem (toolkit)" if fact.by == "system" else fact.by),
                     "when": render.waktu(fact.ended_at.astimezone(facts.office.tz)),
                     "branch": facts.sop.step(fact.key).branches[fact.branch].label
                     if fact.branch and facts.sop.step(fact.key).branches else None})
        if fact.key == upto.key:
            break
    return rows


def _report(facts: Facts, step) -> dict:
    app = _application(facts)
    recipient = _report_recipient(facts, step)
    rows = _request_rows(facts)
    decision = _decision(facts)
    delegation_steps = _steps_for(facts.sop, "delegation")
    delegation = facts.data(delegation_steps[0].key) if delegation_steps else {}
    if delegation.get("programmers"):
        rows.append(("Pelaksana", "; ".join(_person(p) for p in delegation["programmers"])))
    if delegation.get("due"):
        rows.append(("Batas waktu penyelesaian", render.tanggal(_date(delegation["due"]))))
    for kind, label in (("analysis", "Hasil analisa kebutuhan"), ("kak", "Kerangka Acuan Kerja (KAK)"),
                        ("delegation", "Nota dinas delegasi tugas")):
        number = facts.letters.get(kind)
        if number is not None:
            rows.append((label, f"Nomor {number}"))
    if app.budget_source:
        rows.append(("Sumber dana", app.budget_source))
    analysis_steps = _steps_for(facts.sop, "analysis")
    recommendation = flat(facts.data(analysis_steps[0].key).get("recommendation")) if analysis_steps else None
    work = WORK.get(getattr(app, "kind", None) or "", None)
    if facts.sop.name == "konsultasi-aplikasi" or work is None:
        subject = f"Laporan Pelaksanaan Konsultasi Aplikasi {app.name}"
        what = f"konsultasi penyediaan aplikasi {app.name}"
    else:
        subject = f"Laporan Hasil {work.capitalize()} Aplikasi {app.name}"
        what = f"{work} aplikasi {app.name}"
    body = {"subject": subject, "what": what, "rows": rows, "decision": decision,
            "recommendation": recommendation, "timeline": _timeline(facts, step),
            "note": facts.step(step.key).note, "sender": facts.role(step.actor),
            "signer": facts.signatory(step.actor), "layout": "_nota-dinas.html",
            "recipient": facts.role(recipient), "sender_key": step.actor, "recipient_key": recipient}
    if step.actor in STAFF_ROLES:
        # The programmers report to the Kasi by name: a laporan they sign, not a team's nota dinas.
        people = delegation.get("programmers") or []
        title = facts.sop.roles.get(step.actor, step.actor)
        body.update(layout="_laporan.html",
                    sender=(", ".join(p["name"] for p in people) + f" ({title})") if people
                    else placeholder(f"{title}, nama sesuai nota dinas delegasi"),
                    signers=[{"position": title, "name": p["name"], "rank": None, "nip": render.nip(p.get("nip"))}
                             for p in people] or [facts.signatory(step.actor)])
    return body


def _person(person: dict) -> str:
    nip = render.nip(person.get("nip"))
    return f"{person['name']}" + (f" (NIP. {nip})" if nip else "")


def _date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _delegation(facts: Facts, step) -> dict:
    data = facts.data(step.key)
    if not data:
        raise StateError(f"{facts.request.id}: step {step.number} ({step.key}) has no delegation data; "
                         f"record the step with --data FILE (kind delegation)")
    app = _application(facts)
    decision = _decision(facts)
    if decision is None or not decision["approved"]:
        raise StateError(f"{facts.request.id}: work is delegated only after the decision that the "
                         f"application can be built")
    programmers = [{"name": p["name"], "nip": render.nip(p.get("nip"))} for p in data["programmers"]]
    rows = _request_rows(facts)
    if getattr(app, "scope", None):
        rows.append(("Ruang lingkup", flat(app.scope)))
    if getattr(app, "integrations", None):
        rows.append(("Integrasi", ", ".join(app.integrations)))
    work = WORK.get(getattr(app, "kind", None) or "new", "pembuatan")
    return {"subject": f"Delegasi Tugas {work.capitalize()} Aplikasi {app.name}", "work": work,
            "programmers": programmers, "task": flat(data["task"]), "due": _date(data["due"]), "rows": rows,
            "decision": decision, "sender": facts.role(step.actor),
            "recipient": "Tim Programmer (" + ", ".join(p["name"] for p in programmers) + ")",
            "signer": facts.signatory(step.actor)}


def _handover(facts: Facts, step) -> dict:
    app = _application(facts)
    data = facts.data(step.key)
    agency = facts.request.agency.name
    received = data.get("received_by") or {}
    day = facts.step(step.key).ended_at.astimezone(facts.office.tz).date()
    first = {"name": facts.profile.signer.name, "nip": render.nip(facts.profile.signer.nip),
             "position": facts.profile.signer.position, "unit": facts.office.name}
    second = {"name": received.get("name") or placeholder(agency),
              "nip": render.nip(received.get("nip")) if received else placeholder(agency),
              "position": received.get("position") or placeholder(agency), "unit": agency}
    rows = [("Nama aplikasi", app.name),
            ("Versi", data.get("version") or placeholder(facts.role(step.actor))),
            ("Alamat akses (URL)", data.get("url") or "-")]
    kind = getattr(app, "kind", None)
    if kind:
        rows.append(("Jenis pekerjaan", WORK.get(kind, kind).capitalize()
                     + (f" dari {app.extends}" if getattr(app, "extends", None) else "")))
    letter = facts.request.letter
    rows.append(("Dasar", f"Surat permohonan Nomor {letter.number} tanggal {render.tanggal(letter.date)}"))
    return {"subject": f"Berita Acara Serah Terima Aplikasi {app.name}", "rows": rows,
            "first": first, "second": second, "first_sig": facts.signatory("kadis"),
            "second_sig": {"position": second["position"], "name": received.get("name"), "rank": None,
                           "nip": render.nip(received.get("nip"))}, "documents": list(data.get("documents") or []),
            "documents_missing": placeholder(facts.role(step.actor)) if not data.get("documents") else None,
            "in_words": tanggal_kata(day), "day": day, "city": facts.profile.city}


def _website_report(facts: Facts, step) -> dict:
    deployed = [(at, payload) for kind, at, payload in facts.events if kind == "website_deployed"]
    if not deployed:
        raise StateError(f"{facts.request.id}: no website deploy is recorded for this request "
                         f"(no website_deployed event); the report is written after step "
                         f"{_install_step(facts.sop)} deploys the site")
    at, deploy = deployed[-1]
    tz = facts.office.tz
    later = [(a, p) for a, p in facts.rollbacks
             if a > at and (p.get("fqdn") or deploy.get("fqdn")) == deploy.get("fqdn")]
    failed = [p for kind, a, p in facts.events if kind == "website_deploy_failed" and a < at]
    health = deploy.get("health") or {}
    backup = deploy.get("backup")
    source = deploy.get("source") or "-"
    fqdn = deploy.get("fqdn") or facts.request.fqdn
    # (label, value, technical): technical values print in a fixed-width face, sentences do not.
    content = [("Situs", fqdn, True),
               ("Rilis", deploy.get("release") or "-", True),
               ("Rilis sebelumnya", deploy.get("previous") or "- (pemasangan pertama)", bool(deploy.get("previous"))),
               ("Sumber konten", source, True),
               ("Ref / commit", " / ".join(x for x in (deploy.get("ref"), deploy.get("commit")) if x) or "-", True),
               ("SHA-256 konten", deploy.get("sha256") or "-", True),
               ("Jumlah berkas dan ukuran", _files(deploy), False),
               ("Waktu pemasangan", render.waktu(_aware(at).astimezone(tz)), False),
               ("Perintah sebelum pengaktifan", deploy.get("command") or "- (tidak ada)", bool(deploy.get("command")))]
    if backup:
        saved = [("Berkas cadangan", backup.get("path") or "-", True),
                 ("SHA-256 cadangan", backup.get("sha256") or "-", True),
                 ("Ukuran cadangan", f"{render.ribuan(int(backup.get('bytes') or 0))} bita", False)]
    else:
        saved = [("Cadangan basis data", "- (situs tanpa basis data)", False)]
    status = health.get("status")
    checks = [("Alamat pemeriksaan", health.get("url") or "-", True),
              ("Status HTTP", str(status) if status is not None else "-", True),
              ("Penanda rilis", health.get("marker") or "- (tidak diperiksa)", bool(health.get("marker")))]
    sections = [("Konten yang dipasang", content), ("Cadangan basis data sebelum pengaktifan", saved),
                ("Pemeriksaan dari luar server setelah pengaktifan", checks)]
    switched_back = [p for p in failed if _switched_back(p)]
    return {"subject": f"Laporan Pelaksanaan Pembuatan/Pemutakhiran Website {fqdn}", "sections": sections,
            "method": _how_checked(deploy, backup, health),
            "rolled_back": [{"when": render.waktu(_aware(a).astimezone(tz)), "release": p.get("release"),
                             "reason": p.get("reason")} for a, p in later],
            "failed": len(switched_back),
            "failures": [_failure(p) for p in failed if not _switched_back(p)],
            "sender": facts.role(step.actor), "recipient": facts.role("kadis"),
            "signer": facts.signatory(step.actor)}


def _how_checked(deploy: dict, backup: dict | None, health: dict) -> str:
    """What was done around the switch, as the deploy recorded it: only what happened."""
    parts = [("Sebelum rilis baru diaktifkan, basis data situs dicadangkan." if backup else
              "Situs tidak memiliki basis data, sehingga tidak ada pencadangan sebelum rilis baru diaktifkan.")]
    status, marker = health.get("status"), health.get("marker")
    if status is None:
        parts.append("Hasil pemeriksaan dari luar server setelah pengaktifan tidak tercatat.")
    else:
        checked = f"Setelah pengaktifan, alamat {health.get('url') or '-'} diperiksa dari luar server dan " \
                  f"menjawab dengan status HTTP {status}"
        parts.append(checked + (f" serta memuat penanda rilis {marker}." if marker
                                else "; penanda rilis tidak diperiksa."))
    if deploy.get("previous"):
        parts.append(f"Bila pemeriksaan itu gagal, rilis sebelumnya ({deploy['previous']}) diaktifkan kembali "
                     f"secara otomatis.")
    return " ".join(parts)


def _switched_back(payload: dict) -> bool:
    """Did a failed deploy put the previous release back, answering? (deploy.py `switched_back`)"""
    back = payload.get("switched_back")
    return isinstance(back, dict) and bool(back.get("release")) and not back.get("error")


def _failure(payload: dict) -> str:
    """A failed deploy or rollback that was not switched back, described by what its event records."""
    release, reason = payload.get("release") or "-", flat(payload.get("reason")) or "alasan tidak tercatat"
    if payload.get("action") == "rollback":
        return f"pengembalian ke rilis {release} gagal: {reason}"
    text = f"pemasangan rilis {release} gagal: {reason}"
    if "switched_back" not in payload:
        return text
    back = payload["switched_back"]
    if back is None:
        return text + " (gagal sebelum pengaktifan; website tetap pada rilis yang berjalan)"
    if not back.get("release"):
        return text + " (tidak ada rilis sebelumnya untuk diaktifkan kembali)"
    return text + f" (rilis sebelumnya {back['release']} gagal diaktifkan kembali: {flat(back.get('error'))})"


def _install_step(sop) -> str:
    steps = [s for s in sop.steps if s.action == "install_website"]
    return f"{steps[0].number} ({steps[0].key})" if steps else "instalasi"


def _files(deploy: dict) -> str:
    files, size = deploy.get("files"), deploy.get("bytes")
    if files is None and size is None:
        return "-"
    return f"{render.ribuan(int(files or 0))} berkas, {render.ribuan(int(size or 0))} bita"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


BUILDERS = {"analysis": _analysis, "kak": _kak, REPORT: _report, "delegation": _delegation,
            "handover": _handover, "website-report": _website_report}
