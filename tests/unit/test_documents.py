"""The SOP documents one at a time: words, numbering kinds, placeholders, the website report, the CLI."""

import json
import shutil
from datetime import date, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from provisioner.cli import main
from provisioner.config import ENV_HOME
from provisioner.errors import StateError, UserError
from provisioner.letters import numbering
from provisioner.letters.documents import issue_document
from provisioner.letters.words import rupiah, tanggal_kata, terbilang
from provisioner.store.models import Event, LetterNumber

from conftest import EXAMPLES, WITA
from test_application_sops import APLIKASI, DATA, konsultasi_to_decision, office, pdf_text  # noqa: F401 (office: fixture)

needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")


def test_numbers_and_dates_in_words():
    assert [terbilang(n) for n in (0, 11, 15, 21, 100, 111, 1000, 1500, 2026)] == [
        "nol", "sebelas", "lima belas", "dua puluh satu", "seratus", "seratus sebelas", "seribu",
        "seribu lima ratus", "dua ribu dua puluh enam"]
    assert terbilang(1_250_000_000) == "satu miliar dua ratus lima puluh juta"
    assert rupiah(350_000_000) == "Rp350.000.000,00 (tiga ratus lima puluh juta rupiah)"
    assert tanggal_kata(date(2026, 12, 7)) == ("hari Senin tanggal tujuh bulan Desember "
                                               "tahun dua ribu dua puluh enam")
    with pytest.raises(ValueError):
        terbilang(-1)


def test_document_kinds_fit_the_numbering_table():
    for kind in ("analysis", "kak", "delegation", "handover", "website-report", "report-lapor_kadis"):
        assert numbering.known_kind(kind) and len(kind) <= 20, kind
    for kind in ("report-", "report-a_very_long_step", "memo", "report-x y"):
        assert not numbering.known_kind(kind), kind


def stub(office, *names):
    """Replace actions whose documents another test checks, to keep this one to the renders it is about."""
    registry = office.engine.actions.copy()
    for name in names:
        registry.register(name, lambda ctx, name=name: {"stub": name}, replace=True)
    office.engine.actions = registry


@needs_poppler
def test_kak_without_its_data_shows_what_is_missing(office):
    from docx import Document

    stub(office, "render_analysis", "render_report")
    request_id = konsultasi_to_decision(office)
    office.decide(request_id, True, "bidang_aplikasi", None)
    office.step(request_id, "pembelian", "bidang_aplikasi")
    office.step(request_id, "analisa", "bidang_aplikasi", DATA / "analisa-simpeg.yaml")
    office.step(request_id, "penyusunan_kak", "bidang_aplikasi")  # the kak data is optional
    kak = office.results["render_kak"][0]
    text = pdf_text(kak["pdf"])
    drafter = "[diisi oleh Kepala Bidang Aplikasi dan Informatika]"
    assert "Perkiraan biaya: [diisi oleh Badan Kepegawaian dan Pengembangan Sumber Daya Manusia Kota " \
           "Tarakan berdasarkan survei harga]" in text
    # Scope, location, outputs and duration come from the kak data alone.
    assert text.count(drafter) == 4
    assert "sejak penandatanganan kontrak" not in text
    # What the request and the analysis do give is still there.
    assert "APBD Kota Tarakan TA 2025" in text and "Pemutakhiran data pegawai oleh operator OPD" in text
    body = [p.text for p in Document(kak["docx"]).paragraphs]
    assert body.count(drafter) == 4
    assert "Perkiraan biaya: [diisi oleh Badan Kepegawaian dan Pengembangan Sumber Daya Manusia Kota Tarakan " \
           "berdasarkan survei harga]" in body


def test_a_document_waits_for_its_step(office):
    request_id = konsultasi_to_decision(office)
    with pytest.raises(StateError, match=r"step 8 \(penyusunan_kak\) is not recorded yet"):
        issue_document(office.config, office.store, request_id, "kak")
    with pytest.raises(UserError, match="makes no such document.*analysis, kak, report-lapor_kadis"):
        issue_document(office.config, office.store, request_id, "handover")
    with pytest.raises(UserError, match="not a document kind"):
        issue_document(office.config, office.store, request_id, "surat")


