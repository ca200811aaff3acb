"""Public IP addresses for sites: the web server's shared one, or a dedicated one.

A dedicated address comes from the web host's pool in the inventory. The
allocation table's primary key is the address and fqdn is unique, so an
address is never given twice and a site keeps its address on a rerun.
Callers hold the pool lock (`ippool:<web host>`) while allocating.
"""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from provisioner.errors import ConfigError, StateError
from provisioner.inventory import Host, Inventory
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import IPAllocation


def pool_lock(web: Host) -> str:
    return f"ippool:{web.name}"


def shared_address(web: Host) -> str:
    address = web.vars.get("public_ip")
    if not address:
        raise ConfigError(f"inventory: web host {web.name} has no public_ip")
    return str(address)


def allocated(store, fqdn: str) -> IPAllocation | None:
    with store.session() as session:
        return session.scalars(select(IPAllocation).where(IPAllocation.fqdn == fqdn)).first()


def allocate(store, inventory: Inventory, web: Host, fqdn: str, request_id: str, source: str = "cli",
             in_use: set[str] = frozenset()) -> str:
    """The site's dedicated address: its existing one, or the first free in the pool.

    `in_use` are addresses already up on the web host: one the store does not
    know was put there by someone else, and is never handed out.
    """
    existing = allocated(store, fqdn)
    if existing:
        if existing.web_host != web.name:
            raise StateError(f"{fqdn} holds {existing.address} on {existing.web_host}, not on {web.name}")
        return existing.address
    pool = inventory.public_pool(web)
    for candidate in free_addresses(store, inventory, web, in_use):
        try:
            with store.session() as session:
                session.add(IPAllocation(address=candidate, pool=pool_lock(web), fqdn=fqdn,
                                         web_host=web.name, allocated_at=utcnow()))
                add_event(session, request_id, "ip_allocated", source=source, fqdn=fqdn,
                          address=candidate, web_host=web.name)
            return candidate
        except IntegrityError:
            continue  # taken meanwhile by someone not holding the lock: try the next
    raise StateError(f"the public IP pool of {web.name} is exhausted ({len(pool)} addresses)")


def free_addresses(store, inventory: Inventory, web: Host, in_use: set[str] = frozenset()) -> list[str]:
    """The addresses of the web host's own pool that nobody holds, in pool order.

    Held: allocated in the store (to any site), the host's shared address, and
    `in_use` (up on the host, put there by someone the store does not know).
    """
    pool = inventory.public_pool(web)
    if not pool:
        raise ConfigError(f"inventory: web host {web.name} has no public_ip_pool for dedicated addresses")
    with store.session() as session:
        taken = set(session.scalars(select(IPAllocation.address)))
    taken.add(shared_address(web))
    taken |= set(in_use)
    return [str(candidate) for candidate in pool if str(candidate) not in taken]


def next_free(store, inventory: Inventory, web: Host, in_use: set[str] = frozenset()) -> str:
    """The address a dedicated site would get now (for a plan; nothing is reserved)."""
    free = free_addresses(store, inventory, web, in_use)
    if not free:
        raise StateError(f"the public IP pool of {web.name} is exhausted "
                         f"({len(inventory.public_pool(web))} addresses)")
    return free[0]


def release(store, fqdn: str, request_id: str, source: str = "cli") -> str | None:
    """Give a site's dedicated address back to the pool; returns it (or None)."""
    with store.session() as session:
        row = session.scalars(select(IPAllocation).where(IPAllocation.fqdn == fqdn)).first()
        if row is None:
            return None
        session.delete(row)
        add_event(session, request_id, "ip_released", source=source, fqdn=fqdn, address=row.address)
        return row.address
