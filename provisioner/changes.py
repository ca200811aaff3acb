"""Intended work as small value objects: Create, Update, Delete of one thing on one target."""

from dataclasses import dataclass, field

TARGETS = ("ip", "db", "web", "dns")  # also the order a site is built in


@dataclass(frozen=True)
class Change:
    action: str  # Create | Update | Delete
    target: str  # ip | db | web | dns
    host: str  # where: a host name from the inventory, or the DNS zone
    site: str  # the fqdn it belongs to
    kind: str  # what sort of thing: "A record", "system user", "vhost", ...
    name: str  # which one
    detail: dict = field(default_factory=dict, compare=False)  # never a secret

    def as_dict(self) -> dict:
        return {
            "action": self.action, "target": self.target, "host": self.host, "site": self.site,
            "kind": self.kind, "name": self.name, "detail": self.detail,
        }

    def line(self) -> str:
        return f"{self.action:<6} {self.target:<3} {self.host:<20} {self.kind}: {self.name}"


def Create(target, host, site, kind, name, **detail) -> Change:  # noqa: N802 - reads as a verb in plans
    return Change("Create", target, host, site, kind, name, detail)


def Update(target, host, site, kind, name, **detail) -> Change:  # noqa: N802
    return Change("Update", target, host, site, kind, name, detail)


def Delete(target, host, site, kind, name, **detail) -> Change:  # noqa: N802
    return Change("Delete", target, host, site, kind, name, detail)
