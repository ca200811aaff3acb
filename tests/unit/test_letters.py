"""Letters: both offices' configuration letters, a rejection's reply, the credentials sheet.

The PDFs are read back with pdftotext: what an agency receives is checked,
not the HTML that went in.
"""

import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from provisioner import credentials
from provisioner.cli import main
from provisioner.config import ENV_HOME, ENV_CONFIG, ENV_STATE_URL, REPO_ROOT, Config, default_offices
from provisioner.errors import NotFound, StateError
from provisioner.inventory import load_inventory
from provisioner.letters import issue as letters
from provisioner.letters.render import nip, ribuan, tanggal
from provisioner.letters.sheet import write_sheet
from provisioner.secretbox import SecretBox
from provisioner.site import from_request
from provisioner.sop.engine import Engine
from provisioner.sop.hooks import ACTIONS
from provisioner.sop.sla import utcnow
from provisioner.store import open_store
from provisioner.store.models import SiteRow

from conftest import BACKENDS, EXAMPLES, WITA, state_url_for

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")

ISSUED = datetime(2026, 11, 22, 1, 30, tzinfo=timezone.utc)  # 22 November 2026, 09:30 WITA
REJECTION = "Kapasitas penyimpanan server hosting saat ini penuh"


def pdf_text(path):
    out = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split())


class Office:
    """A state database with requests taken through the SOP; provisioning is a stand-in
    that writes the configuration record and passwords the way hosting does."""

    def __init__(self, tmp_path, url):
        self.config = Config(offices=default_offices(), state_dir=tmp_path)
        self.store = open_store(url)
        self.box = SecretBox(tmp_path / "secret.key")
        self.out = tmp_path / "out"
        self.now = datetime(2024, 9, 3, 8, 0, tzinfo=WITA)
        registry = ACTIONS.copy()
        registry.register("provision_site", self._provision, replace=True)
        self.engine = Engine(self.config, self.store, actions=registry, clock=lambda: self.now)

    def _provision(self, ctx):
        inventory = load_inventory(self.config.hosting.inventory)
        web, db = inventory.group("web")[0], inventory.group("db")[0]
        dedicated = ctx.request.site.dedicated_ip
        site = from_request(ctx.request, web, db, "203.0.113.100" if dedicated else web.vars["public_ip"], dedicated)
        users = {"sftp": site.names.user} | ({"db": site.names.db_user} if site.database else {})
        credentials.ensure(self.store, self.box, site.fqdn, site.request_id, users)
        now = utcnow()
        with self.store.session() as session:
            session.add(SiteRow(fqdn=site.fqdn, request_id=site.request_id, office=site.office, zone=site.zone,
                                label=site.label, state="provisioned", web_host=site.web_host,
                                db_host=site.db_host, public_ip=site.public_ip, dedicated_ip=site.dedicated_ip,
                                config=site.record(), plan_checksum="0" * 64, created_at=now,
                                provisioned_at=now, updated_at=now))
        return {"fqdn": site.fqdn}

    def through_review(self, raw, name="request.yaml"):
        outcome = self.engine.submit(raw, name)
        for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
            self.now += timedelta(minutes=3)
            self.engine.record_step(outcome.request_id, ref, role)
        self.now += timedelta(minutes=3)
        return outcome.request_id

    def site(self, request_id):
        with self.store.session() as session:
            return session.query(SiteRow).filter_by(request_id=request_id).one()

    def letter(self, request_id, **kw):
        return letters.issue(self.config, self.store, request_id, out=self.out, now=kw.pop("now", ISSUED), **kw)


@pytest.fixture
def office(request, tmp_path, monkeypatch):
    """An office on SQLite; the numbering tests ask for each backend (`on_both_backends`)."""
    for name in (ENV_HOME, ENV_CONFIG, ENV_STATE_URL):
        monkeypatch.delenv(name, raising=False)
    made = Office(tmp_path, state_url_for(request, tmp_path, getattr(request, "param", "sqlite")))
    yield made
    made.store.close()


# Letter numbering runs on SQLite and on a real PostgreSQL server (tests/unit/pg.py).
on_both_backends = pytest.mark.parametrize("office", BACKENDS, indirect=True)


