"""Checks from outside, as a visitor, the agency's developer and a resolver would.

Run after an apply: the name answered authoritatively by every name server,
the page served at the site's IP for its name (over TLS verified against the
configured CA when the site has TLS), a database login from the web server
that sees only its own database, and an SFTP login that lands in the site's
chroot and cannot leave it. Each check returns what it saw; any mismatch is
a VerificationFailed naming the check.
"""

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import paramiko
import urllib3

from provisioner import ssh
from provisioner.errors import HostError
from provisioner.inventory import Host, Inventory
from provisioner.site import DesiredSite

PLACEHOLDER_MARKER = "provisioner placeholder"
SFTP_PORT = 22
# SSH logins to one web host at a time when many sites are checked at once: sshd drops
# new connections past MaxStartups (10 unauthenticated by default).
SSH_LOGINS_PER_HOST = 6
_login_slots: dict[str, threading.BoundedSemaphore] = {}
_login_slots_lock = threading.Lock()


@contextmanager
def _login_slot(host: str):
    """Wait for one of the few SSH login slots of a host."""
    with _login_slots_lock:
        slot = _login_slots.setdefault(host, threading.BoundedSemaphore(SSH_LOGINS_PER_HOST))
    with slot:
        yield


class VerificationFailed(HostError):
    pass


@dataclass
class Verification:
    fqdn: str
    checks: dict = field(default_factory=dict)
    # What passed with a reservation, e.g. "dns-secondary-stale: ns2 answers nothing".
    warnings: list[str] = field(default_factory=list)

    def ok(self, name: str, seen) -> None:
        self.checks[name] = seen


@dataclass(frozen=True)
class Answer:
    """What one name server answered for a name's A record."""

    addresses: list[str]
    authoritative: bool
    error: str | None = None  # no answer: why

    def as_dict(self) -> dict:
        return {"addresses": self.addresses, "authoritative": self.authoritative, "error": self.error}


def ask(server: str, fqdn: str, timeout: float = 2.0) -> Answer:
    """One A query to one name server; a lost packet or a bad reply is an Answer with its error."""
    try:
        reply = dns.query.udp(dns.message.make_query(fqdn, dns.rdatatype.A), server, timeout=timeout)
    except (OSError, dns.exception.DNSException) as err:
        return Answer([], False, f"no answer ({type(err).__name__})")
    return Answer(sorted(r.address for rrset in reply.answer for r in rrset if rrset.rdtype == dns.rdatatype.A),
                  bool(reply.flags & dns.flags.AA))


def ask_every_ns(inventory: Inventory, fqdn: str, until=None, wait: float = 0.0, tries: int = 1,
                 interval: float = 0.25, query_timeout: float = 2.0) -> dict[str, tuple[Host, Answer, bool]]:
    """Ask every name server for the A record of `fqdn`: the one DNS loop of the toolkit.

    Each server is asked until `until(answer)` holds (default: it answered at
    all), again every `interval` seconds for up to `wait` seconds and at least
    `tries` times. Returns, per server name, (the server, its last answer,
    whether `until` held); what a miss means is the caller's to say.
    """
    met_by = until or (lambda answer: answer.error is None)
    results = {}
    for ns in inventory.group("nameservers"):
        ssh.check_route(ns.address)
        deadline, asked = time.monotonic() + wait, 0
        while True:
            answer = ask(ns.address, fqdn, query_timeout)
            asked += 1
            met = bool(met_by(answer))
            if met or (asked >= tries and time.monotonic() > deadline):
                break
            if wait:
                time.sleep(interval)
        results[ns.name] = (ns, answer, met)
    return results


def dns_answers(inventory: Inventory, site: DesiredSite, timeout: float = 30.0, stale: list | None = None) -> dict:
    """Wait until every name server answers the A record authoritatively with the site's IP.

    With a `stale` list, a secondary that has not caught up by the deadline is
    added to it rather than failing the check (the primary always must answer).
    """
    seen = {}
    answers = ask_every_ns(inventory, site.fqdn, wait=timeout,
                           until=lambda a: a.authoritative and a.addresses == [site.public_ip])
    for name, (ns, answer, met) in answers.items():
        if met:
            seen[name] = answer.addresses
        elif stale is not None and ns.vars.get("pdns_role") != "primary":
            stale.append(f"dns-secondary-stale: {name} answers {answer.addresses or 'nothing'}, "
                         f"expected {site.public_ip}")
            seen[name] = {"stale": answer.addresses}
        else:
            raise VerificationFailed(f"{site.fqdn}: {name} answers {answer.addresses or 'nothing'} "
                                     f"(authoritative={answer.authoritative}), expected {site.public_ip}")
    return seen


