"""A Plan: every change for a set of sites, in apply order, with a checksum.

The checksum covers the changes exactly as printed (vhost content included,
secrets never), so `--checksum` can bind an apply to the plan someone read.
"""

import hashlib
import json
from dataclasses import dataclass, field

from provisioner.changes import TARGETS, Change


# Taking a site down goes the other way: its name first, its address last.
REMOVAL_ORDER = tuple(reversed(TARGETS))


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    order: tuple[str, ...] = TARGETS
    # What the plan leaves out or changes for a site, and why (e.g. a certificate the CA's
    # limit holds back): fqdn -> one line. Part of the checksum when present.
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        order = {t: i for i, t in enumerate(self.order)}
        self.changes.sort(key=lambda c: (order[c.target], c.site))

    @property
    def empty(self) -> bool:
        return not self.changes

    def for_target(self, target: str) -> list[Change]:
        return [c for c in self.changes if c.target == target]

    def for_site(self, fqdn: str) -> list[Change]:
        return [c for c in self.changes if c.site == fqdn]

    def targets_of(self, fqdn: str) -> list[str]:
        return [t for t in self.order if any(c.target == t for c in self.for_site(fqdn))]

    @property
    def checksum(self) -> str:
        reviewed = [c.as_dict() for c in self.changes] + ([{"notes": self.notes}] if self.notes else [])
        canonical = json.dumps(reviewed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def as_dict(self) -> dict:
        return {"sites": self.sites, "checksum": self.checksum, "changes": [c.as_dict() for c in self.changes],
                "notes": self.notes}

    def render(self, full: bool = True) -> str:
        notes = [f"{fqdn}: {note}" for fqdn, note in sorted(self.notes.items())]
        if self.empty:
            return "".join(n + "\n" for n in notes) + f"no changes for {', '.join(self.sites) or 'no site'}: the live state already matches\n" \
                   f"checksum {self.checksum}\n"
        out = []
        for fqdn in self.sites:
            site_changes = self.for_site(fqdn)
            if fqdn in self.notes:
                out.append(f"{fqdn}: {self.notes[fqdn]}")
            if not site_changes:
                if fqdn not in self.notes:
                    out.append(f"{fqdn}: no changes")
                continue
            out.append(f"{fqdn}:")
            for change in site_changes:
                out.append("  " + change.line())
                content = change.detail.get("content")
                if full and content:
                    out.extend("      | " + line for line in content.rstrip("\n").splitlines())
        counts = {a: sum(1 for c in self.changes if c.action == a) for a in ("Create", "Update", "Delete")}
        out.append(f"{counts['Create']} to create, {counts['Update']} to update, {counts['Delete']} to delete")
        out.append(f"checksum {self.checksum}")
        return "\n".join(out) + "\n"