def rejected_raw():
    return ((EXAMPLES / "tarakan-simkes.yaml").read_bytes()
            .replace(b"HST-2024-0007", b"HST-2024-0008").replace(b"subdomain: simkes", b"subdomain: simpeg"))


def test_indonesian_forms():
    assert tanggal(datetime(2026, 11, 22).date()) == "22 November 2026"
    assert tanggal(datetime(2024, 8, 2).date()) == "2 Agustus 2024"
    assert ribuan(20480) == "20.480" and ribuan(512) == "512"
    assert nip("196501112000121002") == "19650111 200012 1 002"


@pytest.mark.parametrize("example, number, city, signer, signer_nip", [
    ("tarakan-simkes.yaml", "400.14/1/DKISP/2026", "Tarakan, 22 November 2026", "dr. WITOYO",
     "NIP. 19650111 200012 1 002"),
    ("buleleng-sipandu.yaml", "400.14/1/Kominfosanti/2026", "Singaraja, 22 November 2026",
     "Dr. Drs. I Ketut Suweca, M.Si", "NIP. 19620608 198203 1 008"),
])
def test_configuration_letter_has_every_field_and_no_secret(office, example, number, city, signer, signer_nip):
    request_id = office.through_review((EXAMPLES / example).read_bytes(), example)
    # Approve with the hook off for the letter action: the test renders it at a fixed date.
    registry = office.engine.actions.copy()
    registry.register("render_letter", lambda ctx: {"skipped": True}, replace=True)
    office.engine.actions = registry
    office.engine.decide(request_id, True, "kadis")
    letter = office.letter(request_id)
    assert letter.kind == "configuration" and letter.number == number and letter.new_number

    text = pdf_text(letter.pdf)
    request = office.engine.show(request_id)
    site = office.site(request_id)
    record = site.config
    profile = office.config.office(request["office"]).letters
    stored = __import__("yaml").safe_load((EXAMPLES / example).read_text())
    expected = [
        profile.government, city, f"Nomor : {number}", "Sifat : Biasa", "Lampiran : -",
        "Hal : Pemberitahuan Data dan Konfigurasi Hosting",
        f"Yth. Kepala {stored['agency']['name']}", "di - Tempat",
        f"Nomor {stored['letter']['number']}", tanggal(stored["letter"]["date"]), stored["letter"]["subject"],
        site.fqdn, f"https://{site.fqdn}/", site.public_ip, site.web_host, record["names"]["docroot"],
        "Host SFTP", "Port SFTP 22", f"Pengguna SFTP {record['sftp_user']}",
        "Sertifikat TLS (HTTPS) Aktif", f"{ribuan(record['quota_mb'])} MB",
        f"ns1.{site.zone}", f"ns2.{site.zone}",
        "disampaikan secara terpisah dalam dokumen tertutup bersifat RAHASIA",
        "menjaga kerahasiaan data akses", "menjaga aplikasi tetap mutakhir", "melaporkan setiap insiden",
        signer, signer_nip, "Tembusan:", *profile.copies,
    ]
    if record["php_version"]:
        expected += [f"Versi PHP {record['php_version']}"]
    if record["db_name"]:
        expected += ["Host basis data 10.77.0.31 (db1), port 3306", f"Nama basis data {record['db_name']}",
                     f"Pengguna basis data {record['db_user']}"]
    expected += [f"Batas bandwidth {ribuan(record['bandwidth_kbps'])} kbps" if record["bandwidth_kbps"]
                 else "Batas bandwidth Tidak dibatasi"]
    missing = [field for field in expected if field not in text]
    assert not missing, f"not in the letter: {missing}\n{text}"
    if profile.signer.rank:
        assert profile.signer.rank in text

    passwords = credentials.get(office.store, office.box, site.fqdn)
    assert passwords and all(len(p) >= 16 for p in passwords.values())
    html = open(letter.html, encoding="utf-8").read()
    pdf = open(letter.pdf, "rb").read()
    for password in passwords.values():
        assert password not in text and password not in html and password.encode() not in pdf

    events = [e for e in office.engine.events(request_id) if e["kind"] == "letter_issued"]
    assert events[-1]["payload"]["number"] == number
    assert events[-1]["payload"]["sha256"] == __import__("hashlib").sha256(pdf).hexdigest()


