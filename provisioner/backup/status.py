"""What the audit and the usage report say about backups, read from the records only (no host)."""

from datetime import timedelta

from sqlalchemy import select

from provisioner.sop.sla import utcnow
from provisioner.store.models import BackupRepository, BackupSnapshot, SiteRow

SITE_KINDS = ("files", "db")


def last_backups(store, fqdns: list[str]) -> dict[str, dict]:
    """fqdn -> {"at": time of the latest snapshot, "bytes": its files + db size, "verified_at": latest proof}."""
    out: dict[str, dict] = {}
    if not fqdns:
        return out
    with store.session() as session:
        rows = session.scalars(select(BackupSnapshot).where(BackupSnapshot.fqdn.in_(fqdns),
                                                            BackupSnapshot.kind.in_(SITE_KINDS),
                                                            BackupSnapshot.forgotten_at.is_(None))
                               .order_by(BackupSnapshot.taken_at, BackupSnapshot.id)).all()
    for row in rows:
        entry = out.setdefault(row.fqdn, {"at": None, "bytes": 0, "run": None, "verified_at": None})
        if row.run_id != entry["run"]:
            entry.update(run=row.run_id, bytes=0)
        entry["at"] = row.taken_at
        entry["bytes"] += row.total_bytes
        if row.verified_at and (entry["verified_at"] is None or row.verified_at > entry["verified_at"]):
            entry["verified_at"] = row.verified_at
    return out


def findings(store, config, rows: list[SiteRow], now=None) -> list[tuple[str, str, str, str, str]]:
    """(site, kind, expected, found, fix) for live sites: backup-stale and backup-unverified.

    Offices without a repository yet are not reported (backups are not set up there). A site younger than the window is not reported yet: its first nightly run is still to come.
    """
    with store.session() as session:
        offices = set(session.scalars(select(BackupRepository.office)))
    # Only offices whose backups are set up (their repository exists: the first `backup run` makes it).
    live = [r for r in rows if r.state == "provisioned" and r.office in offices]
    if not live:
        return []
    now = now or utcnow()
    window = timedelta(hours=config.backup.stale_after_hours)
    known = last_backups(store, [r.fqdn for r in live])
    out = []
    for row in live:
        since = row.provisioned_at or row.created_at
        if since and now - since < window:
            continue
        last = known.get(row.fqdn)
        if last is None or now - last["at"] > window:
            out.append((row.fqdn, "backup-stale", f"a backup within {config.backup.stale_after_hours:g} h",
                        f"last {last['at']:%Y-%m-%d %H:%M} UTC" if last else "never backed up",
                        f"provision backup run --site {row.fqdn} --apply"))
        if last is None or last["verified_at"] is None:
            out.append((row.fqdn, "backup-unverified", "a backup proven by a restore",
                        "never proven", "provision backup verify"))
    return out

