"""Requests spawned for another (requests.linked_to) and the data file recorded with a step.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("linked_to", sa.String(16), nullable=True))
        batch.create_index("ix_requests_linked_to", ["linked_to"])
    with op.batch_alter_table("step_records") as batch:
        batch.add_column(sa.Column("data", sa.Text, nullable=True))


def downgrade():
    with op.batch_alter_table("step_records") as batch:
        batch.drop_column("data")
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_linked_to")
        batch.drop_column("linked_to")