@on_both_backends
def test_the_sop_step_writes_the_letter_and_a_rerun_keeps_its_number(office):
    request_id = office.through_review((EXAMPLES / "tarakan-simkes.yaml").read_bytes())
    outcome = office.engine.decide(request_id, True, "kadis")
    ran = {a["action"]: a["result"] for a in outcome.actions}
    assert ran["render_letter"]["kind"] == "configuration"
    first = ran["render_letter"]["number"]
    assert re.fullmatch(r"400\.14/1/DKISP/\d{4}", first)
    assert (office.config.home() / "letters" / f"{request_id}-surat-konfigurasi.pdf").is_file()
    again = office.letter(request_id)
    assert again.number == first and not again.new_number


def test_rejection_gets_the_reply_letter_with_the_reason(office):
    request_id = office.through_review(rejected_raw())
    outcome = office.engine.decide(request_id, False, "kadis", reason=REJECTION)
    (ran,) = outcome.actions
    assert ran["action"] == "render_reply_letter" and ran["result"]["kind"] == "reply"
    letter = office.letter(request_id)  # `provision letter` on the rejected request
    assert letter.kind == "reply" and letter.number == ran["result"]["number"]
    text = pdf_text(letter.pdf)
    for field in ("Hal : Balasan Permohonan Hosting dan Subdomain", "belum dapat kami penuhi", REJECTION,
                  "simpeg.tarakankota.go.id", "Nomor 000.8.3/112/DINKES/2024", "12 Agustus 2024",
                  "Yth. Kepala Dinas Kesehatan Kota Tarakan", "dr. WITOYO", "Tembusan:"):
        assert field in text, field
    with pytest.raises(StateError, match="rejected"):
        office.letter(request_id, kind="configuration")


def test_buleleng_application_reply_uses_the_same_letter(office):
    raw = (EXAMPLES / "buleleng-api-sipandu.yaml").read_bytes().replace(b"KOM-2024-0044", b"KOM-2024-0040")
    office.engine.submit(raw, "aplikasi.yaml")
    analysis = EXAMPLES / "data" / "analisa-sipandu.yaml"
    for ref, role in (("2", "kadis"), ("3", "kabid"), ("4", "kasi"), ("5", "kasi"), ("6", "programmer")):
        office.now += timedelta(minutes=5)
        office.engine.record_step("KOM-2024-0040", ref, role, data_file=analysis if ref == "6" else None)
    office.now += timedelta(minutes=5)
    reasons = "Kebutuhan data belum didukung API daerah\nTim programmer penuh sampai akhir tahun"
    outcome = office.engine.decide("KOM-2024-0040", False, "kasi", reason=reasons)
    assert [a["action"] for a in outcome.actions] == ["render_reply_letter"]
    text = pdf_text(outcome.actions[0]["result"]["pdf"])
    for field in ("Balasan Permohonan Pembuatan/Pengembangan Aplikasi", "belum dapat dibangun",
                  "1. Kebutuhan data belum didukung API daerah", "2. Tim programmer penuh sampai akhir tahun",
                  "PEMERINTAH KABUPATEN BULELENG", "Singaraja,", "/Kominfosanti/"):
        assert field in text, field
    assert office.engine.show("KOM-2024-0040")["current_step"] == "alasan_ke_kabid"


