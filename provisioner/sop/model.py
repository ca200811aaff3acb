"""The SOPs as data: load `sop/NAME.yaml`, check its schema, and answer flow questions.

A step is identified by its `key` (unique in the SOP); `number` is kept exactly
as the seed prints it, which need not be unique (the Buleleng SOP has two 14s).
"""

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError as PydanticError, field_validator

from provisioner import yamlsrc
from provisioner.errors import NotFound, ValidationError
from provisioner.yamlsrc import Problem

KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
REPORT_ACTION = "render_report"  # the after-action whose documents are numbered per step
APPROVE, REJECT = "ya", "tidak"
# Branches the toolkit answers from the configuration records instead of a person's --branch:
# name -> the branch names it answers with.
ANSWERS = {"site_exists": ("ada", "belum_ada")}
# The role that records steps the toolkit performs; SOP roles may not use it.
SYSTEM = "system"

_WAKTU = re.compile(r"([1-9][0-9]{0,3}) (menit|jam|hari|minggu)", re.IGNORECASE)
UNITS = {"menit": "minutes", "jam": "hours", "hari": "days", "minggu": "weeks"}


@dataclass(frozen=True)
class TimeStandard:
    """A step's waktu: the SOP's text, and its amount and unit when it has a fixed one.

    Minutes and hours are working minutes; days and weeks are working days and
    working weeks (5 working days), in the office's calendar.
    """

    text: str
    amount: int | None = None
    unit: str | None = None  # minutes | hours | days | weeks

    @property
    def fixed(self):
        return self.amount is not None

    def as_dict(self):
        return {"text": self.text, "amount": self.amount, "unit": self.unit}


def parse_waktu(text):
    """'2 Menit' -> TimeStandard('2 Menit', 2, 'minutes'); other text is a ValueError."""
    match = _WAKTU.fullmatch(text) if isinstance(text, str) and text.isascii() else None
    if not match:
        raise ValueError(f"{text!r} is not '<number> Menit|Jam|Hari|Minggu'; "
                         "write {text: ..., standard: none} for a step without a fixed time")
    return TimeStandard(text, int(match.group(1)), UNITS[match.group(2).lower()])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoStandard(_Strict):
    text: str
    standard: Literal["none"]


class Branch(_Strict):
    label: str
    next: str
    action: str | None = None


class Step(_Strict):
    key: str
    number: int = Field(ge=1)
    activity: str = Field(min_length=1)
    actor: str
    kelengkapan: list[str]
    waktu: str | NoStandard | None
    output: list[str]
    action: str | None = None
    next: str | None = None
    approval: bool = False
    branches: dict[str, Branch] | None = None
    note: str | None = None
    # An action run after a person records the step (a document made from it, say);
    # the request has already moved on, so a failure only puts it in attention.
    after: str | None = None
    # The kind of data file the step takes (provisioner.sop.stepdata), and whether it must.
    data: str | None = None
    data_required: bool = False
    # A branch the toolkit computes from the configuration records (ANSWERS).
    answered_by: str | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value):
        if not KEY.fullmatch(value):
            raise ValueError("must be lowercase a-z, 0-9 and _, starting with a letter")
        return value

    @field_validator("waktu")
    @classmethod
    def _waktu(cls, value):
        if isinstance(value, str):
            parse_waktu(value)
        return value

    @property
    def standard(self):
        if self.waktu is None:
            return TimeStandard("", None, None)
        if isinstance(self.waktu, NoStandard):
            return TimeStandard(self.waktu.text)
        return parse_waktu(self.waktu)

    @property
    def automated(self):
        return self.action is not None


class Document(_Strict):
    # Written out in every SOP file; null only where the office has not issued
    # the document yet (letters and records then cite the title and office alone).
    number: str | None
    made: date | None
    revised: date | None = None
    effective: date | None
    approved_by: str | None
    source: str


class Sop(_Strict):
    name: str
    title: str
    office: str
    document: Document
    roles: dict[str, str]
    equipment: list[str] = []
    records: list[str] = []
    warning: str | None = None
    steps: list[Step] = Field(min_length=2)
    path: str = ""

    def citation(self, office_name=None):
        """How letters and records name this SOP: "SOP Layanan Hosting Nomor 067/28/SOP/DKISP/2022"."""
        return cite(self.title, self.document.number, office_name)

    def step(self, ref):
        """A step by key, or by number when that number is unique."""
        ref = str(ref)
        for step in self.steps:
            if step.key == ref:
                return step
        matches = [s for s in self.steps if str(s.number) == ref]
        if len(matches) == 1:
            return matches[0]
        if matches:
            keys = ", ".join(s.key for s in matches)
            raise NotFound(f"{self.name}: step number {ref} is not unique; use a key: {keys}")
        raise NotFound(f"{self.name}: no step {ref!r}; steps are "
                       + ", ".join(f"{s.number} {s.key}" for s in self.steps))

    @property
    def first(self):
        return self.steps[0]

    @property
    def approval_step(self):
        return next(s for s in self.steps if s.approval)

    def default_next(self, step):
        """The step after `step` when no branch is chosen (None at the end)."""
        if step.next:
            return self.step(step.next)
        # By key (unique in an SOP): list.index would compare whole models field by field.
        index = [s.key for s in self.steps].index(step.key)
        return self.steps[index + 1] if index + 1 < len(self.steps) else None

    def successors(self, step):
        if step.branches:
            return [self.step(b.next) for b in step.branches.values()]
        following = self.default_next(step)
        return [following] if following else []

    def actions(self):
        """Every action name the SOP binds, on steps, after steps and on branches."""
        names = {s.action for s in self.steps if s.action} | {s.after for s in self.steps if s.after}
        for step in self.steps:
            names |= {b.action for b in (step.branches or {}).values() if b.action}
        return names


