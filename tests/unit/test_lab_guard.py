"""The guard refuses every lab address unless the lab bridge carries it."""

from ipaddress import IPv4Network

import pytest

from provisioner.errors import LabDown
from provisioner.lab import guard, network

UP = [IPv4Network("10.77.0.0/24"), IPv4Network("203.0.113.0/28"), IPv4Network("203.0.113.128/25")]


def test_refuses_when_the_bridge_is_absent(monkeypatch):
    monkeypatch.setattr(network, "bridge_networks", lambda: [])
    for address in ("10.77.0.11", "203.0.113.10", "203.0.113.150"):
        with pytest.raises(LabDown, match="lab is down"):
            guard.require_lab_route(address)


def test_allows_only_networks_the_bridge_carries(monkeypatch):
    monkeypatch.setattr(network, "bridge_networks", lambda: [IPv4Network("10.77.0.0/24")])
    assert str(guard.require_lab_route("10.77.0.21")) == "10.77.0.21"
    with pytest.raises(LabDown):
        guard.require_lab_route("203.0.113.10")


def test_the_lab_uses_only_part_of_the_documentation_range(monkeypatch):
    monkeypatch.setattr(network, "bridge_networks", lambda: UP)
    assert guard.require_lab_route("203.0.113.10") and guard.require_lab_route("203.0.113.200")
    # The rest of 203.0.113.0/24 is not the lab's: never a target here.
    for address in ("203.0.113.80", "203.0.113.16", "203.0.113.127"):
        assert not guard.is_lab_address(address)
        with pytest.raises(LabDown, match="not a lab address"):
            guard.require_lab_route(address)


def test_refuses_addresses_outside_the_lab_even_when_up(monkeypatch):
    monkeypatch.setattr(network, "bridge_networks", lambda: UP)
    for address in ("192.0.2.1", "10.77.1.1", "8.8.8.8", "127.0.0.1"):
        with pytest.raises(LabDown, match="not a lab address"):
            guard.require_lab_route(address)


ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
{bridge}\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
{bridge}\t007100CB\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0
{bridge}\t807100CB\t00000000\t0001\t0\t0\t0\t80FFFFFF\t0\t0\t0
{bridge}\t00004E0A\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0
{bridge}\t00000000\t014D4D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0
"""


def test_the_bridge_networks_are_the_kernels_routes_into_the_bridge(tmp_path, monkeypatch):
    from provisioner.lab import topology

    table = tmp_path / "route"
    table.write_text(ROUTES.format(bridge=topology.BRIDGE))
    monkeypatch.setattr(network, "ROUTES", table)
    monkeypatch.setattr(network, "run", lambda *a, **kw: pytest.fail("no `ip` where the table can be read"))
    # eth0's routes, a route that is not up (10.78.0.0/24) and a default route through the bridge are not lab networks.
    assert network.bridge_networks() == UP


def test_no_route_into_the_bridge_means_the_lab_is_down(tmp_path, monkeypatch):
    table = tmp_path / "route"
    table.write_text(ROUTES.format(bridge="otherbr0"))
    monkeypatch.setattr(network, "ROUTES", table)
    assert network.bridge_networks() == []
    with pytest.raises(LabDown, match="lab is down"):
        guard.require_lab_route("10.77.0.11")
