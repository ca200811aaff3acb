"""The state database through SQLAlchemy: open it (migrating to the newest schema) and get sessions.

The URL is any SQLAlchemy URL: a SQLite file by default, PostgreSQL or MariaDB
for an office that has one.
"""

import os
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import sessionmaker

from provisioner.errors import ConfigError
from provisioner.store.migrate import is_current, upgrade


class Store:
    def __init__(self, engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self):
        """A unit of work: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self):
        self.engine.dispose()


SQLITE_SIDECARS = ("", "-journal", "-wal", "-shm")


def _private_sqlite_file(database: Path) -> None:
    """state.db and SQLite's journal files mode 0600: they hold contacts' personal data.

    The file is made before SQLite opens it (SQLite gives its journals the
    database's mode), and any of them found wider is narrowed.
    """
    if not database.parent.exists():
        database.parent.mkdir(mode=0o700, parents=True)
    if not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
    for suffix in SQLITE_SIDECARS:
        path = database.with_name(database.name + suffix)
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except FileNotFoundError:
            pass


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_store(url):
    """Open (creating if needed) the database at `url` and bring its schema up to date."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigError(f"bad state database URL: {err}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        try:
            engine = create_engine(parsed, pool_pre_ping=True)
        except Exception as err:  # a missing driver (psycopg, pymysql) lands here
            raise ConfigError(f"cannot use state database {parsed.render_as_string()}: {err}") from None
    try:
        if not is_current(engine):
            upgrade(engine)
    except OperationalError as err:
        raise ConfigError(f"cannot open state database: {err.orig}") from None
    return Store(engine)
