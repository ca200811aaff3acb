"""Check an Ansible inventory for what the toolkit needs, and report every problem at once.

`provisioner.inventory` reads an inventory and fails on the first thing it
cannot use, often deep inside a run (a grant to a host name, a pool that
overlaps another web server's). This module reads the same files the same way
and lists every problem before anything runs, each with the file and line
where the variable is written (or where it is missing), the host or group,
the key and the rule.

Files named by the inventory (the PowerDNS API key, the SSH key) live on the
controller that runs `provision`. `offline=True` skips looking at them, for
checking an inventory anywhere else (a laptop, CI, this repository's example).
"""

import os
import re
import stat
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from urllib.parse import urlparse

from provisioner import yamlsrc
from provisioner.errors import ConfigError
from provisioner.inventory import GROUPS, load_inventory

# Why each group must have hosts: said in the problem, so the fix is obvious.
GROUP_PURPOSE = {
    "nameservers": "the PowerDNS servers that hold the zones",
    "web": "the Apache servers that sites are placed on",
    "db": "the MariaDB servers that sites' databases are placed on",
}
PDNS_ROLES = ("primary", "secondary")
# Secret files the controller reads: checked like the toolkit's own key file.
SECRET_FILES = ("pdns_api_key_file", "ansible_ssh_private_key_file")
# host_ns's rule for the PowerDNS API key (tasks/configure.yml), applied to the
# key as host prepare passes it: the file's text with surrounding blanks stripped.
API_KEY_MIN = 16
API_KEY_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")

# Every inventory variable the host prepare roles (playbooks/roles/host_*) read,
# and which hosts must have it (None: optional, checked when written). A test
# reads the roles and fails on a variable missing here, so each gets a rule and
# an inventory that passes the check never stops host prepare for a variable.
HOST_PREPARE_VARS = {
    "ansible_host": "every host",
    "pdns_role": "name servers",
    "dns_zones": "name servers",
    "pdns_api_url": "the primary (optional on a secondary)",
    "pdns_api_allow_from": "the primary, and a secondary with pdns_api_url",
    # The roles read the key as provisioner_secrets.pdns_api_key; the toolkit
    # reads it from pdns_api_key_file.
    "provisioner_secrets": "the primary",
    "pdns_ns_name": None,
    "pdns_public_address": None,
    "pdns_local_address": None,
    "mariadb_bind_address": None,
}
# The zone names host_ns accepts (its own assert, tasks/main.yml).
ZONE_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


@dataclass(frozen=True)
class Finding:
    """One problem (or warning): where, about what, which key, which rule."""

    file: str
    line: int | None
    subject: str  # a host name, or "group NAME"
    key: str
    rule: str

    def __str__(self):
        return f"{self.file}:{self.line or 0}: {self.subject}: {self.key}: {self.rule}"


@dataclass
class Report:
    path: str
    offline: bool
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    primary: str | None = None
    pools: dict[str, str] = field(default_factory=dict)  # web host -> "first-last (N)"

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        hosts = {name for members in self.groups.values() for name in members}
        groups = ", ".join(f"{g} {len(m)}" for g, m in self.groups.items())
        pools = ", ".join(f"{host} {pool}" for host, pool in self.pools.items()) or "none"
        files = "; key files not checked (--offline)" if self.offline else ""
        state = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        return (f"{self.path}: {state}: {len(hosts)} hosts in {len(self.groups)} groups ({groups}); "
                f"primary name server {self.primary or 'none'}; pools {pools}{files}")

    def as_dict(self) -> dict:
        return {"ok": self.ok, "path": self.path, "offline": self.offline,
                "problems": [asdict(p) for p in self.problems], "warnings": [asdict(w) for w in self.warnings],
                "groups": self.groups, "primary": self.primary, "pools": self.pools}


@dataclass
class _Host:
    """A host as the check sees it: groups, where it is written, where each variable comes from."""

    name: str
    file: str
    line: int
    groups: list[str] = field(default_factory=list)
    vars: dict = field(default_factory=dict)
    origin: dict = field(default_factory=dict)  # key -> (file, line, scope)


