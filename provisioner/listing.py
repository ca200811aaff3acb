"""What the listing commands read: requests, sites, the open steps' timelines and backups.

`provision request list`, `site list`, `sla` and `backup list` only read, and importing
SQLAlchemy and the ORM models took longer than all the rest of such a command
(docs/benchmarks.md). So they read through one of two sources with the same
methods and the same results:

- PlainReads: a few SELECTs with the database's own driver (sqlite3, psycopg),
  used when the database is SQLite or PostgreSQL and its schema is at the head
  revision;
- StoreReads: the store's own paths through SQLAlchemy, used for anything else
  (MariaDB, a database that is missing or older, one the plain driver cannot
  open): it creates, migrates and reports errors as every other command does.

tests/unit/test_listing.py keeps the two equal on SQLite and PostgreSQL.
"""

import json
import sqlite3
from datetime import datetime, timezone
from types import SimpleNamespace
from urllib.parse import quote

from provisioner.store.migrate import head_revision

REQUEST_COLUMNS = ("id", "service", "office", "fqdn", "state", "decision", "current_step", "sha256", "source",
                   "submitted_at", "linked_to")
SITE_COLUMNS = ("fqdn", "state", "request_id", "office", "public_ip", "dedicated_ip", "web_host", "db_host",
                "quota_mb", "updated_at", "reason")


def site_line(fqdn, state, request_id, office, public_ip, dedicated_ip, web_host, db_host, config, updated_at,
              reason) -> dict:
    """One line of `provision site list` (SITE_COLUMNS), from a site's columns."""
    return {"fqdn": fqdn, "state": state, "request_id": request_id, "office": office, "public_ip": public_ip or "",
            "dedicated_ip": bool(dedicated_ip), "web_host": web_host, "db_host": db_host or "",
            "quota_mb": (config or {}).get("quota_mb"),
            "updated_at": updated_at.isoformat(timespec="seconds") if updated_at else "", "reason": reason or ""}


def snapshot_line(snapshot_id, taken_at, kind, release, run_id, bytes_added, total_bytes, verified_at,
                  forgotten_at) -> dict:
    """One line of `provision backup list`, from a snapshot's columns."""
    return {"snapshot": snapshot_id, "taken_at": taken_at, "kind": kind, "release": release, "run": run_id,
            "bytes_added": bytes_added, "total_bytes": total_bytes, "verified_at": verified_at,
            "forgotten_at": forgotten_at}


def open_reads(config):
    """The plain reads when the state database allows them, else the store's."""
    return PlainReads.open(config.resolved_state_url()) or StoreReads(config)


def overdue(config, reads, now=None) -> list[dict]:
    """`provision sla`: the open steps past their deadline (Engine.overdue, without the engine)."""
    from provisioner.sop.lookups import Lookups
    from provisioner.sop.schedule import overdue as overdue_steps
    from provisioner.sop.sla import utcnow

    lookups = Lookups(config)
    return overdue_steps(reads.timelines(), lookups.sop_for, lookups.calendar, now or utcnow())


class _Reads:
    """A source of the listing reads, closed when the `with` block ends."""

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


class StoreReads(_Reads):
    """The listing reads through the store (SQLAlchemy): any database, migrated on open."""

    def __init__(self, config):
        from provisioner.sop.engine import Engine
        from provisioner.store import open_store

        self.engine = Engine(config, open_store(config.resolved_state_url()))

    def requests(self, state=None) -> list[dict]:
        return self.engine.list_requests(state)

    def sites(self, state=None) -> list[dict]:
        from provisioner import records

        return records.site_list(self.engine.store, state)

    def timelines(self) -> list:
        return self.engine.timelines()

    def snapshots(self, fqdn, include_forgotten=False) -> list[dict]:
        from provisioner.backup.records import snapshots

        return [snapshot_line(r.snapshot_id, r.taken_at, r.kind, r.release, r.run_id, r.bytes_added,
                              r.total_bytes, r.verified_at, r.forgotten_at)
                for r in snapshots(self.engine.store, fqdn, include_forgotten=include_forgotten)]

    def close(self):
        self.engine.store.close()


