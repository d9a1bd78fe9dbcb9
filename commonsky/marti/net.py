"""Small facts about the HTTP listeners that the apps and the shared state need: where a
listener is reached, and the client certificate a request came with. Apart from http.py so
that the apps and the state need not import the listeners that serve them."""

from __future__ import annotations

import socket

from starlette.types import Scope

from commonsky.config import ListenerConfig


def peer_cert_der(scope: Scope) -> bytes | None:
    tls = (scope.get("extensions") or {}).get("tls") or {}
    der = tls.get("client_cert_der")
    return der if isinstance(der, bytes) else None


def advertised(config: ListenerConfig, port: int) -> str:
    """HOST:PORT clients reach a listener at: `advertise`, else its bind address (a wildcard
    bind names the machine's host name)."""
    if config.advertise:
        return config.advertise
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
