"""Letters: the numbers given out, unique per office and year, one per request and kind.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# A number once given is never freed: rows cannot be changed or removed.
_KEEP = {
    "sqlite": [
        "CREATE TRIGGER letter_numbers_no_update BEFORE UPDATE ON letter_numbers "
        "BEGIN SELECT RAISE(ABORT, 'letter numbers are never changed'); END",
        "CREATE TRIGGER letter_numbers_no_delete BEFORE DELETE ON letter_numbers "
        "BEGIN SELECT RAISE(ABORT, 'letter numbers are never freed'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION letter_numbers_keep() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'letter numbers are never changed or freed'; END $$",
        "CREATE TRIGGER letter_numbers_no_change BEFORE UPDATE OR DELETE ON letter_numbers "
        "FOR EACH ROW EXECUTE FUNCTION letter_numbers_keep()",
    ],
    "mysql": [
        "CREATE TRIGGER letter_numbers_no_update BEFORE UPDATE ON letter_numbers FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'letter numbers are never changed'",
        "CREATE TRIGGER letter_numbers_no_delete BEFORE DELETE ON letter_numbers FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'letter numbers are never freed'",
    ],
}
_KEEP["mariadb"] = _KEEP["mysql"]


def upgrade():
    op.create_table(
        "letter_numbers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("office", sa.String(40), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(16), sa.ForeignKey("requests.id"), nullable=False, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("office", "year", "number"),
        sa.UniqueConstraint("request_id", "kind"),
    )
    for statement in _KEEP.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER letter_numbers_no_change ON letter_numbers")
        op.execute("DROP FUNCTION letter_numbers_keep()")
    op.drop_table("letter_numbers")
