"""Data files recorded with a step: `provision step ID STEP --by ROLE --data FILE`.

A step that makes a document from what the office decided (the needs analysis,
the KAK, the delegation to programmers, the handover) takes that content as a
small YAML file. It is read with the request's size limit and loader (every
problem at once, file:line, field, rule), stored with the step record and in
the step_recorded event. It holds names and plans, never a secret.

Kinds: analysis, kak, delegation, handover (KINDS); the SOP names one per step.
"""

from datetime import date, datetime

from provisioner import yamlsrc
from provisioner.errors import ValidationError
from provisioner.request import MAX_BYTES, NIP, _Checker, _shown, read_request_file
from provisioner.yamlsrc import Problem

MAX_ITEMS = 50
TEXT = 300  # one line: a need, a risk, a document name
LONG = 3000  # a paragraph


def _list(check, data, path, required=False, min_items=0, max_len=TEXT):
    """A list of one-line texts; every bad item is its own problem."""
    items = check.text_list(data, path, MAX_ITEMS, max_len, required=required, min_items=min_items)
    return [] if items is None and not required else items


def _date(check, data, path):
    value = check.value(data, path, (date, str))
    if isinstance(value, datetime):
        check.fail(path, "must be a date YYYY-MM-DD without a time")
        return None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if value.isascii() and len(value) == 10 else None
        except ValueError:
            value = None
        if value is None:
            check.fail(path, "must be a date YYYY-MM-DD")
            return None
    return value.isoformat() if value is not None else None


def _person(check, data, path, nip_required, with_position):
    section = check.subsection(data, path)
    fields = ("name", "nip", "position") if with_position else ("name", "nip")
    check.only(section, path, fields)
    if section is None:
        return None
    out = {"name": check.text(section, path + ("name",), 100)}
    if nip_required or section.get("nip") is not None:
        out["nip"] = check.pattern(section, path + ("nip",), NIP, "must be exactly 18 digits 0-9")
    else:
        out["nip"] = None
    if with_position:
        out["position"] = check.text(section, path + ("position",), 150)
    return out


def _analysis(check, data):
    return {
        "summary": check.text(data, ("summary",), LONG, multiline=True),
        "needs": _list(check, data, ("needs",), required=True, min_items=1),
        "users": check.text(data, ("users",), 500, required=False),
        "data": check.text(data, ("data",), 1000, multiline=True, required=False),
        "features": _list(check, data, ("features",)),
        "risks": _list(check, data, ("risks",)),
        "recommendation": check.text(data, ("recommendation",), LONG, multiline=True),
    }


# A budget beyond a thousand trillion rupiah (seribu triliun) is a typing slip: a whole
# province's budget is far less, and the KAK prints the amount in figures and in words.
MAX_RUPIAH = 10**15


def _kak(check, data):
    budget = check.value(data, ("budget_rupiah",), (int,), required=False)
    if budget is not None and not 0 <= budget <= MAX_RUPIAH:
        check.fail(("budget_rupiah",), f"must be a whole number of rupiah from 0 to {MAX_RUPIAH:,}"
                                       .replace(",", "."))
    return {
        "duration": check.text(data, ("duration",), 100),
        "budget_rupiah": budget,
        "scope": _list(check, data, ("scope",)),
        "outputs": _list(check, data, ("outputs",)),
        "location": check.text(data, ("location",), TEXT, required=False),
    }


def _delegation(check, data):
    programmers = check.value(data, ("programmers",), (list,))
    people = []
    if programmers is not None:
        if not programmers:
            check.fail(("programmers",), "must have at least 1 item(s)")
        elif len(programmers) > MAX_ITEMS:
            check.fail(("programmers",), f"must have at most {MAX_ITEMS} items")
        else:
            people = [_person(check, {i: p}, ("programmers", i), nip_required=False, with_position=False)
                      for i, p in enumerate(programmers)]
    return {
        "programmers": people,
        "task": check.text(data, ("task",), LONG, multiline=True),
        "due": _date(check, data, ("due",)),
    }


def _handover(check, data):
    return {
        "version": check.text(data, ("version",), 50),
        "url": check.text(data, ("url",), TEXT, required=False),
        "documents": _list(check, data, ("documents",), required=True, min_items=1),
        "received_by": _person(check, data, ("received_by",), nip_required=True, with_position=True),
    }


# kind -> (its fields, the function that checks them)
KINDS = {
    "analysis": (("summary", "needs", "users", "data", "features", "risks", "recommendation"), _analysis),
    "kak": (("duration", "budget_rupiah", "scope", "outputs", "location"), _kak),
    "delegation": (("programmers", "task", "due"), _delegation),
    "handover": (("version", "url", "documents", "received_by"), _handover),
}


def validate_step_data(raw, kind, source="<data>"):
    """Check data-file bytes of `kind`; return a plain JSON-able dict or raise ValidationError."""
    if kind not in KINDS:
        raise ValueError(f"unknown step data kind {kind!r}")
    if len(raw) > MAX_BYTES:
        raise ValidationError([Problem("(document)", f"larger than {MAX_BYTES} bytes")], source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValidationError([Problem("(document)", f"not UTF-8 text ({err.reason})")], source) from None
    doc = yamlsrc.load(text)
    if doc.problems and doc.data is None:
        raise ValidationError(_shown(doc.problems), source)
    if not isinstance(doc.data, dict):
        raise ValidationError([Problem("(document)", f"must be a mapping of fields (a {kind} file)", 1)], source)
    check = _Checker(doc)
    fields, checker = KINDS[kind]
    check.only(doc.data, (), fields)
    data = checker(check, doc.data)
    if check.problems:
        problems = sorted(check.problems, key=lambda p: (p.line or 0, p.field))
        raise ValidationError(_shown(problems), source)
    return data


def read_step_data(path, kind):
    """Read and check a data file (the request's size limit: at most MAX_BYTES are read)."""
    return validate_step_data(read_request_file(path), kind, source=str(path))