WEBSITE = EXAMPLES / "tarakan-website-dinkes.yaml"
DEPLOYED = {"fqdn": "dinkes.tarakankota.go.id", "release": "20240903-110000-a1b2c3", "previous": None,
            "source": "/srv/konten/dinkes-1.0.tar.gz", "ref": None, "commit": None, "sha256": "ab" * 32,
            "files": 1234, "bytes": 5_242_880,
            "backup": {"path": "/var/backups/provisioner/dinkes_tarakankota_go_id-20240903-110000.sql.gz",
                       "sha256": "cd" * 32, "bytes": 20480},
            "command": None, "health": {"url": "https://dinkes.tarakankota.go.id/healthz.txt", "status": 200,
                                        "marker": "20240903-110000-a1b2c3"},
            "actor": "system", "reason": None}


def website_to_install(office, deploy):
    """The website SOP to step 9; the install action stands in for helper code that deploys and
    records `website_deployed` (or nothing, when `deploy` is None)."""
    def install(ctx):
        if deploy is not None:
            # As the deploy writes it: the payload has its own `source` (where the content came from).
            with office.store.session() as session:
                session.add(Event(request_id=ctx.request.id, at=office.clock.now, actor="system", source="hook",
                                  kind="website_deployed", payload=deploy))
        return {"fqdn": ctx.request.fqdn}
    registry = office.engine.actions.copy()
    registry.register("install_website", install, replace=True)
    office.engine.actions = registry
    request_id = office.engine.submit(WEBSITE.read_bytes(), WEBSITE.name).request_id
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        office.step(request_id, ref, role)
    office.decide(request_id, True, "bidang_aplikasi", None)
    for ref in ("cek_website", "analisa", "pembuatan"):
        office.step(request_id, ref, "bidang_aplikasi")
    return request_id


@needs_poppler
def test_website_report_states_what_was_deployed_and_how_it_was_checked(office):
    request_id = website_to_install(office, DEPLOYED)
    # A rollback from the command line afterwards, recorded without the website request.
    with office.store.session() as session:
        session.add(Event(request_id=None, at=office.clock.now + timedelta(minutes=30), actor="root", source="cli",
                          kind="website_rolled_back",
                          payload=dict(DEPLOYED, release="00000000-000000-awal", previous=DEPLOYED["release"],
                                       reason="Tampilan halaman utama belum disetujui")))
    office.step(request_id, "laporan", "bidang_aplikasi")
    report = office.results["render_website_report"][0]
    assert report["document"] == "website-report" and report["number"] == "400.14/1/DKISP/2024"
    text = pdf_text(report["pdf"])
    for value in ("NOTA DINAS", "Yth. : Kepala Dinas Komunikasi, Informatika, Statistik dan Persandian",
                  "Dari : Kepala Bidang Aplikasi dan Informatika",
                  "Laporan Pelaksanaan Pembuatan/Pemutakhiran Website dinkes.tarakankota.go.id",
                  "20240903-110000-a1b2c3", "/srv/konten/dinkes-1.0.tar.gz", "1.234 berkas",
                  "5.242.880 bita", "https://dinkes.tarakankota.go.id/healthz.txt", "Status HTTP 200",
                  "20.480 bita", "- (pemasangan pertama)", "000.8.3/118/DINKES/2024",
                  "Penanda rilis 20240903-110000-a1b2c3", "3 September 2024 pukul",
                  "website dikembalikan ke rilis 00000000-000000-", "dengan alasan: Tampilan halaman utama"):
        assert value in text, value
    # Long values wrap inside their cell: read them with the line breaks taken out.
    joined = text.replace(" ", "")
    for value in ("ab" * 32, "cd" * 32, "/var/backups/provisioner/dinkes_tarakankota_go_id-20240903-110000.sql.gz"):
        assert value in joined, value


