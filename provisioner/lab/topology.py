"""The lab's shape: its hosts, addresses and the paths it keeps on this machine.

One place for every name and address, so the builder, the inventory check and
the network guard agree. The Vagrantfile repeats the same names and addresses
(checked by a test).
"""

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

# The lab's private network, carried by one bridge on the controller.
LAB_NETWORK = IPv4Network("10.77.0.0/24")
CONTROLLER_ADDRESS = IPv4Interface("10.77.0.1/24")

# The documentation range 203.0.113.0/24 holds the lab's "public" addresses.
# The bridge carries only the parts the lab uses, so the rest of the range
# keeps reaching whatever this machine's network puts there (here, the package
# proxy answers at an address in it):
#   203.0.113.0/28    on the bridge: the controller (.1) and the web servers'
#                     shared addresses (web1: .10, web2: .11);
#   203.0.113.128/25  routed into the bridge: the dedicated addresses, one pool
#                     per web server (web1: .128-.191, web2: .192-.254; the
#                     inventory's public_ip_pool; LabHost.dedicated_pool).
PUBLIC_NETWORK = IPv4Network("203.0.113.0/24")
CONTROLLER_PUBLIC_ADDRESS = IPv4Interface("203.0.113.1/28")
DEDICATED_POOL = IPv4Network("203.0.113.128/25")
LAB_PUBLIC_NETWORKS = (CONTROLLER_PUBLIC_ADDRESS.network, DEDICATED_POOL)

BRIDGE = "provlab0"
NETNS_PREFIX = "provlab-"
VETH_PREFIX = "pl-"

# Where the lab lives on the controller. The cache survives `lab down` so a
# warm `lab up` skips debootstrap; the rest is removed by `lab down`.
CACHE_DIR = Path("/var/cache/provisioner-lab")
STATE_DIR = Path("/var/lib/provisioner-lab")
HOSTS_DIR = STATE_DIR / "hosts"
SECRETS_DIR = STATE_DIR / "secrets"
SSH_KEY = SECRETS_DIR / "id_ed25519"
KNOWN_HOSTS = STATE_DIR / "known_hosts"
SSH_CONFIG = STATE_DIR / "ssh_config"
PDNS_API_KEY_FILE = SECRETS_DIR / "pdns-api-key"
# The lab CA that signs site certificates (made at `lab up`).
CA_DIR = STATE_DIR / "ca"

# The account the controller uses on every host: key-only, passwordless sudo,
# like a deploy account in production.
LAB_USER = "provisioner"

ZONES = ("tarakankota.go.id", "bulelengkab.go.id")
PDNS_API_PORT = 8081


@dataclass(frozen=True)
class LabHost:
    name: str
    address: IPv4Address
    role: str  # ns-primary | ns-secondary | web | db | acme | backup
    group: str  # the Ansible inventory group
    public_addresses: tuple[IPv4Interface, ...] = field(default=())
    # A web server's own dedicated addresses (first, last), inside
    # DEDICATED_POOL and apart from every other server's: an address is only
    # ever given on one server. The inventory's public_ip_pool says the same.
    dedicated_pool: tuple[IPv4Address, IPv4Address] | None = None
    # Reaches the web servers' public addresses (LAB_PUBLIC_NETWORKS) over the
    # bridge, as the ACME server must to validate HTTP-01 challenges.
    reaches_public: bool = False

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def veth(self) -> str:
        return VETH_PREFIX + self.name

    @property
    def root(self) -> Path:
        return HOSTS_DIR / self.name / "root"


HOSTS = (
    LabHost("ns1", IPv4Address("10.77.0.11"), "ns-primary", "nameservers"),
    LabHost("ns2", IPv4Address("10.77.0.12"), "ns-secondary", "nameservers"),
    LabHost(
        "web1",
        IPv4Address("10.77.0.21"),
        "web",
        "web",
        public_addresses=(IPv4Interface("203.0.113.10/28"),),
        dedicated_pool=(IPv4Address("203.0.113.128"), IPv4Address("203.0.113.191")),
    ),
    LabHost(
        "web2",
        IPv4Address("10.77.0.22"),
        "web",
        "web",
        public_addresses=(IPv4Interface("203.0.113.11/28"),),
        dedicated_pool=(IPv4Address("203.0.113.192"), IPv4Address("203.0.113.254")),
    ),
    LabHost("db1", IPv4Address("10.77.0.31"), "db", "db"),
    LabHost("db2", IPv4Address("10.77.0.32"), "db", "db"),
    # The lab's ACME CA (Pebble); the hosting code never places anything on it.
    LabHost("ca1", IPv4Address("10.77.0.41"), "acme", "acme", reaches_public=True),
    # The backup repository host: sshd only, the restic account reaches it by
    # SFTP alone (restic itself runs on the controller).
    LabHost("backup1", IPv4Address("10.77.0.51"), "backup", "backup"),
)


def host(name: str) -> LabHost:
    for h in HOSTS:
        if h.name == name:
            return h
    raise KeyError(name)


def primary_ns() -> LabHost:
    return next(h for h in HOSTS if h.role == "ns-primary")


def secondary_ns() -> LabHost:
    return next(h for h in HOSTS if h.role == "ns-secondary")


def acme_host() -> LabHost:
    return next(h for h in HOSTS if h.role == "acme")


def backup_host() -> LabHost:
    return next(h for h in HOSTS if h.role == "backup")


def hosts_of(role: str) -> tuple[LabHost, ...]:
    """Every lab host of a role (web, db...), in the order of HOSTS."""
    return tuple(h for h in HOSTS if h.role == role)


# Pebble on the ACME host. Its HTTPS (directory and management) is served with a
# certificate from the lab CA (CA_DIR / "ca.crt"); the certificates it issues
# chain to a root Pebble makes anew at every start, so ACME_ROOTS keeps every
# root seen since `lab up` (certificates already served still chain to older ones).
ACME_DIR = STATE_DIR / "acme"
ACME_ROOTS = ACME_DIR / "roots.pem"
ACME_PORT = 14000
ACME_MANAGEMENT_PORT = 15000
ACME_DIRECTORY_URL = f"https://{acme_host().address}:{ACME_PORT}/dir"
ACME_MANAGEMENT_URL = f"https://{acme_host().address}:{ACME_MANAGEMENT_PORT}"
