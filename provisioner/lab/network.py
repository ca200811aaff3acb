"""The lab's network: one bridge on the controller, one namespace per host.

The bridge carries the lab network and the public pool, so a lab address is
routed into the lab only while the bridge exists. `guard` checks exactly that
before anything talks to a lab address.
"""

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from provisioner.lab import topology
from provisioner.lab.system import ok, run

NETNS_DIR = Path("/run/netns")


def netns_exists(name: str) -> bool:
    return ok("ip", "netns", "exec", name, "true")


def link_exists(name: str, netns: str | None = None) -> bool:
    prefix = ("ip", "-n", netns) if netns else ("ip",)
    return ok(*prefix, "link", "show", "dev", name)


def bridge_addresses() -> list[IPv4Interface]:
    """The IPv4 addresses on the lab bridge, or [] when it is absent or down."""
    proc = run("ip", "-j", "addr", "show", "dev", topology.BRIDGE, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    info = json.loads(proc.stdout)[0]
    if "UP" not in info.get("flags", []):
        return []
    return [
        IPv4Interface(f"{a['local']}/{a['prefixlen']}")
        for a in info.get("addr_info", [])
        if a.get("family") == "inet"
    ]


ROUTES = Path("/proc/net/route")
RTF_UP = 0x1


def bridge_networks() -> list[IPv4Network]:
    """Every network the kernel routes into the lab bridge (its own addresses' and those
    routed into it), from /proc/net/route: the lab guard asks before every packet to a lab
    address, and starting `ip` twice for each (6 ms) made a thousand-site audit wait on it."""
    try:
        table = ROUTES.read_text().splitlines()[1:]
    except OSError:
        return _bridge_networks_from_ip()
    networks = []
    for line in table:
        fields = line.split()
        if len(fields) < 8 or fields[0] != topology.BRIDGE or not int(fields[3], 16) & RTF_UP:
            continue
        # Addresses and masks are the kernel's 32-bit words, written in host (little-endian) order.
        destination, mask = (IPv4Address(int.from_bytes(bytes.fromhex(f), "little")) for f in (fields[1], fields[7]))
        if int(mask):  # a default route through the bridge carries no lab network of its own
            networks.append(IPv4Network(f"{destination}/{mask}", strict=False))
    return sorted(set(networks))


def _bridge_networks_from_ip() -> list[IPv4Network]:
    """bridge_networks where /proc/net/route cannot be read: the addresses' networks and the
    routes `ip` lists on the bridge."""
    networks = [a.network for a in bridge_addresses()]
    if not networks:
        return []
    proc = run("ip", "-j", "-4", "route", "show", "dev", topology.BRIDGE, check=False)
    for route in json.loads(proc.stdout or "[]") if proc.returncode == 0 else []:
        dst = route.get("dst", "")
        if dst and dst != "default":
            networks.append(IPv4Network(dst if "/" in dst else f"{dst}/32"))
    return sorted(set(networks))


def ensure_bridge() -> None:
    if not link_exists(topology.BRIDGE):
        run("ip", "link", "add", topology.BRIDGE, "type", "bridge")
    have = set(bridge_addresses()) if link_exists(topology.BRIDGE) else set()
    for address in (topology.CONTROLLER_ADDRESS, topology.CONTROLLER_PUBLIC_ADDRESS):
        if address not in have:
            run("ip", "addr", "replace", str(address), "dev", topology.BRIDGE)
    run("ip", "link", "set", topology.BRIDGE, "up")
    run("ip", "route", "replace", str(topology.DEDICATED_POOL), "dev", topology.BRIDGE)


def ensure_host_network(host: topology.LabHost) -> None:
    """Namespace, veth pair into the bridge, and the host's addresses."""
    if not netns_exists(host.netns):
        run("ip", "netns", "add", host.netns)
    if not link_exists(host.veth):
        # A half-made pair from an interrupted run is replaced whole.
        run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    run("ip", "link", "set", host.veth, "master", topology.BRIDGE, "up")
    ns = ("ip", "-n", host.netns)
    run(*ns, "link", "set", "lo", "up")
    run(*ns, "addr", "replace", f"{host.address}/{topology.LAB_NETWORK.prefixlen}", "dev", "eth0")
    for public in host.public_addresses:
        run(*ns, "addr", "replace", str(public), "dev", "eth0")
    run(*ns, "link", "set", "eth0", "up")
    # No default route: a lab host reaches the lab and nothing else. A host that
    # must reach the web servers' public addresses gets them on-link: they sit
    # on the same bridge, so nothing is forwarded through the controller.
    if host.reaches_public:
        for public_net in topology.LAB_PUBLIC_NETWORKS:
            run(*ns, "route", "replace", str(public_net), "dev", "eth0")


def drop_runtime_addresses(host: topology.LabHost) -> list[IPv4Interface]:
    """Remove from the host's eth0 every IPv4 address the lab's topology does not give it.

    What a reboot does to a server: the addresses of its network configuration
    come back, any address that only lived in the kernel is gone. The host's
    own and shared addresses stay. Returns the addresses removed.
    """
    configured = {IPv4Interface(f"{host.address}/{topology.LAB_NETWORK.prefixlen}"), *host.public_addresses}
    proc = run("ip", "-n", host.netns, "-j", "-4", "addr", "show", "dev", "eth0")
    present = [IPv4Interface(f"{a['local']}/{a['prefixlen']}")
               for link in json.loads(proc.stdout or "[]") for a in link.get("addr_info", [])
               if a.get("family") == "inet"]
    dropped = [a for a in present if a not in configured]
    for address in dropped:
        run("ip", "-n", host.netns, "addr", "del", str(address), "dev", "eth0")
    return dropped


def remove_host_network(host: topology.LabHost) -> None:
    if link_exists(host.veth):
        run("ip", "link", "del", host.veth, check=False)
    if (NETNS_DIR / host.netns).exists():
        run("ip", "netns", "del", host.netns, check=False)


def remove_bridge() -> None:
    if link_exists(topology.BRIDGE):
        run("ip", "link", "del", topology.BRIDGE, check=False)
