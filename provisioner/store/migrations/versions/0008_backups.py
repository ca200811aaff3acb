"""Backups: the restic repositories (their sealed passwords) and the snapshots taken.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "backup_repositories",
        sa.Column("url", sa.String(1000), primary_key=True),
        sa.Column("office", sa.String(40), nullable=False),
        sa.Column("password_sealed", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("initialized_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "backup_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("repository", sa.String(1000), nullable=False),
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        sa.Column("office", sa.String(40), nullable=False),
        sa.Column("fqdn", sa.String(255), nullable=True, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("request_id", sa.String(16), nullable=True),
        sa.Column("release", sa.String(80), nullable=True),
        sa.Column("run_id", sa.String(40), nullable=False, index=True),
        sa.Column("bytes_added", sa.BigInteger, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("taken_at", sa.DateTime, nullable=False),
        sa.Column("facts", sa.Text, nullable=False),
        sa.Column("verified_at", sa.DateTime, nullable=True),
        sa.Column("forgotten_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("repository", "snapshot_id"),
    )


def downgrade():
    op.drop_table("backup_snapshots")
    op.drop_table("backup_repositories")