class PlainReads(_Reads):
    """The listing reads as plain SELECTs on the driver's own connection, in one transaction."""

    def __init__(self, connection, placeholder):
        self.connection = connection
        self._placeholder = placeholder

    @classmethod
    def open(cls, url):
        """PlainReads on the database at `url`, or None when they cannot be used there."""
        opened = _connect(url)
        if opened is None:
            return None
        reads = cls(*opened)
        try:
            current = [v for (v,) in reads._select("SELECT version_num FROM alembic_version")]
        except Exception:  # noqa: BLE001 - no such table (a new database) or no access: the store decides
            current = None
        if head_revision() is None or current != [head_revision()]:
            reads.close()
            return None
        return reads

    def _select(self, sql, *params):
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql.replace("?", self._placeholder), params)
            return cursor.fetchall()
        finally:
            cursor.close()

    def _where_state(self, state):
        return (" WHERE state = ?", (state,)) if state else ("", ())

    def requests(self, state=None) -> list[dict]:
        where, params = self._where_state(state)
        rows = self._select(f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests{where} ORDER BY submitted_at, id",
                            *params)
        return [dict(zip(REQUEST_COLUMNS, row), submitted_at=_utc(row[9])) for row in rows]

    def sites(self, state=None) -> list[dict]:
        where, params = self._where_state(state)
        rows = self._select("SELECT fqdn, state, request_id, office, public_ip, dedicated_ip, web_host, db_host, "
                            f"config, updated_at, reason FROM sites{where} ORDER BY zone, fqdn", *params)
        return [site_line(*row[:8], json.loads(row[8]) if row[8] is not None else None, _utc(row[9]),
                          row[10]) for row in rows]

    def timelines(self) -> list:
        """Every request not done, in submission order, with its step records and action runs
        (sop/schedule.Timeline). The three queries see one state of the database (one transaction)."""
        from provisioner.sop.schedule import Timeline

        columns = ("id", "service", "office", "fqdn", "state", "current_step", "submitted_at")
        rows = self._select(f"SELECT {', '.join(columns)} FROM requests WHERE state <> 'done' "
                            "ORDER BY submitted_at, id")
        found = {}
        for row in rows:
            request = SimpleNamespace(**dict(zip(columns, row)))
            request.submitted_at = _utc(request.submitted_at)
            found[request.id] = Timeline(request, {}, {})
        if not found:
            return []
        for request_id, key, by, branch, note, ended_at in self._select(
                'SELECT r.request_id, r.step_key, r."by", r.branch, r.note, r.ended_at FROM step_records r '
                "JOIN requests q ON q.id = r.request_id WHERE q.state <> 'done'"):
            found[request_id].records[key] = SimpleNamespace(step_key=key, by=by, branch=branch, note=note,
                                                             ended_at=_utc(ended_at))
        for request_id, key, status in self._select(
                "SELECT a.request_id, a.step_key, a.status FROM action_runs a "
                "JOIN requests q ON q.id = a.request_id WHERE q.state <> 'done'"):
            found[request_id].runs[key] = SimpleNamespace(step_key=key, status=status)
        return list(found.values())

    def snapshots(self, fqdn, include_forgotten=False) -> list[dict]:
        """A site's backups of its files and database, newest first (backup/records.snapshots)."""
        kept = "" if include_forgotten else " AND forgotten_at IS NULL"
        rows = self._select('SELECT snapshot_id, taken_at, kind, "release", run_id, bytes_added, total_bytes, '
                            "verified_at, forgotten_at FROM backup_snapshots WHERE fqdn = ? AND kind IN ('files', 'db')"
                            f"{kept} ORDER BY taken_at DESC, id DESC", fqdn)
        return [snapshot_line(row[0], _utc(row[1]), *row[2:7], _utc(row[7]), _utc(row[8]))
                for row in rows]

    def close(self):
        self.connection.close()  # the reads' transaction ends with it; nothing was written


def _connect(url):
    """(connection, placeholder) for a SQLite or PostgreSQL URL the plain drivers read as
    SQLAlchemy does; None for any other (a driver, a query, an in-memory database...)."""
    scheme, sep, rest = url.partition("://")
    backend, _, driver = scheme.partition("+")
    if not sep:
        return None
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return _sqlite(rest)
    if backend == "postgresql" and driver in ("", "psycopg"):
        return _postgresql(f"postgresql://{rest}")
    return None


def _sqlite(rest):
    # sqlite:///relative.db and sqlite:////absolute.db. A query, or an escape SQLAlchemy would
    # decode ("%20"), is left to the store rather than read differently here.
    path = rest[1:] if rest.startswith("/") else None
    if not path or path == ":memory:" or "?" in path or "%" in path:
        return None
    try:
        # Read-only: a listing never creates or changes the file (a missing one is the store's to make).
        connection = sqlite3.connect(f"file:{quote(path, safe='/')}?mode=ro", uri=True, timeout=30,
                                     isolation_level=None)
        connection.execute("BEGIN")  # every read of the listing sees one state of the database
    except sqlite3.Error:
        return None
    return connection, "?"


def _postgresql(conninfo):
    try:
        import psycopg
    except ImportError:
        return None
    try:
        connection = psycopg.connect(conninfo, connect_timeout=10)
    except psycopg.Error:
        return None
    # Every read of the listing runs in one read-only transaction that sees one state of the database.
    connection.read_only = True
    connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return connection, "%s"


def _utc(value):
    """A stored time as the store gives it: aware UTC. The store keeps naive UTC (store/models.py);
    SQLite's driver gives it as text ("2024-09-02 02:00:00.000000"), psycopg as a datetime."""
    if value is None:
        return None
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).replace(tzinfo=timezone.utc)

