"""The ACME client against a real Pebble on 127.0.0.1, and the issuance limit.

Pebble runs with PEBBLE_VA_ALWAYS_VALID=1: it accepts every challenge answer without
looking up the record or fetching the file, because no resolver or web server for
these names is reachable here. So these tests prove the protocol (account, order,
the exact challenge records handed to the publisher, cleanup, finalization, chain,
revocation, errors), not that DNS-01 records are served; the lab wiring does real
DNS-01 against the lab's PowerDNS. Pebble is also pointed at a DNS port on loopback
where nothing listens, so nothing leaves the machine.
"""

import datetime as dt
import ipaddress
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from provisioner import acme, issuance_limit
from provisioner.errors import AcmeError, HostError

NAMES = ["simkes.tarakankota.go.id", "www.simkes.tarakankota.go.id"]
_LABELS = itertools.count(1)
UTC = dt.timezone.utc


# --- Pebble -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _https_identity(directory):
    """A throwaway CA and a 127.0.0.1/localhost certificate for Pebble's HTTPS.

    Debian's pebble package does not ship upstream's test/certs (minica) files, so the
    test makes its own; the CA file is the bundle the client is given.
    """
    now = dt.datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test HTTPS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {n: directory / n for n in ("ca.pem", "cert.pem", "key.pem")}
    paths["ca.pem"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key.pem"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return paths


class Pebble:
    def __init__(self, directory, **env_overrides):
        binary = shutil.which("pebble")
        if binary is None:
            pytest.fail("pebble is not installed: `make install` installs it (Debian package pebble)")
        self.tls = _https_identity(directory)
        self.acme_port, self.mgmt_port = _free_port(), _free_port()
        config = directory / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(self.tls["cert.pem"]),
            "privateKey": str(self.tls["key.pem"]),
            # Validation ports: unused with ALWAYS_VALID, but required.
            "httpPort": _free_port(),
            "tlsPort": _free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}))
        env = dict(os.environ,
                   PEBBLE_VA_NOSLEEP="1", PEBBLE_VA_ALWAYS_VALID="1",
                   # Pebble refuses 5% of nonces and reuses half the valid authorizations by
                   # default; both off so that a run is deterministic (the library retries a
                   # badNonce once, which a 5% rate would defeat now and then).
                   PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        env.update(env_overrides)
        self.log = (directory / "pebble.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "-config", str(config), "-dnsserver", f"127.0.0.1:{_free_port()}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=directory)
        self.url = f"https://127.0.0.1:{self.acme_port}/dir"
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(self.url, verify=self.ca_bundle, timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"pebble did not start; its log: {(directory / 'pebble.log').read_text()[-2000:]}")
                time.sleep(0.2)

    @property
    def ca_bundle(self):
        return self.tls["ca.pem"]

    def management(self, path):
        response = requests.get(f"https://127.0.0.1:{self.mgmt_port}{path}", verify=self.ca_bundle, timeout=10)
        response.raise_for_status()
        return response

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    server = Pebble(tmp_path_factory.mktemp("pebble"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def account_key():
    return acme.new_account_key()


@pytest.fixture(scope="module")
def registered(pebble, account_key):
    client = acme.AcmeClient(pebble.url, account_key, ca_bundle=pebble.ca_bundle)
    client.register("kominfo@tarakankota.go.id")
    return client


@pytest.fixture
def names():
    """Two names no earlier order of this module has validated. A test that counts what is
    published orders names of its own: an authorization an earlier test made valid may be
    reused by the CA, and nothing is published for a reused one."""
    label = f"uji{next(_LABELS)}"
    return [f"{label}.tarakankota.go.id", f"www.{label}.tarakankota.go.id"]


class RecordingDns01(acme.Dns01Publisher):
    def __init__(self):
        self.published, self.cleaned = [], []

    def publish(self, records):
        self.published.append(json.loads(json.dumps(records)))

    def cleanup(self, records):
        self.cleaned.append(json.loads(json.dumps(records)))


class RecordingHttp01(acme.Http01Publisher):
    def __init__(self):
        self.published, self.cleaned = [], []

    def publish(self, files):
        self.published.append(files)

    def cleanup(self, files):
        self.cleaned.append(files)


def _issue(client, names, publisher=None):
    site_key = acme.new_site_key()
    publisher = publisher or RecordingDns01()
    return site_key, publisher, client.issue(acme.make_csr(site_key, names), publisher)


# --- account ----------------------------------------------------------------

def test_account_is_created_then_found_again_with_the_same_key(pebble):
    key = acme.new_account_key("rsa")
    fresh = acme.AcmeClient(pebble.url, key, ca_bundle=pebble.ca_bundle)
    assert fresh.find_account() is None
    made = fresh.register("kominfo@tarakankota.go.id")
    assert made.created and made.contact == ("mailto:kominfo@tarakankota.go.id",)

    again = acme.AcmeClient(pebble.url, key, ca_bundle=pebble.ca_bundle)
    found = again.register("kominfo@tarakankota.go.id")
    assert not found.created and found.uri == made.uri
    assert acme.AcmeClient(pebble.url, key, ca_bundle=pebble.ca_bundle).find_account().uri == made.uri


def test_issuing_without_an_account_says_so(pebble):
    client = acme.AcmeClient(pebble.url, acme.new_account_key(), ca_bundle=pebble.ca_bundle)
    with pytest.raises(AcmeError, match="no account for this key") as caught:
        _issue(client, NAMES[:1])
    assert caught.value.code == "accountDoesNotExist"


# --- issuance ---------------------------------------------------------------

def test_certificate_for_two_names_chains_to_pebbles_root_and_keeps_the_key_out_of_logs(
        pebble, account_key, registered, caplog):
    caplog.set_level(logging.DEBUG)  # the library logs every request and response at DEBUG
    site_key, publisher, issued = _issue(registered, NAMES)

    leaf, *intermediates = acme.split_pem_chain(issued.fullchain_pem)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(NAMES)
    assert issued.names == tuple(NAMES) and intermediates and issued.cleanup_error is None
    assert issued.not_after == leaf.not_valid_after_utc > dt.datetime.now(UTC)
    site_public = serialization.load_pem_private_key(site_key.encode(), None).public_key()
    assert leaf.public_key().public_numbers() == site_public.public_numbers()

    root = x509.load_pem_x509_certificate(pebble.management("/roots/0").content)
    for name in NAMES:
        verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(name))
        chain = verifier.verify(leaf, intermediates)
        assert chain[-1] == root

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Sending POST request" in logged  # the capture did see the library's traffic
    assert "PRIVATE KEY" not in logged
    for secret in (site_key, account_key):
        for form in _private_forms(secret):
            assert form not in logged


def _private_forms(pem):
    """The ways a private key could show up in a log: its PEM lines that hold the private
    value (the tail of a PKCS#8 EC key is the public point, also in the certificate), and the
    private scalar as hex, decimal, base64 and base64url (the JWK `d` form)."""
    import base64
    key = serialization.load_pem_private_key(pem.encode(), None)
    secret = key.private_numbers().private_value if hasattr(key, "curve") else key.private_numbers().d
    raw = secret.to_bytes((secret.bit_length() + 7) // 8, "big")
    lines = pem.splitlines()[1:3] if hasattr(key, "curve") else []  # RSA's first lines hold n (public)
    return lines + [f"{secret:x}", str(secret), base64.b64encode(raw).decode()[:-4],
                    base64.urlsafe_b64encode(raw).decode().rstrip("=")[:-4]]


def test_publisher_gets_exactly_the_txt_records_and_cleans_each_up(pebble, registered, names):
    _site_key, publisher, _issued = _issue(registered, names)
    assert len(publisher.published) == 1, "one publish for the whole order (one PATCH per zone later)"
    records = publisher.published[0]
    assert sorted(records) == sorted(f"_acme-challenge.{n}" for n in names)
    for values in records.values():
        assert len(values) == 1 and len(values[0]) == 43  # base64url SHA-256 of the key authorization
    assert publisher.cleaned == [records]

    # The values are the ones RFC 8555 8.4 derives from the tokens the CA gave this order.
    order_values = set()
    for authz in pebble_authorizations(registered, names):
        for challb in authz.body.challenges:
            if challb.chall.typ == "dns-01":
                order_values.add(challb.chall.validation(registered._key))
    assert {v for vs in records.values() for v in vs} == order_values


def pebble_authorizations(client, names):
    """The authorizations of the account's last order for `names`, read back from the CA."""
    from acme import messages
    orders_url = client._client._post_as_get(client.account.uri).json()["orders"]
    for url in reversed(client._client._post_as_get(orders_url).json()["orders"]):
        order = messages.Order.from_json(client._client._post_as_get(url).json())
        if {i.value for i in order.identifiers} == set(names):
            return [messages.AuthorizationResource.from_json({"body": client._client._post_as_get(a).json(),
                                                               "uri": a}) for a in order.authorizations]
    raise AssertionError("order not found")


def test_http01_publisher_gets_the_well_known_files(registered, names):
    publisher = RecordingHttp01()
    _site_key, _, issued = _issue(registered, names[:1], publisher)
    [files] = publisher.published
    [(name, paths)] = files.items()
    assert name == names[0]
    [(path, body)] = paths.items()
    token = path.rsplit("/", 1)[1]
    assert path.startswith("/.well-known/acme-challenge/") and body.startswith(token + ".")
    assert publisher.cleaned == [files] and issued.names == (names[0],)


def test_cleanup_runs_when_the_order_fails_and_the_error_names_the_ca(pebble, registered, monkeypatch, names):
    publisher = RecordingDns01()

    def refuse(*args, **kwargs):
        from acme import messages
        raise messages.Error.with_code("rejectedIdentifier", detail="not ours")

    monkeypatch.setattr(registered._client, "begin_finalization", refuse)
    with pytest.raises(AcmeError, match=f"{pebble.url}.*rejectedIdentifier: not ours") as caught:
        _issue(registered, names[:1], publisher)
    assert publisher.cleaned == publisher.published != []
    assert caught.value.code == "rejectedIdentifier" and caught.value.__cause__ is None


def test_a_batch_of_orders_is_polled_in_sweeps_and_one_refused_order_stops_no_other(registered, monkeypatch):
    # The library's own polling sleeps a second per order; a batch must sleep per sweep.
    names = [f"s{n}.tarakankota.go.id" for n in range(12)]
    csrs = [acme.make_csr(acme.new_site_key(), [name]) for name in names]
    sleeps = []
    real_sleep = acme.time.sleep
    monkeypatch.setattr(acme.time, "sleep", lambda seconds: (sleeps.append(seconds), real_sleep(seconds)))
    real_finalize = registered._client.begin_finalization

    def refuse_s5(order):
        if _names_of(order) == ["s5.tarakankota.go.id"]:
            from acme import messages
            raise messages.Error.with_code("rejectedIdentifier", detail="not this one")
        return real_finalize(order)

    monkeypatch.setattr(registered._client, "begin_finalization", refuse_s5)
    publisher = RecordingDns01()
    results = registered.issue_many(csrs, publisher)

    failed = {names[i]: r for i, r in enumerate(results) if isinstance(r, AcmeError)}
    assert list(failed) == ["s5.tarakankota.go.id"]
    assert "rejectedIdentifier: not this one" in str(failed["s5.tarakankota.go.id"])
    issued = [r for r in results if not isinstance(r, AcmeError)]
    assert [r.names for r in issued] == [(n,) for n in names if n != "s5.tarakankota.go.id"]
    assert len(publisher.published) == 1 and publisher.cleaned == publisher.published
    assert len(sleeps) < len(names) // 2, sleeps


def _names_of(order):
    csr = x509.load_pem_x509_csr(order.csr_pem)
    return [v.value for v in csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]


def test_a_cleanup_failure_does_not_lose_the_certificate(registered):
    class Failing(RecordingDns01):
        def cleanup(self, records):
            raise OSError("PowerDNS API unreachable")

    _site_key, _, issued = _issue(registered, NAMES[:1], Failing())
    assert issued.cert_pem and "PowerDNS API unreachable" in issued.cleanup_error


def test_an_order_not_done_in_time_is_a_timeout_and_its_records_are_removed(registered, names):
    publisher = RecordingDns01()
    csr = acme.make_csr(acme.new_site_key(), names[:1])
    # Which stage runs out first depends on how fast the CA validated (a loaded machine): either is the timeout.
    with pytest.raises(AcmeError, match=f"{registered.directory_url}: (validating|finalizing) .*not done within 0 s") \
            as caught:
        registered.issue(csr, publisher, order_timeout=0)
    assert caught.value.code == "timeout"
    assert len(publisher.published) == 1 and publisher.cleaned == publisher.published


def test_authorizations_already_valid_are_reused_without_publishing(tmp_path):
    server = Pebble(tmp_path, PEBBLE_AUTHZREUSE="100")
    try:
        client = acme.AcmeClient(server.url, acme.new_account_key(), ca_bundle=server.ca_bundle)
        client.register("kominfo@tarakankota.go.id")
        first, second = RecordingDns01(), RecordingDns01()
        _issue(client, NAMES, first)
        _site_key, _, issued = _issue(client, NAMES, second)
        assert first.published and second.published == second.cleaned == []
        assert issued.names == tuple(NAMES)
    finally:
        server.stop()


# --- revocation -------------------------------------------------------------

def test_revocation_is_recorded_and_a_second_one_refused(pebble, registered):
    _site_key, _, issued = _issue(registered, NAMES[:1])
    other = acme.AcmeClient(pebble.url, acme.new_account_key(), ca_bundle=pebble.ca_bundle)
    other.register("someone@example.org")
    with pytest.raises(AcmeError, match="unauthorized") as caught:
        other.revoke(issued.cert_pem)
    assert caught.value.code == "unauthorized"

    registered.revoke(issued.cert_pem, "cessationOfOperation")
    status = pebble.management(f"/cert-status-by-serial/{issued.serial:x}").json()
    assert status["Status"] == "Revoked" and status["Reason"] == 5
    with pytest.raises(AcmeError, match=f"ACME CA {pebble.url}: revoking .*alreadyRevoked"):
        registered.revoke(issued.cert_pem)


# --- failures ---------------------------------------------------------------

def test_ca_stopped_gives_a_clear_error_naming_the_url(tmp_path):
    server = Pebble(tmp_path)
    client = acme.AcmeClient(server.url, acme.new_account_key(), ca_bundle=server.ca_bundle)
    server.stop()
    with pytest.raises(AcmeError) as caught:
        client.register("kominfo@tarakankota.go.id")
    err = caught.value
    assert isinstance(err, HostError) and err.code == "connection" and err.url == server.url
    assert server.url in str(err) and "Connection refused" in str(err)
    assert err.__cause__ is None and err.__suppress_context__  # no requests traceback attached
    assert "HTTPSConnectionPool" not in str(err)

    with pytest.raises(AcmeError, match=f"ACME CA {server.url}: reading the directory: cannot connect"):
        acme.AcmeClient(server.url, acme.new_account_key(), ca_bundle=server.ca_bundle)


def test_wrong_ca_bundle_is_a_tls_error(pebble, tmp_path):
    other = _https_identity(tmp_path)["ca.pem"]
    with pytest.raises(AcmeError, match="TLS verification failed") as caught:
        acme.AcmeClient(pebble.url, acme.new_account_key(), ca_bundle=other)
    assert caught.value.code == "tls" and str(other) in str(caught.value)


def test_unreadable_account_key_is_refused_without_quoting_it():
    with pytest.raises(AcmeError, match="not a readable PEM") as caught:
        acme.AcmeClient("https://127.0.0.1:1/dir", "-----BEGIN PRIVATE KEY-----\nsecretish\n")
    assert "secretish" not in str(caught.value)


@pytest.mark.parametrize("code, hint", [("rateLimited", "rate limit"), ("unauthorized", "may not"),
                                        ("badNonce", "refused twice")])
def test_acme_problems_become_acme_errors(registered, monkeypatch, code, hint):
    from acme import messages

    def fail(*args, **kwargs):
        raise messages.Error.with_code(code, detail="as the CA said")

    monkeypatch.setattr(registered._client, "new_order", fail)
    with pytest.raises(AcmeError, match=f"{registered.directory_url}.*{code}: as the CA said.*{hint}") as caught:
        _issue(registered, NAMES[:1])
    assert caught.value.code == code


def test_timeouts_become_acme_errors(registered, monkeypatch):
    def slow(*args, **kwargs):
        raise requests.exceptions.ReadTimeout("read timed out")

    monkeypatch.setattr(registered._client, "new_order", slow)
    with pytest.raises(AcmeError, match=f"{registered.directory_url}.*no answer within 30 s") as caught:
        _issue(registered, NAMES[:1])
    assert caught.value.code == "timeout"


# --- the issuance limit -------------------------------------------------------

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DOMAIN = "tarakankota.go.id"


def _ago(**delta):
    return NOW - dt.timedelta(**delta)


def test_limit_allows_below_the_limit_and_with_no_record():
    assert issuance_limit.check({}, DOMAIN, 50, NOW) == issuance_limit.Slot(DOMAIN, True, 0, 50, NOW)
    slot = issuance_limit.check({DOMAIN: [_ago(days=1)] * 49}, DOMAIN, 50, NOW)
    assert slot.allowed and slot.used == 49 and slot.next_slot == NOW


def test_limit_reached_says_when_the_oldest_counted_one_leaves_the_window():
    times = [_ago(days=6, hours=h) for h in range(3)]  # 6d, 6d1h, 6d2h ago
    slot = issuance_limit.check({DOMAIN: times}, DOMAIN, 3, NOW)
    assert not slot.allowed and slot.used == 3
    assert slot.next_slot == _ago(days=6, hours=2) + dt.timedelta(days=7)  # 22 h from now


def test_limit_over_the_limit_waits_for_enough_to_leave():
    # Five recorded (a lower limit configured after they were made); limit 3: three must go.
    times = [_ago(days=d) for d in (6, 5, 4, 3, 2)]
    slot = issuance_limit.check({DOMAIN: times}, DOMAIN, 3, NOW)
    assert not slot.allowed and slot.used == 5
    assert slot.next_slot == _ago(days=4) + dt.timedelta(days=7)
    assert issuance_limit.check({DOMAIN: times}, DOMAIN, 3, slot.next_slot).allowed
    assert not issuance_limit.check({DOMAIN: times}, DOMAIN, 3, slot.next_slot - dt.timedelta(seconds=1)).allowed


def test_limit_window_boundary_is_exactly_seven_days():
    exactly = {DOMAIN: [_ago(days=7)]}
    assert issuance_limit.check(exactly, DOMAIN, 1, NOW).allowed  # a week old: no longer counted
    just_inside = {DOMAIN: [_ago(days=7) + dt.timedelta(microseconds=1)]}
    slot = issuance_limit.check(just_inside, DOMAIN, 1, NOW)
    assert not slot.allowed and slot.next_slot == NOW + dt.timedelta(microseconds=1)


def test_limit_counts_future_times_and_other_domains_do_not_count():
    ledger = {DOMAIN: [NOW + dt.timedelta(hours=1)], "bulelengkab.go.id": [_ago(hours=1)] * 10}
    slot = issuance_limit.check(ledger, DOMAIN, 1, NOW)
    assert not slot.allowed and slot.next_slot == NOW + dt.timedelta(days=7, hours=1)
    assert issuance_limit.check(ledger, DOMAIN, 2, NOW).allowed


def test_limit_rejects_bad_input():
    with pytest.raises(ValueError):
        issuance_limit.check({}, DOMAIN, 0, NOW)
    with pytest.raises(ValueError):
        issuance_limit.check({}, DOMAIN, 1, NOW.replace(tzinfo=None))


def test_registered_domain_is_the_longest_configured_suffix():
    domains = ["tarakankota.go.id", "dinkes.tarakankota.go.id", "bulelengkab.go.id"]
    assert issuance_limit.registered_domain("SIMKES.tarakankota.go.id.", domains) == "tarakankota.go.id"
    assert issuance_limit.registered_domain("a.dinkes.tarakankota.go.id", domains) == "dinkes.tarakankota.go.id"
    assert issuance_limit.registered_domain("tarakankota.go.id", domains) == "tarakankota.go.id"
    with pytest.raises(ValueError):
        issuance_limit.registered_domain("nottarakankota.go.id", domains)


def test_one_certificate_counts_once_per_registered_domain():
    ledger = {DOMAIN: [_ago(days=1)], "bulelengkab.go.id": []}
    slots = issuance_limit.check_names(ledger, NAMES + ["www.bulelengkab.go.id"],
                                       [DOMAIN, "bulelengkab.go.id"], 1, NOW)
    assert [(s.registered_domain, s.allowed) for s in slots] == [("bulelengkab.go.id", True), (DOMAIN, False)]
