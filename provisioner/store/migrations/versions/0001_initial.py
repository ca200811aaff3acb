"""Requests, step records, action runs, the append-only event log, webhook replay keys.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_APPEND_ONLY = {
    "sqlite": [
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$",
        "CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION events_append_only()",
    ],
    "mysql": [
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events are append-only'",
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events are append-only'",
    ],
}
_APPEND_ONLY["mariadb"] = _APPEND_ONLY["mysql"]


def upgrade():
    op.create_table(
        "requests",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("service", sa.String(40), nullable=False),
        sa.Column("office", sa.String(40), nullable=False),
        sa.Column("fqdn", sa.String(255), nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("decision", sa.String(10)),
        sa.Column("current_step", sa.String(40)),
    )
    op.create_table(
        "step_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(16), sa.ForeignKey("requests.id"), nullable=False, index=True),
        sa.Column("step_key", sa.String(40), nullable=False),
        sa.Column("by", sa.String(40), nullable=False),
        sa.Column("branch", sa.String(40)),
        sa.Column("note", sa.Text),
        sa.Column("ended_at", sa.DateTime, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.UniqueConstraint("request_id", "step_key"),
    )
    op.create_table(
        "action_runs",
        sa.Column("request_id", sa.String(16), sa.ForeignKey("requests.id"), primary_key=True),
        sa.Column("step_key", sa.String(40), primary_key=True),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(16), index=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_table(
        "webhook_keys",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("request_id", sa.String(16), nullable=False),
    )
    for statement in _APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER events_no_change ON events")
        op.execute("DROP FUNCTION events_append_only()")
    for table in ("webhook_keys", "events", "action_runs", "step_records", "requests"):
        op.drop_table(table)
