"""Site certificates: obtained, recorded, reused, counted against the CA's limit, revoked.

Where they come from is `hosting.tls_source`:
- acme: the ACME CA of `hosting.acme` (Let's Encrypt in production, Pebble in the
  lab), through `provisioner.acme`. The office's PowerDNS API answers DNS-01
  challenges (one PATCH per zone for a whole batch, then a wait until every name
  server serves them); an office may choose HTTP-01 instead (the token is served
  from the site's own docroot, so the site must already answer on its name);
- lab-ca: the lab CA made at `lab up`; files: certificates issued elsewhere.

Where a site's private key is made, and why: on the controller, in memory (see
`provisioner.acme`). It is sealed into the `certificates` table with the state
key at once, so a certificate obtained but not yet installed (an apply that
failed later, a renewal whose install failed) is installed later without a new
order, which the CA's weekly limit makes costly. It reaches the web host only in
the runner's private secrets file. It is dropped from the table when the
certificate is revoked or the site removed.

Every certificate obtained from the CA is counted under its registered domain
(a whole city's sites share one, e.g. tarakankota.go.id): before an order starts,
the count of the last 7 days must be under `hosting.acme.weekly_limit`.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from provisioner import acme, issuance_limit, ssh, tls
from provisioner.errors import AcmeError, ConfigError, HostError, ProvisionerError
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import CertificateRow

# States of a row that may still be served (and so may be installed again).
USABLE = ("pending", "active")


@dataclass(frozen=True)
class Bundle:
    """What the web role installs for one site; `key` is a secret."""

    cert: str
    chain: str
    key: str = field(repr=False)
    serial: str
    not_after: dt.datetime

    def secrets(self) -> dict:
        return {"cert": self.cert, "key": self.key, "chain": self.chain}


def describe(cert_pem: str | bytes) -> dict:
    """The public facts of a certificate: issuer, serial, names, validity (UTC, ISO 8601)."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") \
        else x509.load_der_x509_certificate(data)
    return _facts(cert)


