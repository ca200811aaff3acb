"""Requests: closed_at, set when the request's site is removed (its approval is spent).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# A request whose site was removed before this column existed is closed at its
# last removal, unless it owns a site that is not removed (it was provisioned again).
_BACKFILL = (
    "UPDATE requests SET closed_at = (SELECT MAX(events.at) FROM events "
    "WHERE events.request_id = requests.id AND events.kind = 'site_removed') "
    "WHERE EXISTS (SELECT 1 FROM events WHERE events.request_id = requests.id "
    "AND events.kind = 'site_removed') "
    "AND NOT EXISTS (SELECT 1 FROM sites WHERE sites.request_id = requests.id "
    "AND sites.state <> 'removed')"
)


def upgrade():
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("closed_at", sa.DateTime, nullable=True))
    op.execute(_BACKFILL)


def downgrade():
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("closed_at")
