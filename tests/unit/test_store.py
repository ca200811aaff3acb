"""The state database itself, on SQLite and on a real PostgreSQL server: migrations both
ways, the append-only guard on events, and a refused connection's error."""

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DatabaseError

from provisioner.errors import ConfigError
from provisioner.sop.sla import utcnow
from provisioner.store import open_store
from provisioner.store.events import add_event
from provisioner.store.migrate import current_revision, upgrade
from provisioner.store.models import Event

TABLES = {"requests", "step_records", "action_runs", "events", "webhook_keys", "sites", "ip_allocations", "locks",
          "credentials", "letter_numbers", "certificates"}


def _head():
    from alembic.script import ScriptDirectory

    from provisioner.store.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _downgrade(db, revision):
    from alembic import command

    from provisioner.store.migrate import alembic_config

    with db.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


def test_migrations_go_to_the_head_and_back_and_up_again(state_url):
    db = create_engine(state_url)
    try:
        upgrade(db)
        assert current_revision(db) == _head()
        assert TABLES <= set(inspect(db).get_table_names())
        _downgrade(db, "base")
        assert current_revision(db) is None
        assert not TABLES & set(inspect(db).get_table_names())
        upgrade(db)  # the guards' triggers and functions were dropped with their tables: made again
        assert current_revision(db) == _head()
    finally:
        db.dispose()
    store = open_store(state_url)  # a current database: opened as it is
    try:
        with store.session() as session:
            add_event(session, None, "probe")
        with pytest.raises(DatabaseError, match="append-only"):
            with store.session() as session:
                session.execute(text("DELETE FROM events"))
    finally:
        store.close()


def test_events_can_be_added_but_never_changed_or_removed(store):
    with store.session() as session:
        add_event(session, "HST-2024-0001", "request_submitted", fqdn="a.tarakankota.go.id")
        add_event(session, "HST-2024-0001", "step_recorded", step="agenda")
    for statement in ("UPDATE events SET kind = 'forged'", "UPDATE events SET payload = '{}' WHERE kind = 'step_recorded'",
                      "DELETE FROM events", "DELETE FROM events WHERE kind = 'step_recorded'"):
        with pytest.raises(DatabaseError, match="events are append-only"):
            with store.session() as session:
                session.execute(text(statement))
    with store.session() as session:
        rows = session.query(Event).order_by(Event.id).all()
        assert [(e.kind, e.payload) for e in rows] == [
            ("request_submitted", {"fqdn": "a.tarakankota.go.id"}), ("step_recorded", {"step": "agenda"})]
        assert all(e.at <= utcnow() for e in rows)


# SQLite has no TRUNCATE (its DELETE is refused above); PostgreSQL's fires no row trigger.
@pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)
def test_truncate_cannot_empty_the_events_or_free_letter_numbers(store):
    with store.session() as session:
        add_event(session, None, "probe")
    for statement, refusal in (("TRUNCATE events", "events are append-only"),
                               ("TRUNCATE letter_numbers", "letter numbers are never changed or freed"),
                               # A cascade from requests reaches letter_numbers: refused there too.
                               ("TRUNCATE requests CASCADE", "letter numbers are never changed or freed")):
        with pytest.raises(DatabaseError, match=refusal):
            with store.session() as session:
                session.execute(text(statement))
    with store.session() as session:
        assert [e.kind for e in session.query(Event).all()] == ["probe"]


def test_a_refused_connection_is_a_config_error_without_the_password(pg_server):
    url = pg_server.new_database()
    try:
        wrong = url.replace(pg_server.password, "not-the-password")
        with pytest.raises(ConfigError, match="cannot open state database") as refused:
            open_store(wrong)
        assert "not-the-password" not in str(refused.value) and pg_server.password not in str(refused.value)
    finally:
        pg_server.drop_database(url)


def _open_and_close(url, together):
    together.wait(60)  # every process imported and ready: they open at the same moment
    open_store(url).close()


def test_processes_opening_a_new_database_at_once_all_find_it_migrated(state_url):
    """A CLI and the webhook server started together on an empty database: one migrates, the others wait."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    together = spawn.Barrier(4)
    processes = [spawn.Process(target=_open_and_close, args=(state_url, together)) for _ in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    db = create_engine(state_url)
    try:
        assert current_revision(db) == _head()
    finally:
        db.dispose()
