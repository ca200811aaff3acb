"""Certificates: each one obtained for a site, its sealed key and its state.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fqdn", sa.String(255), nullable=False, index=True),
        sa.Column("request_id", sa.String(16), nullable=True, index=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("serial", sa.String(80), nullable=False),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("names", sa.Text, nullable=False),
        sa.Column("registered_domain", sa.String(255), nullable=True, index=True),
        sa.Column("not_before", sa.DateTime, nullable=False),
        sa.Column("not_after", sa.DateTime, nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("cert_pem", sa.Text, nullable=False),
        sa.Column("chain_pem", sa.Text, nullable=False),
        sa.Column("key_sealed", sa.Text, nullable=True),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("source", "serial"),
    )


def downgrade():
    op.drop_table("certificates")