def dns_gone(inventory: Inventory, site: DesiredSite, timeout: float = 30.0) -> dict:
    """Wait until every name server answers authoritatively with no A record for the site."""
    seen = {}
    answers = ask_every_ns(inventory, site.fqdn, wait=timeout,
                           until=lambda a: a.error is None and a.authoritative and not a.addresses)
    for name, (_ns, answer, met) in answers.items():
        if not met:
            found = answer.error or answer.addresses
            raise HostError(f"{site.fqdn}: {name} still answers {found} (authoritative={answer.authoritative})")
        seen[name] = "no A record"
    return seen


def get(site: DesiredSite, ca_file: str | None, scheme: str) -> urllib3.BaseHTTPResponse:
    """GET / at the site's IP for its name: the one HTTP check of the toolkit.

    https is verified against `ca_file` for the site's name. No answer
    (refused, timeout, TLS) is a VerificationFailed.
    """
    ssh.check_route(site.public_ip)
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            site.public_ip, 443, timeout=5.0, retries=False, server_hostname=site.fqdn,
            assert_hostname=site.fqdn, cert_reqs="CERT_REQUIRED", ca_certs=ca_file)
    else:
        pool = urllib3.HTTPConnectionPool(site.public_ip, 80, timeout=5.0, retries=False)
    try:
        return pool.request("GET", "/", headers={"Host": site.fqdn}, redirect=False)
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise VerificationFailed(f"{site.fqdn}: no {scheme} answer at {site.public_ip}: {err}") from None


def http_page(site: DesiredSite, ca_file: str | None, placeholder: bool = True) -> dict:
    """Fetch / at the site's IP with its name: http (and https when TLS, verified by name).

    A new site must show the placeholder page; once the agency has put its own
    content there, it is enough that the vhost answers for the name (not 5xx).
    """
    seen = {}
    response = get(site, ca_file, "http")
    seen["http"] = response.status
    if site.tls:
        if response.status != 301 or response.headers.get("Location") != f"https://{site.fqdn}/":
            raise VerificationFailed(f"{site.fqdn}: http did not redirect to https (status {response.status})")
        response = get(site, ca_file, "https")
        seen["https"] = response.status
    body = response.data.decode(errors="replace")
    if placeholder and (response.status != 200 or PLACEHOLDER_MARKER not in body or site.fqdn not in body):
        raise VerificationFailed(f"{site.fqdn}: the page at {site.public_ip} is not the site's "
                                 f"(status {response.status})")
    if not placeholder and response.status >= 500:
        raise VerificationFailed(f"{site.fqdn}: the site at {site.public_ip} answers {response.status}")
    return seen


def http_status(site: DesiredSite, ca_file: str | None, expect: int, timeout: float = 15.0) -> int:
    """Wait until the site answers `expect` at its IP for its name (https when it has TLS)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, error = get(site, ca_file, "https" if site.tls else "http").status, None
        except VerificationFailed as err:
            status, error = None, err
        if status == expect:
            return status
        if time.monotonic() > deadline:
            seen = status if status is not None else f"no answer ({error})"
            raise HostError(f"{site.fqdn}: answers {seen} at {site.public_ip}, expected {expect}")
        time.sleep(0.5)


def database_login(inventory: Inventory, site: DesiredSite, password: str) -> dict:
    """Log in from the web server with the site's credentials; it must see only its database."""
    db = inventory.host(site.db_host)
    option_file = f"[client]\nhost={db.address}\nuser={site.names.db_user}\npassword={password}\n"
    # The password travels on stdin into a private temporary file, never on a command line.
    command = ('sh -c \'umask 077; f=$(mktemp); cat > "$f"; '
               'mysql --defaults-extra-file="$f" -N -B -e "SHOW DATABASES"; rc=$?; rm -f "$f"; exit $rc\'')
    with _login_slot(site.web_host):
        rc, out, err = ssh.run(inventory.host(site.web_host), command, stdin=option_file)
    if rc != 0:
        raise VerificationFailed(f"{site.fqdn}: database login as {site.names.db_user} failed: {err.strip()[-200:]}")
    visible = sorted(set(out.split()) - {"information_schema"})
    if visible != [site.names.db_name]:
        raise VerificationFailed(f"{site.fqdn}: database user sees {visible}, expected only {site.names.db_name}")
    return {"databases": visible}