@on_both_backends
def test_numbers_increase_per_office_and_year_and_survive_a_failed_render(office, monkeypatch):
    tarakan = office.through_review((EXAMPLES / "tarakan-simkes.yaml").read_bytes())
    office.engine.actions.register("render_letter", lambda ctx: {}, replace=True)
    office.engine.decide(tarakan, True, "kadis")
    rejected = office.through_review(rejected_raw())
    office.engine.actions.register("render_reply_letter", lambda ctx: {}, replace=True)
    office.engine.decide(rejected, False, "kadis", reason=REJECTION)
    buleleng = office.through_review((EXAMPLES / "buleleng-sipandu.yaml").read_bytes())
    office.engine.decide(buleleng, True, "kadis")

    def broken(document):
        raise RuntimeError("the PDF engine broke")

    monkeypatch.setattr(letters.render, "pdf", broken)
    with pytest.raises(RuntimeError):
        office.letter(tarakan)  # takes 400.14/1/DKISP/2026, then fails
    monkeypatch.undo()
    assert office.letter(rejected).number == "400.14/2/DKISP/2026"  # 1 stays taken
    assert office.letter(tarakan).number == "400.14/1/DKISP/2026"  # the same letter keeps it
    assert office.letter(buleleng).number == "400.14/1/Kominfosanti/2026"  # per office
    later = office.through_review(rejected_raw().replace(b"HST-2024-0008", b"HST-2024-0009")
                                  .replace(b"simpeg", b"sidak"))
    office.engine.decide(later, False, "kadis", reason=REJECTION)
    next_year = office.letter(later, now=ISSUED.replace(year=2027))
    assert next_year.number == "400.14/1/DKISP/2027" and next_year.date == "2027-11-22"


def test_unknown_request_and_a_letter_too_early(office):
    with pytest.raises(NotFound, match="no request 'HST-2024-9999'"):
        office.letter("HST-2024-9999")
    request_id = office.through_review((EXAMPLES / "tarakan-simkes.yaml").read_bytes())
    with pytest.raises(StateError, match="no configuration letter yet"):
        office.letter(request_id)


def test_credentials_sheet_is_one_private_page_with_the_passwords(office, tmp_path):
    lines = [("Situs", "https://simkes.tarakankota.go.id/"), ("Pengguna SFTP", "simkes-bc384a"),
             ("Kata sandi SFTP", "Xq7-sftp-secret-Zt9"), ("Kata sandi basis data", "Pw4-db-secret-Lm2")]
    path = write_sheet(tmp_path / "sheets", "simkes.tarakankota.go.id", "HST-2024-0007", lines,
                       office=office.config.office("tarakan"))
    assert path.suffix == ".pdf" and path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sheets").stat().st_mode & 0o777 == 0o700
    text = pdf_text(path)
    assert "RAHASIA" in text and "Xq7-sftp-secret-Zt9" in text and "Pw4-db-secret-Lm2" in text
    pages = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+1$", pages, re.M)
    assert list((tmp_path / "sheets").iterdir()) == [path]  # no HTML or temporary copy beside it


def test_a_batch_of_sheets_renders_side_by_side_each_with_its_own_passwords(office, tmp_path, monkeypatch):
    from provisioner.letters import render
    from provisioner.letters.sheet import write_sheets

    monkeypatch.setattr(render, "PARALLEL_FROM", 2)
    monkeypatch.setattr(render.os, "cpu_count", lambda: 2)  # a pool even on one CPU
    pool = []
    real_pool = render.ProcessPoolExecutor
    monkeypatch.setattr(render, "ProcessPoolExecutor", lambda *a, **kw: pool.append(1) or real_pool(*a, **kw))
    tarakan = office.config.office("tarakan")
    sheets = [(f"s{n}.tarakankota.go.id", f"HST-2024-00{n}", [("Kata sandi SFTP", f"secret-{n}-sftp")], tarakan)
              for n in (11, 12, 13)]
    written = write_sheets(tmp_path / "sheets", sheets)
    assert pool == [1] and sorted(written) == sorted(s[0] for s in sheets)
    for n in (11, 12, 13):
        path = written[f"s{n}.tarakankota.go.id"]
        assert path.stat().st_mode & 0o777 == 0o600
        text = pdf_text(path)
        assert f"secret-{n}-sftp" in text and f"s{n}.tarakankota.go.id" in text
        assert not {f"secret-{m}-sftp" for m in (11, 12, 13) if m != n} & set(text.split())


