"""Tables of the state database (SQLAlchemy 2.0).

`events` is the history and is append-only: the migration adds triggers that
refuse UPDATE and DELETE on it. Every change to another table is made in the
same transaction as the event that explains it. Later issues add their own
tables (sites, ips, locks) through new migrations.
"""

import json
from datetime import datetime, timezone

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, stored as naive UTC everywhere."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; times must carry a zone")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class JSONText(TypeDecorator):
    """JSON kept as text, so the same schema works on SQLite, PostgreSQL and MariaDB."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    pass


class RequestRow(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    service: Mapped[str] = mapped_column(String(40))
    office: Mapped[str] = mapped_column(String(40))
    fqdn: Mapped[str] = mapped_column(String(255), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)  # the exact bytes submitted
    source: Mapped[str] = mapped_column(String(1000))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # submitted -> approved | rejected -> done; attention while an action failed
    state: Mapped[str] = mapped_column(String(20))
    decision: Mapped[str | None] = mapped_column(String(10))
    current_step: Mapped[str | None] = mapped_column(String(40))
    # Set when the request's site is removed: its approval is spent (it never
    # provisions again) and it no longer holds the name against a new request.
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # On a hosting request spawned for another request (a website or an application):
    # that request's id, so provisioning this one can resume the one that waits for it.
    linked_to: Mapped[str | None] = mapped_column(String(16), index=True)


class StepRecord(Base):
    __tablename__ = "step_records"
    __table_args__ = (UniqueConstraint("request_id", "step_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    step_key: Mapped[str] = mapped_column(String(40))
    by: Mapped[str] = mapped_column(String(40))  # a role key, or "system"
    branch: Mapped[str | None] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(Text)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(20))
    # The validated data file recorded with the step (provisioner.sop.stepdata); never a secret.
    data: Mapped[dict | None] = mapped_column(JSONText)


class ActionRun(Base):
    """One action bound to a step (or to a decision branch) for one request.

    The row is the claim: it is inserted (or moved from failed to running) in
    a single statement before the action runs, so two approvals racing each
    other cannot both run it.
    """

    __tablename__ = "action_runs"

    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    action: Mapped[str] = mapped_column(String(60))
    # running | done | failed | waiting (for something else to happen; claimed again like failed)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str | None] = mapped_column(String(16), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(80))  # role key, "system", or an OS user
    source: Mapped[str] = mapped_column(String(20))  # cli | webhook | hook
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSONText)


class WebhookKey(Base):
    """Ids of accepted webhook posts: a post whose id is here is a replay."""

    __tablename__ = "webhook_keys"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str] = mapped_column(String(16))


class SiteRow(Base):
    """The configuration record of a site: what was provisioned, where, from which plan."""

    __tablename__ = "sites"

    fqdn: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    office: Mapped[str] = mapped_column(String(40))
    zone: Mapped[str] = mapped_column(String(255))
    label: Mapped[str] = mapped_column(String(63))
    # planned -> provisioning -> provisioned | failed | attention
    state: Mapped[str] = mapped_column(String(20))
    web_host: Mapped[str] = mapped_column(String(255))
    db_host: Mapped[str | None] = mapped_column(String(255))
    public_ip: Mapped[str | None] = mapped_column(String(45))
    dedicated_ip: Mapped[bool] = mapped_column(Boolean)
    config: Mapped[dict] = mapped_column(JSONText)  # names, paths, versions, quota... never secrets
    plan_checksum: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    provisioned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    # Last measured by the usage report (its home on the web host, its database on the db
    # host); placement counts them in a host's load. None: never measured.
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger)
    db_bytes: Mapped[int | None] = mapped_column(BigInteger)
    usage_measured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IPAllocation(Base):
    """A dedicated public address; the primary key makes a double allocation impossible."""

    __tablename__ = "ip_allocations"

    address: Mapped[str] = mapped_column(String(45), primary_key=True)
    pool: Mapped[str] = mapped_column(String(100))
    fqdn: Mapped[str] = mapped_column(String(255), unique=True)
    web_host: Mapped[str] = mapped_column(String(255))
    allocated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lock(Base):
    """A named lock held by one apply (site or IP pool); taken by INSERT, so only one wins."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Credential(Base):
    """A generated password, encrypted with a key kept outside this database."""

    __tablename__ = "credentials"

    fqdn: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)  # db | sftp
    username: Mapped[str] = mapped_column(String(80))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LetterNumber(Base):
    """A letter number given out: never deleted, never given twice (unique per office and year).

    One request keeps one number per kind of letter: a rerun renders the same
    number; a failed render keeps it (the next letter takes the next one).
    """

    __tablename__ = "letter_numbers"
    __table_args__ = (UniqueConstraint("office", "year", "number"), UniqueConstraint("request_id", "kind"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    office: Mapped[str] = mapped_column(String(40))
    year: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # configuration | reply
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CertificateRow(Base):
    """A certificate the toolkit obtained for a site, with its key sealed like the passwords.

    Rows are kept after they stop serving (superseded, revoked): they are the
    count of what was issued under each registered domain, which the CA's weekly
    limit is checked against. A revoked or removed row has no key any more.
    """

    __tablename__ = "certificates"
    __table_args__ = (UniqueConstraint("source", "serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fqdn: Mapped[str] = mapped_column(String(255), index=True)
    request_id: Mapped[str | None] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(String(20))  # acme | lab-ca | files
    serial: Mapped[str] = mapped_column(String(80))  # hex
    issuer: Mapped[str] = mapped_column(String(500))
    names: Mapped[list] = mapped_column(JSONText)
    registered_domain: Mapped[str | None] = mapped_column(String(255), index=True)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # pending (obtained, not yet seen served) -> active -> superseded | revoked | removed;
    # failed: obtained but never served (its install or check failed).
    state: Mapped[str] = mapped_column(String(20))
    cert_pem: Mapped[str] = mapped_column(Text)
    chain_pem: Mapped[str] = mapped_column(Text)
    key_sealed: Mapped[str | None] = mapped_column(Text)  # a SecretBox token, never the key itself
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BackupRepository(Base):
    """A restic repository the toolkit made: its password sealed like the site passwords."""

    __tablename__ = "backup_repositories"

    url: Mapped[str] = mapped_column(String(1000), primary_key=True)
    office: Mapped[str] = mapped_column(String(40))
    password_sealed: Mapped[str] = mapped_column(Text)  # a SecretBox token
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    initialized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BackupSnapshot(Base):
    """One restic snapshot the toolkit took: a site's files or database, or the toolkit's state.

    `facts` is what a restore is checked against (the index page's sha256, the rows per
    table at dump time); `verified_at` is set when a restore of it was proven (verify or restore);
    `forgotten_at` when retention removed it from the repository.
    """

    __tablename__ = "backup_snapshots"
    __table_args__ = (UniqueConstraint("repository", "snapshot_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repository: Mapped[str] = mapped_column(String(1000))
    snapshot_id: Mapped[str] = mapped_column(String(64))
    office: Mapped[str] = mapped_column(String(40))
    fqdn: Mapped[str | None] = mapped_column(String(255), index=True)  # None: the toolkit's state
    kind: Mapped[str] = mapped_column(String(20))  # files | db | state | key
    request_id: Mapped[str | None] = mapped_column(String(16))
    release: Mapped[str | None] = mapped_column(String(80))
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    bytes_added: Mapped[int] = mapped_column(BigInteger)
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    facts: Mapped[dict] = mapped_column(JSONText)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    forgotten_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
