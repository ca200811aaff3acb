"""The KAK as an editable Word document (python-docx), from the same context as its PDF.

The office edits the KAK before procurement (the placeholders "[diisi oleh ...]"
are there to be filled), so it gets real headings (Heading 1 per section, so
Word's navigation pane and table of contents work), lists and a table, not a
picture of the PDF.
"""

import io
import zipfile
from datetime import datetime, timezone

from docx import Document
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Cm, Pt, RGBColor

from provisioner.letters import render

FONT = "Arial"


def kak_docx(context: dict) -> bytes:
    kak, request, profile = context["kak"], context["request"], context["profile"]
    placeholder_missing = context["drafter_missing"]
    doc = Document()
    _page(doc)
    _kop(doc, profile)

    title = doc.add_paragraph(style="Title")
    title.alignment = WD_ALIGN_PARAGRAPH.CENTER
    lines = ("KERANGKA ACUAN KERJA (KAK)", f"PENGADAAN APLIKASI {request.application.name.upper()}",
             request.agency.name.upper())
    for index, text in enumerate(lines):
        run = title.add_run(text)
        if index < len(lines) - 1:
            run.add_break()
    _paragraph(doc, f"Nomor: {context['number']}", align=WD_ALIGN_PARAGRAPH.CENTER)

    _heading(doc, "A. Latar Belakang")
    for paragraph in kak["latar_belakang"]:
        _paragraph(doc, paragraph)

    _heading(doc, "B. Maksud dan Tujuan")
    _paragraph(doc, kak["maksud"])
    if kak["tujuan"]:
        _paragraph(doc, "Tujuan kegiatan ini adalah tersedianya aplikasi yang memenuhi kebutuhan berikut:")
        _numbered(doc, kak["tujuan"])
    else:
        _missing(doc, placeholder_missing)

    _heading(doc, "C. Sasaran")
    _text(doc, kak["sasaran"] and f"Sasaran pengguna aplikasi: {kak['sasaran']}", placeholder_missing)

    _heading(doc, "D. Nama Organisasi Pengadaan")
    _paragraph(doc, f"Satuan kerja: {kak['organisasi']}")
    paragraph = _paragraph(doc, "Pejabat Pembuat Komitmen: ")
    _placeholder_run(paragraph, context["agency_missing"])

    _heading(doc, "E. Sumber Dana dan Perkiraan Biaya")
    _paragraph(doc, f"Sumber dana: {kak['sumber_dana']}")
    _paragraph(doc, f"Perkiraan biaya: {kak['biaya']}")

    _heading(doc, "F. Ruang Lingkup")
    _items(doc, kak["ruang_lingkup"], placeholder_missing)
    _heading(doc, "G. Lokasi")
    _text(doc, kak["lokasi"], placeholder_missing)
    _heading(doc, "H. Keluaran")
    _items(doc, kak["keluaran"], placeholder_missing)
    _heading(doc, "I. Jangka Waktu Penyelesaian")
    duration = kak["jangka_waktu"]
    _paragraph(doc, duration if duration.startswith("[") else f"{duration} sejak penandatanganan kontrak")

    _heading(doc, "J. Spesifikasi/Kebutuhan Fungsional")
    _heading(doc, "1. Kebutuhan fungsional", level=2)
    if kak["fitur"]:
        table = doc.add_table(rows=1, cols=2)
        table.style = "Table Grid"
        table.alignment = WD_TABLE_ALIGNMENT.CENTER
        header = table.rows[0].cells
        header[0].text, header[1].text = "No.", "Fungsi aplikasi"
        for cell in header:
            cell.paragraphs[0].runs[0].bold = True
        for number, feature in enumerate(kak["fitur"], 1):
            cells = table.add_row().cells
            cells[0].text, cells[1].text = f"{number}.", feature
        for row in table.rows:
            row.cells[0].width, row.cells[1].width = Cm(1.2), Cm(14.8)
    else:
        _missing(doc, placeholder_missing)
    _heading(doc, "2. Data yang dikelola", level=2)
    _text(doc, kak["data"], placeholder_missing)
    number = 3
    if kak["risiko"]:
        _heading(doc, f"{number}. Risiko yang perlu diperhatikan penyedia", level=2)
        _numbered(doc, kak["risiko"])
        number += 1
    hosting = kak["hosting"]
    if hosting is not None:
        _heading(doc, f"{number}. Lingkungan server", level=2)
        stack = f"PHP {hosting.php_version}" if hosting.stack == "php" else "situs statis"
        database = ", dengan basis data MariaDB" if hosting.database else ""
        _paragraph(doc, f"Aplikasi dipasang pada layanan hosting {context['office'].short_name} dengan "
                        f"subdomain {hosting.fqdn} ({stack}{database}).")

    _heading(doc, "K. Penutup")
    basis = (f" berdasarkan hasil analisa kebutuhan Nomor {context['analysis_number']}"
             if context["analysis_number"] else "")
    _paragraph(doc, f"Demikian Kerangka Acuan Kerja ini disusun sebagai acuan pelaksanaan pengadaan aplikasi "
                    f"{request.application.name}{basis}, sesuai {context['sop_citation']}.")
    _signatures(doc, context)

    day = context["date"]
    properties = doc.core_properties
    properties.title = f"KAK Pengadaan Aplikasi {request.application.name}"
    properties.subject = context["number"]
    properties.author = properties.last_modified_by = context["office"].short_name
    properties.created = properties.modified = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    properties.revision = 1
    out = io.BytesIO()
    doc.save(out)
    return _stable(out.getvalue(), (day.year, day.month, day.day, 0, 0, 0))


