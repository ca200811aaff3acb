"""certificates.served against a real TLS server on 127.0.0.1: what a visitor sees, in one handshake."""

import datetime as dt
import os
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioner import certificates
from provisioner.errors import HostError

UTC = dt.timezone.utc
NAME = "simkes.tarakankota.go.id"


def _ca(common_name):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key, ca_cert, days=20):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


@pytest.fixture
def tls_server(tmp_path):
    """A TLS server on 127.0.0.1 serving a leaf of its own CA; counts the handshakes it completes."""
    ca_key, ca_cert = _ca("served test CA")
    key, cert = _leaf(ca_key, ca_cert)
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    handshakes, stop = [], threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    handshakes.append(tls.version())
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {"port": listener.getsockname()[1], "ca": tmp_path / "ca.pem", "serial": cert.serial_number,
           "handshakes": handshakes, "dir": tmp_path}
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_a_trusted_certificate_is_read_in_one_handshake(tls_server):
    facts = certificates.served("127.0.0.1", NAME, tls_server["ca"], port=tls_server["port"])
    assert facts["trusted"] is True and facts["trust_error"] is None and facts["covers"]
    assert facts["serial"] == f"{tls_server['serial']:x}"
    assert 19 <= facts["days_left"] <= 20
    # The server thread notes a handshake just after the client's side of it ends.
    deadline = time.monotonic() + 5
    while not tls_server["handshakes"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert len(tls_server["handshakes"]) == 1


def test_an_untrusted_chain_is_said_and_the_certificate_still_read(tls_server):
    _other_key, other_ca = _ca("some other CA")
    other = tls_server["dir"] / "other.pem"
    other.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    facts = certificates.served("127.0.0.1", NAME, other, port=tls_server["port"])
    assert facts["trusted"] is False and "unable to get local issuer certificate" in facts["trust_error"]
    assert facts["covers"] and NAME in facts["names"]
    assert facts["days_left"] > 19


def test_a_changed_ca_file_is_read_again(tls_server):
    other = tls_server["dir"] / "trust.pem"
    _k, other_ca = _ca("some other CA")
    other.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    assert certificates.served("127.0.0.1", NAME, other, port=tls_server["port"])["trusted"] is False
    other.write_bytes(tls_server["ca"].read_bytes())
    stat = other.stat()
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert certificates.served("127.0.0.1", NAME, other, port=tls_server["port"])["trusted"] is True


def test_nothing_listening_is_a_host_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HostError, match=f"{NAME}: no TLS answer at 127.0.0.1:{port}"):
        certificates.served("127.0.0.1", NAME, None, port=port, timeout=2)
