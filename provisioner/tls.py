"""Certificates for sites: from the lab CA, or from files issued elsewhere.

The lab CA is made at `provision lab up`; it signs a certificate per FQDN (and
the lab ACME server's HTTPS certificate).
With `tls_source: files` the office puts <fqdn>.crt, .key (and .chain) in
`tls_dir` and the toolkit only installs them.
"""

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioner.errors import ConfigError
from provisioner.files import write_atomic

CA_NAME = "Provisioner Lab CA"


@dataclass(frozen=True)
class CertBundle:
    cert: str
    key: str  # a secret
    chain: str


def _pem_key(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def ensure_lab_ca(directory: Path) -> Path:
    """Create the lab CA (key root-only) if absent; return the CA certificate path."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_atomic(key_path, _pem_key(key).encode(), mode=0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def issue_from_lab_ca(directory: Path, fqdn: str) -> CertBundle:
    return issue_server_certificate(directory, [fqdn])


def issue_server_certificate(directory: Path, dns_names: Sequence[str],
                             ip_addresses: Sequence[str] = ()) -> CertBundle:
    """A server certificate from the lab CA for these names and addresses.

    The key is made here, in memory, and returned in the bundle: the caller
    hands it to the host that serves with it and nothing writes it on this side.
    The first name is the subject's common name.
    """
    if not dns_names:
        raise ConfigError("a server certificate needs at least one DNS name")
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    try:
        ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as err:
        raise ConfigError(f"lab CA not found in {directory} ({err}); run `provision lab up`") from None
    try:
        addresses = [ipaddress.ip_address(str(a)) for a in ip_addresses]
    except ValueError as err:
        raise ConfigError(f"server certificate: ip_addresses: {err}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    names = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(a) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=397))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(
        cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key=_pem_key(key),
        chain=ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def from_files(directory: Path, fqdn: str) -> CertBundle:
    try:
        cert = (directory / f"{fqdn}.crt").read_text()
        key = (directory / f"{fqdn}.key").read_text()
    except OSError as err:
        raise ConfigError(f"certificate for {fqdn} not found in {directory}: {err}") from None
    chain_file = directory / f"{fqdn}.chain"
    return CertBundle(cert=cert, key=key, chain=chain_file.read_text() if chain_file.exists() else "")


def issue(source: str, directory: Path, fqdn: str) -> CertBundle:
    if source == "lab-ca":
        return issue_from_lab_ca(directory, fqdn)
    return from_files(directory, fqdn)