def _semantic_problems(sop, doc, known_actions):
    problems = []

    def fail(path, rule):
        problems.append(Problem(yamlsrc.field_name(path), rule, doc.line_of(path)))

    for key in sop.roles:
        if not KEY.fullmatch(key) or key == SYSTEM:
            fail(("roles", key), f"role keys are lowercase names other than '{SYSTEM}'")
    keys = [s.key for s in sop.steps]
    approvals = [i for i, s in enumerate(sop.steps) if s.approval]
    if len(approvals) != 1:
        fail(("steps",), f"exactly one step must have approval: true (found {len(approvals)})")
    for i, step in enumerate(sop.steps):
        here = ("steps", i)
        if keys.count(step.key) > 1:
            fail(here + ("key",), f"duplicate step key {step.key!r}")
        if step.actor not in sop.roles:
            fail(here + ("actor",), f"{step.actor!r} is not a role of this SOP ({', '.join(sop.roles)})")
        if step.next and step.next not in keys:
            fail(here + ("next",), f"no step with key {step.next!r}")
        if step.branches is not None:
            if step.next:
                fail(here + ("next",), "a step with branches takes its next step from the branches")
            if len(step.branches) < 2:
                fail(here + ("branches",), "a decision needs at least two branches")
            for name, branch in step.branches.items():
                if not KEY.fullmatch(name):
                    fail(here + ("branches", name), "branch names are lowercase keys")
                if branch.next not in keys:
                    fail(here + ("branches", name, "next"), f"no step with key {branch.next!r}")
                if branch.action and known_actions is not None and branch.action not in known_actions:
                    fail(here + ("branches", name, "action"), f"unknown action {branch.action!r}")
        if step.approval:
            if set(step.branches or {}) != {APPROVE, REJECT}:
                fail(here + ("branches",), f"the approval step needs exactly the branches "
                                           f"'{APPROVE}' and '{REJECT}'")
            if step.action:
                fail(here + ("action",), "the approval step is a human decision; it cannot have an action")
        if step.automated and step.branches:
            fail(here + ("action",), "an automated step cannot also be a decision")
        _check_extras(step, here, fail, known_actions)
        if step.action and known_actions is not None and step.action not in known_actions:
            fail(here + ("action",), f"unknown action {step.action!r} "
                                     f"(known: {', '.join(sorted(known_actions))})")
    _check_report_numbers(sop, fail)
    if problems:
        return problems
    # Every step must be reachable from the first, and the flow must not loop.
    seen = set()

    def visit(step, trail):
        if step.key in trail:
            fail(("steps", keys.index(step.key)), f"the flow loops back to {step.key!r}")
            return
        if step.key in seen:
            return
        seen.add(step.key)
        for nxt in sop.successors(step):
            visit(nxt, trail | {step.key})

    visit(sop.first, frozenset())
    for i, step in enumerate(sop.steps):
        if step.key not in seen:
            fail(("steps", i), f"step {step.key!r} cannot be reached from the first step")
    return problems


def _check_report_numbers(sop, fail):
    """Each reporting step's document takes its own letter number, stored under a kind made from
    the step key (provisioner.letters.kinds.number_kind): it must be one the table takes, and
    two steps must not share one (the second report would reuse the first one's number)."""
    from provisioner.letters.kinds import REPORT_PREFIX, known_kind, number_kind

    taken = {}
    for i, step in enumerate(sop.steps):
        if step.after != REPORT_ACTION:
            continue
        kind = number_kind(f"{REPORT_PREFIX}{step.key}")
        if not known_kind(kind):
            fail(("steps", i, "key"), f"a reporting step's key must be lowercase letters, digits and _ "
                                      f"(its letter number kind {kind!r} is not one the numbering takes)")
        elif kind in taken:
            fail(("steps", i, "key"), f"its report's letter number kind {kind!r} is the same as step "
                                      f"{taken[kind]!r}'s; rename one of them")
        taken.setdefault(kind, step.key)