def test_one_sheet_failing_still_writes_the_others_then_says_so(office, tmp_path, monkeypatch):
    from provisioner.letters import sheet

    real_html = sheet.sheet_html
    monkeypatch.setattr(sheet, "sheet_html", lambda fqdn, *a, **kw: "<p" * 3 if fqdn.startswith("bad")
                        else real_html(fqdn, *a, **kw))
    real_pdf = sheet.render.pdf
    monkeypatch.setattr(sheet.render, "pdf", lambda doc: (_ for _ in ()).throw(ValueError("cannot render"))
                        if doc == "<p" * 3 else real_pdf(doc))
    tarakan = office.config.office("tarakan")
    with pytest.raises(ValueError, match="cannot render"):
        sheet.write_sheets(tmp_path / "sheets", [
            ("good.tarakankota.go.id", "HST-2024-0021", [("Kata sandi SFTP", "x")], tarakan),
            ("bad.tarakankota.go.id", "HST-2024-0022", [("Kata sandi SFTP", "y")], tarakan)])
    assert [p.name for p in (tmp_path / "sheets").iterdir()] == ["good.tarakankota.go.id-credentials.pdf"]


def test_cli_letter(office, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HOME, str(tmp_path))
    request_id = office.through_review(rejected_raw())
    office.engine.decide(request_id, False, "kadis", reason=REJECTION)
    runner = CliRunner()
    result = runner.invoke(main, ["letter", request_id, "--out", str(tmp_path / "cli"), "--json"])
    assert result.exit_code == 0, result.output
    data = __import__("json").loads(result.output)
    assert data["kind"] == "reply" and data["pdf"].startswith(str(tmp_path / "cli"))
    result = runner.invoke(main, ["letter", "HST-2024-9999"])
    assert result.exit_code != 0 and "no request 'HST-2024-9999'" in result.output


def _allocate_all(url, request_ids, store=None):
    """One racing writer: a number for each request (its own process, or a thread on a shared engine)."""
    from provisioner.letters import numbering

    own = store is None
    store = open_store(url) if own else store
    try:
        return {rid: numbering.allocate(store, "tarakan", rid, "reply", ISSUED, WITA).number for rid in request_ids}
    finally:
        if own:
            store.close()


def test_racing_writers_never_share_a_number(state_url):
    """Four processes, each with its own store on the same database, and four threads
    sharing one: on SQLite and on PostgreSQL (READ COMMITTED) the numbers are unique
    and gapless."""
    import concurrent.futures
    import multiprocessing

    from provisioner.store.models import LetterNumber, RequestRow

    url = state_url
    store = open_store(url)
    ids = [f"HST-2026-{n:04d}" for n in range(1, 41)]
    with store.session() as session:
        for rid in ids:
            session.add(RequestRow(id=rid, service="hosting", office="tarakan", fqdn=f"{rid.lower()}.x",
                                   sha256="0" * 64, content=b"", source="test", submitted_at=ISSUED,
                                   state="rejected", decision="reject", current_step=None))
    # Every writer asks for every request, in its own order: each request must get one
    # number whoever wins, and no two requests the same one.
    orders = [ids[i:] + ids[:i] for i in range(0, 40, 10)]
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=spawn) as processes, \
            concurrent.futures.ThreadPoolExecutor(4) as threads:
        futures = [processes.submit(_allocate_all, url, order) for order in orders]
        futures += [threads.submit(_allocate_all, url, list(reversed(order)), store) for order in orders]
        results = [f.result(timeout=120) for f in futures]
    with store.session() as session:
        given = sorted((row.number, row.request_id) for row in session.query(LetterNumber))
    store.close()
    assert all(result == results[0] for result in results)
    assert sorted(results[0].values()) == list(range(1, 41))
    assert given == sorted((number, rid) for rid, number in results[0].items())  # one row per letter


@on_both_backends
def test_a_number_given_is_never_changed_nor_freed(office):
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    request_id = office.through_review(rejected_raw())
    given = office.engine.decide(request_id, False, "kadis", reason=REJECTION).actions[0]["result"]["number"]
    for statement in ("UPDATE letter_numbers SET number = 99", "DELETE FROM letter_numbers"):
        with pytest.raises(DatabaseError, match="letter numbers are never"):
            with office.store.session() as session:
                session.execute(text(statement))
    assert office.letter(request_id).number == given


