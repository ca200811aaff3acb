"""Both application SOPs from submit to done with the Engine, and the documents they make.

The documents are read back as the office gets them: the PDFs with pdftotext,
the KAK's Word file with python-docx.
"""

import hashlib
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from provisioner.config import ENV_CONFIG, ENV_HOME, ENV_STATE_URL, Config, default_offices
from provisioner.letters.documents import issue_document
from provisioner.sop.engine import Engine
from provisioner.sop.hooks import ACTIONS
from provisioner.store import open_store
from provisioner.store.models import LetterNumber

from conftest import EXAMPLES, WITA, Clock

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")

DATA = EXAMPLES / "data"
KONSULTASI = EXAMPLES / "tarakan-konsultasi-simpeg.yaml"
APLIKASI = EXAMPLES / "buleleng-api-sipandu.yaml"


def pdf_text(path):
    out = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                         text=True, check=True)
    return " ".join(out.stdout.split())


class Office:
    def __init__(self, tmp_path):
        self.config = Config(offices=default_offices(), state_dir=tmp_path)
        self.store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        self.clock = Clock(datetime(2024, 9, 3, 8, 0, tzinfo=WITA))
        self.engine = Engine(self.config, self.store, actions=ACTIONS, clock=self.clock)
        self.results = {}  # action -> [result], from every outcome

    def _keep(self, outcome):
        for ran in outcome.actions:
            self.results.setdefault(ran["action"], []).append(ran.get("result"))
        return outcome

    def step(self, request_id, ref, by, data=None, **kw):
        self.clock.now += timedelta(hours=1)
        return self._keep(self.engine.record_step(request_id, ref, by, data_file=data, **kw))

    def decide(self, request_id, approve, by, reason):
        self.clock.now += timedelta(hours=1)
        return self._keep(self.engine.decide(request_id, approve, by, reason=reason))

    def documents(self, request_id):
        return [e["payload"] for e in self.engine.events(request_id) if e["kind"] == "document_issued"]

    def state(self, request_id):
        return self.engine.show(request_id)["state"]


@pytest.fixture
def office(tmp_path, monkeypatch):
    for name in (ENV_HOME, ENV_CONFIG, ENV_STATE_URL):
        monkeypatch.delenv(name, raising=False)
    made = Office(tmp_path)
    yield made
    made.store.close()


def konsultasi_to_decision(office):
    request_id = office.engine.submit(KONSULTASI.read_bytes(), KONSULTASI.name).request_id
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        office.step(request_id, ref, role)
    return request_id


