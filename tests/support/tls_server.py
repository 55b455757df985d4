"""A purpose-built TLS server on loopback, for failures only a real TLS stream shows.

``after_request``: completes the handshake, reads the whole POST (headers and body), then writes
bytes that are not TLS records on the raw socket: the client's read of the answer fails with an
``SSLError`` after the request was delivered. ``garbage_handshake``: answers the client's hello with
bytes that are not TLS, so the handshake fails before any request byte is written.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TlsCert:
    cert: Path
    key: Path


def self_signed_cert(folder: Path) -> TlsCert:
    """A certificate for 127.0.0.1 and localhost, signed by itself (the test trusts it as its CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "octorpa-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = TlsCert(folder / "cert.pem", folder / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class TlsServerLog:
    requests: list[bytes] = field(default_factory=list)  # each whole request read (head and body)
    connections: int = 0


def _read_request(conn: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def tls_server(mode: str) -> Iterator[tuple[str, TlsServerLog, TlsCert]]:
    """Serve ``mode`` on a free loopback port; yield the webhook URL, what arrived, the certificate."""
    log = TlsServerLog()
    with tempfile.TemporaryDirectory(prefix="octorpa-tls-") as tmp:
        cert = self_signed_cert(Path(tmp))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert.cert, cert.key)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)
        stop = threading.Event()

        def serve_one(raw: socket.socket) -> None:
            raw.settimeout(10)
            with raw:
                if mode == "garbage_handshake":
                    raw.recv(65536)  # the client's hello
                    raw.sendall(b"HTTP/1.1 400 not TLS\r\n\r\n")
                    return
                try:
                    conn = context.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused the handshake (an untrusted certificate)
                request = _read_request(conn)
                if request:
                    log.requests.append(request)
                os.write(conn.fileno(), b"\x00\x01 this is not a TLS record \x02\x03" * 4)

        def accept_loop() -> None:
            while not stop.is_set():
                try:
                    raw, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                log.connections += 1
                threading.Thread(target=serve_one, args=(raw,), daemon=True).start()

        thread = threading.Thread(target=accept_loop, daemon=True)
        thread.start()
        try:
            port = listener.getsockname()[1]
            yield f"https://127.0.0.1:{port}/api/v1/bots/webhooks/tls/invoke", log, cert
        finally:
            stop.set()
            thread.join(5)
            listener.close()
