"""Generated passwords of a site: made once, kept encrypted, shown once.

A password is stored (encrypted with the key outside the database) before
the step that uses it runs, so a crash between the two never loses it. The
credentials sheet is written once, mode 0600; the letter never holds them.
"""

import subprocess
from pathlib import Path

from sqlalchemy import select

from provisioner.secretbox import SecretBox, new_password
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import Credential

KINDS = ("db", "sftp")


def get(store, box: SecretBox, fqdn: str) -> dict[str, str]:
    with store.session() as session:
        rows = session.scalars(select(Credential).where(Credential.fqdn == fqdn)).all()
    return {row.kind: box.open(row.ciphertext) for row in rows}


def ensure(store, box: SecretBox, fqdn: str, request_id: str, users: dict[str, str], source: str = "cli",
           rotate: bool = False) -> tuple[dict[str, str], bool]:
    """Passwords for each kind in `users`; (passwords, newly_made). Rotate makes new ones."""
    current = {} if rotate else get(store, box, fqdn)
    made = False
    with store.session() as session:
        for kind, username in users.items():
            if kind in current:
                continue
            password = new_password()
            row = session.get(Credential, (fqdn, kind))
            if row is None:
                session.add(Credential(fqdn=fqdn, kind=kind, username=username,
                                       ciphertext=box.seal(password), created_at=utcnow()))
            else:
                row.ciphertext, row.created_at = box.seal(password), utcnow()
            add_event(session, request_id, "credential_rotated" if rotate else "credential_created",
                      source=source, fqdn=fqdn, account=kind, username=username)
            current[kind] = password
            made = True
    return current, made


def replace(store, box: SecretBox, fqdn: str, request_id: str, kind: str, username: str, password: str,
            source: str = "cli") -> None:
    """Store a password the host already took (a rotation stores only after the host proved it)."""
    with store.session() as session:
        row = session.get(Credential, (fqdn, kind))
        if row is None:
            session.add(Credential(fqdn=fqdn, kind=kind, username=username, ciphertext=box.seal(password),
                                   created_at=utcnow()))
        else:
            row.ciphertext, row.created_at = box.seal(password), utcnow()
        add_event(session, request_id, "credential_rotated", source=source, fqdn=fqdn, account=kind,
                  username=username)


def sftp_hash(password: str) -> str:
    """SHA-512 crypt hash for the system account (what /etc/shadow stores)."""
    # openssl reads the password on stdin: it never shows in a process list.
    out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def write_sheet(directory: Path, fqdn: str, request_id: str, lines: list[tuple[str, str]], office=None) -> Path:
    """The one place passwords are shown: a one-page PDF marked RAHASIA, mode 0600."""
    from provisioner.letters import sheet  # WeasyPrint is loaded only when a sheet is written

    return sheet.write_sheet(directory, fqdn, request_id, lines, office=office)


def write_sheets(directory: Path, sheets: list[tuple[str, str, list[tuple[str, str]], object]]) -> dict[str, Path]:
    """The sheets of many sites at once, (fqdn, request id, lines, office) each: {fqdn: path}."""
    from provisioner.letters import sheet

    return sheet.write_sheets(directory, sheets)