def test_website_report_is_refused_without_a_deploy(office):
    request_id = website_to_install(office, None)
    with pytest.raises(Exception, match="no website deploy is recorded"):
        office.step(request_id, "laporan", "bidang_aplikasi")
    assert office.state(request_id) == "attention"
    with pytest.raises(StateError, match=r"no website_deployed event.*step 9 \(instalasi\)"):
        issue_document(office.config, office.store, request_id, "website-report")
    with office.store.session() as session:  # refused before a number was taken
        assert session.scalars(select(LetterNumber).where(LetterNumber.request_id == request_id)).first() is None


@needs_poppler
def test_cli_renders_a_document_again_with_its_number(office, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HOME, str(tmp_path))
    stub(office, "render_analysis", "render_kak")
    request_id = konsultasi_to_decision(office)
    office.decide(request_id, True, "bidang_aplikasi", None)
    office.step(request_id, "pembelian", "bidang_aplikasi")
    office.step(request_id, "analisa", "bidang_aplikasi", DATA / "analisa-simpeg.yaml")
    office.step(request_id, "penyusunan_kak", "bidang_aplikasi", DATA / "kak-simpeg.yaml")
    runner = CliRunner()
    result = runner.invoke(main, ["letter", request_id, "--document", "kak", "--json"])
    assert result.exit_code == 0, result.output
    first = json.loads(result.output)
    assert first["number"] == "400.14/1/DKISP/2024" and first["docx"].endswith(f"{request_id}-kak.docx")
    assert first["pdf"].startswith(str(tmp_path / "letters" / "tarakan"))
    result = runner.invoke(main, ["letter", request_id, "--document", "kak"])
    assert result.exit_code == 0 and "kak 400.14/1/DKISP/2024" in result.output and "docx:" in result.output
    result = runner.invoke(main, ["letter", request_id, "--document", "report"])
    assert result.exit_code != 0 and "lapor_kadis" in result.output
    # The two renders are both in the history, each with its files' digests.
    issued = [e for e in office.engine.events(request_id) if e["kind"] == "document_issued"]
    assert len(issued) == 2 and all(e["payload"]["docx_sha256"] for e in issued)


@needs_poppler
def test_handover_without_its_data_leaves_the_receiving_party_to_be_filled(office):
    from test_application_sops import aplikasi_to_decision

    stub(office, "render_analysis", "render_delegation", "render_report")
    request_id = aplikasi_to_decision(office)
    office.decide(request_id, True, "kasi", "Tim programmer tersedia")
    office.step(request_id, "delegasi", "kasi", DATA / "delegasi-sipandu.yaml")
    for ref, role in (("pembuatan", "programmer"), ("lapor_kasi", "programmer"), ("lapor_kabid", "kasi"),
                      ("lapor_kadis", "kabid")):
        office.step(request_id, ref, role)
    office.step(request_id, "serah_terima", "kadis")  # the handover data is optional
    text = pdf_text(office.results["render_handover"][0]["pdf"])
    agency = "[diisi oleh Dinas Penanaman Modal dan Pelayanan Terpadu Satu Pintu Kabupaten Buleleng]"
    assert text.count(agency) == 3  # the receiver's name, NIP and position
    assert "Versi [diisi oleh Kepala Dinas" in text and "Dokumen yang diserahkan [diisi oleh Kepala Dinas" in text
    # The office's side is known: its head signs as PIHAK PERTAMA.
    assert "Dr. Drs. I Ketut Suweca, M.Si" in text and "NIP. 19620608 198203 1 008" in text


# -- review fixes -------------------------------------------------------------------

