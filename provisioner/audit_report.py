"""The audit's findings as text: JSON, CSV and an HTML page (the table is the CLI's)."""

import csv
import io
import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import jinja2

from provisioner.audit import FIELDS, Report

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "audit"


def to_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for finding in report.findings:
        writer.writerow({k: "" if v is None else v for k, v in finding.as_dict().items()})
    return out.getvalue()


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def to_html(report: Report, generated: datetime | None = None) -> str:
    generated = generated or datetime.now(timezone.utc)
    return _environment().get_template("report.html.j2").render(
        generated=generated.strftime("%Y-%m-%d %H:%M UTC"), sites=report.sites, zones=report.zones,
        counts=report.counts(), fields=FIELDS, findings=[f.as_dict() for f in report.findings])