def test_konsultasi_from_submit_to_done_with_analysis_kak_and_report(office):
    from docx import Document

    request_id = konsultasi_to_decision(office)
    office.decide(request_id, True, "bidang_aplikasi", "Sesuai rencana strategis SPBE Kota Tarakan")
    office.step(request_id, "pembelian", "bidang_aplikasi")
    office.step(request_id, "analisa", "bidang_aplikasi", DATA / "analisa-simpeg.yaml")
    office.step(request_id, "penyusunan_kak", "bidang_aplikasi", DATA / "kak-simpeg.yaml")
    office.step(request_id, "lapor_kadis", "bidang_aplikasi", note="Buku manual disusun penyedia")
    office.step(request_id, "terima_laporan", "kadis")
    office.step(request_id, "selesai", "opd")
    assert office.state(request_id) == "done"

    issued = {d["document"]: d for d in office.documents(request_id)}
    assert set(issued) == {"analysis", "kak", "report-lapor_kadis"}
    # One running number per office and year, in the order the steps were done.
    assert [issued[k]["number"] for k in ("analysis", "kak", "report-lapor_kadis")] == [
        "400.14/1/DKISP/2024", "400.14/2/DKISP/2024", "400.14/3/DKISP/2024"]
    for document in issued.values():
        assert Path(document["pdf"]).parent == office.config.home() / "letters" / "tarakan"
        assert sha256_of(document["pdf"]) == document["sha256"]

    analysis = pdf_text(issued["analysis"]["pdf"])
    for text in ("HASIL ANALISA KEBUTUHAN APLIKASI", "SISTEM INFORMASI KEPEGAWAIAN DAERAH",
                 "Nomor: 400.14/1/DKISP/2024", "KON-2024-0015", "800/245/BKPSDM/2024",
                 "Satu basis data pegawai untuk seluruh perangkat daerah",
                 "Operator kepegawaian OPD, verifikator BKPSDM, pimpinan",
                 "Kualitas data awal dari lembar kerja OPD belum seragam",
                 "Pengadaan aplikasi melalui penyedia dengan KAK",
                 "Kepala Bidang Aplikasi dan Informatika", "Tarakan, 3 September 2024"):
        assert text in analysis, text

    kak = pdf_text(issued["kak"]["pdf"])
    for text in ("KERANGKA ACUAN KERJA (KAK)", "PENGADAAN APLIKASI SISTEM INFORMASI KEPEGAWAIAN DAERAH",
                 "A. Latar Belakang", "B. Maksud dan Tujuan", "C. Sasaran", "D. Nama Organisasi Pengadaan",
                 "E. Sumber Dana dan Perkiraan Biaya", "F. Ruang Lingkup", "G. Lokasi", "H. Keluaran",
                 "I. Jangka Waktu Penyelesaian", "J. Spesifikasi/Kebutuhan Fungsional", "K. Penutup",
                 "Data kepegawaian masih dikelola dengan lembar kerja terpisah",
                 "APBD Kota Tarakan TA 2025", "Rp350.000.000,00 (tiga ratus lima puluh juta rupiah)",
                 "6 (enam) bulan sejak penandatanganan kontrak", "Kantor BKPSDM dan DKISP Kota Tarakan",
                 "Usulan kenaikan pangkat dan cuti secara daring", "Kode sumber dan dokumentasi teknis",
                 "berdasarkan hasil analisa kebutuhan Nomor 400.14/1/DKISP/2024", "dr. WITOYO"):
        assert text in kak, text
    # The one field neither the request nor the step data gives: shown as missing, not made up.
    assert "Pejabat Pembuat Komitmen: [diisi oleh Badan Kepegawaian" in kak

    document = Document(issued["kak"]["docx"])
    headings = [p.text for p in document.paragraphs if p.style.name == "Heading 1"]
    assert headings == ["A. Latar Belakang", "B. Maksud dan Tujuan", "C. Sasaran", "D. Nama Organisasi Pengadaan",
                        "E. Sumber Dana dan Perkiraan Biaya", "F. Ruang Lingkup", "G. Lokasi", "H. Keluaran",
                        "I. Jangka Waktu Penyelesaian", "J. Spesifikasi/Kebutuhan Fungsional", "K. Penutup"]
    body = "\n".join(p.text for p in document.paragraphs)
    assert "Sumber dana: APBD Kota Tarakan TA 2025" in body
    assert "Perkiraan biaya: Rp350.000.000,00 (tiga ratus lima puluh juta rupiah)" in body
    assert "Nomor: 400.14/2/DKISP/2024" in body
    features = [[c.text for c in row.cells] for row in document.tables[0].rows]
    assert features[0] == ["No.", "Fungsi aplikasi"]
    assert ["2.", "Usulan kenaikan pangkat dan cuti secara daring"] in features
    assert sha256_of(issued["kak"]["docx"]) == issued["kak"]["docx_sha256"]

    report = pdf_text(issued["report-lapor_kadis"]["pdf"])
    for text in ("NOTA DINAS", "NOMOR 400.14/3/DKISP/2024",
                 "Yth. : Kepala Dinas Komunikasi, Informatika, Statistik dan Persandian",
                 "Dari : Kepala Bidang Aplikasi dan Informatika",
                 "Hal : Laporan Pelaksanaan Konsultasi Aplikasi Sistem Informasi Kepegawaian Daerah",
                 "pengadaan aplikasi disetujui dan dapat dilaksanakan",
                 "Sesuai rencana strategis SPBE Kota Tarakan", "Nomor 400.14/2/DKISP/2024",
                 "Analisa kebutuhan informasi", "Catatan: Buku manual disusun penyedia"):
        assert text in report, text

    # A rerun (`provision letter ID --document kak`) renders the same number and date.
    again = issue_document(office.config, office.store, request_id, "kak")
    assert (again.number, again.date, again.new_number) == ("400.14/2/DKISP/2024", "2024-09-03", False)
    assert again.docx and (again.sha256, again.docx_sha256) == (issued["kak"]["sha256"], issued["kak"]["docx_sha256"])


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_konsultasi_rejection_gets_the_reply_letter_naming_the_application(office):
    request_id = konsultasi_to_decision(office)
    office.decide(request_id, False, "bidang_aplikasi", "Anggaran TA 2025 belum tersedia")
    assert office.results["render_reply_letter"][0]["kind"] == "reply"
    text = pdf_text(office.results["render_reply_letter"][0]["pdf"])
    assert "permohonan penyediaan aplikasi Sistem Informasi Kepegawaian Daerah belum dapat kami penuhi" in text
    assert "Anggaran TA 2025 belum tersedia" in text
    office.step(request_id, "selesai", "opd")
    assert office.state(request_id) == "done" and office.documents(request_id) == []


