"""Certificates from an ACME CA (RFC 8555), through certbot's `acme` library.

The library does the protocol: JWS signing, nonces (a `badNonce` answer is
retried once by `acme.client.ClientNetwork.post`), orders, challenges and
polling. This module adds what the toolkit needs around it: the account key as
PEM for the caller to seal, the challenge handed to a publisher (DNS-01 or
HTTP-01), bounded waits, and one `AcmeError` naming the CA and the cause for
every failure.

Where a site's private key is made, and why: on the controller, in memory, by
`new_site_key()`. The controller already holds every secret it hands out
(SecretBox), so the key is sealed into the store like the passwords and can be
installed again on a rebuilt or second web host without a new issuance (which
the CA's weekly limit makes costly). It reaches the web host only inside the
runner's private secrets file (mode 0600, memory-backed, removed after the
run; see `runner.run`), never in argv, a log, an artifact, or the state
database in plain text. Only the CSR, which holds the public key, goes to the
CA. Making the key on the web host would keep it on one machine, but then a
second host or a rebuild needs a new certificate, and reading it back to
install elsewhere would move it anyway.

Used by provisioner/certificates.py, which keeps the records and the keys.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import josepy as jose
import requests
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from provisioner.errors import AcmeError

log = logging.getLogger(__name__)

USER_AGENT = "provisioner"
# Seconds one HTTP request to the CA may take.
REQUEST_TIMEOUT = 30
# Seconds an order may take from its challenges being answered to the certificate.
ORDER_TIMEOUT = 180
# Seconds between two looks at the orders still waiting, unless the CA asks for longer.
SWEEP_SECONDS = 0.5

# RFC 5280 reason codes accepted by Let's Encrypt for a subscriber's revocation.
REVOCATION_REASONS = {"unspecified": 0, "keyCompromise": 1, "superseded": 4, "cessationOfOperation": 5}


# --- keys ------------------------------------------------------------------

def _pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def new_account_key(kind: str = "ec") -> str:
    """A new ACME account key as PEM: the caller seals it with SecretBox and stores only the token."""
    if kind == "ec":
        return _pem(ec.generate_private_key(ec.SECP256R1()))
    if kind == "rsa":
        return _pem(rsa.generate_private_key(public_exponent=65537, key_size=3072))
    raise ValueError(f"account key kind must be ec or rsa, not {kind!r}")


def new_site_key() -> str:
    """A site's private key (EC P-256) as PEM, made in memory on the controller (see the module doc)."""
    return _pem(ec.generate_private_key(ec.SECP256R1()))


