"""The `Peer` of one edge client on the core (cluster/core.py): what the hub queues for the
client, rendered for it as the single process would write it, goes to its edge."""

from __future__ import annotations

from typing import Protocol

from commonsky.hub.connection import Connection
from commonsky.hub.outbox import Pending
from commonsky.metrics import Metrics


class _Hub(Protocol):
    @property
    def metrics(self) -> Metrics: ...


class Core(Protocol):
    """What a `ProxyPeer` asks of its core (`ClusterCore`; a protocol, so that this module
    does not import core.py, which imports it)."""

    @property
    def hub(self) -> _Hub: ...
    def send(self, edge: str, conn_id: str, mode: str, outs: list[Pending]) -> None: ...
    def close_remote(self, edge: str, conn_id: str, reason: str) -> None: ...
    def attached(self, edge: str, conn_id: str) -> None: ...


class ProxyPeer:
    """The `Peer` of one edge client on the core: flushing sends its outbox to its edge."""

    def __init__(self, core: Core, edge: str, conn_id: str, mode: str) -> None:
        self.core, self.edge, self.conn_id, self.mode = core, edge, conn_id, mode
        self.conn: Connection | None = None
        self.closed: str | None = None
        self.attaching = False  # its Attach handled: said to the edge after its replay

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self.core.hub.metrics.close(reason)
            self.core.close_remote(self.edge, self.conn_id, reason)

    def flush(self) -> None:
        conn = self.conn
        if conn is None or self.closed is not None:
            return
        outs: list[Pending] = []
        while True:  # (the whole replay now: the edge's own outbox pages it to the socket)
            outs += conn.outbox.take()
            if conn.outbox.backlog is None:
                break
        if outs:
            self.core.send(self.edge, self.conn_id, self.mode, outs)
        if self.attaching:
            self.attaching = False
            self.core.attached(self.edge, self.conn_id)