def _check_extras(step, here, fail, known_actions):
    """The rules of `after`, `data`, `data_required` and `answered_by`."""
    from provisioner.sop.stepdata import KINDS

    person = not (step.approval or step.automated)
    if step.after is not None:
        if not person:
            fail(here + ("after",), "only a step a person records (not the decision, not an automated "
                                    "step) runs an action after it")
        elif any(b.action for b in (step.branches or {}).values()):
            fail(here + ("after",), "a step whose branches run actions cannot also run one after it")
        if known_actions is not None and step.after not in known_actions:
            fail(here + ("after",), f"unknown action {step.after!r} (known: {', '.join(sorted(known_actions))})")
    if step.data is not None:
        if not person:
            fail(here + ("data",), "only a step a person records takes a data file")
        if step.data not in KINDS:
            fail(here + ("data",), f"unknown data kind {step.data!r} (known: {', '.join(sorted(KINDS))})")
    if step.data_required and step.data is None:
        fail(here + ("data_required",), "only with data: KIND")
    if step.answered_by is not None:
        if step.answered_by not in ANSWERS:
            fail(here + ("answered_by",), f"unknown answer {step.answered_by!r} "
                                          f"(known: {', '.join(sorted(ANSWERS))})")
        elif step.approval or set(step.branches or {}) != set(ANSWERS[step.answered_by]):
            fail(here + ("answered_by",), f"{step.answered_by} answers a decision step (not the approval) "
                                          f"whose branches are {' and '.join(ANSWERS[step.answered_by])}")


def parse_sop(text, source, name=None, known_actions=None):
    """Parse and check one SOP document; raise ValidationError listing every problem."""
    doc = yamlsrc.load(text)
    if doc.problems:
        raise ValidationError(doc.problems, source)
    if not isinstance(doc.data, dict):
        raise ValidationError([Problem("(document)", "an SOP file must be a mapping", 1)], source)
    try:
        sop = Sop(path=source, **doc.data)
    except PydanticError as err:
        problems = [Problem(yamlsrc.field_name(e["loc"]), e["msg"], doc.line_of(e["loc"]))
                    for e in err.errors()]
        raise ValidationError(problems, source) from None
    except TypeError as err:
        raise ValidationError([Problem("(document)", str(err), 1)], source) from None
    problems = _semantic_problems(sop, doc, known_actions)
    if name is not None and sop.name != name:
        problems.insert(0, Problem("name", f"must be {name!r}, the file's name", doc.line_of(("name",))))
    if problems:
        raise ValidationError(problems, source)
    return sop


def load_sop(sop_dir, name, known_actions=None):
    if not KEY.fullmatch(name.replace("-", "_")):
        raise NotFound(f"no SOP named {name!r}")
    path = Path(sop_dir) / f"{name}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no SOP named {name!r} in {sop_dir} (have: {', '.join(sop_names(sop_dir))})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValidationError([Problem("(file)", f"cannot read: {err}")], str(path)) from None
    known = frozenset(known_actions) if known_actions is not None else None
    return _parsed(text, str(path), name, known)


@lru_cache(maxsize=64)
def _parsed(text, source, name, known_actions):
    """parse_sop, once per file content: the engine reads the SOP at every step, and parsing
    dominates that cost. Keyed by the text itself, so an edited file is parsed anew; an SOP is
    frozen, so sharing one is safe; a refused file raises each time (exceptions are not cached)."""
    return parse_sop(text, source, name=name, known_actions=known_actions)


def cite(title, number=None, office_name=None):
    """The one citation text of an SOP, for letters and records alike.

    "SOP Layanan Hosting Nomor 067/28/SOP/DKISP/2022, DKISP Kota Tarakan"; without a
    document number (not issued yet) the title and office alone.
    """
    text = f"SOP {title}" + (f" Nomor {number}" if number else "")
    return f"{text}, {office_name}" if office_name else text


def office_sop(config, office_key, service, known_actions=None):
    """The SOP an office runs for a service, as `offices.<key>.sops` names it.

    An office runs only its own SOPs: one whose `office:` is another office's
    is a configuration error, so no request follows (or cites) another
    office's document.
    """
    from provisioner.errors import ConfigError

    office = config.office(office_key)
    name = office.sops.get(service)
    if name is None:
        raise ConfigError(f"office {office_key} runs no SOP for service {service!r} "
                          f"(offices.{office_key}.sops in {config.source}: {', '.join(office.sops) or 'none'})")
    sop = load_sop(config.sop_dir, name, known_actions=known_actions)
    if sop.office != office_key:
        raise ConfigError(f"offices.{office_key}.sops.{service} in {config.source}: SOP {name} is "
                          f"office {sop.office}'s; an office runs only its own SOPs")
    return sop


def sop_names(sop_dir):
    return sorted(p.stem for p in Path(sop_dir).glob("*.yaml"))


def load_all(sop_dir, known_actions=None):
    return [load_sop(sop_dir, name, known_actions) for name in sop_names(sop_dir)]