def test_profiles_in_the_example_config_match_the_defaults(monkeypatch, tmp_path):
    from provisioner.config import load_config
    from provisioner.errors import ConfigError

    monkeypatch.delenv(ENV_STATE_URL, raising=False)
    example = load_config(REPO_ROOT / "provisioner.example.yaml")
    for key, office in default_offices().items():
        assert example.offices[key].letters == office.letters
    bad = tmp_path / "bad.yaml"
    bad.write_text("offices:\n  x:\n    name: X\n    short_name: X\n    zones: [x.go.id]\n    letters:\n"
                   "      government: G\n      office_name: O\n      address: A\n      city: C\n"
                   "      signer: {position: Kepala, name: N}\n      classification: '400'\n"
                   "      number_pattern: '{klasifikasi}/{nomor}/{tahun}'\n")
    with pytest.raises(ConfigError, match="number_pattern"):
        load_config(bad)


def test_logo_goes_left_of_the_kop(office, tmp_path):
    logo = tmp_path / "lambang.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="80" height="96">'
                    '<path d="M4 4h72v50q0 30-36 40Q4 84 4 54z" fill="#1f5f99" stroke="#000"/></svg>')
    tarakan = office.config.offices["tarakan"]
    office.config = office.config.model_copy(update={"offices": dict(
        office.config.offices, tarakan=tarakan.model_copy(update={
            "letters": tarakan.letters.model_copy(update={"logo": logo})}))})
    request_id = office.through_review(rejected_raw())
    office.engine.actions.register("render_reply_letter", lambda ctx: {}, replace=True)
    office.engine.decide(request_id, False, "kadis", reason=REJECTION)
    letter = office.letter(request_id)
    assert 'src="data:image/svg+xml;base64,' in open(letter.html, encoding="utf-8").read()
    assert "PEMERINTAH KOTA TARAKAN" in pdf_text(letter.pdf)


def _approved_letter(office, raw, name):
    request_id = office.through_review(raw, name)
    registry = office.engine.actions.copy()
    registry.register("render_letter", lambda ctx: {"skipped": True}, replace=True)
    office.engine.actions = registry
    office.engine.decide(request_id, True, "kadis")
    return office.letter(request_id)


def test_template_syntax_in_free_text_is_shown_literally_never_evaluated(office):
    agency = "Dinas {{ 7*7 }} {% if true %}IF{% endif %} ${7*7} <b>tebal</b>"
    raw = ((EXAMPLES / "tarakan-simkes.yaml").read_bytes()
           .replace(b"name: Dinas Kesehatan Kota Tarakan", f'name: "{agency}"'.encode())
           .replace(b'subject: "Permohonan', b'subject: "{{ request.contact.nip }} Permohonan'))
    letter = _approved_letter(office, raw, "tarakan-template.yaml")
    html = open(letter.html, encoding="utf-8").read()
    assert "Yth. Kepala Dinas {{ 7*7 }} {% if true %}IF{% endif %} ${7*7} &lt;b&gt;tebal&lt;/b&gt;" in html
    assert "{{ request.contact.nip }} Permohonan" in html
    assert "Dinas 49" not in html and "<b>tebal</b>" not in html and "198001012005012003 Permohonan" not in html
    text = pdf_text(letter.pdf)
    assert "Dinas {{ 7*7 }} {% if true %}IF{% endif %}" in text


@pytest.mark.parametrize("example, cited, foreign", [
    ("tarakan-simkes.yaml", "diproses sesuai SOP Layanan Hosting Nomor 067/28/SOP/DKISP/2022, DKISP Kota Tarakan.",
     None),
    ("buleleng-sipandu.yaml", "diproses sesuai SOP Layanan Hosting, Dinas Kominfosanti Kabupaten Buleleng.",
     "067/28/SOP/DKISP/2022"),
])
def test_the_letter_cites_its_own_offices_sop(office, example, cited, foreign):
    letter = _approved_letter(office, (EXAMPLES / example).read_bytes(), example)
    text = pdf_text(letter.pdf)
    assert cited in open(letter.html, encoding="utf-8").read()
    assert cited.replace(" ", "") in text.replace(" ", ""), text  # the PDF may break a line anywhere
    if foreign:
        assert foreign not in text and foreign not in open(letter.html, encoding="utf-8").read()
    events = [e for e in office.engine.events(letter.request) if e["kind"] == "letter_issued"]
    assert events[-1]["payload"]["sop"] == ("hosting" if foreign is None else "hosting-buleleng")


