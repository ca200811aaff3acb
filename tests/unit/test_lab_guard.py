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
