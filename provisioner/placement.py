"""Where each site goes: its web host and, when it has a database, its database host.

A recorded site keeps the hosts it was placed on. A new site goes to the
least loaded host of each group, where the load counts the sites recorded
there (any state but removed) plus those placed earlier in the same batch,
so a batch spreads instead of piling onto the host that was emptiest when it
started. Ties go to the host name, so a plan and the apply that follows it
place alike. A site that holds a dedicated address (ipam records it) stays on
the web host the address lives on: each web host has its own pool.

Disk is not part of the load: the store records no per-site disk use (the
usage report measures it but keeps only its files and a summary event), so
the number of sites is the load. Were it recorded, it would come second in
the key of `_least_loaded`, after the count.
"""

from sqlalchemy import func, select

from provisioner import ipam
from provisioner.errors import Conflict
from provisioner.inventory import Host, Inventory
from provisioner.store.models import SiteRow


class Placement:
    """The hosts of every site of one plan or apply; ask again and the answer is the same."""

    def __init__(self, store, inventory: Inventory):
        self.store = store
        self.inventory = inventory
        self._placed: dict[tuple[str, str], tuple[Host, Host | None]] = {}  # by (request, fqdn)
        self._loads: dict[str, dict[str, int]] = {}

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

    def load(self, group: str) -> dict[str, int]:
        """Sites on each host of a group: recorded (not removed) plus placed in this batch."""
        if group not in self._loads:
            column = SiteRow.web_host if group == "web" else SiteRow.db_host
            with self.store.session() as session:
                counts = dict(session.execute(select(column, func.count()).where(SiteRow.state != "removed")
                                              .group_by(column)).all())
            self._loads[group] = {h.name: counts.get(h.name, 0) for h in self.inventory.group(group)}
        return self._loads[group]

    def _least_loaded(self, group: str) -> Host:
        load = self.load(group)
        return min(self.inventory.group(group), key=lambda h: (load[h.name], h.name))

    def _held_address_host(self, fqdn: str) -> Host | None:
        """The web host of the dedicated address the site still holds (a failed or waiting site's)."""
        held = ipam.allocated(self.store, fqdn)
        return self.inventory.host(held.web_host) if held is not None else None

    def _count(self, placed: tuple[Host, Host | None]) -> None:
        web, db = placed
        self.load("web")[web.name] = self.load("web").get(web.name, 0) + 1
        if db is not None:
            self.load("db")[db.name] = self.load("db").get(db.name, 0) + 1
