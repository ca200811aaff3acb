"""Locks belong to one apply: two threads of one process never both hold one."""

import os
import threading

import pytest

from provisioner import locks
from provisioner.errors import StateError
from provisioner.store.models import Lock


def _holders(store):
    with store.session() as session:
        return {row.name: row.holder for row in session.query(Lock)}


def test_two_threads_of_one_process_never_both_hold_a_lock(store):
    inside, release = threading.Event(), threading.Event()
    outcome = {}

    def first():
        with locks.held(store, ["site:a.tarakankota.go.id", "ippool:web1"]):
            inside.set()
            release.wait(10)

    def second():
        inside.wait(10)
        for name in ("site:a.tarakankota.go.id", "ippool:web1"):
            try:
                with locks.held(store, [name]):
                    outcome[name] = "held"
            except StateError as err:
                outcome[name] = str(err)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    threads[1].join(10)
    holders = _holders(store)
    release.set()
    threads[0].join(10)
    for name in ("site:a.tarakankota.go.id", "ippool:web1"):
        assert "is locked by" in outcome[name] and "another apply is running" in outcome[name]
        assert holders[name].startswith(locks.me() + ":")
    assert _holders(store) == {}  # released by the apply that took them


def test_a_nested_hold_in_the_same_apply_re_enters_and_keeps_the_lock(store):
    with locks.held(store, ["site:a.tarakankota.go.id"]):
        outer = _holders(store)
        with locks.held(store, ["site:a.tarakankota.go.id"]):
            assert _holders(store) == outer
        assert _holders(store) == outer  # the inner block does not release the outer's lock
    assert _holders(store) == {}


def test_a_lock_of_a_dead_process_is_taken_over(store):
    with store.session() as session:
        from provisioner.sop.sla import utcnow

        dead = 2 ** 22 + 12345  # above pid_max's default: no such process
        assert not os.path.exists(f"/proc/{dead}")
        session.add(Lock(name="ippool:web1", holder=f"{locks.me().split(':')[0]}:{dead}:00ff", acquired_at=utcnow()))
    with locks.held(store, ["ippool:web1"]):
        assert _holders(store)["ippool:web1"].startswith(locks.me() + ":")


def test_a_waiting_hold_gets_the_lock_once_the_other_apply_releases_it(store):
    taken = threading.Event()

    def brief():
        with locks.held(store, ["ippool:web1"]):
            taken.set()
            threading.Event().wait(0.5)

    t = threading.Thread(target=brief)
    t.start()
    taken.wait(10)
    with pytest.raises(StateError):
        with locks.held(store, ["ippool:web1"]):
            pass
    with locks.held(store, ["ippool:web1"], wait=30):
        holder = _holders(store)["ippool:web1"]
    t.join(10)
    assert holder.startswith(locks.me() + ":")


def _hold_in_another_process(url, name, inside, release, refused):
    """A second process with its own store: take `name` and keep it until told, or
    record that it was refused."""
    from provisioner.store import open_store

    store = open_store(url)
    try:
        with locks.held(store, [name]):
            inside.set()
            release.wait(60)
    except StateError as err:
        refused.put(str(err))
    finally:
        store.close()


def test_a_lock_held_by_one_process_is_refused_to_another(state_url, store):
    """Two processes, each opening its own store on the same database."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    inside, release, refused = spawn.Event(), spawn.Event(), spawn.Queue()
    other = spawn.Process(target=_hold_in_another_process,
                          args=(state_url, "site:a.tarakankota.go.id", inside, release, refused))
    other.start()
    try:
        assert inside.wait(60), "the other process never took the lock"
        assert _holders(store)["site:a.tarakankota.go.id"].startswith(f"{locks.me().split(':')[0]}:{other.pid}:")
        with pytest.raises(StateError, match=f":{other.pid}:.*another apply is running"):
            with locks.held(store, ["site:a.tarakankota.go.id"]):
                pass
    finally:
        release.set()
        other.join(60)
    assert other.exitcode == 0 and _holders(store) == {}
    # The other way round: this process holds it and the other process is refused.
    with locks.held(store, ["site:a.tarakankota.go.id"]):
        inside, release = spawn.Event(), spawn.Event()
        other = spawn.Process(target=_hold_in_another_process,
                              args=(state_url, "site:a.tarakankota.go.id", inside, release, refused))
        other.start()
        other.join(60)
        assert other.exitcode == 0 and not inside.is_set()
        assert f"is locked by {locks.me()}:" in refused.get(timeout=10)
    assert _holders(store) == {}
