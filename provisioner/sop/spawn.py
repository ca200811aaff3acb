"""A hosting request made from another request: the hosting a website or an application needs.

A website request for a name that has no site yet, or an application that will
need hosting, gives the hosting's fields in its own request (`website.hosting`,
`application.hosting`). Once that request is approved, `spawn_hosting` writes
the hosting request those fields describe, with the parent's letter, agency and
contact, and submits it: the office's hosting SOP then runs as for any other
hosting request, and when its site is provisioned the engine resumes the parent
(the website's install step waits for it).
"""

import yaml
from sqlalchemy import select

from provisioner.errors import Conflict, NotFound, StateError
from provisioner.files import write_atomic
from provisioner.request import validate
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import Event, RequestRow

PREFIX = "HST"
REQUEST_MODE = 0o640  # contacts' personal data: not for every user of the controller
MAX_TRIES = 20  # request numbers taken by concurrent spawns before giving up


def requests_dir(config):
    return config.home() / "requests"


def _children(session, parent_id):
    """The hosting requests spawned for `parent_id`: for its hosting name, in its office."""
    parent = session.get(RequestRow, parent_id)
    if parent is None or not parent.fqdn:
        return []
    return session.scalars(select(RequestRow).where(
        RequestRow.linked_to == parent_id, RequestRow.service == "hosting",
        RequestRow.office == parent.office, RequestRow.fqdn == parent.fqdn)
        .order_by(RequestRow.submitted_at, RequestRow.id)).all()


def _spent(row):
    """A rejected or closed hosting request will never provision: the parent needs a new one."""
    return row.decision == "reject" or row.closed_at is not None


def linked_child(store, parent_id):
    """The id of the live hosting request spawned for `parent_id` (not rejected, not closed), or None."""
    with store.session() as session:
        return next((r.id for r in _children(session, parent_id) if not _spent(r)), None)


def passed_over(store, parent_id):
    """[(id, "rejected" or "closed", reason)]: the requests spawned for `parent_id` that never will provision."""
    with store.session() as session:
        out = []
        for row in _children(session, parent_id):
            if not _spent(row):
                continue
            if row.decision != "reject":
                out.append((row.id, "closed", None))
                continue
            decided = session.scalars(select(Event.payload).where(
                Event.request_id == row.id, Event.kind == "decided").order_by(Event.id.desc())).first()
            out.append((row.id, "rejected", (decided or {}).get("reason")))
        return out


def _next_id(store, year):
    """HST-<year>-NNNN: one past the highest number that year (numbers are never reused)."""
    prefix = f"{PREFIX}-{year}-"
    with store.session() as session:
        ids = session.scalars(select(RequestRow.id).where(RequestRow.id.like(f"{prefix}%"))).all()
    numbers = [int(i[len(prefix):]) for i in ids if i[len(prefix):].isdigit()]
    number = max(numbers, default=0) + 1
    if number > 9999:
        raise StateError(f"no request number left in {year} for {prefix}NNNN")
    return f"{prefix}{number:04d}"


def _what(parent):
    if parent.website is not None:
        return f"website {parent.website.fqdn}"
    return f"aplikasi {parent.application.name}"


def hosting_document(parent, child_id):
    """The YAML bytes of the hosting request for `parent` (validated like any request when submitted)."""
    site = parent.hosting_site
    document = {
        "id": child_id,
        "service": "hosting",
        "letter": {"number": parent.letter.number, "date": parent.letter.date,
                   "subject": parent.letter.subject},
        "agency": {"code": parent.agency.code, "name": parent.agency.name},
        "contact": vars(parent.contact).copy(),
        "site": {k: v for k, v in vars(site).items()
                 if not (k == "php_version" and v is None)
                 and not (k in ("allow_exec", "tls_optional") and v is False)},
        "purpose": f"Hosting untuk {_what(parent)} (permohonan {parent.id})",
        "linked_request": parent.id,
    }
    section = "website.hosting" if parent.website is not None else "application.hosting"
    header = f"# The hosting request of {parent.id}, made from its {section} (provisioner.sop.spawn).\n"
    return (header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)).encode("utf-8")


def spawn_hosting(config, store, parent_id, source="cli", at=None, actions=None, clock=None):
    """Create (once) and submit the hosting request `parent_id` needs; return its id.

    A second call returns the request made by the first. Refused (StateError) unless the
    parent is approved and its request gives the hosting (website.hosting or application.hosting).
    `actions` and `clock` are the engine's (tests pin the clock); `at` is when it is submitted.
    """
    from provisioner.sop.engine import Engine

    existing = linked_child(store, parent_id)
    if existing is not None:
        return existing
    with store.session() as session:
        row = session.get(RequestRow, parent_id)
        if row is None:
            raise NotFound(f"no request {parent_id!r}")
        content, decision, state, service = row.content, row.decision, row.state, row.service
        if row.linked_to is not None and service == "hosting":
            raise StateError(f"{parent_id} is itself the hosting request of {row.linked_to}")
    if decision != "approve":
        raise StateError(f"{parent_id} is not approved (state {state}); its hosting request is made "
                         f"once its SOP approves it")
    parent = validate(content, config, source=f"stored {parent_id}", stored=True)
    if parent.hosting_site is None:
        section = {"website": "website.hosting"}.get(service, "application.hosting")
        raise StateError(f"{parent_id} ({service}) gives no {section}; there is no hosting to request")
    now = at or (clock or utcnow)()
    tz = config.office(parent.office).tz
    engine = Engine(config, store, **({"actions": actions} if actions is not None else {}),
                    **({"clock": clock} if clock is not None else {}))
    # The registered row reserves the id: submit first, and only then write the file, so two
    # spawns at once never write one file for two requests. A number taken meanwhile -> the next.
    for _attempt in range(MAX_TRIES):
        child_id = _next_id(store, now.astimezone(tz).year)
        raw = hosting_document(parent, child_id)
        path = requests_dir(config) / f"{child_id}.yaml"
        try:
            outcome = engine.submit(raw, str(path), at=at, source=source, spawned_from=parent_id)
            break
        except Conflict:
            existing = linked_child(store, parent_id)
            if existing is not None:
                return existing  # a concurrent spawn for the same parent won
            with store.session() as session:
                taken = session.get(RequestRow, child_id) is not None
            if not taken:
                raise  # not the number: the name is requested by another request
    else:
        raise StateError(f"{parent_id}: no free hosting request number after {MAX_TRIES} tries; try again")
    write_atomic(path, raw, mode=REQUEST_MODE)
    if not outcome.changed:
        return child_id  # the same request, registered by a concurrent spawn for this parent
    with store.session() as session:
        add_event(session, parent_id, "hosting_spawned", source=source, request=child_id,
                  fqdn=parent.hosting_site.fqdn, file=str(path))
        add_event(session, child_id, "hosting_spawned", source=source, linked_request=parent_id,
                  fqdn=parent.hosting_site.fqdn, file=str(path))
    return child_id
