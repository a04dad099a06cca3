"""Self-signed certificates for TLS tests (made per test in its temporary directory)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_certificate(
    directory: Path, common_name: str, *, ip_address: str | None = None, dns_name: str | None = None
) -> tuple[Path, Path]:
    """(certificate, key) PEM files valid for a day. With ``ip_address`` or ``dns_name`` the certificate
    carries it as a subject alternative name and may serve as its own trust anchor (a client that checks
    the address or name it dials loads it as the CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    alternative_names: list[x509.GeneralName] = []
    if ip_address is not None:
        alternative_names.append(x509.IPAddress(ipaddress.ip_address(ip_address)))
    if dns_name is not None:
        alternative_names.append(x509.DNSName(dns_name))
    if alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternative_names), critical=False
        ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    certificate = builder.sign(key, hashes.SHA256())
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
