"""The lab's topology, its Ansible inventory and the Vagrantfile agree."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.lab import rootfs, topology

ROOT = Path(__file__).resolve().parents[2]


def _inventory_hosts():
    data = yaml.safe_load((ROOT / "inventory/lab/hosts.yml").read_text())
    for group, body in data["all"]["children"].items():
        for name, hostvars in body["hosts"].items():
            yield name, group, hostvars


def test_inventory_matches_topology():
    found = {name: (group, hv["ansible_host"], hv["lab_role"]) for name, group, hv in _inventory_hosts()}
    expected = {h.name: (h.group, str(h.address), h.role) for h in topology.HOSTS}
    assert found == expected


def test_inventory_zones_and_public_address_match_topology():
    zones = yaml.safe_load((ROOT / "inventory/lab/group_vars/nameservers.yml").read_text())["dns_zones"]
    assert tuple(zones) == topology.ZONES
    web = {name: hv for name, group, hv in _inventory_hosts() if group == "web"}
    for name, hv in web.items():
        public = topology.host(name).public_addresses[0]
        assert hv["public_ip"] == str(public.ip)
        assert hv["public_prefix"] == public.network.prefixlen


def test_every_lab_address_is_in_the_lab_network():
    for h in topology.HOSTS:
        assert h.address in topology.LAB_NETWORK
        for public in h.public_addresses:
            assert public.ip in topology.PUBLIC_NETWORK
    addresses = [h.address for h in topology.HOSTS]
    assert len(set(addresses)) == len(addresses)
    assert topology.CONTROLLER_ADDRESS.ip not in addresses


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is installed by `make install`")
def test_vagrantfile_validates_and_defines_the_same_hosts(tmp_path):
    # A machine without VirtualBox or libvirt has no usable provider; validating
    # the Vagrantfile itself must not need one (`vagrant status` would).
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot")}
    validate = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True,
                              text=True, env=env)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "Vagrantfile validated successfully" in validate.stdout
    # Each machine says it is validated: "==> web1: Ignoring provider config for validation..."
    machines = set(re.findall(r"^==> ([a-z0-9]+): Ignoring provider config", validate.stdout, re.M))
    assert machines == {h.name for h in topology.HOSTS}


def test_package_list_is_shared_and_complete():
    packages = rootfs.packages()
    for needed in ("openssh-server", "pdns-server", "pdns-backend-sqlite3", "apache2", "php-fpm", "mariadb-server", "tini"):
        assert needed in packages
    assert "provisioner/lab/packages.txt" in (ROOT / "Vagrantfile").read_text()


def test_cache_key_changes_with_the_package_list(monkeypatch):
    before = rootfs.cache_key()
    monkeypatch.setattr(rootfs, "packages", lambda: ("apache2",))
    assert rootfs.cache_key() != before


def test_mirror_is_taken_from_deb822_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert rootfs.mirror(tmp_path) == "http://mirror.invalid/debian"


def test_mirror_is_taken_from_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://mirror.invalid/other stable main\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main contrib\n"
    )
    assert rootfs.mirror(tmp_path) == "http://mirror.invalid/debian"


def test_no_mirror_when_apt_names_none(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert rootfs.mirror(tmp_path) is None


def test_lab_up_refuses_to_shadow_the_package_mirror(monkeypatch):
    import socket

    from provisioner.errors import LabError
    from provisioner.lab import lifecycle

    monkeypatch.setattr(rootfs, "mirror", lambda: "http://mirror.invalid/debian")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(0, 0, 0, "", ("203.0.113.140", 0))])
    with pytest.raises(LabError, match="inside the lab's networks"):
        lifecycle._check_mirror_outside_lab()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(0, 0, 0, "", ("203.0.113.80", 0))])
    lifecycle._check_mirror_outside_lab()
