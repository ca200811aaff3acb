"""`lab up`, `lab down` and `lab status`: the lab's whole life in three calls.

`up` is idempotent: a healthy running lab is left alone, a partial one (an
interrupted run, a rebooted machine) is torn down and built again. Each phase
is timed and reported through `log`.

The lab's servers are configured the way an office's are: `provision host
prepare --apply` on inventory/lab (PowerDNS, MariaDB, Apache, PHP-FPM, the
backup host's SFTP-only account, with the production playbooks). setup-host.sh adds only what a lab needs: the
deploy account, sshd and keys (its `base` phase, in the image before boot)
and the ACME server (its `lab` phase, on ca1).

The lab's ACME server (Pebble on ca1) makes a new root at every start; the
roots seen since `lab up` are kept in topology.ACME_ROOTS, and tests that stop
or restart Pebble do it through `stop_acme`/`start_acme`/`restart_acme`, which
keep that file current.

`restart_host` restarts one host as a reboot would (for tests of what must
survive a web server's restart).
"""

import fcntl
import os
import secrets
import shutil
import socket
import time
from urllib.parse import urlparse
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import paramiko
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioner.errors import LabError, ProvisionerError
from provisioner import tls
from provisioner.lab import guard, hosts, network, remote, rootfs, topology
from provisioner.lab.system import require_root, run

REQUIRED_TOOLS = ("debootstrap", "ip", "nsenter", "unshare", "mount", "umount", "chroot", "ssh-keygen")
LOCK_FILE = "/run/provisioner-lab.lock"

# The inventory `host prepare` configures the lab's servers from, as an office's.
LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventory" / "lab"


@dataclass
class HostStatus:
    name: str
    address: str
    role: str
    running: bool
    ssh: bool = False
    services: dict[str, bool] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.running and self.ssh and all(self.services.values())


@dataclass
class LabStatus:
    bridge: bool
    hosts: list[HostStatus]

    @property
    def up(self) -> bool:
        return self.bridge and all(h.healthy for h in self.hosts)

    @property
    def any_left(self) -> bool:
        return self.bridge or any(h.running for h in self.hosts) or topology.HOSTS_DIR.exists()

    def as_dict(self) -> dict:
        return {
            "up": self.up,
            "bridge": self.bridge,
            "hosts": [asdict(h) | {"healthy": h.healthy} for h in self.hosts],
        }


class _Phases:
    """Times each phase and reports it when it ends."""

    def __init__(self, log):
        self.log = log
        self.took: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.monotonic()
        yield
        self.took[name] = time.monotonic() - start
        self.log(f"  {name:<9} {self.took[name]:6.1f}s")


@contextmanager
def _locked():
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _check_tools() -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing tools on this machine: {', '.join(missing)} (run `make install`)")


def _check_mirror_outside_lab() -> None:
    """Refuse to route the machine's own package mirror into the lab.

    The lab takes parts of 203.0.113.0/24; a mirror or proxy that resolves into
    them would be cut off while the lab is up (and installs would fail).
    """
    source = rootfs.mirror()
    host = urlparse(source).hostname if source else None
    if not host:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)}
    except OSError:
        return  # unresolvable now: nothing of ours can shadow it
    clashing = sorted(a for a in addresses if guard.is_lab_address(a))
    if clashing:
        raise LabError(f"the package mirror {host} resolves to {', '.join(clashing)}, inside the lab's "
                       "networks; the lab would cut this machine off from it")


def _hosts_line() -> str:
    return " ".join(f"{h.name}={h.address}" for h in topology.HOSTS)


