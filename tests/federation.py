"""Two homeservers on loopback federating over TLS: Kanal's (`home`) and the readers' (`remote`).

The test stack names its servers with explicit ports, so each contacts the other directly (no DNS,
no .well-known): Kanal's homeserver is `127.0.0.1:<port>`, the readers' `localhost:<port>`. Server
ACLs match the host and ignore the port, so the two hosts must differ for a policy to tell them
apart. Both present one certificate (SANs `localhost` and `127.0.0.1`) from a CA this module makes;
each trusts only that CA for federation (`federation_custom_ca_list`) and verifies certificates.

`Federated.gated` starts a third, short-lived homeserver the same way, with Synapse's
`federation_domain_whitelist` set, for a test of what that setting really admits.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.ops.synapse import LocalSynapse
from tests.support import Env, User, free_port


@dataclass(frozen=True)
class TestCA:
    ca: Path  # the CA certificate (what each server trusts)
    certificate: Path  # the servers' certificate, for localhost and 127.0.0.1
    private_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_test_ca(directory: Path) -> TestCA:
    """A throwaway CA and one server certificate it signs, valid for a day (files in `directory`)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Kanal test CA {secrets.token_hex(4)}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    result = TestCA(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    result.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    result.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    result.private_key.write_bytes(_pem_key(key))
    result.private_key.chmod(0o600)
    return result


@dataclass
class Federated:
    """Kanal on `home` (an Env: its users, channels and CLI), readers on the `remote` homeserver."""

    home: Env
    remote: LocalSynapse

    @property
    def remote_domain(self) -> str:
        return self.remote.server_name

    async def reader(self, prefix: str = "far") -> User:
        """A fresh user of the remote homeserver (its waits and commands speak to Kanal's bot)."""
        localpart = f"{prefix}{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        user_id = await self.remote.register_user(localpart, password)
        client = nio.AsyncClient(self.remote.base_url, user_id)
        response = await client.login(password)
        assert isinstance(response, nio.LoginResponse), response
        self.home.users.append(client)
        return User(client, self.home)

    @asynccontextmanager
    async def gated(self, data_dir: Path, whitelist: Sequence[str]) -> AsyncIterator[LocalSynapse]:
        """A third homeserver, `127.0.0.1:<port>`, federating over TLS as the other two do, but with
        `federation_domain_whitelist: whitelist`; stopped when the block ends."""
        listener = self.home.synapse.federation
        assert listener is not None, "the home server federates"
        port = free_port()
        gated = LocalSynapse(
            data_dir,
            server_name=f"127.0.0.1:{port}",
            port=free_port(),
            relaxed_rate_limits=True,
            large_rooms=None,
            federation=dataclasses.replace(listener, port=port, domain_whitelist=tuple(whitelist)),
        )
        try:
            await gated.start()
            yield gated
        finally:
            await gated.stop()
