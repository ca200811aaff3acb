"""The listing commands' plain reads (provisioner/listing.py) give exactly what the store gives,
on SQLite and PostgreSQL, change nothing, and hand every database they cannot read as it is
to the store."""

import hashlib
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine

from provisioner import records
from provisioner.errors import ActionError, ConfigError
from provisioner.listing import PlainReads, StoreReads, open_reads, overdue
from provisioner.store import open_store
from provisioner.store.migrate import current_revision, head_revision, upgrade

from conftest import EXAMPLES
from test_engine import at, through_review
from test_records import add_site

REQUEST_STATES = (None, "submitted", "approved", "rejected", "attention", "done")
SITE_STATES = (None, "provisioned", "suspended", "removed", "failed")


def _as(raw, request_id, label):
    return raw.replace(b"HST-2024-0007", request_id.encode()).replace(b"subdomain: simkes",
                                                                      f"subdomain: {label}".encode())


@pytest.fixture
def office(engine, clock, actions, simkes_bytes):
    """Requests in every state, at different steps, in two offices, and sites in several states."""
    through_review(engine, clock, simkes_bytes)  # HST-2024-0007: approved, the bound actions ran
    clock.now = at(13, 8, 30)
    engine.decide("HST-2024-0007", True, "kadis")

    clock.now = at(16, 15, 50)  # a Friday afternoon: the agenda step runs past the weekend
    engine.submit(_as(simkes_bytes, "HST-2024-0008", "arsip"), "arsip.yaml")
    clock.now = at(19, 8, 0)
    engine.record_step("HST-2024-0008", "agenda", "bagian_umum")

    clock.now = at(14, 9, 0)
    engine.submit(_as(simkes_bytes, "HST-2024-0009", "tolak"), "tolak.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step("HST-2024-0009", ref, role)
    engine.decide("HST-2024-0009", False, "kadis", reason="Tidak sesuai")

    clock.now = at(15, 10, 0)
    engine.submit(_as(simkes_bytes, "HST-2024-0010", "gagal"), "gagal.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step("HST-2024-0010", ref, role)
    actions.fail.add("provision_site")
    with pytest.raises(ActionError, match="broke on purpose"):
        engine.decide("HST-2024-0010", True, "kadis")
    actions.fail.clear()

    clock.now = at(3, 11, 0, month=9)  # after its letter's date
    engine.submit((EXAMPLES / "buleleng-sipandu.yaml").read_bytes(), "buleleng-sipandu.yaml")

    store = engine.store
    for label, state in (("simkes", "provisioned"), ("arsip", "suspended"), ("lama", "removed"),
                         ("rusak", "failed")):
        add_site(store, label, state=state, request_id=f"HST-2023-{label[:4].upper()}")
    add_site(store, "sipandu", zone="bulelengkab.go.id", dedicated="203.0.113.131", db=False, office="buleleng",
             request_id="KOM-2023-0001")
    # The first request done, and another approved whose report is still to be sent.
    clock.now = at(21, 8, 0)
    for ref, role in (("8", "bidang_aplikasi"), ("9", "bidang_aplikasi"), ("10", "opd")):
        clock.now += timedelta(minutes=1)
        engine.record_step("HST-2024-0007", ref, role)
    engine.submit(_as(simkes_bytes, "HST-2024-0011", "baru"), "baru.yaml")
    for ref, role in (("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")):
        clock.now += timedelta(minutes=3)
        engine.record_step("HST-2024-0011", ref, role)
    engine.decide("HST-2024-0011", True, "kadis")
    _backups(store)
    return engine


REPOSITORY = "sftp:backup@10.77.0.20:/srv/backup/tarakan"
SIMKES = "simkes.tarakankota.go.id"


def _backups(store):
    """Two runs of simkes (files and database), the state's own backup; the first run forgotten
    by retention, the second proven by a restore."""
    from provisioner.backup import records as backup_records

    with store.session() as session:
        for run, snapshot, kind, release in (("run1", "aaa1", "files", "r1"), ("run1", "aaa2", "db", None),
                                             ("run2", "bbb1", "files", "r2"), ("run2", "bbb2", "db", None),
                                             ("run2", "ccc1", "state", None)):
            backup_records.record_snapshot(
                session, REPOSITORY, "tarakan", None if kind == "state" else SIMKES, kind, run,
                {"snapshot_id": snapshot, "data_added": 1000 + len(snapshot), "total_bytes_processed": 5000},
                {"rows": {}}, request_id="HST-2024-0007", release=release)
    backup_records.mark_forgotten(store, REPOSITORY, {"bbb1", "bbb2", "ccc1"})
    backup_records.mark_verified(store, backup_records.snapshots(store, SIMKES), "backup_verified")


def _on(config, url):
    return config.model_copy(update={"state_url": url})


def test_plain_reads_are_used_on_a_current_database(office, state_url):
    with open_reads(_on(office.config, state_url)) as reads:
        assert isinstance(reads, PlainReads)
        assert len(reads.requests()) == 11  # six through the SOP, five behind the recorded sites


def test_plain_reads_give_what_the_store_gives(office, state_url):
    store_reads = StoreReads.__new__(StoreReads)
    store_reads.engine = office  # the store's own paths on the same database
    with PlainReads.open(state_url) as plain:
        seen_states = set()
        for state in REQUEST_STATES:
            expected = store_reads.requests(state)
            assert plain.requests(state) == expected, state
            seen_states |= {r["state"] for r in expected}
        assert seen_states == set(REQUEST_STATES) - {None}  # every state is really there to compare
        for state in SITE_STATES:
            expected = store_reads.sites(state)
            assert plain.sites(state) == expected, state
            assert expected, state  # a site in every state is really there to compare
        assert plain.sites() == records.site_list(office.store)
        assert {r["dedicated_ip"] for r in plain.sites()} == {True, False}

        late = 0
        for now in (at(13, 9, 0), at(19, 10, 0), at(26, 9, 0), at(2, 9, 0, month=12)):
            expected = office.overdue(now)
            assert overdue(office.config, plain, now) == expected, now
            late += len(expected)
        assert late > 0
        for include_forgotten in (False, True):
            expected = store_reads.snapshots(SIMKES, include_forgotten)
            assert plain.snapshots(SIMKES, include_forgotten) == expected
        assert [s["snapshot"] for s in expected] == ["bbb2", "bbb1", "aaa2", "aaa1"]
        assert [bool(s["verified_at"]) for s in expected] == [True, True, False, False]
        assert [bool(s["forgotten_at"]) for s in expected] == [False, False, True, True]
        assert plain.snapshots("arsip.tarakankota.go.id") == []
        assert {t.row.id for t in plain.timelines()} == {
            r["id"] for r in store_reads.requests() if r["state"] != "done"}


def test_the_times_read_are_aware_utc_like_the_stores(office, state_url):
    with PlainReads.open(state_url) as plain:
        submitted = {r["id"]: r["submitted_at"] for r in plain.requests()}
    assert submitted["HST-2024-0008"] == at(16, 15, 50)
    assert all(t.utcoffset() == timedelta(0) for t in submitted.values())


def test_plain_reads_change_nothing(tmp_path, config, clock, actions, simkes_bytes):
    from provisioner.sop.engine import Engine

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    engine = Engine(config, store, actions=actions.registry, clock=clock)
    through_review(engine, clock, simkes_bytes)
    store.close()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    with PlainReads.open(url) as plain:
        assert [r["id"] for r in plain.requests()] == ["HST-2024-0007"]
        assert plain.sites() == [] and plain.timelines()
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("url", [
    "sqlite://", "sqlite:///:memory:", "sqlite:///state.db?timeout=5", "sqlite:////srv/state%20db/state.db",
    "mysql+pymysql://u:p@127.0.0.1/state", "postgresql+psycopg2://u:p@127.0.0.1/state", "not a url",
])
def test_a_database_the_plain_reads_do_not_know_is_left_to_the_store(url):
    assert PlainReads.open(url) is None


def test_a_missing_sqlite_database_is_the_stores_to_make(tmp_path, config):
    database = tmp_path / "home" / "state.db"
    assert PlainReads.open(f"sqlite:///{database}") is None
    assert not database.exists()  # the read-only open made nothing
    with open_reads(_on(config, f"sqlite:///{database}")) as reads:
        assert isinstance(reads, StoreReads)
        assert reads.requests() == [] and reads.sites() == [] and reads.timelines() == []
    assert database.exists()  # made and migrated by the store, as every command does


def test_an_older_schema_is_migrated_by_the_store_before_it_is_listed(state_url, config):
    from alembic.script import ScriptDirectory

    from provisioner.store.migrate import alembic_config

    previous = ScriptDirectory.from_config(alembic_config()).get_revision(head_revision()).down_revision
    db = create_engine(state_url)
    try:
        upgrade(db, previous)
        assert PlainReads.open(state_url) is None
        with open_reads(_on(config, state_url)) as reads:
            assert isinstance(reads, StoreReads) and reads.requests() == []
        assert current_revision(db) == head_revision()
        with open_reads(_on(config, state_url)) as reads:
            assert isinstance(reads, PlainReads)
    finally:
        db.dispose()


def test_a_refused_postgresql_login_is_reported_as_the_store_reports_it(request, tmp_path, config):
    from conftest import state_url_for

    url = state_url_for(request, tmp_path, "postgresql")
    open_store(url).close()
    wrong = url.replace(url.split("://", 1)[1].split("@", 1)[0], "provisioner:not-the-password")
    assert PlainReads.open(wrong) is None
    with pytest.raises(ConfigError, match="cannot open state database"):
        open_reads(_on(config, wrong))


def test_timelines_keep_what_the_schedule_needs(office, state_url):
    with PlainReads.open(state_url) as plain:
        timelines = {t.row.id: t for t in plain.timelines()}
    arsip = timelines["HST-2024-0008"]
    assert arsip.row.current_step == "disposisi" and arsip.row.office == "tarakan"
    assert arsip.records["agenda"].by == "bagian_umum"
    assert arsip.records["agenda"].ended_at == at(19, 8, 0)
    assert timelines["HST-2024-0010"].runs["konfigurasi_server"].status == "failed"
    assert "HST-2024-0007" not in timelines  # done
    assert isinstance(arsip.row.submitted_at, datetime) and arsip.row.submitted_at.tzinfo is not None
