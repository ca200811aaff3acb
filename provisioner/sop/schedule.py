"""A request's timeline: for each step, planned start, deadline, actual end and breach.

The SOPs warn that a delay at one step delays every step after it, so a step's
planned start is the actual end of the step before it, not a fixed plan made
at submission. Steps not yet done are projected from the open step's deadline
(or from now, if that deadline has passed) along the expected path (the "ya"
branch of a decision not yet taken).
"""

from dataclasses import dataclass

from provisioner.sop.sla import format_minutes


@dataclass
class Timeline:
    """An unfinished request with what its schedule is worked out from.

    `row` has the request's columns as attributes, `records` its recorded steps and
    `runs` its action runs, each by step key: the store's ORM rows, or the plain
    namespaces of the listing reads (provisioner/listing.py).
    """
    row: object
    records: dict
    runs: dict


def _expected_next(sop, step, record):
    if step.branches:
        if record is not None and record.branch:
            return sop.step(step.branches[record.branch].next)
        return sop.step(next(iter(step.branches.values())).next)
    return sop.default_next(step)


def schedule(sop, row, records, runs, calendar, now):
    """A list of step dicts in SOP order, with status done|current|planned|skipped."""
    by_key = {}
    step, previous_end, projecting, seen = sop.first, None, False, set()
    while step is not None and step.key not in seen:
        seen.add(step.key)
        record = records.get(step.key)
        standard = step.standard
        start = row.submitted_at if step is sop.first else previous_end
        deadline = calendar.deadline(start, standard) if start is not None else None
        info = {"planned_start": start, "deadline": deadline, "ended_at": None,
                "by": None, "branch": None, "note": None, "late_minutes": 0}
        if record is not None:
            late = calendar.working_minutes(deadline, record.ended_at) if deadline else 0
            info.update(status="done", ended_at=record.ended_at, by=record.by,
                        branch=record.branch, note=record.note, late_minutes=late)
            previous_end = record.ended_at
        elif step.key == row.current_step:
            late = calendar.working_minutes(deadline, now) if deadline else 0
            info.update(status="current", late_minutes=late)
            previous_end = max(deadline, now) if deadline else None
            projecting = True
        else:
            info.update(status="planned" if projecting else "skipped")
            previous_end = deadline if standard.fixed else None
        run = runs.get(step.key)
        info["action_status"] = run.status if run is not None else None
        by_key[step.key] = info
        step = _expected_next(sop, step, record)

    out = []
    for step in sop.steps:
        info = by_key.get(step.key) or {
            "status": "skipped", "planned_start": None, "deadline": None, "ended_at": None,
            "by": None, "branch": None, "note": None, "late_minutes": 0,
            "action_status": getattr(runs.get(step.key), "status", None)}
        if row.current_step is None and info["status"] == "planned":
            info["status"] = "skipped"
        late = info["late_minutes"]
        out.append({
            "key": step.key, "number": step.number, "activity": step.activity,
            "actor": step.actor, "actor_name": sop.roles[step.actor],
            "waktu": step.standard.as_dict(), "action": step.action,
            **info,
            "breach": late > 0,
            "late": f"{format_minutes(late)} working time" if late else None,
        })
    return out


def overdue(timelines, sop_for, calendar_for, now):
    """The current steps past their deadline, request by request (a Timeline each).

    `sop_for(office, service)` and `calendar_for(office)` are the engine's look-ups
    (or listing's, which read the same configuration).
    """
    out = []
    for timeline in timelines:
        row = timeline.row
        steps = schedule(sop_for(row.office, row.service), row, timeline.records, timeline.runs,
                         calendar_for(row.office), now)
        out.extend({"request": row.id, "office": row.office, "fqdn": row.fqdn, **step}
                   for step in steps if step["status"] == "current" and step["late_minutes"])
    return out
