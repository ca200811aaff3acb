"""The credentials sheet: one page marked RAHASIA, the one place passwords are shown.

Rendered in memory and written once with mode 0600 in a 0700 directory; no
HTML copy is kept beside it.
"""

import os
from datetime import datetime
from pathlib import Path

from provisioner.letters import render
from provisioner.sop.sla import utcnow


def sheet_html(fqdn: str, request_id: str, lines: list[tuple[str, str]], office=None,
               now: datetime | None = None) -> str:
    now = now or utcnow()
    profile = office.letters if office is not None else None
    when = now.astimezone(office.tz) if office is not None else now
    return render.html("rahasia.html", fqdn=fqdn, request_id=request_id, lines=lines, office=office,
                       profile=profile, issued=when)


def sheet_pdf(fqdn: str, request_id: str, lines: list[tuple[str, str]], office=None,
              now: datetime | None = None) -> bytes:
    return render.pdf(sheet_html(fqdn, request_id, lines, office, now))


def write_sheet(directory: Path, fqdn: str, request_id: str, lines: list[tuple[str, str]], office=None) -> Path:
    """Write `<fqdn>-credentials.pdf` (mode 0600) and return its path."""
    return _write(directory, fqdn, sheet_pdf(fqdn, request_id, lines, office))


def write_sheets(directory: Path, sheets: list[tuple[str, str, list[tuple[str, str]], object]]) -> dict[str, Path]:
    """Write the sheets of many sites, (fqdn, request id, lines, office) each, rendered side by
    side (render.renderer): {fqdn: path}. Every sheet that renders is written; then the first
    failure, if any, is raised."""
    with render.renderer(len(sheets)) as render_pdf:
        futures = [(fqdn, render_pdf(sheet_html(fqdn, request_id, lines, office)))
                   for fqdn, request_id, lines, office in sheets]
        written, failed = {}, []
        for fqdn, future in futures:
            try:
                written[fqdn] = _write(directory, fqdn, future.result())
            except Exception as err:  # noqa: BLE001 - the others are still written
                failed.append(err)
    if failed:
        raise failed[0]
    return written


def _write(directory: Path, fqdn: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / f"{fqdn}-credentials.pdf"
    temporary = directory / f".{path.name}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