def pinned_host_keys(web: Host) -> tuple[str, dict]:
    """(known_hosts path, {key type: key}) pinned for a web host, by its address or name."""
    path = web.known_hosts or str(Path.home() / ".ssh" / "known_hosts")
    keys = paramiko.HostKeys()
    try:
        keys.load(path)
    except (OSError, paramiko.SSHException) as err:
        raise VerificationFailed(f"{web.name}: cannot read the pinned host keys in {path}: {err}") from None
    for name in (web.address, web.name):
        found = keys.lookup(name)
        if found:
            return path, dict(found)
    raise VerificationFailed(f"{web.name}: no host key pinned for {web.address} in {path}")


def _check_host_key(transport: paramiko.Transport, site: DesiredSite, web: Host, path: str, pinned: dict) -> None:
    key = transport.get_remote_server_key()
    if pinned.get(key.get_name()) != key:
        raise VerificationFailed(
            f"{site.fqdn}: the SSH host key at {site.public_ip} ({key.get_name()} {key.fingerprint}) "
            f"is not the one pinned for {web.name} in {path}; no password was sent")


def sftp_login(site: DesiredSite, password: str, web: Host) -> dict:
    """Log in over SFTP: the root is the site's home, only `public` is writable, `..` leads nowhere.

    The server must show the host key pinned for the web host (the site's IP is
    an alias of it) before the password is sent. `web`: the site's web host.
    """
    with _login_slot(web.name):
        return _sftp_login(site, password, web)


def _sftp_login(site: DesiredSite, password: str, web: Host) -> dict:
    path, pinned = pinned_host_keys(web)
    ssh.check_route(site.public_ip)
    transport = None
    try:
        transport = paramiko.Transport(socket.create_connection((site.public_ip, SFTP_PORT), timeout=10))
        # Offer only the pinned key types, so the server shows the key we can check.
        options = transport.get_security_options()
        wanted = [t for t in options.key_types
                  if t in pinned or (t.startswith("rsa-sha2-") and "ssh-rsa" in pinned)]
        if wanted:
            options.key_types = wanted
        transport.start_client(timeout=10)
        _check_host_key(transport, site, web, path, pinned)
        transport.auth_password(site.names.user, password)
        sftp = paramiko.SFTPClient.from_transport(transport)
        root = sorted(sftp.listdir("/"))
        escaped = sorted(sftp.listdir("/.."))
        landing = sftp.normalize(".")
        probe = f"/public/.provisioner-verify-{int(time.time())}"
        with sftp.open(probe, "w") as out:
            out.write("ok")
        sftp.remove(probe)
        try:
            sftp.open("/escape-test", "w").close()
            wrote_root = True
        except IOError:
            wrote_root = False
    except (OSError, paramiko.SSHException) as err:
        raise VerificationFailed(f"{site.fqdn}: SFTP login as {site.names.user} failed: {err}") from None
    finally:
        if transport is not None:
            transport.close()
    if "public" not in root or root != escaped or wrote_root:
        raise VerificationFailed(f"{site.fqdn}: SFTP is not confined to the site (root {root}, '..' {escaped}, "
                                 f"wrote outside public: {wrote_root})")
    return {"landing": landing, "root": root}


def verify_site(inventory: Inventory, site: DesiredSite, passwords: dict, ca_file: str | None,
                placeholder: bool = True) -> Verification:
    result = Verification(site.fqdn)
    # The record is written when the primary answers it; a secondary that missed the NOTIFY
    # catches up at its next SOA check and is reported meanwhile (the audit's dns-answer too).
    result.ok("dns", dns_answers(inventory, site, stale=result.warnings))
    result.ok("http", http_page(site, ca_file, placeholder))
    if site.database:
        result.ok("database", database_login(inventory, site, passwords["db"]))
    result.ok("sftp", sftp_login(site, passwords["sftp"], inventory.host(site.web_host)))
    return result
