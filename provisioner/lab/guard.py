"""The lab guard: no packet for a lab address leaves the machine.

Lab addresses (the lab network and the parts of 203.0.113.0/24 the lab uses)
are only reachable through the lab bridge. When the lab is down, the controller's
default route would carry them out of the machine, so every client that talks
to a lab address calls `require_lab_route` first.
"""

from ipaddress import IPv4Address, ip_address

from provisioner.errors import LabDown
from provisioner.lab import network, topology


def is_lab_address(address) -> bool:
    addr = ip_address(str(address))
    return addr in topology.LAB_NETWORK or any(addr in net for net in topology.LAB_PUBLIC_NETWORKS)


def require_lab_route(address) -> IPv4Address:
    """Return the address if the bridge carries its network; raise LabDown otherwise."""
    addr = ip_address(str(address))
    if not is_lab_address(addr):
        raise LabDown(f"{addr} is not a lab address; the toolkit talks only to the lab here")
    for carried in network.bridge_networks():
        if addr in carried:
            return addr
    raise LabDown(
        f"the lab is down: bridge {topology.BRIDGE} does not carry {addr} "
        "(run `provision lab up`)"
    )
