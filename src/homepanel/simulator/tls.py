"""Throw-away TLS material for the simulated lab.

Real Proxmox hosts serve HTTPS with a certificate signed by their own cluster CA, so the
simulator does the same: one private CA signs a server certificate for 127.0.0.1/localhost.
Clients pin ``ca.pem`` instead of disabling verification.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    """Where the PEM files live: the CA to trust, the server chain and its key."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a CA and a server certificate for ``127.0.0.1`` and ``localhost`` in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        ca=directory / "ca.pem",
        cert=directory / "server.pem",
        key=directory / "server-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files.key))
    return files


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side context presenting the simulated host's certificate chain."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile=files.cert, keyfile=files.key)
    return context


def client_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A client-side context that trusts only the simulated lab's CA."""
    return ssl.create_default_context(cafile=str(files.ca))