class _Checker:
    def __init__(self, path: Path, offline: bool):
        self.path = Path(path)
        self.hosts_file = self.path / "hosts.yml" if self.path.is_dir() else self.path
        self.base = self.hosts_file.parent
        self.report = Report(path=str(self.path), offline=offline)
        self.hosts: dict[str, _Host] = {}
        self.web_pools: list = []  # (host, first, last), from check_web
        self.web_shared: dict[str, str] = {}  # shared address -> web host
        self.scoped: set = set()  # problems on_scope already reported
        self.group_lines: dict[str, int] = {}
        self.children_line: int | None = None

    # -- reporting -------------------------------------------------------------

    def problem(self, file, line, subject, key, rule):
        self.report.problems.append(Finding(str(file), line, subject, key, rule))

    def warning(self, file, line, subject, key, rule):
        self.report.warnings.append(Finding(str(file), line, subject, key, rule))

    def on_host(self, host: _Host, key: str, rule: str):
        """A problem with a host's variable: at the line it is written, or at the host if it is missing."""
        file, line, _scope = host.origin.get(key, (host.file, host.line, host.name))
        self.problem(file, line, host.name, key, rule)

    def on_scope(self, host: _Host, key: str, rule: str):
        """Like on_host, but a variable set for a whole group is reported once, for the group."""
        file, line, scope = host.origin.get(key, (host.file, host.line, host.name))
        if (file, line, scope, key, rule) not in self.scoped:
            self.scoped.add((file, line, scope, key, rule))
            self.problem(file, line, scope, key, rule)

    # -- reading ---------------------------------------------------------------

    def read_yaml(self, file: Path) -> yamlsrc.Document | None:
        try:
            text = file.read_text()
        except OSError as err:
            self.problem(file, None, "(file)", "(document)", f"cannot be read: {err.strerror or err}")
            return None
        doc = yamlsrc.load(text)
        for p in doc.problems:
            self.problem(file, p.line, "(file)", p.field, p.rule)
        return None if doc.problems else doc

    def mapping(self, doc, path, file, subject, what) -> dict:
        """The mapping at `path`, or {} with a problem if something else is written there."""
        value = doc.data
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(file, doc.line_of(path), subject, yamlsrc.field_name(path),
                         f"must be a mapping of {what}, not {type(value).__name__}")
            return {}
        return value

    def group_vars(self, group: str) -> tuple[dict, Path | None, yamlsrc.Document | None]:
        folder = self.base / "group_vars"
        if (folder / group).is_dir():
            self.warning(folder / group, None, f"group {group}", "group_vars",
                         f"is a directory; the toolkit reads only group_vars/{group}.yml")
        for candidate in (folder / f"{group}.yml", folder / f"{group}.yaml"):
            if candidate.is_file():
                doc = self.read_yaml(candidate)
                if doc is None or doc.data is None:
                    return {}, candidate, doc
                if not isinstance(doc.data, dict):
                    self.problem(candidate, 1, f"group {group}", "(document)", "must be a mapping of variables")
                    return {}, candidate, doc
                return doc.data, candidate, doc
        return {}, None, None

    def load(self) -> bool:
        """Walk hosts.yml and group_vars/ the way load_inventory does, remembering where each variable is."""
        if not self.hosts_file.is_file():
            self.problem(self.hosts_file, None, "(file)", "(document)", "does not exist (an inventory is a "
                         "directory with hosts.yml and group_vars/, or a YAML hosts file)")
            return False
        doc = self.read_yaml(self.hosts_file)
        if doc is None:
            return False
        file = self.hosts_file
        if not isinstance(doc.data, dict) or not isinstance(doc.data.get("all"), dict):
            self.problem(file, 1, "(file)", "all", "missing: the inventory starts with `all:` and its `children:`")
            return False
        if (self.base / "host_vars").is_dir():
            self.warning(self.base / "host_vars", None, "(inventory)", "host_vars",
                         "is not read by the toolkit; write host variables in hosts.yml")
        if self.mapping(doc, ("all", "hosts"), file, "group all", "hosts"):
            self.warning(file, doc.line_of(("all", "hosts")), "group all", "all.hosts",
                         "hosts directly under all are in no group the toolkit reads")

        top_origin = {}
        for key in self.mapping(doc, ("all", "vars"), file, "group all", "variables"):
            top_origin[key] = (file, doc.line_of(("all", "vars", key)), "group all")
        all_vars, all_file, all_doc = self.group_vars("all")
        for key in all_vars:
            top_origin[key] = (all_file, all_doc.line_of((key,)), "group all")

        children = self.mapping(doc, ("all", "children"), file, "group all", "groups")
        self.children_line = doc.line_of(("all", "children"))
        for group in children:
            where = ("all", "children", group)
            self.group_lines[group] = doc.line_of(where)
            self.mapping(doc, where, file, f"group {group}", "hosts and vars")
            if self.mapping(doc, where + ("children",), file, f"group {group}", "groups"):
                self.problem(file, doc.line_of(where + ("children",)), f"group {group}", "children",
                             "nested groups are not read by the toolkit; list hosts under the group itself")
            origin = {key: (file, doc.line_of(where + ("vars", key)), f"group {group}")
                      for key in self.mapping(doc, where + ("vars",), file, f"group {group}", "variables")}
            extra, extra_file, extra_doc = self.group_vars(group)
            origin |= {key: (extra_file, extra_doc.line_of((key,)), f"group {group}") for key in extra}
            for name in self.mapping(doc, where + ("hosts",), file, f"group {group}", "hosts"):
                host = self.hosts.get(name)
                if host is None:
                    host = self.hosts[name] = _Host(name, str(file), doc.line_of(where + ("hosts", name)),
                                                    origin=dict(top_origin))
                host.groups.append(group)
                host.origin |= origin
                host_vars = self.mapping(doc, where + ("hosts", name), file, name, "variables")
                host.origin |= {key: (file, doc.line_of(where + ("hosts", name, key)), name) for key in host_vars}
        if self.report.problems:
            return False  # load_inventory would fail on (or misread) a malformed structure
        try:
            inventory = load_inventory(self.path)
        except ConfigError as err:
            self.problem(file, None, "(file)", "(document)", str(err))
            return False
        for name, loaded in inventory.hosts.items():
            self.hosts[name].vars = loaded.vars
        return True

    # -- rules -----------------------------------------------------------------

    def check(self) -> Report:
        if self.load():
            self.report.groups = {}
            for host in self.hosts.values():
                for group in host.groups:
                    self.report.groups.setdefault(group, []).append(host.name)
            self.check_groups()
            self.check_addresses()
            self.check_web()
            self.check_nameservers()
            self.check_db()
            self.check_secret_files()
        self.report.problems.sort(key=lambda f: (f.file, f.line or 0))
        return self.report

    def members(self, group: str) -> list[_Host]:
        return [h for h in self.hosts.values() if group in h.groups]

    def check_groups(self):
        for group in GROUPS:
            if not self.members(group):
                line = self.group_lines.get(group)
                rule = "has no hosts" if line else "is missing"
                self.problem(self.hosts_file, line or self.children_line, f"group {group}", "all.children",
                             f"group {group!r} {rule}: it lists {GROUP_PURPOSE[group]}")

    def check_addresses(self):
        seen: dict[str, str] = {}
        for host in self.hosts.values():
            value = host.vars.get("ansible_host")
            if value is None:
                self.on_host(host, "ansible_host", "missing: without it Ansible connects to the host name, and "
                             "database grants and the public IP role would be given the name, not the address")
                continue
            address = _address(value)
            if address is None:
                self.on_host(host, "ansible_host", f"{value!r} is not an IP address (database grants and the "
                             "public IP role match the host by its address)")
                continue
            if str(address) in seen:
                self.on_host(host, "ansible_host", f"{address} is also the address of {seen[str(address)]}")
            seen.setdefault(str(address), host.name)

    def check_web(self):
        web = self.members("web")
        shared: dict[str, str] = {}  # shared address -> web host
        pools = []  # (host, first, last)
        for host in web:
            network = self.shared_network(host)
            if network is not None:
                address = str(_address(host.vars["public_ip"]))
                if address in shared:
                    self.on_host(host, "public_ip", f"{address} is also the shared address of {shared[address]}")
                shared.setdefault(address, host.name)
            networks = ([network] if network is not None else []) + self.routed_networks(host)
            pool = self.pool(host)
            if pool is None:
                continue
            first, last = pool
            pools.append((host, first, last))
            self.report.pools[host.name] = f"{first}-{last} ({int(last) - int(first) + 1})"
            if networks and not any(first in n and last in n for n in networks):
                self.on_host(host, "public_ip_pool", f"{first}-{last} is outside the host's public network "
                             f"({', '.join(str(n) for n in networks)}); add the block routed to it to "
                             "public_routed_networks")
            if network is not None and network.prefixlen < network.max_prefixlen - 1:
                for edge, what in ((network.network_address, "network"), (network.broadcast_address, "broadcast")):
                    if first <= edge <= last:
                        self.on_host(host, "public_ip_pool", f"contains {edge}, the {what} address of {network}")
        for host, first, last in pools:
            for address, owner in shared.items():
                if first <= ip_address(address) <= last and ip_address(address).version == first.version:
                    whose = "this host" if owner == host.name else owner
                    self.on_host(host, "public_ip_pool", f"contains {address}, the shared address of {whose}")
            for other in self.hosts.values():
                managed = _address(other.vars.get("ansible_host"))
                if managed is not None and managed.version == first.version and first <= managed <= last:
                    self.on_host(host, "public_ip_pool", f"contains {managed}, the ansible_host of {other.name}")
        # Name servers' public addresses must stay clear of these.
        self.web_pools, self.web_shared = pools, shared
        for i, (host, first, last) in enumerate(pools):
            for other, o_first, o_last in pools[:i]:
                if first.version == o_first.version and first <= o_last and o_first <= last:
                    self.on_host(host, "public_ip_pool", f"{first}-{last} overlaps the pool of {other.name} "
                                 f"({o_first}-{o_last}); an address would be given on two servers")

    def shared_network(self, host: _Host):
        """The on-link public network of a web host (public_ip/public_prefix), or None after a problem."""
        value, prefix = host.vars.get("public_ip"), host.vars.get("public_prefix")
        if value is None:
            self.on_host(host, "public_ip", "missing: the web server's shared address, which sites without a "
                         "dedicated address and the DNS records point at")
            return None
        address = _address(value)
        if address is None:
            self.on_host(host, "public_ip", f"{value!r} is not an IP address")
            return None
        if prefix is None:
            self.on_host(host, "public_prefix", "missing: the prefix length of the public network "
                         f"{address} is on (24 for a /24)")
            return None
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 < prefix <= address.max_prefixlen:
            self.on_host(host, "public_prefix", f"{prefix!r} is not a prefix length (1-{address.max_prefixlen})")
            return None
        network = ip_network(f"{address}/{prefix}", strict=False)
        if network.prefixlen < network.max_prefixlen - 1 and address in (network.network_address,
                                                                         network.broadcast_address):
            self.on_host(host, "public_ip", f"{address} is not a host address of {network}")
        return network

    def routed_networks(self, host: _Host) -> list:
        """Blocks routed to the host besides its on-link network: pools may come from them too."""
        value = host.vars.get("public_routed_networks")
        if value is None:
            return []
        if not isinstance(value, list):
            self.on_host(host, "public_routed_networks", "must be a list of networks like 203.0.113.64/26")
            return []
        networks = []
        for item in value:
            try:
                networks.append(ip_network(str(item)))
            except ValueError:
                self.on_host(host, "public_routed_networks", f"{item!r} is not a network like 203.0.113.64/26 "
                             "(address bits past the prefix must be zero)")
        return networks

    def pool(self, host: _Host):
        """(first, last) of the dedicated-address pool, or None after a problem."""
        spec = host.vars.get("public_ip_pool")
        if spec is None or spec == "":
            self.on_host(host, "public_ip_pool", "missing: dedicated addresses are allocated from it "
                         "(write first-last, like 198.51.100.100-198.51.100.150)")
            return None
        parts = str(spec).split("-")
        ends = [_address(p.strip()) for p in parts]
        if len(parts) != 2 or None in ends:
            self.on_host(host, "public_ip_pool", f"{spec!r} is not first-last, like 198.51.100.100-198.51.100.150")
            return None
        first, last = ends
        if first.version != last.version:
            self.on_host(host, "public_ip_pool", f"{spec!r} mixes IPv4 and IPv6")
            return None
        if last < first:
            self.on_host(host, "public_ip_pool", f"{spec!r} is reversed (the first address is after the last)")
            return None
        return first, last

    def check_nameservers(self):
        servers = self.members("nameservers")
        for host in servers:
            role = host.vars.get("pdns_role")
            if role not in PDNS_ROLES:
                self.on_host(host, "pdns_role", f"{'missing' if role is None else repr(role) + ' is wrong'}: "
                             "must be primary or secondary")
            self.check_name_server(host)
        primaries = [h for h in servers if h.vars.get("pdns_role") == "primary"]
        if servers and not primaries:
            self.problem(self.hosts_file, self.group_lines.get("nameservers"), "group nameservers", "pdns_role",
                         "no name server has pdns_role: primary (the one whose API the toolkit writes records to)")
        for extra in primaries[1:]:
            self.on_host(extra, "pdns_role", f"primary again: {primaries[0].name} is already the primary, "
                         "and the toolkit writes to exactly one")
        if len(primaries) != 1:
            return
        primary = primaries[0]
        self.report.primary = primary.name
        if not primary.vars.get("pdns_api_url"):
            self.on_host(primary, "pdns_api_url", "missing on the primary: the URL of the PowerDNS HTTP API, "
                         "like http://192.0.2.11:8081/api/v1")
        else:
            self.check_api_url(primary)
        if not primary.vars.get("pdns_api_key_file"):
            self.on_host(primary, "pdns_api_key_file", "missing on the primary: the file on this machine that "
                         "holds the PowerDNS API key")
        self.check_api_allow_from(primary)
        # A secondary may serve the API too (the toolkit asks it for a transfer after each change).
        for secondary in servers:
            if secondary.vars.get("pdns_role") == "secondary" and secondary.vars.get("pdns_api_url") is not None:
                self.check_api_url(secondary)
                self.check_api_allow_from(secondary)

    def check_api_url(self, host: _Host):
        url = host.vars.get("pdns_api_url")
        rule = _api_url_problem(str(url))
        address = urlparse(str(url)).hostname
        if rule:
            self.on_host(host, "pdns_api_url", rule)
        elif _address(address) is None or _address(address).version != 4:
            self.on_host(host, "pdns_api_url", f"the host {address!r} is not an IPv4 address: host prepare "
                         "makes PowerDNS's API listen on it (webserver-address)")

    def check_name_server(self, host: _Host):
        """What host prepare (role host_ns) needs of every name server, beyond its role."""
        zones = host.vars.get("dns_zones")
        if zones is None:
            self.on_host(host, "dns_zones", "missing: the zones this name server serves (host prepare creates "
                         "them), like [example.go.id], usually in group_vars/nameservers.yml")
        elif not isinstance(zones, list) or not zones:
            self.on_scope(host, "dns_zones", "must be a non-empty list of zone names, like [example.go.id]")
        else:
            for zone in zones:
                if not isinstance(zone, str) or not ZONE_NAME.match(zone):
                    self.on_scope(host, "dns_zones", f"{zone!r} is not a zone name (lower case, like "
                                 "example.go.id, no trailing dot)")
        # AXFR and NOTIFY between the servers are allowed as ADDRESS/32, and
        # the glue of a name inside a zone is an A record.
        address = _address(host.vars.get("ansible_host"))
        if address is not None and address.version != 4:
            self.on_host(host, "ansible_host", f"{address} is not IPv4: host prepare lets the name servers "
                         "transfer zones and notify each other by IPv4 address")
        name = host.vars.get("pdns_ns_name")
        if name is not None and (not isinstance(name, str) or not ZONE_NAME.match(name)):
            self.on_host(host, "pdns_ns_name", f"{name!r} is not a full host name (lower case, like "
                         "ns1.example.go.id, no trailing dot)")
        self.check_public_address(host)
        local = host.vars.get("pdns_local_address")
        if local is not None:
            parts = [p.strip() for p in str(local).split(",")]
            if isinstance(local, (bool, int)) or not all(_address(p) for p in parts):
                self.on_host(host, "pdns_local_address", f"{local!r} is not an IP address (or a comma-separated "
                             "list of them) for PowerDNS to answer queries on")

    def check_public_address(self, host: _Host):
        """pdns_public_address: the glue A record of the server's name in a zone (default ansible_host)."""
        value = host.vars.get("pdns_public_address")
        if value is None:
            return
        address = _address(value)
        if address is None or address.version != 4:
            self.on_host(host, "pdns_public_address", f"{value!r} is not an IPv4 address (the glue of the "
                         "server's name is an A record)")
            return
        if str(address) in self.web_shared:
            self.on_host(host, "pdns_public_address", f"{address} is the shared address of "
                         f"{self.web_shared[str(address)]}")
        for web, first, last in self.web_pools:
            if first.version == 4 and first <= address <= last:
                self.on_host(host, "pdns_public_address", f"{address} is in the public_ip_pool of {web.name}: "
                             "it could be given to a site")
        for other in self.members("nameservers"):
            if other is host:
                break
            if _address(other.vars.get("pdns_public_address")) == address:
                self.on_host(host, "pdns_public_address", f"{address} is also the public address of {other.name}")

    def check_api_allow_from(self, server: _Host):
        """pdns_api_allow_from: who may use the API (webserver-allow-from), the controller among them."""
        value = server.vars.get("pdns_api_allow_from")
        if value is None:
            where = "the primary" if server.vars.get("pdns_role") == "primary" else "a secondary with pdns_api_url"
            self.on_host(server, "pdns_api_allow_from", f"missing on {where}: the networks that may use the "
                         "PowerDNS API, the controller's among them, like [192.0.2.5/32]")
            return
        if not isinstance(value, list) or not value:
            self.on_host(server, "pdns_api_allow_from", "must be a non-empty list of networks, like [192.0.2.5/32]")
            return
        for item in value:
            try:
                ip_network(str(item), strict=False)
            except ValueError:
                self.on_host(server, "pdns_api_allow_from", f"{item!r} is not a network or address, "
                             "like 192.0.2.0/24 or 192.0.2.5")

    def check_db(self):
        """Host prepare binds MariaDB to mariadb_bind_address, else ansible_host: an IPv4 address."""
        for host in self.members("db"):
            value = host.vars.get("mariadb_bind_address")
            if value is not None:
                address = _address(value)
                if address is None or address.version != 4:
                    self.on_host(host, "mariadb_bind_address", f"{value!r} is not an IPv4 address "
                                 "(or 0.0.0.0 for every address)")
                continue
            address = _address(host.vars.get("ansible_host"))
            if address is not None and address.version != 4:
                self.on_host(host, "ansible_host", f"{address} is not IPv4: host prepare binds MariaDB to it; "
                             "set mariadb_bind_address to an IPv4 address")

    def check_secret_files(self):
        """The key files the controller reads: the API key of the primary, every host's SSH key."""
        users = []
        primary = self.hosts.get(self.report.primary) if self.report.primary else None
        if primary is not None and primary.vars.get("pdns_api_key_file"):
            users.append((primary, "pdns_api_key_file"))
        users += [(h, "ansible_ssh_private_key_file") for h in self.hosts.values()
                  if h.vars.get("ansible_ssh_private_key_file")]
        checked = set()
        for host, key in users:
            file, line, scope = host.origin.get(key, (host.file, host.line, host.name))
            value = host.vars[key]
            if (key, str(value), scope) in checked:
                continue  # a key file set for a whole group is reported once, for the group
            checked.add((key, str(value), scope))
            rule = _secret_file_problem(value, self.report.offline)
            if rule is None and key == "pdns_api_key_file" and not self.report.offline:
                rule = _api_key_problem(Path(value))
            if rule:
                self.problem(file, line, scope, key, rule)


