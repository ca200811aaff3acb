"""Where each site goes: its web host and, when it has a database, its database host.

A recorded site keeps the hosts it was placed on. A new site goes to the
least loaded host of each group. A host's load has two parts, each its share
of the group's total: its sites (recorded in any state but removed, plus
those placed earlier in the same batch, so a batch spreads instead of piling
onto the host that was emptiest when it started) and their bytes (the disk
of their homes on a web host, their databases on a db host, as the usage
report last measured them; a site never measured counts nothing). A host
with a third of the sites and half of the disk weighs 1/3 + 1/2. Ties go to
the host name, so a plan and the apply that follows it place alike. A site
that holds a dedicated address (ipam records it) stays on the web host the
address lives on: each web host has its own pool.
"""

from dataclasses import dataclass

from sqlalchemy import func, select

from provisioner import ipam
from provisioner.errors import Conflict
from provisioner.inventory import Host, Inventory
from provisioner.store.models import SiteRow


@dataclass
class Load:
    """What is on one host: its sites and their measured bytes."""

    sites: int = 0
    bytes: int = 0


class Placement:
    """The hosts of every site of one plan or apply; ask again and the answer is the same."""

    def __init__(self, store, inventory: Inventory):
        self.store = store
        self.inventory = inventory
        self._placed: dict[tuple[str, str], tuple[Host, Host | None]] = {}  # by (request, fqdn)
        self._loads: dict[str, dict[str, Load]] = {}

    def hosts(self, request) -> tuple[Host, Host | None]:
        """(web host, database host or None) of a request's site.

        Raises Conflict when the name is recorded for another request.
        """
        fqdn, key = request.site.fqdn, (request.id, request.site.fqdn)
        if key in self._placed:
            return self._placed[key]
        with self.store.session() as session:
            row = session.get(SiteRow, fqdn)
        if row is not None and row.state != "removed":
            if row.request_id != request.id:
                raise Conflict(f"{fqdn} already belongs to request {row.request_id}")
            placed = (self.inventory.host(row.web_host),
                      self.inventory.host(row.db_host) if row.db_host else None)
        else:
            web = self._held_address_host(fqdn) or self._least_loaded("web")
            db = self._least_loaded("db") if request.site.database else None
            placed = (web, db)
            self._count(placed)
        self._placed[key] = placed
        return placed

    def load(self, group: str) -> dict[str, Load]:
        """The load of each host of a group: recorded sites (not removed) and their measured
        bytes, plus the sites placed in this batch (nothing measured yet)."""
        if group not in self._loads:
            column = SiteRow.web_host if group == "web" else SiteRow.db_host
            measured = SiteRow.disk_bytes if group == "web" else SiteRow.db_bytes
            with self.store.session() as session:
                rows = session.execute(select(column, func.count(), func.coalesce(func.sum(measured), 0))
                                       .where(SiteRow.state != "removed").group_by(column)).all()
            found = {host: Load(sites, int(used)) for host, sites, used in rows}
            self._loads[group] = {h.name: found.get(h.name, Load()) for h in self.inventory.group(group)}
        return self._loads[group]

    def _least_loaded(self, group: str) -> Host:
        load = self.load(group)
        sites = sum(x.sites for x in load.values())
        used = sum(x.bytes for x in load.values())

        def weight(host: Host) -> tuple[float, str]:
            x = load[host.name]
            return ((x.sites / sites if sites else 0.0) + (x.bytes / used if used else 0.0), host.name)
        return min(self.inventory.group(group), key=weight)

    def _held_address_host(self, fqdn: str) -> Host | None:
        """The web host of the dedicated address the site still holds (a failed or waiting site's)."""
        held = ipam.allocated(self.store, fqdn)
        return self.inventory.host(held.web_host) if held is not None else None

    def _count(self, placed: tuple[Host, Host | None]) -> None:
        web, db = placed
        self.load("web").setdefault(web.name, Load()).sites += 1
        if db is not None:
            self.load("db").setdefault(db.name, Load()).sites += 1
