"""The Ansible inventory, read for what the toolkit itself needs to know.

Ansible reads the same files for the plays; here they tell which hosts serve
which role (placement), their addresses, the public IP pool, the PowerDNS API
and how to reach a host over SSH for read-only probes and verification.
"""

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import yaml

from provisioner.errors import ConfigError

GROUPS = ("nameservers", "web", "db")


@dataclass(frozen=True)
class Host:
    name: str
    groups: tuple[str, ...]
    vars: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host", self.name))

    @property
    def ssh_user(self) -> str:
        return self.vars.get("ansible_user", "root")

    @property
    def ssh_key(self) -> str | None:
        return self.vars.get("ansible_ssh_private_key_file")

    @property
    def known_hosts(self) -> str | None:
        match = re.search(r"UserKnownHostsFile=(\S+)", self.vars.get("ansible_ssh_common_args", ""))
        return match.group(1) if match else None


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: dict[str, Host]

    def group(self, name: str) -> list[Host]:
        found = [h for h in self.hosts.values() if name in h.groups]
        if not found:
            raise ConfigError(f"inventory {self.path}: group {name!r} has no hosts")
        return sorted(found, key=lambda h: h.name)

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise ConfigError(f"inventory {self.path}: no host {name!r}") from None

    def primary_nameserver(self) -> Host:
        for h in self.group("nameservers"):
            if h.vars.get("pdns_role") == "primary":
                return h
        raise ConfigError(f"inventory {self.path}: no name server with pdns_role: primary")

    def pdns_api(self) -> tuple[str, Path]:
        ns = self.primary_nameserver()
        url, key_file = ns.vars.get("pdns_api_url"), ns.vars.get("pdns_api_key_file")
        if not url or not key_file:
            raise ConfigError(f"inventory {self.path}: {ns.name} needs pdns_api_url and pdns_api_key_file")
        return url, Path(key_file)

    def secondary_apis(self) -> list[tuple[Host, str]]:
        """(secondary, its pdns_api_url) for each secondary name server that serves the API: the
        toolkit asks those for a transfer right after a change (the key is the primary's)."""
        return [(h, h.vars["pdns_api_url"]) for h in self.hosts.values()
                if "nameservers" in h.groups and h.vars.get("pdns_role") == "secondary" and h.vars.get("pdns_api_url")]

    def public_pool(self, web: Host) -> list[IPv4Address]:
        """The dedicated-address pool of a web host, as written `first-last`."""
        spec = web.vars.get("public_ip_pool")
        if not spec:
            return []
        try:
            first, last = (ip_address(part.strip()) for part in str(spec).split("-"))
        except ValueError:
            raise ConfigError(f"inventory {self.path}: {web.name}: public_ip_pool {spec!r} is not first-last") from None
        if last < first:
            raise ConfigError(f"inventory {self.path}: {web.name}: public_ip_pool {spec!r} is reversed")
        return [first + i for i in range(int(last) - int(first) + 1)]


def _merge_group_vars(path: Path, group: str) -> dict:
    for candidate in (path / "group_vars" / f"{group}.yml", path / "group_vars" / f"{group}.yaml"):
        if candidate.is_file():
            return yaml.safe_load(candidate.read_text()) or {}
    return {}


def load_inventory(path: Path) -> Inventory:
    """Read a YAML inventory directory (hosts.yml + group_vars/)."""
    path = Path(path)
    hosts_file = path / "hosts.yml" if path.is_dir() else path
    base = hosts_file.parent
    try:
        data = yaml.safe_load(hosts_file.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read inventory {hosts_file}: {err}") from None
    everything = (data or {}).get("all", {})
    top_vars = dict(everything.get("vars") or {}) | _merge_group_vars(base, "all")
    collected: dict[str, tuple[list[str], dict]] = {}
    for group, body in (everything.get("children") or {}).items():
        group_vars = dict((body or {}).get("vars") or {}) | _merge_group_vars(base, group)
        for name, host_vars in ((body or {}).get("hosts") or {}).items():
            groups, merged = collected.setdefault(name, ([], dict(top_vars)))
            groups.append(group)
            merged.update(group_vars)
            merged.update(host_vars or {})
    hosts = {name: Host(name, tuple(groups), merged) for name, (groups, merged) in collected.items()}
    return Inventory(path=path, hosts=hosts)