def _address(value):
    """An IP address from an inventory value, or None (an integer is not an address here)."""
    if value is None or isinstance(value, (bool, int)):
        return None
    try:
        return ip_address(str(value).strip())
    except ValueError:
        return None


def _api_url_problem(url: str) -> str | None:
    """Why a PowerDNS API URL cannot work, or None. The URL itself is not echoed (it may carry a password)."""
    shape = "must look like http(s)://HOST:8081/api/v1"
    try:
        parts = urlparse(url)
        parts.port  # reading it raises ValueError for a port that is not a number in range
    except ValueError:
        return f"{shape} (the port is not a number from 1 to 65535)"
    if parts.scheme not in ("http", "https"):
        return f"{shape} (the scheme is {parts.scheme or 'missing'!r})"
    if parts.username or parts.password:
        return f"{shape} (no user or password in the URL: the key is read from pdns_api_key_file)"
    if not parts.hostname:
        return f"{shape} (no host)"
    if parts.query or parts.fragment:
        return f"{shape} (no query or fragment)"
    if parts.path.rstrip("/") != "/api/v1":
        return f"{shape} (the path is {parts.path or '/'!r}, not /api/v1)"
    return None


def _secret_file_problem(value, offline: bool) -> str | None:
    """Why a key file named in the inventory will not do, or None. Never reads the secret itself."""
    if not isinstance(value, str):
        return f"{value!r} is not a file path"
    path = Path(value)
    if not path.is_absolute():
        return f"{value} is relative: it would depend on the directory provision runs in; give an absolute path"
    if offline:
        return None
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"{value} does not exist on this machine (use --offline to check an inventory away from the controller)"
    except OSError as err:
        return f"{value} cannot be examined: {err.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{value} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"{value} cannot be read by this user (uid {os.geteuid()})"
    if info.st_mode & 0o077:
        return f"{value} is open to others (mode {oct(info.st_mode & 0o777)}); chmod 600 it"
    if info.st_size == 0:
        return f"{value} is empty"
    return None


def _api_key_problem(path: Path) -> str | None:
    """Why host_ns would refuse the PowerDNS API key in `path`, or None.

    The key is read and stripped as host prepare reads it, then held to the
    role's rule; only its length and the kind of fault are ever said, never
    the key or any part of it.
    """
    try:
        key = path.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text"
    except OSError as err:
        return f"{path} cannot be read: {err.strerror}"
    if not key:
        return f"{path} is empty (blank lines only)"
    if API_KEY_FORBIDDEN.search(key):
        return f"{path} holds a key with blanks or control characters inside it; host prepare refuses it"
    if len(key) < API_KEY_MIN:
        return (f"{path} holds a key of {len(key)} characters (after stripping blank space); "
                f"host prepare requires at least {API_KEY_MIN}")
    return None


def check_inventory(path, offline: bool = False) -> Report:
    """Every problem of the inventory at `path` (a directory with hosts.yml, or the hosts file)."""
    return _Checker(Path(path), offline).check()
