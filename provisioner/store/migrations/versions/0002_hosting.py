"""Hosting: sites (the configuration record), public IP allocations, locks, encrypted credentials.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sites",
        sa.Column("fqdn", sa.String(255), primary_key=True),
        sa.Column("request_id", sa.String(16), sa.ForeignKey("requests.id"), nullable=False, index=True),
        sa.Column("office", sa.String(40), nullable=False),
        sa.Column("zone", sa.String(255), nullable=False),
        sa.Column("label", sa.String(63), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("web_host", sa.String(255), nullable=False),
        sa.Column("db_host", sa.String(255)),
        sa.Column("public_ip", sa.String(45)),
        sa.Column("dedicated_ip", sa.Boolean, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("plan_checksum", sa.String(64)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("provisioned_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_table(
        "ip_allocations",
        sa.Column("address", sa.String(45), primary_key=True),
        sa.Column("pool", sa.String(100), nullable=False),
        sa.Column("fqdn", sa.String(255), nullable=False, unique=True),
        sa.Column("web_host", sa.String(255), nullable=False),
        sa.Column("allocated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "credentials",
        sa.Column("fqdn", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("username", sa.String(80), nullable=False),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade():
    for table in ("credentials", "locks", "ip_allocations", "sites"):
        op.drop_table(table)
