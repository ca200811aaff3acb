"""The benchmark's arithmetic and report: medians, ratios, scaled estimates, targets, profile.

Pure: no lab and no clock. benchmarks/run.py measures and hands the numbers here;
tests/unit/test_benchmarks.py checks them.
"""

import statistics
from dataclasses import dataclass, field
from datetime import datetime


def median(values) -> float:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("a median needs at least one run")
    return statistics.median(values)


def ratio(slow: float, fast: float) -> float:
    """How many times faster `fast` is than `slow` (both in seconds)."""
    if fast <= 0:
        raise ValueError(f"the faster time must be above zero, not {fast}")
    return slow / fast


@dataclass(frozen=True)
class Scaled:
    """A total for `wanted` sites estimated from `measured` of them done one by one."""

    seconds: float
    measured: int
    wanted: int

    def text(self) -> str:
        if self.measured == self.wanted:
            return f"all {self.wanted} measured"
        return f"scaled from {self.measured} to {self.wanted}"


def scale(total_seconds: float, measured: int, wanted: int) -> Scaled:
    """The time of `wanted` one-by-one runs from the total of `measured` of them.

    One by one, each site costs the same (nothing is shared between the runs), so the
    total grows linearly with the count.
    """
    if measured < 1:
        raise ValueError("--serial-sample: at least 1 site must be measured one by one")
    if measured > wanted:
        raise ValueError(f"--serial-sample: {measured} is more than the batch ({wanted})")
    return Scaled(total_seconds * wanted / measured, measured, wanted)


@dataclass(frozen=True)
class Target:
    """A figure's target: a time it must stay under, or a ratio it must reach (at_least).

    `size`: the number of sites the target is stated for; a run with another number is
    not judged against it (a figure for 30 sites says nothing about 100).
    """

    limit: float
    at_least: bool = False
    size: int | None = None

    def text(self) -> str:
        bound = f">= {self.limit:g}x" if self.at_least else f"< {self.limit:g} s"
        return bound + (f" for {self.size:,}" if self.size else "")

    def judge(self, value: float, size: int | None = None) -> str:
        if self.size is not None and size != self.size:
            return "n/a"
        met = value >= self.limit if self.at_least else value < self.limit
        return "pass" if met else "miss"


# Issue 13's targets for the lab on the reference machine.
TARGETS = {
    "approval": Target(8),
    "batch": Target(60, size=100),
    "batch_ratio": Target(10, at_least=True, size=100),
    "audit": Target(10, size=1000),
    "rerun": Target(15, size=100),
    "cli_version": Target(0.3),
    "cli_help": Target(0.3),
    "cli_listing": Target(0.3),
}


@dataclass
class Figure:
    key: str
    title: str
    value: float
    detail: str = ""
    size: int | None = None  # sites the figure is for, to judge it against a sized target
    ratio: bool = False  # a ratio (x), not seconds

    @property
    def target(self) -> Target | None:
        return TARGETS.get(self.key)

    def verdict(self) -> str:
        return self.target.judge(self.value, self.size) if self.target else ""

    def value_text(self) -> str:
        return f"{self.value:.1f}x" if self.ratio else f"{self.value:.2f} s"

    def as_dict(self) -> dict:
        target = self.target
        return {"key": self.key, "title": self.title, "value": round(self.value, 3),
                "unit": "x" if self.ratio else "s", "detail": self.detail, "sites": self.size,
                "target": target.text() if target else None, "result": self.verdict() or None}


def table(rows: list[list[str]], header: list[str]) -> str:
    """Plain text columns (the output goes to logs and to docs/benchmarks.md as it is)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)]) + "\n"


def render(figures: list[Figure]) -> str:
    return table([[f.title, f.value_text(), f.detail, f.target.text() if f.target else "", f.verdict()]
                  for f in figures], ["figure", "value", "how", "target", "result"])


# -- where the time goes --------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    start: datetime
    end: datetime
    sites: int

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds())

    def per_site(self) -> float:
        return self.seconds / self.sites if self.sites else 0.0


@dataclass(frozen=True)
class Mark:
    """One stored event, as much of it as the profile needs."""

    kind: str
    at: datetime
    step: str | None = None
    fqdn: str | None = None


@dataclass
class Profile:
    phases: list[Phase] = field(default_factory=list)

    def render(self, total: float | None = None) -> str:
        rows = [[p.name, f"{p.seconds:.2f} s", str(p.sites), f"{p.per_site() * 1000:.0f} ms",
                 f"{p.start:%H:%M:%S.%f}"[:-3], f"{p.end:%H:%M:%S.%f}"[:-3]] for p in self.phases]
        text = table(rows, ["phase", "time", "sites", "per site", "from", "to"])
        if total is not None:
            text += f"(the whole batch command: {total:.2f} s)\n"
        return text

    def as_list(self) -> list[dict]:
        return [{"phase": p.name, "seconds": round(p.seconds, 3), "sites": p.sites,
                 "start": p.start.isoformat(), "end": p.end.isoformat()} for p in self.phases]


def profile(marks: list[Mark]) -> Profile:
    """The phases of a batch from its events: the saga's steps (first saga_intent to the last
    saga_done or saga_failed of the step), and around them the certificates (from the first
    apply_started to the last certificate_issued), verification and recording (from the end of
    the last step to the last site_provisioned) and the letters (from there to the last
    letter_issued). A phase with no events is left out."""
    marks = sorted(marks, key=lambda m: m.at)

    def of(*kinds, step=None):
        return [m for m in marks if m.kind in kinds and (step is None or m.step == step)]

    phases = []
    started = of("apply_started")
    issued = of("certificate_issued")
    if started and issued:
        phases.append(Phase("certificates", started[0].at, issued[-1].at, len({m.fqdn for m in issued})))
    steps = list(dict.fromkeys(m.step for m in of("saga_intent")))
    for step in steps:
        intents = of("saga_intent", step=step)
        ends = of("saga_done", "saga_failed", step=step)
        if ends:
            phases.append(Phase(f"step {step}", intents[0].at, ends[-1].at,
                                len({m.fqdn for m in of("saga_done", step=step)})))
    verified = of("site_provisioned", "site_verified")
    if verified:
        after = [p.end for p in phases] or [started[0].at if started else verified[0].at]
        phases.append(Phase("verify and record", max(after), verified[-1].at, len({m.fqdn for m in verified})))
    letters = of("letter_issued")
    if letters:
        begin = verified[-1].at if verified else letters[0].at
        phases.append(Phase("letters", min(begin, letters[0].at), letters[-1].at, len(letters)))
    return Profile(phases)
