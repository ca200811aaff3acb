"""What the store keeps of backups: each office's repository (its sealed password) and the snapshots.

A repository's password is made on first use and sealed with the state key
before `restic init` runs, so a crash between the two never loses it.
"""

import secrets
from datetime import datetime

from sqlalchemy import select

from provisioner.backup.repository import Policy, Repository
from provisioner.secretbox import SecretBox, new_password
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import BackupRepository, BackupSnapshot

STATE_OFFICE = "provisioner"  # the toolkit's own state goes to the repository of this "office"
KINDS = ("files", "db", "state", "key")
# Run ids of the backup taken just before a restore (its way back); a plain restore skips them.
UNDO_PREFIX = "undo-"


def new_run_id(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def repository_url(config, office: str) -> str:
    return config.backup.repository.format(office=office)


def policy(config) -> Policy:
    b = config.backup
    return Policy(daily=b.keep_daily, weekly=b.keep_weekly, monthly=b.keep_monthly)


def open_repository(config, store, box: SecretBox, office: str, source: str = "cli") -> Repository:
    """The office's repository, its password made and sealed on first use, `restic init` run once."""
    url = repository_url(config, office)
    with store.session() as session:
        row = session.get(BackupRepository, url)
        if row is None:
            row = BackupRepository(url=url, office=office, password_sealed=box.seal(new_password(32)),
                                   created_at=utcnow())
            session.add(row)
            add_event(session, None, "backup_repository_created", source=source, office=office, repository=url)
        sealed, initialized = row.password_sealed, row.initialized_at
    repo = Repository(url, box.open(sealed), ssh_key=config.backup.ssh_key, known_hosts=config.backup.known_hosts,
                      timeout=config.backup.timeout, cache_dir=config.private_home() / "restic-cache")
    if initialized is None:
        if not repo.exists():
            repo.init()
        with store.session() as session:
            session.get(BackupRepository, url).initialized_at = utcnow()
            add_event(session, None, "backup_repository_initialized", source=source, office=office, repository=url)
    return repo


def record_snapshot(session, repo_url: str, office: str, fqdn: str | None, kind: str, run_id: str,
                    summary: dict, facts: dict, request_id: str | None = None, release: str | None = None,
                    source: str = "cli") -> BackupSnapshot:
    row = BackupSnapshot(repository=repo_url, snapshot_id=summary["snapshot_id"], office=office, fqdn=fqdn,
                         kind=kind, request_id=request_id, release=release, run_id=run_id,
                         bytes_added=int(summary.get("data_added", 0)),
                         total_bytes=int(summary.get("total_bytes_processed", 0)), taken_at=utcnow(), facts=facts)
    session.add(row)
    add_event(session, request_id, "backup_snapshot", source=source, fqdn=fqdn, content=kind, office=office,
              snapshot=row.snapshot_id, run=run_id, bytes_added=row.bytes_added, total_bytes=row.total_bytes,
              release=release)
    return row


def snapshots(store, fqdn: str, kinds=("files", "db"), include_forgotten: bool = False) -> list[BackupSnapshot]:
    """A site's snapshots, newest first."""
    with store.session() as session:
        query = select(BackupSnapshot).where(BackupSnapshot.fqdn == fqdn, BackupSnapshot.kind.in_(kinds))
        if not include_forgotten:
            query = query.where(BackupSnapshot.forgotten_at.is_(None))
        return list(session.scalars(query.order_by(BackupSnapshot.taken_at.desc(), BackupSnapshot.id.desc())))


def mark_verified(store, rows: list[BackupSnapshot], kind: str, source: str = "cli", **payload) -> None:
    """Snapshots proven by a restore (a verify's scratch restore or a real one)."""
    now = utcnow()
    with store.session() as session:
        for row in rows:
            session.get(BackupSnapshot, row.id).verified_at = now
        first = rows[0] if rows else None
        add_event(session, first.request_id if first else None, kind, source=source,
                  snapshots=[r.snapshot_id for r in rows], **payload)


def mark_forgotten(store, repo_url: str, kept_ids: set[str]) -> list[str]:
    """Rows of the repository whose snapshot restic no longer has (retention removed it)."""
    now, gone = utcnow(), []
    with store.session() as session:
        rows = session.scalars(select(BackupSnapshot).where(BackupSnapshot.repository == repo_url,
                                                            BackupSnapshot.forgotten_at.is_(None)))
        for row in rows:
            if not any(full.startswith(row.snapshot_id) for full in kept_ids):
                row.forgotten_at = now
                gone.append(row.snapshot_id)
    return gone
