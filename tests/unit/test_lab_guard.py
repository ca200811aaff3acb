"""The guard refuses every lab address unless the lab bridge carries it."""

from ipaddress import IPv4Interface

import pytest

from provisioner.errors import LabDown
from provisioner.lab import guard, network


def test_refuses_when_the_bridge_is_absent(monkeypatch):
    monkeypatch.setattr(network, "bridge_addresses", lambda: [])
    for address in ("10.77.0.11", "203.0.113.10", "203.0.113.150"):
        with pytest.raises(LabDown, match="lab is down"):
            guard.require_lab_route(address)


def test_allows_only_networks_the_bridge_carries(monkeypatch):
    monkeypatch.setattr(network, "bridge_addresses", lambda: [IPv4Interface("10.77.0.1/24")])
    assert str(guard.require_lab_route("10.77.0.21")) == "10.77.0.21"
    with pytest.raises(LabDown):
        guard.require_lab_route("203.0.113.10")


def test_refuses_addresses_outside_the_lab_even_when_up(monkeypatch):
    monkeypatch.setattr(
        network, "bridge_addresses", lambda: [IPv4Interface("10.77.0.1/24"), IPv4Interface("203.0.113.1/24")]
    )
    for address in ("192.0.2.1", "10.77.1.1", "8.8.8.8", "127.0.0.1"):
        with pytest.raises(LabDown, match="not a lab address"):
            guard.require_lab_route(address)