def _ensure_secrets() -> str:
    """The lab's SSH key and PowerDNS API key, root-only; returns the public key."""
    topology.SECRETS_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(topology.STATE_DIR, 0o700)
    os.chmod(topology.SECRETS_DIR, 0o700)
    if not topology.SSH_KEY.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provisioner-lab", "-f", str(topology.SSH_KEY))
    if not topology.PDNS_API_KEY_FILE.exists():
        fd = os.open(topology.PDNS_API_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    return topology.SSH_KEY.with_suffix(".pub").read_text().strip()


def _write_ssh_files(host_keys: dict[str, str]) -> None:
    lines = [f"{topology.host(n).address},{n} ssh-ed25519 {k}" for n, k in sorted(host_keys.items())]
    topology.KNOWN_HOSTS.write_text("\n".join(lines) + "\n")
    blocks = [
        f"Host {h.name} {h.address}\n"
        f"  HostName {h.address}\n"
        f"  User {topology.LAB_USER}\n"
        f"  IdentityFile {topology.SSH_KEY}\n"
        f"  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {topology.KNOWN_HOSTS}\n"
        f"  StrictHostKeyChecking yes\n"
        for h in topology.HOSTS
    ]
    topology.SSH_CONFIG.write_text("\n".join(blocks))


def pdns_api_key() -> str:
    try:
        return topology.PDNS_API_KEY_FILE.read_text().strip()
    except OSError as err:
        raise LabError(f"cannot read the lab's PowerDNS API key ({err}); is the lab up?") from err


def _acme_tls() -> tls.CertBundle:
    """Pebble's HTTPS certificate for its address and name, from the lab CA.

    Made anew at each `lab up`; the key stays in memory until it goes to ca1 in
    the setup script's text (see remote.run_script), so no file on the
    controller and no argv ever holds it.
    """
    h = topology.acme_host()
    return tls.issue_server_certificate(topology.CA_DIR, [h.name], [str(h.address)])


def _lab_env(host: topology.LabHost, acme_tls: tls.CertBundle | None = None) -> dict[str, str]:
    """The environment of setup-host.sh's `lab` phase on one host."""
    env = {
        "LAB_PHASE": "lab",
        "LAB_ROLE": host.role,
        "LAB_HOSTS": _hosts_line(),
    }
    if host.role == "acme":
        if acme_tls is None:
            raise LabError(f"{host.name}: the acme role needs Pebble's HTTPS certificate")
        env |= {
            "ACME_PORT": str(topology.ACME_PORT),
            "ACME_MANAGEMENT_PORT": str(topology.ACME_MANAGEMENT_PORT),
            "PEBBLE_TLS_CERT": acme_tls.cert,
            "PEBBLE_TLS_KEY": acme_tls.key,
        }
    return env


def _parallel(func, items):
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(func, items))


def up(log=print) -> LabStatus:
    require_root("provision lab up")
    _check_tools()
    with _locked():
        current = status()
        if current.up:
            log("the lab is already up; nothing to do")
            return current
        if current.any_left:
            log("found a partial lab from an earlier run; removing it first")
            _down(log=lambda *_: None)

        _check_mirror_outside_lab()
        phases = _Phases(log)
        log("bringing the lab up:")
        with phases.phase("cache"):
            lower = rootfs.ensure_cache(log=log)
        with phases.phase("network"):
            authorized_key = _ensure_secrets()
            tls.ensure_lab_ca(topology.CA_DIR)
            network.ensure_bridge()
            for h in topology.HOSTS:
                network.ensure_host_network(h)
        with phases.phase("hosts"):
            def prepare(h):
                hosts.mount_root(h, lower)
                return h.name, hosts.install_boot_files(h, _hosts_line(), authorized_key)

            host_keys = dict(_parallel(prepare, topology.HOSTS))
            _write_ssh_files(host_keys)
            for h in topology.HOSTS:
                hosts.start(h)
            _parallel(remote.wait_for_ssh, topology.HOSTS)
        with phases.phase("services"):
            _services(log)
        with phases.phase("checks"):
            _wait_ready()
            _wait_acme()
            refresh_acme_roots()
        log(f"  {'total':<9} {sum(phases.took.values()):6.1f}s")
        return status()


def _services(log) -> None:
    """The name, database, web and backup servers as an office's are: `host prepare --apply`, then the lab's own extras."""
    from provisioner import host_prepare

    # Name servers first (the primary before the secondaries), then db, web and
    # backup (whose account takes the lab key, inventory/lab/group_vars/backup.yml);
    # raises if a second look still finds something to change.
    result = host_prepare.apply(LAB_INVENTORY)
    made = sum(len(h.changes) for h in result.applied.hosts.values())
    log(f"  host prepare: {made} change(s) on {', '.join(sorted(result.applied.hosts))}; a second look finds none")
    # The ACME server is the only thing here no office server has. The web
    # servers' `lab` phase (their public addresses) is for Vagrant alone: the
    # local lab puts those addresses on eth0 itself (network.ensure_host_network).
    acme = topology.acme_host()
    remote.run_script(acme, (hosts.SCRIPTS / "setup-host.sh").read_text(), _lab_env(acme, _acme_tls()))