def _facts(cert: x509.Certificate) -> dict:
    def attr(name, oid):
        values = name.get_attributes_for_oid(oid)
        return values[0].value if values else None

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = [attr(cert.subject, NameOID.COMMON_NAME)] if attr(cert.subject, NameOID.COMMON_NAME) else []
    return {
        "issuer": attr(cert.issuer, NameOID.COMMON_NAME) or cert.issuer.rfc4514_string(),
        "issuer_org": attr(cert.issuer, NameOID.ORGANIZATION_NAME),
        "serial": f"{cert.serial_number:x}",
        "names": sorted(names),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def bootstrap(fqdn: str, days: int = 7) -> Bundle:
    """A short-lived self-signed certificate that lets a new site's HTTPS vhost load until the CA,
    validating over HTTP-01, can reach the site; never recorded, replaced in the same apply."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
            .sign(key, hashes.SHA256()))
    return Bundle(cert=cert.public_bytes(serialization.Encoding.PEM).decode(), chain="",
                  key=acme._pem(key), serial=f"{cert.serial_number:x}", not_after=cert.not_valid_after_utc)


def covers(names: list[str], fqdn: str) -> bool:
    """Whether a certificate's names cover `fqdn` (exactly, or by a wildcard one label deep)."""
    fqdn = fqdn.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == fqdn or (name.startswith("*.") and fqdn.partition(".")[2] == name[2:]):
            return True
    return False


def served(address: str, fqdn: str, trust: str | Path | None, port: int = 443, timeout: float = 10.0) -> dict:
    """The certificate served at address:port for the name `fqdn`, as a client outside sees it.

    Returns its facts, `days_left`, `covers` (the name is in it) and `trusted`
    (its chain verifies against `trust`, or the system store when None) with
    `trust_error` when not. A connection that fails raises a HostError.
    """
    ssh.check_route(address)
    if trust and not Path(trust).is_file():
        raise ConfigError(f"the CA file {trust} that served certificates are checked against does not exist "
                          "(hosting.acme.trust, or the lab CA for lab-ca): set it, or null for the system's store")
    # One handshake that checks the chain; only a chain that does not verify costs a second,
    # unchecked one, to read the certificate anyway. An audit makes one per site.
    trusted, trust_error = True, None
    try:
        der = _leaf_der(address, port, fqdn, _verifying_context(str(trust) if trust else None), timeout)
    except ssl.SSLCertVerificationError as err:
        trusted, trust_error = False, err.verify_message or str(err)
        der = None
    except (OSError, ssl.SSLError) as err:
        raise HostError(f"{fqdn}: no TLS answer at {address}:{port}: {err}") from None
    if der is None:
        raw = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        raw.check_hostname, raw.verify_mode = False, ssl.CERT_NONE
        try:
            der = _leaf_der(address, port, fqdn, raw, timeout)
        except (OSError, ssl.SSLError) as err:
            raise HostError(f"{fqdn}: no TLS answer at {address}:{port}: {err}") from None
    facts = _facts(x509.load_der_x509_certificate(der))
    facts["days_left"] = round((dt.datetime.fromisoformat(facts["not_after"]) - utcnow()).total_seconds() / 86400, 1)
    facts["covers"] = covers(facts["names"], fqdn)
    facts["trusted"], facts["trust_error"] = trusted, trust_error
    return facts


def _leaf_der(address: str, port: int, fqdn: str, context: ssl.SSLContext, timeout: float) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as sock:
        with context.wrap_socket(sock, server_hostname=fqdn) as conn:
            return conn.getpeercert(binary_form=True)


def _verifying_context(cafile: str | None) -> ssl.SSLContext:
    """A context that checks chains against `cafile` (the system's store when None), made once
    per file as it is now: loading a store for every site would cost more than the handshake."""
    stamp = Path(cafile).stat().st_mtime_ns if cafile else None
    return _context_for(cafile, stamp)


@functools.lru_cache(maxsize=8)
def _context_for(cafile: str | None, _stamp) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False  # the name is judged by `covers`, the chain here
    return context


def chain_problem(bundle: Bundle, fqdn: str, trust, now: dt.datetime | None = None) -> str | None:
    """Why the bundle would not verify for `fqdn` against `trust` (the system's store when None),
    checked here before it is installed; None when it verifies. A CA whose root the controller
    does not trust (the lab's Pebble restarted by hand, a wrong directory) is caught before a
    live site serves its certificate."""
    import warnings

    from cryptography.x509 import DNSName
    from cryptography.x509.verification import (Criticality, ExtensionPolicy, PolicyBuilder, Store,
                                                VerificationError)

    if trust is None:  # the system's store, as `served` uses it
        paths = ssl.get_default_verify_paths()
        trust = next((f for f in (paths.cafile, paths.openssl_cafile) if f and Path(f).is_file()), None)
        if trust is None:
            return "no system CA file to check the certificate against"
    try:
        with warnings.catch_warnings():  # a system store may hold old roots the library frowns on
            warnings.simplefilter("ignore")
            roots = x509.load_pem_x509_certificates(Path(trust).read_bytes())
    except (OSError, ValueError) as err:
        return f"the CA file {trust} cannot be read: {err}"
    leaf = x509.load_pem_x509_certificate(bundle.cert.encode())
    intermediates = x509.load_pem_x509_certificates(bundle.chain.encode()) if bundle.chain.strip() else []
    # The chain, the dates and the name, as a browser checks them; the leaf's other extensions are
    # the CA's business (the strict Web PKI profile refuses, e.g., the lab CA's leaves).
    verifier = (PolicyBuilder().store(Store(roots)).time(now or utcnow())
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=ExtensionPolicy.permit_all().require_present(
                                        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None))
                .build_server_verifier(DNSName(fqdn)))
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as err:
        return f"does not verify against {trust}: {err}"
    return None


