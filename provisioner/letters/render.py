"""HTML from the Jinja2 templates in templates/letters/, then PDF with WeasyPrint.

Templates autoescape: every value from a request (agency name, subject,
reason) is text, never markup.
"""

import base64
import mimetypes
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

import jinja2

from provisioner.errors import ConfigError

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