def _wait_ready(timeout: float = 60.0) -> None:
    """Wait until both name servers serve every zone and the API answers."""
    import dns.message
    import dns.query
    import dns.rdatatype

    deadline = time.monotonic() + timeout
    pending = {(ns.name, zone) for ns in (topology.primary_ns(), topology.secondary_ns()) for zone in topology.ZONES}
    while pending:
        for name, zone in sorted(pending):
            ns = topology.host(name)
            guard.require_lab_route(ns.address)
            query = dns.message.make_query(zone, dns.rdatatype.SOA)
            try:
                answer = dns.query.udp(query, str(ns.address), timeout=1.0)
            except (OSError, dns.exception.Timeout):
                continue
            if answer.answer and answer.flags & dns.flags.AA:
                pending.discard((name, zone))
        if pending and time.monotonic() > deadline:
            raise LabError(f"name servers not serving: {sorted(pending)}")
        if pending:
            time.sleep(0.3)


def _lab_ca_bundle() -> str:
    return str(topology.CA_DIR / "ca.crt")


def _wait_acme(timeout: float = 30.0) -> None:
    """Wait until Pebble serves its directory over HTTPS verified by the lab CA."""
    h = topology.acme_host()
    deadline = time.monotonic() + timeout
    while True:
        guard.require_lab_route(h.address)
        try:
            response = requests.get(topology.ACME_DIRECTORY_URL, verify=_lab_ca_bundle(), timeout=2.0)
            if response.status_code == 200 and "newOrder" in response.json():
                return
            problem = f"HTTP {response.status_code}"
        except (requests.RequestException, ValueError) as err:
            problem = type(err).__name__
        if time.monotonic() > deadline:
            raise LabError(f"{h.name}: Pebble did not serve {topology.ACME_DIRECTORY_URL} within "
                           f"{timeout:.0f}s ({problem}); see /var/log/pebble.log on {h.name}")
        time.sleep(0.2)


