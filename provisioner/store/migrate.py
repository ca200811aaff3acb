"""Versioned schema migrations (Alembic scripts in store/migrations/versions).

Run on every open: a current database costs one query; an older one is upgraded.
Processes that open a new (or older) database at the same moment, say the CLI
and the webhook server, take turns: the first migrates, the others wait for it
and then find the schema current.
"""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# PostgreSQL advisory lock key for migrations (any constant the database's other users do not use).
PG_MIGRATION_LOCK = 0x70726F766D6967  # "provmig"


def alembic_config(connection=None):
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _one_at_a_time(connection):
    """Hold the database's migration turn until this transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        # The driver would run the DDL outside a transaction; take the write lock
        # now, before the schema's version is read (waits up to busy_timeout).
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine, revision="head"):
    with engine.begin() as connection:
        _one_at_a_time(connection)
        command.upgrade(alembic_config(connection), revision)


def current_revision(engine):
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
