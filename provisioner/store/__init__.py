"""The state database: open it (migrating to the newest schema) and get sessions.

The URL is any SQLAlchemy URL: a SQLite file by default, PostgreSQL or MariaDB
for an office that has one.
"""

from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import sessionmaker

from provisioner.errors import ConfigError
from provisioner.store.migrate import upgrade


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
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        try:
            engine = create_engine(parsed, pool_pre_ping=True)
        except Exception as err:  # a missing driver (psycopg, pymysql) lands here
            raise ConfigError(f"cannot use state database {parsed.render_as_string()}: {err}") from None
    try:
        upgrade(engine)
    except OperationalError as err:
        raise ConfigError(f"cannot open state database: {err.orig}") from None
    return Store(engine)
