"""Writing to the append-only history, from any module, in the caller's transaction."""

from provisioner.sop.sla import utcnow
from provisioner.store.models import Event

SOURCES = ("cli", "webhook", "hook")


def add_event(session, request_id, kind, actor="system", source="cli", **payload):
    """Add one event to the session; it commits (or not) with the change it explains."""
    if source not in SOURCES:
        raise ValueError(f"unknown event source {source!r}")
    session.add(Event(request_id=request_id, at=utcnow(), actor=actor, source=source, kind=kind, payload=payload))
