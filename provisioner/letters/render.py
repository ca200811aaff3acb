"""HTML from the Jinja2 templates in templates/letters/, then PDF with WeasyPrint.

Templates autoescape: every value from a request (agency name, subject,
reason) is text, never markup.
"""

import base64
import mimetypes
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

import jinja2

from provisioner.errors import ConfigError

# Fewer documents than this are rendered in this process: starting a worker (importing
# WeasyPrint) costs more than rendering a document or two.
PARALLEL_FROM = 4

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES = ROOT / "templates" / "letters"

MONTHS = ("Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September",
          "Oktober", "November", "Desember")


def tanggal(day: date) -> str:
    """A date as Indonesian letters write it: 22 November 2026."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def waktu(moment: datetime) -> str:
    """An aware time as Indonesian letters write it, in its own zone: 23 November 2031 pukul 08.00 WITA."""
    return f"{tanggal(moment.date())} pukul {moment:%H.%M} {moment.tzname()}"


def ribuan(value: int) -> str:
    """A whole number with Indonesian thousands separators: 20.480."""
    return f"{value:,}".replace(",", ".")


def nip(value: str | None) -> str | None:
    """An 18-digit NIP grouped as printed on letters: 19650111 200012 1 002."""
    if value and len(value) == 18 and value.isdigit():
        return f"{value[:8]} {value[8:14]} {value[14]} {value[15:]}"
    return value


def logo_uri(path: Path | None) -> str | None:
    """The logo as a data: URI, so the HTML written beside the PDF stands alone."""
    if path is None:
        return None
    kind = mimetypes.guess_type(path.name)[0]
    if kind not in ("image/png", "image/jpeg", "image/svg+xml"):
        raise ConfigError(f"letters.logo {path}: use a PNG, JPEG or SVG file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"letters.logo: cannot read {path}: {err.strerror}") from None
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(tanggal=tanggal, ribuan=ribuan, nip=nip)
    return env


def html(template: str, **context) -> str:
    return _environment().get_template(template).render(**context)


def pdf(document: str) -> bytes:
    # Imported here: WeasyPrint loads Pango at import, which only letters need.
    import weasyprint

    return weasyprint.HTML(string=document, base_url=str(TEMPLATES)).write_pdf()


@contextmanager
def renderer(count: int):
    """A function that starts rendering one HTML document to PDF and returns its future: in a
    pool of processes (one per CPU) for a batch of `count`, in this process for a few.

    Rendering is CPU-bound (layout in pure Python), so threads would not help. A worker gets
    a document's HTML and gives back its PDF bytes through a pipe; it touches no file or
    database, so the caller keeps the numbering, the records and the file modes.
    """
    workers = min(os.cpu_count() or 1, count)
    if workers < 2 or count < PARALLEL_FROM:
        def here(document):
            future = Future()
            try:
                future.set_result(pdf(document))
            except Exception as err:  # noqa: BLE001 - that document's own failure
                future.set_exception(err)
            return future
        yield here
        return
    # spawn, not fork: the caller may hold threads (the webhook's) and open connections.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda document: pool.submit(pdf, document)