def test_the_letter_cites_the_sop_its_request_ran_under_not_todays(office, tmp_path):
    """Submitted under document 012/3/...; the office has issued 067/28/... since."""
    older = tmp_path / "sop-2019"
    shutil.copytree(REPO_ROOT / "sop", older)
    hosting = older / "hosting.yaml"
    hosting.write_text(hosting.read_text(encoding="utf-8").replace("067/28/SOP/DKISP/2022", "012/3/SOP/DKISP/2019"),
                       encoding="utf-8")
    office.engine.config = office.engine.config.model_copy(update={"sop_dir": older})
    letter = _approved_letter(office, (EXAMPLES / "tarakan-simkes.yaml").read_bytes(), "tarakan-simkes.yaml")
    html = open(letter.html, encoding="utf-8").read()
    assert "diproses sesuai SOP Layanan Hosting Nomor 012/3/SOP/DKISP/2019, DKISP Kota Tarakan." in html
    assert "067/28" not in html
    issued = [e for e in office.engine.events(letter.request) if e["kind"] == "letter_issued"][-1]["payload"]
    assert issued["sop_document"] == "012/3/SOP/DKISP/2019"


def test_a_letter_is_still_written_after_the_office_dropped_the_service(office):
    request_id = office.through_review((EXAMPLES / "tarakan-simkes.yaml").read_bytes(), "tarakan-simkes.yaml")
    registry = office.engine.actions.copy()
    registry.register("render_letter", lambda ctx: {"skipped": True}, replace=True)
    office.engine.actions = registry
    office.engine.decide(request_id, True, "kadis")
    tarakan = office.config.offices["tarakan"]
    office.config = office.config.model_copy(update={"offices": dict(
        office.config.offices, tarakan=tarakan.model_copy(update={
            "sops": {k: v for k, v in tarakan.sops.items() if k != "hosting"}}))})
    letter = office.letter(request_id)
    assert "SOP Layanan Hosting Nomor 067/28/SOP/DKISP/2022" in open(letter.html, encoding="utf-8").read()


# The certificate as hosting records it after checking what the site serves from outside.
CERTIFICATE = {"issuer": "Pebble Intermediate CA 3a4b5c", "issuer_org": "Pebble",
               "not_before": "2031-08-24T23:30:00+00:00", "not_after": "2031-11-22T23:30:00Z",
               "serial": "5f1e0c2a9b", "names": ["simkes.tarakankota.go.id"], "source": "acme"}


def _approved_site(office, raw, name="tarakan-simkes.yaml", **record):
    """An approved request whose configuration record carries `record` on top of hosting's."""
    request_id = office.through_review(raw, name)
    registry = office.engine.actions.copy()
    registry.register("render_letter", lambda ctx: {"skipped": True}, replace=True)
    office.engine.actions = registry
    office.engine.decide(request_id, True, "kadis")
    with office.store.session() as session:
        site = session.query(SiteRow).filter_by(request_id=request_id).one()
        site.config = {**site.config, **record}  # a new dict: the JSON column sees the change
    return request_id


def test_indonesian_time_in_the_offices_zone():
    from zoneinfo import ZoneInfo

    from provisioner.letters.render import waktu

    expiry = datetime(2031, 11, 22, 23, 30, tzinfo=timezone.utc)
    assert waktu(expiry.astimezone(WITA)) == "23 November 2031 pukul 07.30 WITA"
    assert waktu(expiry.astimezone(ZoneInfo("Asia/Jakarta"))) == "23 November 2031 pukul 06.30 WIB"
    assert waktu(expiry.astimezone(ZoneInfo("Asia/Jayapura"))) == "23 November 2031 pukul 08.30 WIT"