def refresh_acme_roots() -> list[x509.Certificate]:
    """Add Pebble's current root to topology.ACME_ROOTS if it is not there yet.

    Pebble makes a new root at every start; earlier roots stay in the file, as
    certificates issued before a restart still chain to them. Returns every
    root the file now holds.
    """
    h = topology.acme_host()
    guard.require_lab_route(h.address)
    url = f"{topology.ACME_MANAGEMENT_URL}/roots/0"
    try:
        response = requests.get(url, verify=_lab_ca_bundle(), timeout=10.0)
        response.raise_for_status()
        current = x509.load_pem_x509_certificate(response.content)
    except (requests.RequestException, ValueError) as err:
        raise LabError(f"{h.name}: cannot read Pebble's root from {url}: {err}") from None
    topology.ACME_DIR.mkdir(parents=True, exist_ok=True)
    with open(topology.ACME_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            roots = x509.load_pem_x509_certificates(topology.ACME_ROOTS.read_bytes())
        except FileNotFoundError:
            roots = []
        except ValueError as err:
            # Never rewritten from scratch: that would drop roots still in use.
            raise LabError(f"{topology.ACME_ROOTS} is not a PEM bundle ({err}); run `provision lab up` "
                           "again after `provision lab down`") from None
        if current not in roots:
            roots.append(current)
            pem = b"".join(r.public_bytes(serialization.Encoding.PEM) for r in roots)
            # Written whole then renamed: a reader never sees half a bundle.
            partial = topology.ACME_ROOTS.with_suffix(".pem.new")
            partial.write_bytes(pem)
            os.replace(partial, topology.ACME_ROOTS)
    return roots


# Each action leaves Pebble in the state it names, whatever it was before.
_PEBBLE_ACTIONS = {
    "stop": "service pebble stop >/dev/null || true\n"
            "if service pebble status >/dev/null; then echo 'pebble is still running' >&2; exit 1; fi\n",
    "start": "service pebble status >/dev/null || service pebble start >/dev/null\n",
    "restart": "service pebble restart >/dev/null\n",
}


def _pebble_service(action: str) -> None:
    remote.run_script(topology.acme_host(), _PEBBLE_ACTIONS[action], {})


def stop_acme() -> None:
    """Stop Pebble on the ACME host (for tests of a CA that does not answer)."""
    _pebble_service("stop")


def start_acme() -> list[x509.Certificate]:
    """Start Pebble if it is stopped, wait for its directory, record its root; returns every root."""
    _pebble_service("start")
    _wait_acme()
    return refresh_acme_roots()


def restart_acme() -> list[x509.Certificate]:
    """Restart Pebble (a new root; accounts and orders are lost) and record the new root."""
    _pebble_service("restart")
    _wait_acme()
    return refresh_acme_roots()


def restart_host(name: str, timeout: float = 60.0) -> list[str]:
    """Restart one lab host the way a reboot restarts a server; returns the addresses it lost.

    Its services stop in order (lab-init), every process in its namespaces ends,
    and the addresses only the kernel held (brought up at run time, such as a
    dedicated address) are dropped, as a reboot drops them; its network
    namespace, link and the addresses of the lab's topology stay, like a
    server's configured interfaces. Then its init starts again from
    /etc/lab/services, and this returns once SSH answers and every listed
    service was started (lab-init's /run/lab-booted).
    """
    require_root("restarting a lab host")
    try:
        host = topology.host(name)
    except KeyError:
        raise LabError(f"no lab host named {name!r}; the lab has {', '.join(h.name for h in topology.HOSTS)}") from None
    with _locked():
        if hosts.pid(host) is None:
            raise LabError(f"{name} is not running; bring the lab up with `provision lab up`")
        hosts.stop(host)
        dropped = network.drop_runtime_addresses(host)
        hosts.start(host)
        remote.wait_for_ssh(host, timeout=timeout)
        _wait_booted(host, timeout)
    return [str(a) for a in dropped]


def _wait_booted(host: topology.LabHost, timeout: float) -> None:
    """Wait until the host's lab-init has started every service it lists (it then writes /run/lab-booted)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if remote.run_script(host, "test -e /run/lab-booted && echo booted || true\n", {}).strip() == "booted":
                return
        except (ProvisionerError, OSError, paramiko.SSHException):
            pass  # sshd is up but the deploy account's session may not be yet
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}: its init did not finish starting services within {timeout:.0f}s; "
                           f"see {topology.HOSTS_DIR / host.name / 'console.log'}")
        time.sleep(0.3)


def _service_probe(h: topology.LabHost) -> dict[str, bool]:
    """Ask the host which services it runs and whether each is alive."""
    out = remote.run_script(
        h,
        'for s in $(cat /etc/lab/services); do if service "$s" status >/dev/null 2>&1; '
        'then echo "$s 1"; else echo "$s 0"; fi; done\n',
        {},
    )
    return {line.split()[0]: line.split()[1] == "1" for line in out.splitlines() if line.strip()}


def status() -> LabStatus:
    bridge = bool(network.bridge_addresses())
    result = []
    for h in topology.HOSTS:
        st = HostStatus(h.name, str(h.address), h.role, running=hosts.pid(h) is not None)
        if st.running and bridge:
            try:
                with socket.create_connection((str(guard.require_lab_route(h.address)), 22), timeout=1.0):
                    st.ssh = True
                st.services = _service_probe(h)
            except (OSError, ProvisionerError, paramiko.SSHException):
                # Reported, not raised: status describes a broken lab too.
                st.services = st.services or {"login": False}
        result.append(st)
    return LabStatus(bridge=bridge, hosts=result)


def down(log=print) -> None:
    require_root("provision lab down")
    with _locked():
        _down(log)


def _down(log) -> None:
    phases = _Phases(log)
    log("taking the lab down:")
    with phases.phase("hosts"):
        _parallel(hosts.stop, topology.HOSTS)
        for h in topology.HOSTS:
            hosts.remove(h)
    with phases.phase("network"):
        for h in topology.HOSTS:
            network.remove_host_network(h)
        network.remove_bridge()
    # Keys and host state go with the lab; the root filesystem cache stays.
    shutil.rmtree(topology.STATE_DIR, ignore_errors=True)