def served_as_installed(address: str, fqdn: str, trust, serial: str, timeout: float = 15.0) -> tuple[dict | None, str | None]:
    """The certificate just installed, as served from outside: (facts, None) once `serial` is
    served, trusted and covers the name, else (None, what is wrong).

    A graceful reload lets old children finish their connections first, so the old
    certificate (or a dropped connection) is waited out for up to `timeout` seconds; a
    certificate that does not verify will not change by waiting.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            facts = served(address, fqdn, trust)
        except HostError as err:
            facts, problem = None, str(err)
        else:
            problem = None
            if facts["serial"] != serial:
                problem = f"serial {facts['serial']} is served, not {serial}"
            elif not facts["trusted"]:
                problem = f"not trusted: {facts['trust_error']}"
            elif not facts["covers"]:
                problem = f"does not cover {fqdn} (names {', '.join(facts['names'])})"
        if problem is None:
            return facts, None
        waiting = facts is None or facts["serial"] != serial
        if not waiting or time.monotonic() > deadline:
            return None, problem
        time.sleep(0.5)


# --- challenge publishers ----------------------------------------------------


class PowerDnsChallenges(acme.Dns01Publisher):
    """DNS-01 through the office's PowerDNS API: one PATCH per zone, then a wait until every
    name server of the inventory answers with the values (the CA may ask any of them)."""

    def __init__(self, dns_target, inventory, zones, timeout: float = 60.0):
        self.dns, self.inventory, self.zones, self.timeout = dns_target, inventory, list(zones), timeout

    def publish(self, records: dict[str, list[str]]) -> None:
        self.dns.challenges(records, self.zones, present=True)
        self._wait(records)

    def cleanup(self, records: dict[str, list[str]]) -> None:
        self.dns.challenges(records, self.zones, present=False)

    def _wait(self, records: dict[str, list[str]]) -> None:
        deadline = time.monotonic() + self.timeout
        for ns in self.inventory.group("nameservers"):
            ssh.check_route(ns.address)
            for name, values in records.items():
                while True:
                    seen = _txt(ns.address, name)
                    if set(values) <= seen:
                        break
                    if time.monotonic() > deadline:
                        raise HostError(f"{name}: {ns.name} does not serve the ACME challenge after "
                                        f"{self.timeout:.0f} s (answers {sorted(seen) or 'nothing'})")
                    time.sleep(0.25)


def _txt(address: str, name: str) -> set[str]:
    try:
        answer = dns.query.udp(dns.message.make_query(name, dns.rdatatype.TXT), address, timeout=2.0)
    except (OSError, dns.exception.Timeout):
        return set()
    return {b"".join(r.strings).decode() for rrset in answer.answer if rrset.rdtype == dns.rdatatype.TXT
            for r in rrset}


class WebRootChallenges(acme.Http01Publisher):
    """HTTP-01 from the site's docroot on its web host (the vhost serves it on port 80).

    The token files are written into <docroot>/.well-known/acme-challenge as the site's own
    user (the agency controls that tree: as root, a link it planted there would lead the
    write elsewhere), readable by the site's group (Apache is in it), and removed afterwards.
    """

    def __init__(self, inventory, sites_by_name: dict):
        self.inventory, self.sites = inventory, sites_by_name

    def _script(self, files: dict[str, dict[str, str]], present: bool) -> dict[str, str]:
        scripts: dict[tuple[str, str], list[str]] = {}
        for name, paths in files.items():
            site = self.sites[name]
            base = f"{site.names.docroot}/.well-known/acme-challenge"
            lines = scripts.setdefault((site.web_host, site.names.user), ["set -eu", "umask 027"])
            if not present:
                lines.append(f"rm -rf -- '{base}'")
                continue
            lines.append(f"mkdir -p -m 0750 -- '{base}'")
            for path, body in paths.items():
                token = path.rsplit("/", 1)[-1]
                if not all(c.isalnum() or c in "-_." for c in token + body):
                    raise AcmeError(f"{name}: the CA sent a token that is not base64url", code="challenge")
                lines.append(f"printf '%s' '{body}' > '{base}/{token}'")
        return {key: "\n".join(lines) + "\n" for key, lines in scripts.items()}

    def _run(self, files, present: bool) -> None:
        for (host, user), script in self._script(files, present).items():
            # The names come from naming.py (letters, digits, dashes): safe in the command line.
            code, _out, err = ssh.run(self.inventory.host(host), f"runuser -u {user} -- sh -s", stdin=script,
                                      sudo=True)
            if code != 0:
                raise HostError(f"{host}: cannot {'write' if present else 'remove'} the ACME challenge files: "
                                f"{err.strip()[:300]}")

    def publish(self, files: dict[str, dict[str, str]]) -> None:
        self._run(files, True)

    def cleanup(self, files: dict[str, dict[str, str]]) -> None:
        self._run(files, False)


# --- the records -------------------------------------------------------------


class Certificates:
    """The certificates of the sites: issue, reuse, record, revoke. `dns` is a DnsTarget."""

    def __init__(self, config, store, inventory, dns, box, source: str = "cli"):
        self.config, self.store, self.inventory, self.dns, self.box = config, store, inventory, dns, box
        self.source = source
        self._acme: acme.AcmeClient | None = None

    @property
    def tls_source(self) -> str:
        return self.config.hosting.tls_source

    def over_http(self, site) -> bool:
        """Whether the CA checks this site's name over HTTP-01 (so the site must answer first)."""
        return self.tls_source == "acme" and self.config.office(site.office).tls_challenge == "http-01"

    # -- what is recorded --

    def rows(self, fqdn: str, states=None) -> list[CertificateRow]:
        with self.store.session() as session:
            query = select(CertificateRow).where(CertificateRow.fqdn == fqdn)
            if states:
                query = query.where(CertificateRow.state.in_(states))
            return list(session.scalars(query.order_by(CertificateRow.issued_at, CertificateRow.id)))

    def current(self, fqdn: str) -> CertificateRow | None:
        """The newest certificate of the site that may serve (pending or active)."""
        rows = self.rows(fqdn, USABLE)
        return rows[-1] if rows else None

    def active(self, fqdn: str) -> CertificateRow | None:
        rows = self.rows(fqdn, ("active",))
        return rows[-1] if rows else None

    def bundle(self, row: CertificateRow) -> Bundle:
        if row.key_sealed is None:
            raise ConfigError(f"{row.fqdn}: the key of certificate {row.serial} is no longer kept")
        return Bundle(cert=row.cert_pem, chain=row.chain_pem, key=self.box.open(row.key_sealed), serial=row.serial,
                      not_after=row.not_after)

    def reusable(self, fqdn: str, now: dt.datetime | None = None) -> Bundle | None:
        """The recorded certificate to install again, if it covers the name and is not due for renewal."""
        row = self.current(fqdn)
        now = now or utcnow()
        if row is None or row.key_sealed is None or not covers(row.names, fqdn):
            return None
        if row.source != self.tls_source:
            return None
        if row.not_after - now <= dt.timedelta(days=self.config.hosting.acme.renew_within_days):
            return None
        return self.bundle(row)

    # -- the CA's limit --

    def ledger(self) -> dict[str, list[dt.datetime]]:
        with self.store.session() as session:
            rows = session.execute(select(CertificateRow.registered_domain, CertificateRow.issued_at)
                                   .where(CertificateRow.source == "acme")).all()
        out: dict[str, list[dt.datetime]] = {}
        for domain, at in rows:
            if domain:
                out.setdefault(domain, []).append(at)
        return out

    def slots(self, fqdns: list[str], now: dt.datetime | None = None) -> dict[str, issuance_limit.Slot | None]:
        """For each name in order, None when its new certificate fits the limit, else the Slot
        that refuses it. Earlier names of the same batch count against the later ones."""
        if self.tls_source != "acme":
            return dict.fromkeys(fqdns)
        now = now or utcnow()
        ledger = {d: list(ts) for d, ts in self.ledger().items()}
        domains = self.config.registered_domains()
        limit = self.config.hosting.acme.weekly_limit
        out = {}
        for fqdn in fqdns:
            domain = issuance_limit.registered_domain(fqdn, domains)
            slot = issuance_limit.check(ledger, domain, limit, now)
            if slot.allowed:
                ledger.setdefault(domain, []).append(now)
                out[fqdn] = None
            else:
                out[fqdn] = slot
        return out

    # -- obtaining --

    def obtain(self, sites, reason: str = "new") -> tuple[dict[str, Bundle], dict[str, ProvisionerError]]:
        """New certificates for `sites` (DesiredSites), recorded `pending` with the key sealed.

        Returns (bundles by fqdn, errors by fqdn): one site's failure does not stop the others.
        The caller has checked the limit (`slots`).
        """
        bundles: dict[str, Bundle] = {}
        errors: dict[str, ProvisionerError] = {}
        if self.tls_source != "acme":
            for site in sites:
                try:
                    got = tls.issue(self.tls_source, Path(self.config.hosting.tls_dir), site.fqdn)
                    bundles[site.fqdn] = self._record(site, got.cert, got.chain, got.key, self.tls_source, reason)
                except ProvisionerError as err:
                    errors[site.fqdn] = err
            return bundles, errors
        by_challenge: dict[str, list] = {}
        for site in sites:
            by_challenge.setdefault(self.config.office(site.office).tls_challenge, []).append(site)
        for challenge, group in sorted(by_challenge.items()):
            keys = {s.fqdn: acme.new_site_key() for s in group}
            csrs = [acme.make_csr(keys[s.fqdn], [s.fqdn]) for s in group]
            try:
                client = self.client()
                results = client.issue_many(csrs, self._publisher(challenge, group),
                                            order_timeout=self.config.hosting.acme.order_timeout)
            except ProvisionerError as err:  # the CA (or its account) unreachable: every site of the group
                errors |= dict.fromkeys((s.fqdn for s in group), err)
                continue
            for site, result in zip(group, results):
                if isinstance(result, AcmeError):
                    errors[site.fqdn] = result
                    continue
                bundles[site.fqdn] = self._record(site, result.cert_pem, result.chain_pem, keys[site.fqdn],
                                                  "acme", reason, cleanup_error=result.cleanup_error)
        return bundles, errors

    def _publisher(self, challenge: str, sites):
        if challenge == "http-01":
            return WebRootChallenges(self.inventory, {s.fqdn: s for s in sites})
        return PowerDnsChallenges(self.dns, self.inventory, sorted(self.config.zones),
                                  timeout=self.config.hosting.acme.propagation_timeout)

    def _record(self, site, cert_pem: str, chain_pem: str, key_pem: str, source: str, reason: str,
                cleanup_error: str | None = None) -> Bundle:
        facts = describe(cert_pem)
        domain = None
        if source == "acme":
            domain = issuance_limit.registered_domain(site.fqdn, self.config.registered_domains())
        now = utcnow()
        not_after = dt.datetime.fromisoformat(facts["not_after"])
        with self.store.session() as session:
            session.add(CertificateRow(
                fqdn=site.fqdn, request_id=site.request_id, source=source, serial=facts["serial"],
                issuer=facts["issuer"], names=facts["names"], registered_domain=domain,
                not_before=dt.datetime.fromisoformat(facts["not_before"]), not_after=not_after, issued_at=now,
                state="pending", cert_pem=cert_pem, chain_pem=chain_pem, key_sealed=self.box.seal(key_pem)))
            add_event(session, site.request_id, "certificate_issued", source=self.source, fqdn=site.fqdn,
                      serial=facts["serial"], issuer=facts["issuer"], names=facts["names"],
                      not_after=facts["not_after"], tls_source=source, reason=reason, registered_domain=domain,
                      **({"challenge_cleanup_failed": cleanup_error} if cleanup_error else {}))
        return Bundle(cert=cert_pem, chain=chain_pem, key=key_pem, serial=facts["serial"], not_after=not_after)

    def client(self) -> acme.AcmeClient:
        """The ACME client with the office's account (made and registered on first use)."""
        if self._acme is None:
            settings = self.config.hosting.acme
            _check_route(settings.directory)
            key_pem = self._account_key()
            self._acme = acme.AcmeClient(settings.directory, key_pem, ca_bundle=settings.directory_ca_bundle)
            if self._acme.find_account() is None:
                account = self._acme.register(settings.email)
                with self.store.session() as session:
                    add_event(session, None, "acme_account_registered", source=self.source,
                              directory=settings.directory, account=account.uri, email=settings.email)
        return self._acme

    def _account_key(self) -> str:
        path = Path(self.config.acme_account_key_file())
        if path.exists():
            return self.box.open(path.read_text().strip())
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_pem = acme.new_account_key()
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.box.seal(key_pem) + "\n")
        try:
            os.link(partial, path)  # whole or not at all; a second process keeps the first one's key
        except FileExistsError:
            return self.box.open(path.read_text().strip())
        finally:
            partial.unlink()
        return key_pem

    # -- after install --

    def activate(self, fqdn: str, serial: str, request_id: str | None) -> None:
        """The certificate `serial` is seen served: it becomes the active one, the earlier ones superseded."""
        now = utcnow()
        with self.store.session() as session:
            rows = session.scalars(select(CertificateRow).where(CertificateRow.fqdn == fqdn,
                                                                CertificateRow.state.in_(USABLE))).all()
            if not any(r.serial == serial for r in rows):
                return  # not one the toolkit obtained (an older site, or files placed by hand)
            for row in rows:
                if row.serial == serial:
                    if row.state != "active":
                        row.state = "active"
                        add_event(session, request_id, "certificate_active", source=self.source, fqdn=fqdn,
                                  serial=serial, not_after=row.not_after.isoformat())
                elif row.issued_at <= next(r.issued_at for r in rows if r.serial == serial):
                    row.state, row.ended_at = "superseded", now

    def discard(self, fqdn: str, serial: str, request_id: str | None, reason: str) -> None:
        """A pending certificate that could not be installed: kept for the count, marked failed."""
        with self.store.session() as session:
            row = session.scalar(select(CertificateRow).where(CertificateRow.fqdn == fqdn,
                                                              CertificateRow.serial == serial))
            if row is not None and row.state == "pending":
                row.state, row.ended_at = "failed", utcnow()
                add_event(session, request_id, "certificate_not_installed", source=self.source, fqdn=fqdn,
                          serial=serial, reason=reason)

    # -- removal --

    def retire(self, fqdn: str, request_id: str | None) -> list[str]:
        """A removed site's certificates: the CA is asked to revoke those still valid (ACME), and
        every key is dropped. Returns the problems (a revocation the CA refused); never raises."""
        problems = []
        now = utcnow()
        for row in self.rows(fqdn):
            if row.key_sealed is None and row.state in ("revoked", "removed"):
                continue
            state, note = "removed", None
            if row.source == "acme" and row.state in ("pending", "active", "superseded", "failed") \
                    and row.not_after > now:
                try:
                    self.client().revoke(row.cert_pem, reason="cessationOfOperation")
                    state = "revoked"
                except ProvisionerError as err:
                    note = str(err)
                    problems.append(f"certificate {row.serial}: not revoked: {err}")
            with self.store.session() as session:
                live = session.get(CertificateRow, row.id)
                live.state, live.ended_at, live.key_sealed = state, now, None
                add_event(session, request_id, "certificate_revoked" if state == "revoked" else "certificate_removed",
                          source=self.source, fqdn=fqdn, serial=row.serial,
                          **({"revocation_failed": note} if note else {}))
        return problems


def _check_route(url: str) -> None:
    """A CA in the lab is contacted only while the lab is up, whether its URL names an address or a name."""
    import ipaddress
    from urllib.parse import urlparse

    host = urlparse(url).hostname
    if not host:
        raise ConfigError(f"hosting.acme.directory: {url!r} is not an https URL")
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
        except OSError as err:
            raise AcmeError(f"ACME CA {url}: cannot resolve {host}: {err}", url=url, code="connection") from None
    for address in addresses:
        ssh.check_route(address)