@pytest.mark.parametrize("zone, until", [
    ("Asia/Makassar", "23 November 2031 pukul 07.30 WITA"),
    ("Asia/Jakarta", "23 November 2031 pukul 06.30 WIB"),
])
def test_the_letter_states_the_certificates_issuer_and_validity(office, zone, until):
    tarakan = office.config.offices["tarakan"]
    office.config = office.config.model_copy(update={"offices": dict(
        office.config.offices, tarakan=tarakan.model_copy(update={"timezone": zone}))})
    request_id = _approved_site(office, (EXAMPLES / "tarakan-simkes.yaml").read_bytes(), certificate=CERTIFICATE)
    text = pdf_text(office.letter(request_id).pdf)
    for field in ("https://simkes.tarakankota.go.id/", "Sertifikat TLS (HTTPS) Aktif",
                  "Penerbit sertifikat Pebble Intermediate CA 3a4b5c (Pebble)",
                  f"Sertifikat berlaku sampai {until}"):
        assert field in text, f"{field!r} not in the letter:\n{text}"
    # The date is the office's, not UTC's (22 November), and nothing is said about a missing record.
    assert "22 November 2031" not in text and "belum tercatat" not in text


def test_an_issuer_without_organisation_is_named_alone(office):
    certificate = dict(CERTIFICATE, issuer="DKISP Lab CA", issuer_org=None, source="lab-ca")
    request_id = _approved_site(office, (EXAMPLES / "tarakan-simkes.yaml").read_bytes(), certificate=certificate)
    text = pdf_text(office.letter(request_id).pdf)
    assert re.search(r"Penerbit sertifikat DKISP Lab CA \d+\. Sertifikat berlaku sampai 23 November 2031", text), text
    assert "(None)" not in text and "()" not in text


def test_an_older_record_without_certificate_data_says_so(office):
    request_id = _approved_site(office, (EXAMPLES / "tarakan-simkes.yaml").read_bytes())
    assert "certificate" not in office.site(request_id).config
    text = pdf_text(office.letter(request_id).pdf)
    assert "Sertifikat TLS (HTTPS) Aktif" in text
    assert "Data sertifikat Penerbit dan masa berlaku belum tercatat" in text, text
    assert "Penerbit sertifikat " not in text and "berlaku sampai" not in text


def test_a_site_without_tls_has_no_certificate_rows(office):
    raw = (EXAMPLES / "tarakan-simkes.yaml").read_bytes().replace(b"tls: true", b"tls: false")
    # Even a stray certificate in the record (TLS since turned off) is not stated.
    request_id = _approved_site(office, raw, certificate=CERTIFICATE)
    assert office.site(request_id).config["tls"] is False
    text = pdf_text(office.letter(request_id).pdf)
    assert "http://simkes.tarakankota.go.id/" in text and "https://" not in text
    assert "Sertifikat TLS (HTTPS) Tidak aktif (HTTP)" in text
    for absent in ("Penerbit", "Pebble", "berlaku", "Data sertifikat", "2031"):
        assert absent not in text, absent


@pytest.mark.parametrize("certificate, field", [
    (dict(CERTIFICATE, not_after="next year"), "certificate.not_after 'next year' is not an ISO 8601 time"),
    ({k: v for k, v in CERTIFICATE.items() if k != "not_after"}, "certificate.not_after None"),
    (dict(CERTIFICATE, issuer=""), "certificate.issuer is empty"),
    ("Pebble", "certificate must be a mapping"),
])
def test_a_malformed_certificate_record_is_refused_naming_the_field(certificate, field):
    record = {"tls": True, "certificate": certificate}
    with pytest.raises(StateError, match=re.escape(f"simkes.tarakankota.go.id: configuration record field {field}")):
        letters.tls_rows(record, "simkes.tarakankota.go.id", WITA)


def test_a_naive_record_time_is_read_as_utc():
    rows = dict(letters.tls_rows({"tls": True, "certificate": dict(CERTIFICATE, not_after="2031-11-22T23:30:00")},
                                 "simkes.tarakankota.go.id", WITA))
    assert rows["Sertifikat berlaku sampai"] == "23 November 2031 pukul 07.30 WITA"
