"""Sites: the disk and database bytes last measured (the usage report), for placement.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("disk_bytes", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("db_bytes", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("usage_measured_at", sa.DateTime, nullable=True))


def downgrade():
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("usage_measured_at")
        batch.drop_column("db_bytes")
        batch.drop_column("disk_bytes")
