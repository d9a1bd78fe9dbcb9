"""The `enroll` and `marti` listeners: a Starlette app each, under uvicorn, on its own socket.

The hub process runs them beside its TAK listeners (`HubServer` starts them after binding
every port and stops them with the rest). TLS is uvicorn's, with the context the hub builds
(`tls_context`): `marti` requires a client certificate chaining to the CA, `enroll` asks
for none (its clients have no certificate yet; HTTP Basic with a one-time token instead).

The client certificate reaches the app as ASGI's TLS extension
(`scope["extensions"]["tls"]["client_cert_der"]`): uvicorn does not fill it in, so the
connection's protocol object wraps the app with the certificate it was handed at
`connection_made` — one small override of uvicorn's h11 protocol, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from commonsky.config import ListenerConfig
from commonsky.errors import UsageError
from commonsky.marti.net import advertised as advertised
from commonsky.marti.net import peer_cert_der as peer_cert_der
from commonsky.settings import Settings

log = logging.getLogger("commonsky.marti")


class _PeerCertH11(H11Protocol):
    """uvicorn's h11 protocol that hands the app the peer's certificate (DER)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        app: ASGIApp = self.app

        async def with_peer(scope: Scope, receive: Receive, send: Send) -> None:
            extensions = scope.setdefault("extensions", {})
            extensions["tls"] = {"client_cert_der": der}
            await app(scope, receive, send)

        self.app = with_peer


class HttpListener:
    """One HTTP(S) listener of the hub: bound in `start` (a busy port is one line), stopped
    in `stop` (connections get `timeout_shutdown_s` to finish)."""

    def __init__(self, config: ListenerConfig, app: ASGIApp, tls: ssl.SSLContext,
                 settings: Settings, reuse_port: bool = False) -> None:  # fmt: skip
        """`reuse_port`: SO_REUSEPORT (a cluster's edges on one host share the port)."""
        self.config = config
        self.reuse_port = reuse_port
        self.app = app
        self.tls = tls
        self.settings = settings
        self.port = config.port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.config.kind}:{self.config.host}:{self.port}"

    async def start(self) -> None:
        from commonsky.hub.listeners import bind_http

        sock = bind_http(self.config.host, self.config.port, f"{self.config.where} bind",
                         reuse_port=self.reuse_port)  # fmt: skip
        config = uvicorn.Config(
            self.app,
            http=_PeerCertH11,
            lifespan="off",
            access_log=False,
            log_level="warning",
            limit_concurrency=self.settings.limit_http_connections,
            timeout_keep_alive=30,
        )
        config.load()
        config.ssl = self.tls  # our context (client-certificate rules, TLS 1.2+), not uvicorn's
        server = uvicorn.Server(config)
        # The hub owns SIGINT/SIGTERM (and shuts down in order); uvicorn must not take them.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise UsageError(
                    f"{self.config.where}: the {self.config.kind} listener did not start"
                )
            await asyncio.sleep(0.01)
        self.port = sock.getsockname()[1]
        log.info("listening %s", self.name)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        deadline = self.settings.timeout_shutdown_s
        try:
            await asyncio.wait_for(asyncio.shield(self._task), deadline)
        except TimeoutError:
            self._server.force_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 2.0)
        except Exception:  # already logged by uvicorn; the hub goes on stopping
            pass
        self._server = None


def listener_tls(config: ListenerConfig) -> ssl.SSLContext:
    """The TLS context of an `enroll` (no client certificate) or `marti` (client certificate
    required) listener; UsageError naming the listener and file."""
    from commonsky.hub.listeners import tls_context

    context = tls_context(config)
    if config.kind == "enroll":
        context.verify_mode = ssl.CERT_NONE
    return context


def build_http_listeners(
    listeners: tuple[ListenerConfig, ...], services: Any, settings: Settings, shared: Any = None
) -> tuple[list[HttpListener], Any]:
    """The hub's enroll and marti listeners, and the state they share (`MartiState`, or None
    when the config has neither). Certificates are checked here, before anything is bound.
    `shared`: a cluster core's PostgreSQL store (tokens and files in its database)."""
    wanted = [lc for lc in listeners if lc.kind in ("enroll", "marti")]
    if not wanted:
        return [], None
    from commonsky.marti.state import MartiState

    state = MartiState.open(services, listeners, shared)
    out: list[HttpListener] = []
    try:
        for lc in wanted:
            tls = listener_tls(lc)
            if lc.kind == "enroll":
                from commonsky.marti.enroll import enroll_app

                app = enroll_app(state, lc)
            else:
                from commonsky.marti.api import marti_app

                app = marti_app(state, lc)
            listener = HttpListener(lc, app, tls, settings)
            state.http.setdefault(lc.kind, listener)  # (the first of a kind gives the links)
            out.append(listener)
            if lc.kind == "marti" and state.http["marti"] is listener and lc.ca is not None:
                state.port.serve_long(state.base_url, Path(lc.ca))  # (hub/held.py)
    except BaseException:
        state.close()
        raise
    return out, state
