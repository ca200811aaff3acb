"""Named locks in the state database: one apply at a time per site and per IP pool.

A lock is a row; taking it is an INSERT, so of two processes only one wins,
whatever the database. A lock belongs to one apply, not to a process: its
holder is "host:pid:token" with a fresh token per `held()`, so two threads of
one process (two webhook posts) never both hold it. Only a `held()` nested in
the same apply (same thread, inside the outer block) re-enters it. A lock whose
holder process is gone (same machine, PID no longer alive) is stale and taken
over, so a crash never wedges a site.
"""

import os
import secrets
import socket
import time
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from provisioner.errors import StateError
from provisioner.store.models import Lock
from provisioner.sop.sla import utcnow


# The holder of the apply running in this thread (set by the outermost held()).
_current: ContextVar[str | None] = ContextVar("provisioner_lock_holder", default=None)


def me() -> str:
    """This process, as lock holders name it (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_holder() -> str:
    return f"{me()}:{secrets.token_hex(8)}"


def _alive(holder: str) -> bool:
    host, _, pid = holder.partition(":")
    pid = pid.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's process: assume it is alive
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take(store, name: str, holder: str) -> bool:
    """Take one lock; True if newly taken, False if we already held it."""
    for _ in range(2):
        try:
            with store.session() as session:
                session.add(Lock(name=name, holder=holder, acquired_at=utcnow()))
            return True
        except IntegrityError:
            with store.session() as session:
                current = session.get(Lock, name)
                if current is None:
                    continue
                if current.holder == holder:
                    return False
                if _alive(current.holder):
                    raise StateError(
                        f"{name} is locked by {current.holder} since {current.acquired_at:%Y-%m-%d %H:%M:%S} UTC; "
                        "another apply is running"
                    )
                # The holder died: take the lock over.
                session.execute(delete(Lock).where(Lock.name == name, Lock.holder == current.holder))
    raise StateError(f"could not take lock {name}")


def _take_waiting(store, name: str, holder: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            return _take(store, name, holder)
        except StateError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


@contextmanager
def held(store, names, wait: float = 0.0):
    """Hold every named lock for the block (taken in sorted order to avoid deadlock).

    A lock held by another live apply is refused at once, or after up to
    `wait` seconds for locks that are only ever held briefly (an IP pool).
    """
    outer = _current.get()
    holder = outer or new_holder()
    reset = _current.set(holder)
    taken = []
    try:
        for name in sorted(set(names)):
            if _take_waiting(store, name, holder, wait):
                taken.append(name)
        yield
    finally:
        _current.reset(reset)
        if taken:
            with store.session() as session:
                session.execute(delete(Lock).where(Lock.name.in_(taken), Lock.holder == holder))