def _stable(data: bytes, stamp: tuple) -> bytes:
    """The same KAK gives the same bytes: the zip entries carry the document's date, not the
    time of writing, so a rerun's sha256 matches the first one's."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, source.read(item.filename))
    return out.getvalue()


def _page(doc):
    section = doc.sections[0]
    section.page_height, section.page_width = Cm(29.7), Cm(21.0)
    section.top_margin, section.bottom_margin = Cm(1.5), Cm(2.0)
    section.left_margin, section.right_margin = Cm(2.5), Cm(2.0)
    for name in ("Normal", "Title", "Heading 1", "Heading 2"):
        style = doc.styles[name]
        style.font.name = FONT
        style.font.color.rgb = RGBColor(0, 0, 0)
        # East Asian font slot too, or Word substitutes its theme font for some text.
        style.element.get_or_add_rPr().get_or_add_rFonts().set(qn("w:eastAsia"), FONT)
    doc.styles["Normal"].font.size = Pt(11)
    doc.styles["Normal"].paragraph_format.space_after = Pt(4)
    doc.styles["Title"].font.size = Pt(12.5)
    doc.styles["Title"].font.bold = True
    doc.styles["Heading 1"].font.size = Pt(11)
    doc.styles["Heading 2"].font.size = Pt(11)
    doc.styles["Heading 2"].font.italic = True
    doc.styles["Heading 2"].font.bold = False
    # Title style draws a coloured rule under itself in the default template; the kop has the rule.
    title_pPr = doc.styles["Title"].element.get_or_add_pPr()
    for border in title_pPr.findall(qn("w:pBdr")):
        title_pPr.remove(border)


def _kop(doc, profile):
    lines = [(profile.government, 14, True), (profile.office_name, 15, True),
             (profile.address + (f", Telepon {profile.telephone}" if profile.telephone else ""), 9.5, False)]
    contact = "   ".join(x for x in ((f"Laman: {profile.website}" if profile.website else None),
                                     (f"Pos-el: {profile.email}" if profile.email else None)) if x)
    if contact:
        lines.append((contact, 9.5, False))
    for index, (text, size, bold) in enumerate(lines):
        paragraph = doc.add_paragraph()
        paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
        paragraph.paragraph_format.space_after = Pt(0)
        run = paragraph.add_run(text)
        run.font.size, run.bold = Pt(size), bold
        if index == len(lines) - 1:
            _double_rule(paragraph)


def _double_rule(paragraph):
    """The kop's thick-thin double line under its last line (a paragraph bottom border)."""
    pPr = paragraph._p.get_or_add_pPr()
    borders = OxmlElement("w:pBdr")
    bottom = OxmlElement("w:bottom")
    for key, value in (("w:val", "thickThinSmallGap"), ("w:sz", "24"), ("w:space", "4"), ("w:color", "000000")):
        bottom.set(qn(key), value)
    borders.append(bottom)
    pPr.append(borders)
    paragraph.paragraph_format.space_after = Pt(12)


def _heading(doc, text, level=1):
    heading = doc.add_heading(text, level=level)
    heading.paragraph_format.space_before = Pt(10 if level == 1 else 6)
    heading.paragraph_format.space_after = Pt(3)
    return heading


def _paragraph(doc, text, align=WD_ALIGN_PARAGRAPH.JUSTIFY):
    paragraph = doc.add_paragraph(text)
    paragraph.alignment = align
    return paragraph


def _placeholder_run(paragraph, text):
    run = paragraph.add_run(text)
    run.italic = True
    run.font.color.rgb = RGBColor(0x55, 0x55, 0x55)
    return run


def _missing(doc, text):
    _placeholder_run(doc.add_paragraph(), text)


def _text(doc, value, missing):
    if value:
        _paragraph(doc, value)
    else:
        _missing(doc, missing)


def _numbered(doc, values):
    # "List Number" continues one numbering through the document; each list here is short and
    # numbered by hand so that every list starts at 1 in Word and LibreOffice alike.
    for number, value in enumerate(values, 1):
        paragraph = doc.add_paragraph(f"{number}. {value}")
        paragraph.paragraph_format.left_indent = Cm(0.6)
        paragraph.paragraph_format.first_line_indent = Cm(-0.6)
        paragraph.alignment = WD_ALIGN_PARAGRAPH.JUSTIFY


def _items(doc, values, missing):
    if values:
        _numbered(doc, values)
    else:
        _missing(doc, missing)


def _signatures(doc, context):
    table = doc.add_table(rows=1, cols=2)
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    left, right = table.rows[0].cells
    _signature(left, "Mengetahui,", context["head"])
    _signature(right, f"{context['profile'].city}, {render.tanggal(context['date'])}", context["signer"])


def _signature(cell, heading, signer):
    cell.paragraphs[0].text = heading
    cell.paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.CENTER
    lines = [(f"{signer['position']},", False)]
    lines += [("", False)] * 3
    lines.append((signer["name"] or "( ...................................... )", bool(signer["name"])))
    if signer.get("rank"):
        lines.append((signer["rank"], False))
    lines.append((f"NIP. {signer['nip']}" if signer["nip"] else "NIP. ....................................", False))
    for text, bold in lines:
        paragraph = cell.add_paragraph()
        paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
        paragraph.paragraph_format.space_after = Pt(0)
        run = paragraph.add_run(text)
        run.bold = bold
        run.underline = bold
