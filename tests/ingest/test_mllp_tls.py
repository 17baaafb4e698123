"""MLLP over TLS with client certificates: a source registered with a certificate
fingerprint is accepted only when it presents that certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine

from usmis.config import Settings
from usmis.ingest import sources
from usmis.ingest.channels.mllp import MllpServer, tls_context
from usmis.kit.db import transaction

from .factories import make_adt


def _cert(tmp: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
          | None = None, ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert, key


def _send(port: int, ctx: ssl.SSLContext, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, \
            ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"\x0b" + raw + b"\x1c\r")
        out = b""
        while b"\x1c\r" not in out:
            chunk = tls.recv(4096)
            if not chunk:
                break
            out += chunk
        return out


def test_client_certificate_is_required_and_bound_to_the_source(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    ca = _cert(tmp_path, "ca", ca=True)
    _cert(tmp_path, "server", ca)
    good = _cert(tmp_path, "his-client", ca)
    _cert(tmp_path, "other-client", ca)
    fp = hashlib.sha256(good[0].public_bytes(serialization.Encoding.DER)).hexdigest()
    with transaction(engine) as conn:
        sources.add_source(conn, source_id="his-test", name="HIS", kind="hospital",
                           channels=["mllp"], formats=["hl7v2"], cert_fingerprint=fp)
    server_ctx = tls_context(str(tmp_path / "server.pem"), str(tmp_path / "server.key"),
                             str(tmp_path / "ca.pem"))
    loop = asyncio.new_event_loop()
    server = MllpServer(settings, engine, port=0, ssl_context=server_ctx)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        def client(name: str) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            ctx.load_cert_chain(str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key"))
            return ctx

        assert b"MSA|AA" in _send(server.port, client("his-client"), make_adt().encode())
        assert b"MSA|AR" in _send(server.port, client("other-client"),
                                  make_adt(control="X2").encode())
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
