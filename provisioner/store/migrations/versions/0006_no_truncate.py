"""The append-only tables refuse TRUNCATE too (PostgreSQL).

The row triggers of 0001 (events) and 0003 (letter_numbers) stop UPDATE and
DELETE, but PostgreSQL's TRUNCATE fires no row trigger: one statement would
empty the audit trail or free every letter number. A statement trigger before
TRUNCATE calls the same refusing function. SQLite has no TRUNCATE; MySQL and
MariaDB have no trigger for it (guard those with privileges: no DROP).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# table -> (trigger, the function 0001/0003 made for its row triggers)
_GUARDS = {
    "events": ("events_no_truncate", "events_append_only"),
    "letter_numbers": ("letter_numbers_no_truncate", "letter_numbers_keep"),
}


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (trigger, function) in _GUARDS.items():
        op.execute(f"CREATE TRIGGER {trigger} BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (trigger, _function) in _GUARDS.items():
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