def aplikasi_to_decision(office):
    request_id = office.engine.submit(APLIKASI.read_bytes(), APLIKASI.name).request_id
    for ref, role in (("disposisi_kadis", "kadis"), ("disposisi_kabid", "kabid"), ("terima_kasi", "kasi"),
                      ("koordinasi", "kasi")):
        office.step(request_id, ref, role)
    office.step(request_id, "analisa", "programmer", DATA / "analisa-sipandu.yaml")
    return request_id


def test_aplikasi_api_built_from_submit_to_done_with_every_document(office):
    request_id = aplikasi_to_decision(office)
    reasons = "Data status berkas sudah tersedia di SIPANDU versi 1\nTim programmer tersedia"
    office.decide(request_id, True, "kasi", reasons)
    office.step(request_id, "delegasi", "kasi", DATA / "delegasi-sipandu.yaml")
    office.step(request_id, "pembuatan", "programmer")
    for ref, role in (("lapor_kasi", "programmer"), ("lapor_kabid", "kasi"), ("lapor_kadis", "kabid")):
        office.step(request_id, ref, role)
    office.step(request_id, "serah_terima", "kadis", DATA / "serah-terima-sipandu.yaml")
    office.step(request_id, "terima_hasil", "pemohon")
    office.step(request_id, "selesai", "pemohon")
    assert office.state(request_id) == "done"

    issued = {d["document"]: d for d in office.documents(request_id)}
    assert list(issued) == ["analysis", "delegation", "report-lapor_kasi", "report-lapor_kabid",
                            "report-lapor_kadis", "handover"]
    assert issued["handover"]["number"] == "400.14/6/Kominfosanti/2024"

    delegation = pdf_text(issued["delegation"]["pdf"])
    for text in ("NOTA DINAS", "Yth. : Tim Programmer (I Made Adi Saputra, S.Kom., Ni Luh Putu Ayu Lestari",
                 "Dari : [Kepala Seksi ...]",
                 "Hal : Delegasi Tugas Pengembangan Aplikasi SIPANDU", "aplikasi dapat dibangun",
                 "Data status berkas sudah tersedia di SIPANDU versi 1", "Tim programmer tersedia",
                 "I Made Adi Saputra, S.Kom.", "19910214 201903 1 007", "Ni Luh Putu Ayu Lestari",
                 "Pengembangan modul pelacakan status berkas", "29 November 2024", "SIAK Dukcapil, OSS RBA"):
        assert text in delegation, text

    # Each report goes from the step's actor one level up, and carries the decision's reasons.
    # The SOP names the Kasi and Kabid by level only, and the office configures no title: their
    # units are left to be written in. The programmers report by name, with a laporan they sign.
    programmers = "I Made Adi Saputra, S.Kom., Ni Luh Putu Ayu Lestari (Programmer)"
    for kind, heading, sender, recipient in (
            ("report-lapor_kasi", "LAPORAN", programmers, "[Kepala Seksi ...]"),
            ("report-lapor_kabid", "NOTA DINAS", "[Kepala Seksi ...]", "[Kepala Bidang ...]"),
            ("report-lapor_kadis", "NOTA DINAS", "[Kepala Bidang ...]",
             "Kepala Dinas Komunikasi, Informatika, Persandian dan Statistik")):
        text = pdf_text(issued[kind]["pdf"])
        assert f" {heading} NOMOR " in text, kind
        yth = "Kepada Yth." if heading == "LAPORAN" else "Yth."
        assert f"{yth} : {recipient} Dari : {sender} " in text, kind
        assert ("NOTA DINAS" in text) == (heading == "NOTA DINAS") and "Tim Programmer" not in text, kind
        assert "Laporan Hasil Pengembangan Aplikasi SIPANDU" in text
        assert "Tim programmer tersedia" in text and "I Made Adi Saputra" in text

    handover = pdf_text(issued["handover"]["pdf"])
    for text in ("BERITA ACARA SERAH TERIMA APLIKASI", "Nomor: 400.14/6/Kominfosanti/2024",
                 "bertempat di Singaraja", "Dr. Drs. I Ketut Suweca, M.Si", "PIHAK PERTAMA", "PIHAK KEDUA",
                 "I Gede Putu Wirawan, S.Kom.", "19850317 201001 1 004", "SIPANDU - Sistem Informasi Pelayanan Terpadu",
                 "2.0", "https://perizinan.bulelengkab.go.id", "Pengembangan dari SIPANDU versi 1",
                 "Kode sumber aplikasi", "Dokumentasi API", "Buku manual pengguna"):
        assert text in handover, text
    # The date in words, as the berita acara states it: the day the handover step was recorded.
    day = office.engine.show(request_id)["steps"]
    recorded = next(s for s in day if s["key"] == "serah_terima")["ended_at"].astimezone(WITA).date()
    from provisioner.letters.words import tanggal_kata
    assert f"Pada {tanggal_kata(recorded)} ({recorded:%d-%m-%Y})" in handover


