"""Ports for the processes benches, demos and tests start (commonsky/bench/ports.py): a port
held by `reserve_port` is given to no `bind(0)` of any process, yet every listener kind of
`commonsky serve` binds it and takes its connections."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.bench.ports import HeldPorts, reserve_port
from commonsky.errors import UsageError
from commonsky.hub.tls import bind_http

HOST = "127.0.0.1"
IP_LOCAL_PORT_RANGE = 51  # linux/in.h: bind(0) of this socket picks within [low, high]


def given_by_bind0(port: int) -> bool:
    """Whether a `bind(0)` could be given `port` now: a socket whose ephemeral range is that
    one port, bound to port 0 (EADDRINUSE: the kernel will not hand it out)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("I", port << 16 | port))
        try:
            sock.bind((HOST, 0))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return False
        return bool(sock.getsockname()[1] == port)


def test_a_port_chosen_and_let_go_is_given_out_again() -> None:
    """The old way (bind 0, read the port, close): the port is free for any `bind(0)` before
    the process meant to bind it does (and the probe above sees it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    assert given_by_bind0(port)


def test_a_reserved_port_is_given_to_no_bind0_until_it_is_closed() -> None:
    held = reserve_port()
    port = held.getsockname()[1]
    try:
        assert not given_by_bind0(port)
        for n in range(200):  # (plain and SO_REUSEADDR sockets, as asyncio's listeners are)
            with socket.socket() as sock:
                if n % 2:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((HOST, 0))
                assert sock.getsockname()[1] != port
    finally:
        held.close()
    assert given_by_bind0(port)  # (given back)


@settings(max_examples=20, deadline=None)
@given(count=st.integers(1, 30))
def test_held_ports_are_distinct_and_held_until_closed(count: int) -> None:
    with HeldPorts() as held:
        ports = [held.port() for _ in range(count)]
        assert len(set(ports)) == count
        assert not [p for p in ports if given_by_bind0(p)]
    assert held.sockets == []
    assert all(given_by_bind0(p) for p in ports)


async def _connects(port: int) -> None:
    _, writer = await asyncio.open_connection(HOST, port)
    writer.close()
    await writer.wait_closed()


def _raw(*options: int) -> Callable[[int], socket.socket]:
    def bind(port: int) -> socket.socket:
        sock = socket.socket()
        for option in options:
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            sock.close()
            raise
        return sock

    return bind


@pytest.mark.parametrize(
    "bind",
    [
        _raw(socket.SO_REUSEPORT),  # (a cluster edge's listeners)
        _raw(socket.SO_REUSEADDR),
        lambda port: bind_http(HOST, port, "test http"),  # (the HTTP API and Marti)
        lambda port: bind_http(HOST, port, "test http", reuse_port=True),  # (an edge's)
    ],
    ids=["so_reuseport", "so_reuseaddr", "http", "http-edge"],
)
async def test_a_listener_binds_a_reserved_port_and_takes_its_connections(
    bind: Callable[[int], socket.socket],
) -> None:
    with HeldPorts() as held:
        port = held.port()
        sock = bind(port)
        try:
            sock.listen()
            for _ in range(20):  # (none goes to the holder: it does not listen)
                await _connects(port)
                conn, _ = sock.accept()
                conn.close()
        finally:
            sock.close()


async def test_tak_and_federation_listeners_bind_a_reserved_port() -> None:
    """The TAK listener's `asyncio.start_server` (hub/listeners.py: SO_REUSEADDR by default)
    and the federation listener's gRPC server (federation/listen.py)."""
    with HeldPorts() as held:
        tak, federation = held.port(), held.port()
        server = await asyncio.start_server(lambda r, w: w.close(), HOST, tak)
        try:
            await _connects(tak)
        finally:
            server.close()
            await server.wait_closed()
        grpc_server = grpc.aio.server()
        assert grpc_server.add_insecure_port(f"{HOST}:{federation}") == federation
        await grpc_server.start()
        try:
            await _connects(federation)
        finally:
            await grpc_server.stop(None)


def test_a_listener_without_either_option_cannot_bind_a_reserved_port() -> None:
    """Why every listener must set SO_REUSEADDR (or SO_REUSEPORT): Linux refuses the bind."""
    with HeldPorts() as held:
        port = held.port()
        with pytest.raises(OSError, match="Address already in use"):
            _raw()(port).close()
        with pytest.raises(UsageError, match=f"port {port}"):  # (a listening holder, contrast)
            with socket.socket() as taken:
                taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                taken.bind((HOST, port))
                taken.listen()
                bind_http(HOST, port, "test http")
