"""Named locks in the state database: one apply at a time per site and per IP pool.

A lock is a row; taking it is an INSERT, so of two processes only one wins,
whatever the database. A lock whose holder process is gone (same machine, PID
no longer alive) is stale and taken over, so a crash never wedges a site.
"""

import os
import socket
from contextlib import contextmanager

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from provisioner.errors import StateError
from provisioner.store.models import Lock
from provisioner.sop.sla import utcnow


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
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


@contextmanager
def held(store, names):
    """Hold every named lock for the block (taken in sorted order to avoid deadlock)."""
    holder = me()
    taken = []
    try:
        for name in sorted(set(names)):
            if _take(store, name, holder):
                taken.append(name)
        yield
    finally:
        if taken:
            with store.session() as session:
                session.execute(delete(Lock).where(Lock.name.in_(taken), Lock.holder == holder))
