"""The core's side of the requests the edges forward (`<name>.http`; cluster/forward.py).

The core holding the lease subscribes (a standby does not, so an edge's call finds no
responder and answers 503 at once) and runs each `HttpCall` through the app of its face, in
this process, as uvicorn would hand it a request: the API's (`http/app.build_app`), or the
very Marti and enrolment apps the single process binds (`marti/api.marti_app`,
`marti/enroll.enroll_app`, built by `HubServer` without binding their ports) — the same
routes, the same checks of the token or certificate the call carries, the same answers.

Nothing the edge says is taken on its word: the API's bearer token is authenticated again;
a Marti call's client certificate (its DER, as the edge's TLS received it) must be signed by
the listener's CA and valid now (`CertCheck`) before the app sees it — the app then derives
the party from it and checks the CRL, as for its own TLS connections. The body and the answer
move in acknowledged parts (cluster/parts.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .parts import Exchange
from .wire import HttpCall, Names, call_decoder

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from commonsky.metrics import Metrics

log = logging.getLogger("commonsky.cluster")

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
CONCURRENT = 64  # forwarded requests the core runs at once (the rest wait, within budget)
_JSON = [(b"content-type", b"application/json")]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class CertCheck:
    """Whether a client certificate's DER is one the CA of folder `ca` signed and valid now
    (the part of a TLS handshake the edge did that the core does again)."""

    def __init__(self, ca: Path) -> None:
        from cryptography import x509

        from commonsky.pki import CA_CERT

        self.ca = x509.load_pem_x509_certificate((ca / CA_CERT).read_bytes())
        self.known: dict[bytes, tuple[dt.datetime, dt.datetime]] = {}  # verified: validity

    def __call__(self, der: bytes) -> bool:
        from cryptography import x509

        valid = self.known.get(der)
        if valid is None:
            try:
                cert = x509.load_der_x509_certificate(der)
                cert.verify_directly_issued_by(self.ca)
            except Exception:  # (not DER, not signed by the CA, another algorithm…)
                return False
            if len(self.known) > 1024:
                self.known.clear()
            valid = self.known[der] = (cert.not_valid_before_utc, cert.not_valid_after_utc)
        return valid[0] <= dt.datetime.now(dt.UTC) <= valid[1]


@dataclass(frozen=True)
class CoreFace:
    """A face the core answers: its app, and for a TLS face with client certificates the
    check of the DER an edge forwards (None: the face takes no certificate)."""

    app: ASGIApp
    cert: CertCheck | None = None
    scheme: str = "http"


class CoreHttp:
    """Answers the edges' forwarded requests with the app of each face (the module header)."""

    def __init__(self, app: ASGIApp, nc: Client, names: Names, metrics: Metrics,
                 serving: Callable[[], bool] = lambda: True,
                 faces: Mapping[str, CoreFace] | None = None,
                 wait_s: float = 10.0) -> None:  # fmt: skip
        """`app`: the API's (face "api"); `faces`: the others ("marti/0", "enroll/0"…);
        `wait_s`: how long a body part or an answer part's acknowledgement may take."""
        self.faces = {"api": CoreFace(app), **(faces or {})}
        self.nc, self.names, self.metrics = nc, names, metrics
        self.serving = serving  # (the lease is held)
        self.wait_s = wait_s
        self.gate = asyncio.Semaphore(CONCURRENT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.sub: Any = None

    async def start(self) -> None:
        """Serve forwarded calls; returns once the NATS server holds the subscription (a
        flush: nats-py's `subscribe` only queues it, and a call published meanwhile was
        answered "no responders" — an empty message — which is how
        test_forward_parts.py's calls were lost now and then). Raises NATS's errors."""
        self.sub = await self.nc.subscribe(self.names.http, cb=self._on_call)
        await self.nc.flush()

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _on_call(self, msg: Msg) -> None:
        # (NATS runs one subscription's callbacks one after another: each call its own task.)
        task = asyncio.create_task(self._serve(msg, time.monotonic()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, msg: Msg, came: float) -> None:
        if not msg.reply:
            return
        try:
            call = call_decoder.decode(msg.data)
        except Exception:
            self.metrics.internal_error("cluster_http")
            log.exception("core: an unreadable forwarded request; dropped")
            return
        exchange = Exchange(self.nc, call, msg.reply, self.wait_s)
        try:
            async with self.gate:
                late = max(time.time() - call.sent, time.monotonic() - came) > call.budget_s
                face = self.faces.get(call.face)
                if late or not self.serving():
                    # The edge answers 504 (or has): a write must not be applied behind its back.
                    await exchange.answer(503, _JSON, b'{"error":"the hub\'s core was too busy '
                                          b'to take this request"}')  # fmt: skip
                elif face is None:
                    await exchange.answer(404, _TEXT, b"this hub serves no such listener\n")
                elif face.cert is not None and call.cert and not face.cert(call.cert):
                    self.metrics.refuse("marti_certificate_unverified")
                    await exchange.answer(403, _TEXT, b"the client certificate was not issued "
                                          b"by this hub's CA (or is not valid now)\n")  # fmt: skip
                else:
                    await self.run(face, call, exchange)
        finally:
            await exchange.close()

    async def run(self, face: CoreFace, call: HttpCall, exchange: Exchange) -> None:
        """`call` through the face's app, its answer sent in parts; a 500 if the app fails
        before it answered."""
        try:
            await face.app(scope(call, face), exchange.receive, exchange.send)
        except Exception:  # (EdgeGone too, maybe in a task group's exception group)
            why = exchange.gone or exchange.broken
            if why:  # (the body never came whole, or nobody takes the answer: not our bug)
                log.info("core: forwarded %s %s: %s", call.method, call.path[:200], why)
            else:
                self.metrics.internal_error("cluster_http")
                log.exception("core: forwarded %s %s failed", call.method, call.path[:200])
            await exchange.answer(500, _JSON, b'{"error":"internal error (logged)"}')
            return
        if not exchange.finished:  # (an app that ended without its last body message)
            await exchange.send({"type": "http.response.body", "body": b"", "more_body": False})


def scope(call: HttpCall, face: CoreFace) -> dict[str, Any]:
    """The ASGI scope uvicorn would make of the request (the client certificate, checked,
    in ASGI's TLS extension, as marti/http.py hands it to the app)."""
    host, _, port = call.client.rpartition(":")
    out: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": call.method,
        "scheme": face.scheme,
        "path": call.path,
        "raw_path": call.path.encode("utf-8", "surrogateescape"),
        "query_string": call.query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in call.headers],
        "client": (host.strip("[]"), int(port)) if port.isdigit() else None,
        "server": None,
    }
    if face.cert is not None:
        out["extensions"] = {"tls": {"client_cert_der": call.cert or None}}
    return out
