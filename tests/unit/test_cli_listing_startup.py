"""Listing commands start without the heavy libraries: requests, sites, overdue steps and backups
are read without SQLAlchemy, a current store is opened without Alembic, and listing loads no
document, host, DNS or ACME library. The store's cheap head
read is kept equal to Alembic's own."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from provisioner.store import database as store_database
from provisioner.cli import main
from provisioner.store import open_store
from provisioner.store.migrate import current_revision, head_revision, read_head, upgrade

from conftest import EXAMPLES

# Each is imported only by commands that change something (a migration, a letter, a host, a
# certificate); listing what the state holds needs none of them.
HEAVY = ("alembic", "mako", "jinja2", "weasyprint", "ansible_runner", "paramiko", "dns", "acme", "requests")
# The store's library: the listings of requests, sites, overdue steps and backups read a
# SQLite or PostgreSQL database with its own driver (provisioner/listing.py).
STORE = ("sqlalchemy",)
# The SOP listings first: they read no state (each result shows what was loaded so far).
LISTINGS = (["sop", "list"], ["sop", "list", "--json"], ["request", "list"], ["request", "list", "--json"],
            ["request", "list", "--state", "submitted"], ["site", "list"], ["site", "list", "--json"],
            ["sla"], ["sla", "--json"], ["backup", "list", "simkes.tarakankota.go.id", "--json"])
SUBMITTED = {"HST-2024-0007": "tarakan-simkes.yaml", "KOM-2024-0031": "buleleng-sipandu.yaml"}

# Runs in a fresh interpreter (this test process has imported everything already): each
# listing in turn, with the heavy modules loaded so far after each one.
PROBE = """
import json, sys
from click.testing import CliRunner
from provisioner.cli import main

heavy, listings = json.loads(sys.argv[1])
out = []
for args in listings:
    result = CliRunner().invoke(main, args)
    out.append({"args": args, "exit_code": result.exit_code, "output": result.output,
                "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(heavy))})
print(json.dumps(out))
"""


@pytest.fixture
def state_home(tmp_path, monkeypatch):
    """A scratch state home (built-in configuration) with two submitted requests."""
    home = tmp_path / "home"
    for name in ("PROVISIONER_CONFIG", "PROVISIONER_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROVISIONER_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no ./provisioner.yaml is found
    for request_id, name in SUBMITTED.items():
        result = CliRunner().invoke(main, ["request", "submit", str(EXAMPLES / name), "--at", "2024-09-02T10:00"])
        assert result.exit_code == 0 and request_id in result.output, result.output
    return home


def test_listing_commands_load_no_heavy_library(state_home):
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([HEAVY + STORE, LISTINGS])], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ), cwd=state_home.parent)
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout.splitlines()[-1])
    for one in ran:
        assert one["exit_code"] == 0, one
        assert one["heavy"] == [], f"provision {' '.join(one['args'])} loaded {one['heavy']}"
    listed = {tuple(one["args"]): one["output"] for one in ran}
    requests = json.loads(listed[("request", "list", "--json")])
    assert [r["id"] for r in requests] == list(SUBMITTED)
    assert all(r["state"] == "submitted" and r["current_step"] == "agenda" for r in requests)
    assert all(request_id in listed[("request", "list")] for request_id in SUBMITTED)
    assert json.loads(listed[("site", "list", "--json")]) == []
    assert json.loads(listed[("backup", "list", "simkes.tarakankota.go.id", "--json")]) == []
    assert "hosting" in {s["name"] for s in json.loads(listed[("sop", "list", "--json")])}
    # Submitted in 2024: the agenda step's time standard has long passed.
    overdue = json.loads(listed[("sla", "--json")])
    assert {(o["request"], o["key"]) for o in overdue} == {(request_id, "agenda") for request_id in SUBMITTED}



def test_reading_the_sops_opens_no_state_database(tmp_path):
    env = dict(os.environ, PROVISIONER_HOME=str(tmp_path / "home"))
    env.pop("PROVISIONER_CONFIG", None)
    reading = [["sop", "list"], ["sop", "list", "--json"], ["sop", "show", "hosting", "--json"]]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([["sqlalchemy"], reading])], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for one in json.loads(done.stdout.splitlines()[-1]):
        assert one["exit_code"] == 0 and one["heavy"] == [], one
    assert not (tmp_path / "home").exists()

def test_the_cheap_head_read_is_alembics_head():
    from alembic.script import ScriptDirectory

    from provisioner.store.migrate import alembic_config

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def _scripts(directory, chain):
    directory.mkdir()
    (directory / "__init__.py").write_text("")
    for name, (revision, down) in chain.items():
        (directory / f"{name}.py").write_text(
            f'"""A migration.\n\nRevision ID: {revision}\n"""\n\nrevision = {revision!r}\ndown_revision = {down}\n')
    return directory


def test_the_head_is_the_revision_no_script_comes_after(tmp_path):
    versions = _scripts(tmp_path / "v", {"0001_a": ("0001", "None"), "0003_c": ("0003", "'0002'"),
                                         "0002_b": ("0002", '"0001"')})
    assert read_head(versions) == "0003"


@pytest.mark.parametrize("chain", [
    {"0001_a": ("0001", "None"), "0002_b": ("0002", "'0001'"), "0003_c": ("0003", "'0001'")},  # two heads
    {"0001_a": ("0001", "None"), "0002_b": ("0002", "('0001', '0003')")},  # a merge names two parents
], ids=["two heads", "a merge"])
def test_a_history_that_is_not_one_plain_chain_leaves_the_head_to_alembic(tmp_path, chain):
    assert read_head(_scripts(tmp_path / "v", chain)) is None


def test_an_older_store_is_migrated_on_open_and_a_current_one_is_opened_as_it_is(state_url, monkeypatch):
    from alembic.script import ScriptDirectory

    from provisioner.store.migrate import alembic_config

    previous = ScriptDirectory.from_config(alembic_config()).get_revision(head_revision()).down_revision
    db = create_engine(state_url)
    try:
        upgrade(db, previous)
        calls = []

        def counted(engine, revision="head"):
            calls.append(revision)
            upgrade(engine, revision)

        monkeypatch.setattr(store_database, "upgrade", counted)
        open_store(state_url).close()
        assert calls == ["head"] and current_revision(db) == head_revision()
        open_store(state_url).close()  # at the head: one query, no migration
        assert calls == ["head"]
    finally:
        db.dispose()