def make_csr(site_key_pem: str, names: list[str]) -> bytes:
    """The CSR for `names` (first = subject); it carries only the public half of the key."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    return crypto_util.make_csr(site_key_pem.encode(), list(dict.fromkeys(names)))


def _jwk(account_key_pem: str) -> tuple[jose.JWK, jose.JWASignature]:
    try:
        key = serialization.load_pem_private_key(account_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        # The message must not quote the key.
        raise AcmeError("the ACME account key is not a readable PEM private key", code="account-key") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": jose.ES256, "secp384r1": jose.ES384, "secp521r1": jose.ES512}
        if key.curve.name not in algs:
            raise AcmeError(f"ACME account key curve {key.curve.name} is not supported", code="account-key")
        return jose.JWKEC(key=key), algs[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=key), jose.RS256
    raise AcmeError("the ACME account key must be EC or RSA", code="account-key")


# --- challenge publishers -------------------------------------------------

class Dns01Publisher(abc.ABC):
    """Serves DNS-01 TXT records. `records` maps a record name (`_acme-challenge.<name>`, no
    trailing dot) to its TXT values; several names come at once so that a DNS API can change a
    whole zone in one request. `publish` returns only once every authoritative server answers
    with the records (the CA asks them, not us)."""

    challenge = challenges.DNS01

    @abc.abstractmethod
    def publish(self, records: dict[str, list[str]]) -> None: ...

    @abc.abstractmethod
    def cleanup(self, records: dict[str, list[str]]) -> None: ...


class Http01Publisher(abc.ABC):
    """Serves HTTP-01 responses. `files` maps a name to {path: body}, the path being
    `/.well-known/acme-challenge/<token>`, to be served over plain HTTP on port 80 of that name."""

    challenge = challenges.HTTP01

    @abc.abstractmethod
    def publish(self, files: dict[str, dict[str, str]]) -> None: ...

    @abc.abstractmethod
    def cleanup(self, files: dict[str, dict[str, str]]) -> None: ...


# --- results ----------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    uri: str
    contact: tuple[str, ...]
    created: bool  # False when the CA already knew the key


@dataclass(frozen=True)
class Issued:
    names: tuple[str, ...]
    fullchain_pem: str  # leaf first, then the intermediates, as served by Apache
    cert_pem: str
    chain_pem: str
    not_after: dt.datetime  # UTC
    serial: int
    # Set when the challenge records could not be removed; the certificate is still good.
    cleanup_error: str | None = field(default=None)


def split_pem_chain(fullchain_pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(fullchain_pem.encode())


# --- the client -------------------------------------------------------------

class AcmeClient:
    """One ACME account at one CA.

    `ca_bundle` is the file of CA certificates that the directory URL's HTTPS is checked
    against (Pebble serves its own test certificate); None uses the system store.
    """

    def __init__(self, directory_url: str, account_key_pem: str, *, ca_bundle: Path | None = None,
                 timeout: int = REQUEST_TIMEOUT):
        self.directory_url = directory_url
        self.timeout = timeout
        key, alg = _jwk(account_key_pem)
        self._key = key
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise AcmeError(f"CA bundle {ca_bundle} for {directory_url} not found", url=directory_url,
                            code="tls")
        self.ca_bundle = ca_bundle
        # requests takes a bundle path where the library's signature says bool.
        self._net = client.ClientNetwork(key, alg=alg, user_agent=USER_AGENT, timeout=timeout,
                                         verify_ssl=str(ca_bundle) if ca_bundle else True)
        with self._errors("reading the directory"):
            self._client = client.ClientV2(client.ClientV2.get_directory(directory_url, self._net), self._net)
        self.account: Account | None = None

    # Every call into the library goes through this, so that no failure leaves as anything
    # but an AcmeError that names the CA, and no requests traceback is chained to it.
    @contextlib.contextmanager
    def _errors(self, doing: str, order_timeout: int = ORDER_TIMEOUT):
        url = self.directory_url
        try:
            yield
        except AcmeError:
            raise
        except messages.Error as err:
            code = err.code or "error"
            text = err.detail or err.description or str(err)
            if err.subproblems:
                text += "; " + "; ".join(
                    f"{p.identifier.value if p.identifier else '?'}: {p.detail}" for p in err.subproblems)
            hint = {
                "rateLimited": " (the CA's rate limit; wait before retrying)",
                "badNonce": " (refused twice in a row; retry later)",
                "unauthorized": " (the account may not do this)",
            }.get(code, "")
            raise AcmeError(f"ACME CA {url}: {doing}: {code}: {text}{hint}", url=url, code=code) from None
        except requests.exceptions.SSLError as err:
            raise AcmeError(f"ACME CA {url}: {doing}: TLS verification failed against "
                            f"{self.ca_bundle or 'the system CA store'}: {_reason(err)}",
                            url=url, code="tls") from None
        except requests.exceptions.Timeout:  # before ConnectionError: ConnectTimeout is both
            raise AcmeError(f"ACME CA {url}: {doing}: no answer within {self.timeout} s",
                            url=url, code="timeout") from None
        except requests.exceptions.ConnectionError as err:
            raise AcmeError(f"ACME CA {url}: {doing}: cannot connect: {_reason(err)}",
                            url=url, code="connection") from None
        except requests.exceptions.RequestException as err:
            raise AcmeError(f"ACME CA {url}: {doing}: {_reason(err)}", url=url, code="http") from None
        except acme_errors.TimeoutError:
            raise AcmeError(f"ACME CA {url}: {doing}: the order was not done within {order_timeout} s",
                            url=url, code="timeout") from None
        except acme_errors.ValidationError as err:
            failed = []
            for authzr in err.failed_authzrs:
                for chall in authzr.body.challenges:
                    if chall.error is not None:
                        failed.append(f"{authzr.body.identifier.value}: {chall.error.code}: {chall.error.detail}")
            raise AcmeError(f"ACME CA {url}: {doing}: validation failed: {'; '.join(failed)}",
                            url=url, code="validation") from None
        except acme_errors.IssuanceError as err:
            raise AcmeError(f"ACME CA {url}: {doing}: order refused: {err.error.code}: {err.error.detail}",
                            url=url, code=err.error.code or "issuance") from None
        except acme_errors.Error as err:
            raise AcmeError(f"ACME CA {url}: {doing}: {err}", url=url, code="protocol") from None

    # --- account ---

    def register(self, email: str) -> Account:
        """Create the account for this key (terms agreed), or find the one the CA already has."""
        reg = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
        with self._errors(f"registering the account for {email}"):
            try:
                regr = self._client.new_account(reg)
                created = True
            except acme_errors.ConflictError as existing:
                # RFC 8555 7.3.1: the key is known; the CA answered with the account's URL.
                self._net.account = messages.RegistrationResource(uri=existing.location, body=reg)
                regr = self._client.query_registration(self._net.account)
                created = False
        self.account = Account(uri=regr.uri, contact=tuple(regr.body.contact or ()), created=created)
        log.info("ACME account %s at %s (%s)", regr.uri, self.directory_url, "created" if created else "found")
        return self.account

    def find_account(self) -> Account | None:
        """The CA's account for this key, or None; creates nothing."""
        # query_registration asks newAccount with onlyReturnExisting (RFC 8555 7.3.1).
        with self._errors("looking up the account"):
            try:
                regr = self._client.query_registration(messages.RegistrationResource(body=messages.Registration()))
            except messages.Error as err:
                if err.code == "accountDoesNotExist":
                    self._net.account = None
                    return None
                raise
        self.account = Account(uri=regr.uri, contact=tuple(regr.body.contact or ()), created=False)
        return self.account

    def _need_account(self) -> None:
        if self.account is None and self.find_account() is None:
            raise AcmeError(f"ACME CA {self.directory_url}: no account for this key; register first",
                            url=self.directory_url, code="accountDoesNotExist")

    # --- issuance ---

    def issue(self, csr_pem: bytes, publisher: Dns01Publisher | Http01Publisher, *,
              order_timeout: int = ORDER_TIMEOUT) -> Issued:
        """Order a certificate for the CSR's names, answer the challenges through `publisher`,
        and return the chain. Challenge records are removed whether or not issuance succeeds."""
        (result,) = self.issue_many([csr_pem], publisher, order_timeout=order_timeout)
        if isinstance(result, AcmeError):
            raise result
        return result

    def issue_many(self, csrs: list[bytes], publisher: Dns01Publisher | Http01Publisher, *,
                   order_timeout: int = ORDER_TIMEOUT) -> list[Issued | AcmeError]:
        """One order per CSR, their challenges published together (one `publish` call, so a DNS
        API changes each zone once) and removed together afterwards. Returns, in the order of
        `csrs`, each certificate or the AcmeError that stopped its order: one order failing
        does not stop the others.
        """
        self._need_account()
        results: list[Issued | AcmeError | None] = [None] * len(csrs)
        orders = {}  # index -> (order, names, csr, pending)
        for i, csr_pem in enumerate(csrs):
            csr = x509.load_pem_x509_csr(csr_pem)
            names = tuple(crypto_util.get_names_from_subject_and_extensions(csr.subject, csr.extensions))
            try:
                with self._errors(f"ordering a certificate for {', '.join(names)}"):
                    order = self._client.new_order(csr_pem)
                pending = [(authzr, self._pick(authzr, publisher.challenge)) for authzr in order.authorizations
                           if authzr.body.status != messages.STATUS_VALID]  # a valid one is reused as is
            except AcmeError as err:
                results[i] = err
                continue
            orders[i] = (order, names, csr, pending)
        pending_all = [p for (_o, _n, _c, pending) in orders.values() for p in pending]
        published = self._responses(pending_all, publisher)
        cleanup_error = None
        try:
            if pending_all:
                try:
                    publisher.publish(published)
                except Exception as err:  # noqa: BLE001 - every order waiting on it fails with the cause
                    failed = err if isinstance(err, AcmeError) else AcmeError(
                        f"ACME CA {self.directory_url}: publishing the challenges failed: {err}",
                        url=self.directory_url, code="challenge")
                    for i, (_o, _n, _c, pending) in list(orders.items()):
                        if pending:
                            results[i] = failed
                            del orders[i]
            deadline = dt.datetime.now() + dt.timedelta(seconds=order_timeout)  # naive: the library's clock
            # Answer every challenge first, so that the CA validates them all at once.
            for i, (order, names, _csr, pending) in list(orders.items()):
                try:
                    with self._errors(f"validating {', '.join(names)}", order_timeout):
                        for _authzr, challb in pending:
                            self._client.answer_challenge(challb, challb.chall.response(self._key))
                except AcmeError as err:
                    results[i] = err
                    del orders[i]
            self._settle(orders, results, deadline, order_timeout)
        finally:
            if pending_all:
                try:
                    publisher.cleanup(published)
                except Exception as err:  # the certificate (or the first error) matters more
                    cleanup_error = f"{type(err).__name__}: {err}"
                    log.warning("challenge records not removed: %s", cleanup_error)
        for i, (order, names, csr, _pending) in orders.items():
            try:
                results[i] = self._issued(order.fullchain_pem, csr, names, cleanup_error)
            except AcmeError as err:
                results[i] = err
        return results

    # The library's poll_authorizations and poll_finalization sleep a whole second before
    # each look at one order, so a hundred orders cost a hundred seconds of sleep. These
    # sweeps look at every unfinished order in turn and sleep once per sweep (at most
    # until the earliest time the CA asked for with Retry-After), so a batch waits about
    # as long as its slowest order.
    def _settle(self, orders: dict, results: list, deadline: dt.datetime, order_timeout: int) -> None:
        """Poll every order's authorizations until none is pending, finalize each order whose
        authorizations are all valid, and poll the orders until each has its certificate. An
        order that fails gets its AcmeError in `results` and leaves `orders`; the rest go on."""
        def fail(i, err):
            results[i] = err
            del orders[i]

        def doing(what, i):
            return f"{what} {', '.join(orders[i][1])}"

        # 1. Authorizations: per order, those still pending, and those decided.
        waiting = {i: list(order.authorizations) for i, (order, _n, _c, _p) in orders.items()}
        decided: dict[int, list] = {i: [] for i in waiting}
        while waiting:
            if dt.datetime.now() >= deadline:
                for i in list(waiting):
                    fail(i, self._timed_out(doing("validating", i), order_timeout))
                break
            for i in list(waiting):
                try:
                    with self._errors(doing("validating", i), order_timeout):
                        still = []
                        for authzr in waiting[i]:
                            authzr, _response = self._client.poll(authzr)
                            (still if authzr.body.status == messages.STATUS_PENDING else decided[i]).append(authzr)
                        waiting[i] = still
                        if not still:
                            del waiting[i]
                            if any(a.body.status != messages.STATUS_VALID for a in decided[i]):
                                raise acme_errors.ValidationError(
                                    [a for a in decided[i] if a.body.status != messages.STATUS_VALID])
                except AcmeError as err:
                    waiting.pop(i, None)
                    fail(i, err)
            if waiting:
                self._pause(deadline)

        # 2. Finalization: one request per order, then sweeps until each has its chain.
        due: dict[int, dt.datetime] = {}
        for i, (order, names, csr, pending) in list(orders.items()):
            try:
                with self._errors(doing("finalizing the order for", i), order_timeout):
                    order = self._client.begin_finalization(order.update(authorizations=decided[i]))
                orders[i] = (order, names, csr, pending)
                due[i] = dt.datetime.now()
            except AcmeError as err:
                fail(i, err)
        while due:
            now = dt.datetime.now()
            if now >= deadline:
                for i in list(due):
                    fail(i, self._timed_out(doing("finalizing the order for", i), order_timeout))
                break
            for i in [i for i, when in due.items() if when <= now]:
                order, names, csr, pending = orders[i]
                try:
                    with self._errors(doing("finalizing the order for", i), order_timeout):
                        response = self._client._post_as_get(order.uri)  # the library has no public order poll
                        body = messages.Order.from_json(response.json())
                        if body.status == messages.STATUS_INVALID:
                            if body.error is not None:
                                raise acme_errors.IssuanceError(body.error)
                            raise acme_errors.Error("the order became invalid and the CA gave no reason")
                        if body.status == messages.STATUS_VALID and body.certificate is not None:
                            chain = self._client._post_as_get(body.certificate).text
                            orders[i] = (order.update(body=body, fullchain_pem=chain), names, csr, pending)
                            del due[i]
                        elif body.status == messages.STATUS_READY:  # the finalize request was not taken: again
                            orders[i] = (self._client.begin_finalization(order), names, csr, pending)
                            due[i] = dt.datetime.now() + dt.timedelta(seconds=SWEEP_SECONDS)
                        else:  # processing: come back when the CA says, or after a sweep
                            due[i] = self._client.retry_after(response, SWEEP_SECONDS)
                except AcmeError as err:
                    due.pop(i, None)
                    fail(i, err)
            if due:
                self._pause(deadline, min(due.values()))

    @staticmethod
    def _pause(deadline: dt.datetime, until: dt.datetime | None = None) -> None:
        """Sleep until the next sweep, never past the deadline."""
        now = dt.datetime.now()
        wake = min(until or now + dt.timedelta(seconds=SWEEP_SECONDS), deadline)
        time.sleep(max(0.0, (wake - now).total_seconds()))

    def _timed_out(self, doing: str, order_timeout: int) -> AcmeError:
        try:
            with self._errors(doing, order_timeout):
                raise acme_errors.TimeoutError()
        except AcmeError as err:
            return err

    def _pick(self, authzr, kind) -> messages.ChallengeBody:
        for challb in authzr.body.challenges:
            if isinstance(challb.chall, kind):
                return challb
        offered = ", ".join(c.chall.typ for c in authzr.body.challenges)
        raise AcmeError(f"ACME CA {self.directory_url}: {authzr.body.identifier.value}: no {kind.typ} challenge "
                        f"offered (offered: {offered})", url=self.directory_url, code="challenge")

    def _responses(self, pending, publisher) -> dict:
        out: dict = {}
        for authzr, challb in pending:
            name = authzr.body.identifier.value
            if isinstance(publisher, Dns01Publisher):
                # A wildcard and its base name share one record name, so values are a list.
                out.setdefault(challb.chall.validation_domain_name(name), []).append(
                    challb.chall.validation(self._key))
            else:
                out.setdefault(name, {})[challb.chall.path] = challb.chall.validation(self._key)
        return out

    def _issued(self, fullchain_pem: str, csr: x509.CertificateSigningRequest, names, cleanup_error) -> Issued:
        certs = split_pem_chain(fullchain_pem)
        leaf = certs[0]
        # Defence: the CA must have certified our key for our names, nothing else.
        if leaf.public_key().public_numbers() != csr.public_key().public_numbers():
            raise AcmeError(f"ACME CA {self.directory_url}: the certificate is not for the CSR's key",
                            url=self.directory_url, code="mismatch")
        covered = set(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                      .get_values_for_type(x509.DNSName))
        if not set(names) <= covered:
            raise AcmeError(f"ACME CA {self.directory_url}: the certificate lacks {sorted(set(names) - covered)}",
                            url=self.directory_url, code="mismatch")
        pem = [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]
        return Issued(names=names, fullchain_pem="".join(pem), cert_pem=pem[0], chain_pem="".join(pem[1:]),
                      not_after=leaf.not_valid_after_utc, serial=leaf.serial_number, cleanup_error=cleanup_error)

    # --- revocation ---

    def revoke(self, cert_pem: str, reason: str = "unspecified") -> None:
        """Ask the CA to revoke a certificate this account obtained."""
        if reason not in REVOCATION_REASONS:
            raise ValueError(f"revocation reason must be one of {sorted(REVOCATION_REASONS)}")
        self._need_account()
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        with self._errors(f"revoking certificate {cert.serial_number:x}"):
            self._client.revoke(cert, REVOCATION_REASONS[reason])
        log.info("certificate %x revoked at %s (%s)", cert.serial_number, self.directory_url, reason)


def _reason(err: Exception) -> str:
    # requests nests the cause (MaxRetryError -> NewConnectionError -> OSError); the innermost
    # message says what happened ("Connection refused") without the pool's noise.
    inner = err
    while True:
        nxt = getattr(inner, "reason", None) or inner.__cause__ or inner.__context__
        if nxt is None or nxt is inner or isinstance(nxt, str):
            break
        inner = nxt
    text = str(inner)
    return text.split(": ", 1)[-1] if "Failed to establish a new connection" in text else text
