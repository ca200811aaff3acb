"""`lab down` leaves nothing behind and `lab up` works again after it.

Named to run last among the lab tests: it takes the lab down and up again.
"""

import subprocess
from pathlib import Path

import pytest

from provisioner.errors import LabDown
from provisioner.lab import guard, lifecycle, topology


def _leftovers() -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(topology.NETNS_PREFIX)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {topology.BRIDGE}" for line in links.splitlines() if f" {topology.BRIDGE}:" in line]
    found += [f"link {line.split()[1]}" for line in links.splitlines() if line.split()[1].startswith(topology.VETH_PREFIX)]
    mounts = Path("/proc/self/mounts").read_text()
    found += [f"mount {line.split()[1]}" for line in mounts.splitlines() if str(topology.STATE_DIR) in line]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(topology.HOSTS_DIR) in cmdline or "provlab-" in cmdline:
            found.append(f"process {proc.name}: {cmdline[:60]}")
    if topology.STATE_DIR.exists():
        found.append(f"dir {topology.STATE_DIR}")
    return found


def test_down_leaves_nothing_and_up_works_again():
    lifecycle.down(log=lambda *_: None)
    try:
        assert _leftovers() == []
        with pytest.raises(LabDown):
            guard.require_lab_route("203.0.113.10")
        status = lifecycle.status()
        assert not status.up and not status.any_left
    finally:
        status = lifecycle.up(log=lambda *_: None)
    assert status.up, status.as_dict()
    assert guard.require_lab_route("203.0.113.10")