def test_a_request_stored_in_the_old_shape_skips_its_application_documents(office, monkeypatch):
    """Accepted before the application services had their own shape (it gave `site:`): its
    document actions say so and the SOP goes on, instead of holding it in attention."""
    import provisioner.sop.engine as engine_module
    from provisioner.letters.documents import PREDATES
    from provisioner.request import validate

    old = (EXAMPLES / "buleleng-sipandu.yaml").read_text().replace("service: hosting", "service: aplikasi-api")
    # Registered as the store of an earlier version kept it.
    monkeypatch.setattr(engine_module, "validate",
                        lambda raw, config, source, **kw: validate(raw, config, source=source, stored=True))
    request_id = office.engine.submit(old.encode(), "old.yaml").request_id
    monkeypatch.undo()
    for ref, role in (("disposisi_kadis", "kadis"), ("disposisi_kabid", "kabid"), ("terima_kasi", "kasi"),
                      ("koordinasi", "kasi")):
        office.step(request_id, ref, role)
    outcome = office.step(request_id, "analisa", "programmer", DATA / "analisa-sipandu.yaml")
    assert outcome.actions[0]["result"] == {"skipped": PREDATES, "request": request_id, "document": "analysis",
                                            "step": "analisa"}
    assert office.state(request_id) == "submitted"
    office.decide(request_id, True, "kasi", "Dapat dibangun")
    assert office.state(request_id) == "approved"
    assert office.documents(request_id) == []
    result = CliRunner().invoke(main, ["letter", request_id, "--document", "analysis"],
                                env={ENV_HOME: str(office.config.state_dir)}, catch_exceptions=False)
    assert f"{request_id}: no document written: request predates application documents" in result.output


def test_only_the_documents_the_sop_binds_are_offered(office, monkeypatch):
    """A step named like a shipped document step, in an SOP that binds no action to it, makes nothing."""
    request_id = konsultasi_to_decision(office)
    sop = office.engine.sop("konsultasi-aplikasi")
    unbound = sop.model_copy(update={"steps": [s.model_copy(update={"after": None}) if s.key == "penyusunan_kak"
                                               else s for s in sop.steps]})
    from provisioner.letters import documents

    real = documents._facts

    def facts(config, store, rid):
        made = real(config, store, rid)
        made.sop = unbound
        return made

    monkeypatch.setattr(documents, "_facts", facts)
    with pytest.raises(UserError, match=r"makes no such document \(documents of this SOP: analysis, "
                                        r"report-lapor_kadis\)"):
        issue_document(office.config, office.store, request_id, "kak")


def test_a_long_report_step_key_gets_a_number_kind_that_fits(office):
    """Step keys may have 40 characters; the number's kind column 20."""
    from provisioner.sop.model import parse_sop

    long_key = "lapor_hasil_pengembangan_ke_kepala_dinas"
    assert len(long_key) == 40
    kind = numbering.number_kind(f"report-{long_key}")
    assert len(kind) == 20 and numbering.known_kind(kind) and kind.startswith("report-lapo_")
    other = numbering.number_kind("report-lapor_hasil_pengembangan_ke_kepala_seksi")
    assert other != kind and numbering.number_kind("report-lapor_kadis") == "report-lapor_kadis"
    # The SOP loads with such a step, and its report is numbered (and numbered once).
    text = (EXAMPLES.parent / "sop" / "aplikasi-api.yaml").read_text().replace("lapor_kadis", long_key)
    sop = parse_sop(text, "aplikasi-api.yaml", name="aplikasi-api", known_actions=office.engine.actions.names())
    assert sop.step(long_key).after == "render_report"
    request_id = office.engine.submit(APLIKASI.read_bytes(), "a.yaml").request_id
    when = office.clock.now
    first = numbering.allocate(office.store, "buleleng", request_id, f"report-{long_key}", when, WITA)
    again = numbering.allocate(office.store, "buleleng", request_id, f"report-{long_key}", when, WITA)
    assert first.kind == kind and again.number == first.number and not again.new


def test_a_report_number_kind_clash_is_refused_at_sop_load(office, monkeypatch):
    from provisioner.errors import ValidationError
    from provisioner.sop.model import parse_sop

    from provisioner.letters import kinds

    monkeypatch.setattr(kinds, "number_kind", lambda kind: "report-same")
    text = (EXAMPLES.parent / "sop" / "aplikasi-api.yaml").read_text()
    with pytest.raises(ValidationError, match="letter number kind 'report-same' is the same as step 'lapor_kasi'"):
        parse_sop(text, "aplikasi-api.yaml", name="aplikasi-api", known_actions=office.engine.actions.names())