def test_aplikasi_api_cannot_be_built_answers_with_the_reply_letter_only(office):
    from test_documents import stub

    stub(office, "render_analysis")  # read in the test above; here only what a rejection writes
    request_id = aplikasi_to_decision(office)
    reasons = "API OSS RBA belum membuka akses untuk daerah\nTim programmer penuh sampai akhir tahun"
    office.decide(request_id, False, "kasi", reasons)
    letter = office.results["render_reply_letter"][0]
    text = pdf_text(letter["pdf"])
    assert "aplikasi SIPANDU - Sistem Informasi Pelayanan Terpadu yang dimohonkan belum dapat dibangun" in text
    assert "API OSS RBA belum membuka akses untuk daerah" in text and "Tim programmer penuh" in text
    office.step(request_id, "alasan_ke_kabid", "kasi")
    office.step(request_id, "serah_terima", "kadis")
    answer = office.results["render_handover"][0]
    assert answer["answer"] == "reply" and answer["letter"] == letter["number"]
    office.step(request_id, "terima_hasil", "pemohon")
    office.step(request_id, "selesai", "pemohon")
    assert office.state(request_id) == "done"
    assert office.documents(request_id) == []  # no delegation, report or berita acara
    with office.store.session() as session:
        kinds = set(session.scalars(select(LetterNumber.kind).where(LetterNumber.request_id == request_id)))
    assert kinds == {"reply"}
