"""Versioned schema migrations (Alembic scripts in store/migrations/versions).

Run on every open: a current database costs one query and no Alembic import (the
head revision is read from the scripts' own `revision = ...` lines); an older
one is upgraded. SQLAlchemy is imported by the functions that use it, so that
provisioner/listing.py can read the head without it. Processes that open a new
(or older) database at the same moment, say the CLI and the webhook server, take
turns: the first migrates, the others wait for it and then find the schema current.
"""

import re
from functools import cache
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# PostgreSQL advisory lock key for migrations (any constant the database's other users do not use).
PG_MIGRATION_LOCK = 0x70726F766D6967  # "provmig"
# A script's own identity lines, as migrations/script.py.mako writes them: `revision = "0008"`,
# `down_revision = "0007"` (None for the first). Any other form makes read_head give up.
_IDENTITY = re.compile(r"""^(revision|down_revision)\s*=\s*(?:None|["']([^"']+)["'])\s*$""", re.MULTILINE)


def alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def head_revision():
    """The newest revision of the toolkit's migrations, or None (see read_head).

    tests/unit/test_cli_listing_startup.py keeps it equal to Alembic's own head.
    """
    return read_head(MIGRATIONS / "versions")


def read_head(versions):
    """The revision no script in `versions` names as its down_revision.

    None when the scripts are not a plain chain this can read (a merge's tuple of
    parents, a missing line, two heads): is_current then says no and Alembic decides.
    """
    revisions, parents = set(), set()
    for script in Path(versions).glob("*.py"):
        if script.name == "__init__.py":
            continue
        found = dict(_IDENTITY.findall(script.read_text(encoding="utf-8")))
        if not found.get("revision") or "down_revision" not in found:
            return None
        revisions.add(found["revision"])
        if found["down_revision"]:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def is_current(engine):
    """Is the database at the head revision? Read with one query, without Alembic."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    head = head_revision()
    if head is None:
        return False
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:
        # No alembic_version table (a new database), or no connection at all: upgrade()
        # creates the one and reports the other.
        return False
    return versions == [head]


def _one_at_a_time(connection):
    """Hold the database's migration turn until this transaction ends."""
    from sqlalchemy import text

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        # The driver would run the DDL outside a transaction; take the write lock
        # now, before the schema's version is read (waits up to busy_timeout).
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine, revision="head"):
    # Alembic (and with it Mako) is imported only here, when a migration may have to run.
    from alembic import command

    with engine.begin() as connection:
        _one_at_a_time(connection)
        command.upgrade(alembic_config(connection), revision)


def current_revision(engine):
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