@needs_poppler
def test_the_office_names_the_kasi_and_kabid_in_full(office):
    from provisioner.config import Config

    from test_application_sops import aplikasi_to_decision

    buleleng = office.config.offices["buleleng"]
    positions = {"kasi": "Kepala Seksi Pengembangan Aplikasi", "kabid": "Kepala Bidang Aplikasi Informatika"}
    offices = dict(office.config.offices, buleleng=buleleng.model_copy(
        update={"letters": buleleng.letters.model_copy(update={"positions": positions})}))
    office.config = Config(offices=offices, state_dir=office.config.state_dir)
    office.engine.config = office.config
    stub(office, "render_analysis", "render_delegation", "render_handover")
    request_id = aplikasi_to_decision(office)
    office.decide(request_id, True, "kasi", "Tim programmer tersedia")
    office.step(request_id, "delegasi", "kasi", DATA / "delegasi-sipandu.yaml")
    for ref, role in (("pembuatan", "programmer"), ("lapor_kasi", "programmer"), ("lapor_kabid", "kasi")):
        office.step(request_id, ref, role)
    text = pdf_text(office.results["render_report"][-1]["pdf"])
    assert ("Yth. : Kepala Bidang Aplikasi Informatika Dari : Kepala Seksi Pengembangan Aplikasi " in text)
    assert "[Kepala" not in text


FAILED_BEFORE = dict(DEPLOYED, release="20240903-100000-0f0f0f", reason="HTTP 500 at /healthz.txt",
                     switched_back={"release": "00000000-000000-awal", "status": 200})
FAILED_UNSWITCHED = dict(DEPLOYED, release="20240903-103000-1a1a1a", reason="the database backup failed (exit 2)",
                         switched_back=None)


def _website_report_text(office, deploy, failures=()):
    request_id = website_to_install(office, deploy)
    with office.store.session() as session:
        for i, payload in enumerate(failures):
            session.add(Event(request_id=request_id, at=office.clock.now - timedelta(minutes=50 - i), actor="system",
                              source="hook", kind="website_deploy_failed", payload=payload))
    office.step(request_id, "laporan", "bidang_aplikasi")
    return pdf_text(office.results["render_website_report"][0]["pdf"])


@needs_poppler
def test_website_report_says_only_what_the_deploy_did(office):
    """No database: no backup claimed; no marker: not claimed checked; first install: nothing to switch back."""
    plain = dict(DEPLOYED, backup=None, health=dict(DEPLOYED["health"], marker=None))
    text = _website_report_text(office, plain, [FAILED_UNSWITCHED])
    assert "Situs tidak memiliki basis data, sehingga tidak ada pencadangan sebelum rilis baru diaktifkan." in text
    assert ("alamat https://dinkes.tarakankota.go.id/healthz.txt diperiksa dari luar server dan menjawab dengan "
            "status HTTP 200; penanda rilis tidak diperiksa.") in text
    for claim in ("basis data situs dicadangkan", "basis data dicadangkan", "memuat penanda rilis",
                  "diaktifkan kembali secara otomatis",
                  "dikembalikan otomatis"):
        assert claim not in text, claim
    # A failure before the switch is told by its reason, not as switched back.
    assert ("pemasangan rilis 20240903-103000-1a1a1a gagal: the database backup failed (exit 2) (gagal sebelum "
            "pengaktifan; website tetap pada rilis yang berjalan)") in text


@needs_poppler
def test_website_report_counts_as_switched_back_only_what_was(office):
    deploy = dict(DEPLOYED, previous="00000000-000000-awal")
    text = _website_report_text(office, deploy, [FAILED_BEFORE, FAILED_UNSWITCHED])
    assert "Sebelum rilis baru diaktifkan, basis data situs dicadangkan." in text
    assert "serta memuat penanda rilis 20240903-110000-a1b2c3." in text
    assert "rilis sebelumnya (00000000-000000-awal) diaktifkan kembali secara otomatis" in text
    assert "tercatat 1 kali pemasangan yang gagal dan dikembalikan otomatis ke rilis sebelumnya" in text
    assert "pemasangan rilis 20240903-103000-1a1a1a gagal: the database backup failed (exit 2)" in text
    assert "20240903-100000-0f0f0f gagal" not in text
