"""An edge's `marti` and `enroll` listeners: TAK's HTTP side where the TAK client connects.

A TAK client knows one server address: it streams to an edge's tak-tls port and calls the
same host for data packages (`marti`, TAK's 8443) and certificates (`enroll`, 8446). So each
edge binds the `kind = "marti"` and `kind = "enroll"` listeners of its config, as the single
process does (marti/http.py's `HttpListener`, SO_REUSEPORT: the edges of a host share the
ports), with real TLS from the listener's `ca` (`marti`: a client certificate chaining to it
is required by the handshake; `enroll`: none asked), and forwards each request to the core
(cluster/forward.py): method, path, query, headers, the body in acknowledged parts, the
peer's address and the client certificate's DER. The core answers with the very apps the
single process binds (core_http.py checks the DER against the CA again; the app derives the
party from it and checks the CRL): the edge decides no answer of theirs. One answer is the
edge's own: the fetch of an item too long for a client's TAK stream that this edge announced
to the caller's party and holds (edge_long.py); such a fetch for a hash this edge does not
hold goes to the core, which holds those items too (core_long.py).

What the edge refuses itself, so the core never sees it: on `marti`, a certificate the CA's
CRL revokes now, or whose subject names no party (`api.certificate_identity`: 403, counted
as `commonsky_refusals{reason="marti_…"}` as the core counts its own); on `enroll`, a
request without HTTP Basic credentials (401); on both, a body whose Content-Length passes
the face's limit (413 before anything is forwarded: `limit_file_bytes` plus what multipart
framing adds for `marti`, a CSR's `CSR_MAX_BYTES` for `enroll`), or that grows past it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from commonsky import errors
from commonsky.config import HubConfig, ListenerConfig
from commonsky.marti.http import HttpListener, listener_tls
from commonsky.marti.net import peer_cert_der
from commonsky.pki import CSR_MAX_BYTES, PeerCertificates
from commonsky.revocation import Revocations

from .edge_long import held_answer, serve_long
from .forward import Face, Forwarder

if TYPE_CHECKING:
    import ssl

    from .edge import EdgeHub

log = logging.getLogger("commonsky.marti")

KINDS = ("marti", "enroll")
MULTIPART_SLACK = 65536  # what multipart framing may add to a file (as marti/upload.py allows)
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def tak_faces(listeners: tuple[ListenerConfig, ...]) -> list[tuple[str, ListenerConfig]]:
    """The config's marti and enroll listeners by face name, "KIND/INDEX" (index among the
    listeners of its kind): an edge and the core read one config shape, so they agree."""
    seen: dict[str, int] = {}
    out = []
    for lc in listeners:
        if lc.kind in KINDS:
            n = seen[lc.kind] = seen.get(lc.kind, -1) + 1
            out.append((f"{lc.kind}/{n}", lc))
    return out


def _text(status: int, message: str, headers: dict[str, str]) -> Response:
    if status == 401:
        headers = {**headers, "WWW-Authenticate": 'Basic realm="CommonSky enrollment"'}
    return PlainTextResponse(f"{message}\n", status_code=status, headers=headers or None)


class EdgeTakHttp:
    """The edge's marti and enroll listeners (the module header). TLS contexts and CRLs
    are read at construction: a wrong certificate stops the edge at start (UsageError)."""

    def __init__(self, hub: EdgeHub, config: HubConfig, crls: dict[Path, Revocations]) -> None:
        self.hub, self.config = hub, config
        self.faces: list[tuple[str, ListenerConfig, ssl.SSLContext, Revocations]] = []
        for name, lc in tak_faces(config.listeners):
            assert lc.ca is not None
            crl = crls.setdefault(Path(lc.ca), Revocations(Path(lc.ca)))
            self.faces.append((name, lc, listener_tls(lc), crl))
        self.listeners: list[HttpListener] = []
        self._peers = PeerCertificates()

    async def start(self, forwarder: Forwarder) -> None:
        """Bind and serve each listener (UsageError, one line, for a busy port)."""
        for name, lc, tls, crl in self.faces:
            app = self.app(forwarder, name, lc, crl)
            listener = HttpListener(lc, app, tls, self.config.settings, reuse_port=True)
            await listener.start()
            self.listeners.append(listener)
            if lc.kind == "marti" and not self.hub.wires.held.url:  # (the first: edge_long.py)
                serve_long(self.hub.wires.held, listener, lc)

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stop()

    def face(self, name: str, kind: str) -> Face:
        s = self.config.settings
        if kind == "marti":
            return Face(
                name,
                s.limit_file_bytes + MULTIPART_SLACK,
                f"file over limit_file_bytes={s.limit_file_bytes}; nothing kept",
                _text,
            )
        return Face(name, CSR_MAX_BYTES, f"CSR over {CSR_MAX_BYTES} bytes", _text)

    def app(self, forwarder: Forwarder, name: str, lc: ListenerConfig,
            crl: Revocations) -> Starlette:  # fmt: skip
        """One listener's application: its own refusals (the module header), then forward."""
        face = self.face(name, lc.kind)
        is_party = self.hub.policy.parties.__contains__

        async def handle(request: Request) -> Response:
            der = peer_cert_der(request.scope)
            try:
                if lc.kind == "marti":
                    if der is None:
                        raise errors.Refused(403, "a client certificate is required",
                                             "no_certificate")  # fmt: skip
                    from commonsky.marti.api import certificate_identity

                    party, _ = certificate_identity(self._peers.get(der), crl, is_party)
                    held = held_answer(
                        self.hub.wires.held, request, party
                    )  # (held here: edge_long.py)
                    if held is not None:
                        return held
                elif not request.headers.get("authorization", "").lower().startswith("basic "):
                    raise errors.Refused(401, "HTTP Basic credentials (user, token) required",
                                         "no_credentials")  # fmt: skip
            except errors.Refused as exc:
                return self.refused(request, lc.kind, exc)
            return await forwarder.forward(request, request.url.path, face, der or b"")

        return Starlette(routes=[Route("/{path:path}", handle, methods=_METHODS)])

    def refused(self, request: Request, kind: str, exc: errors.Refused) -> Response:
        peer = request.client.host if request.client else "?"
        self.hub.metrics.refuse(f"{kind}_{exc.reason}")
        self.hub.log_limited(log, f"{kind}_{exc.reason}", peer,
                             "edge %s: %s %s from %s refused (%d): %s", kind, request.method,
                             request.url.path[:200], peer, exc.status, exc)  # fmt: skip
        return _text(exc.status, str(exc), {})
