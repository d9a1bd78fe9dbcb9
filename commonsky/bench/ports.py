"""Ports of 127.0.0.1 for the processes a bench, demo or test starts, without a race.

One rule. A process that binds once is told port 0 and says which port it got
(`relay.start_system`). A port that must be known before the process starts (a configuration
written first) or kept across its restarts (kill9, fuzz) is held by `reserve_port` for the
whole run: `HeldPorts` does the bookkeeping.

Why not "bind port 0, read the port, close, let the process bind it later" (the old
`relay.free_port`): the port is free in between, and the kernel may hand it to another
`bind(0)` — measured: 0.22 % of 7-port plans got one port twice, and `bench relay` failed
"did not start" in ~5 % of runs.

Every listener of `commonsky serve` can bind a reserved port: TAK listeners
(`asyncio.start_server`, SO_REUSEADDR by default on POSIX), HTTP and Marti (`hub/tls.bind_http`,
SO_REUSEADDR) and federation (gRPC sets SO_REUSEADDR and SO_REUSEPORT). Linux lets a socket
with SO_REUSEADDR bind a port whose other sockets all have it too and none listens; a socket
with neither option cannot (tests/test_ports.py holds both)."""

from __future__ import annotations

import socket
from types import TracebackType


def reserve_port(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a free TCP port of `host` and kept bound, not listening, with
    SO_REUSEADDR and SO_REUSEPORT: while it is open no `bind(0)` of any process is given the
    port, yet a `commonsky serve` told to bind it does (its listeners set SO_REUSEADDR; same
    user) and takes every connection (a socket that does not listen takes none). Close it once
    that process is gone.

    Why not a port freed at once: a cluster's edge binds it seconds later; in between another
    process's `bind(0)` may be given it, and when that process is an edge too its SO_REUSEPORT
    listener shares the port without a word — the kernel then spreads new connections over
    both, and a TAK client's TLS handshake that lands on the other ends in a reset
    (httpx.ConnectError, now and then)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


class HeldPorts:
    """Ports of 127.0.0.1 held by `reserve_port` until `close` (or the end of a `with`).

    Use: `with HeldPorts() as held: port = held.port()` around everything that starts, stops
    and restarts the processes bound to them."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def port(self) -> int:
        """A port no other `bind(0)` is given until `close`."""
        sock = reserve_port()
        self.sockets.append(sock)
        port: int = sock.getsockname()[1]
        return port

    def close(self) -> None:
        """Free every port (again: nothing). Only once the processes bound to them are gone."""
        sockets, self.sockets = self.sockets, []
        for sock in sockets:
            sock.close()

    def __enter__(self) -> HeldPorts:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
