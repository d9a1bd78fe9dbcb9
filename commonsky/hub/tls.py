"""TLS and ports for the hub's listeners: the server context from a listener's config, the
HTTP socket bound up front, and the words an operator reads about a refused handshake, a
certificate's subject, a port that will not bind. `listeners.py` (TAK), `server.py` and
`marti/http.py` use it.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from pathlib import Path

from commonsky.config import ListenerConfig
from commonsky.errors import UsageError
from commonsky.pki import CA_CERT, SERVER_CERT, SERVER_KEY


def tls_context(config: ListenerConfig) -> ssl.SSLContext:
    """The server side of a TLS listener (`tak-tls`, `marti`; `enroll` asks for no client
    certificate): its certificate, and the CA its clients' certificates must chain to.
    Raises UsageError naming the listener, the file and the fix."""
    assert config.ca is not None
    ca_dir = Path(config.ca)
    cert = config.cert or ca_dir / SERVER_CERT
    key = config.key or ca_dir / SERVER_KEY
    fix = (
        f"run `commonsky ca init --dir {ca_dir}`"
        if config.cert is None
        else "check the cert and key files it names"
    )
    for path in (cert, key, ca_dir / CA_CERT):
        if not path.is_file():
            raise UsageError(f"{config.where} ({config.kind}): {path} is missing; {fix}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"{config.where} ({config.kind}): {cert} / {key}: not a certificate and its key "
            f"({reason(exc)}); {fix}"
        ) from None
    try:
        context.load_verify_locations(ca_dir / CA_CERT)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"{config.where} ({config.kind}): {ca_dir / CA_CERT}: not a CA certificate "
            f"({reason(exc)}); {fix}"
        ) from None
    return context


def port_problem(port: int, exc: OSError) -> str:
    """What an operator should read when a port cannot be bound."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use (another hub or program); stop it or pick another"
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges this user lacks; pick a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no network interface of this machine has that address"
    return f"cannot listen ({exc.strerror})"


def reason(exc: BaseException) -> str:
    """An operator's words for a TLS failure: OpenSSL's verify message or reason code."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, TimeoutError):
        return "no handshake within tls_handshake_timeout_s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def peer_address(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def subject(peercert: object) -> dict[str, list[str]]:
    """Every value of each attribute of the certificate's subject (a name may repeat)."""
    fields: dict[str, list[str]] = {}
    if isinstance(peercert, dict):
        for rdn in peercert.get("subject", ()):
            for name, value in rdn:
                fields.setdefault(name, []).append(value)
    return fields


def bind_http(host: str, port: int, where: str, reuse_port: bool = False) -> socket.socket:
    """The HTTP listening socket, bound here so that a busy port is one line (UsageError).
    `reuse_port`: SO_REUSEPORT, so that a cluster's edges on one host share the port (as
    their TAK listeners do: the kernel spreads new connections over them)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"{where} = {host}:{port}: cannot resolve {host!r} ({exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        # Listening at once takes the port: a socket only bound (SO_REUSEADDR) would let a
        # listener of the same port bind beside it, and uvicorn fail later with no line.
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise UsageError(f"{where} = {host}:{port}: {port_problem(port, exc)}") from None
    sock.set_inheritable(True)
    return sock
