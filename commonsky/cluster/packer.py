"""The core's `Delivery` to one edge, packed from what its proxy connections flushed.

Each rendered output goes in once however many of the edge's clients get it (`Output`), and
clients that get the same outputs in the same order share one entry of `Delivery.sends`:
the connections of one party mostly get the very same `Pending`s in the same order (the
hub's fan-out queues one `Pending` for all of them), so such a batch is packed once for the
first client and costs each further one a dictionary look-up — not a look-up per output and
client, which was most of the core's own CPU beside the hub's at a fan-out of twenty
(docs/performance.md, "Cluster CPU per message").
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from commonsky.hub.deletes import DELETE_TYPE, target_key
from commonsky.hub.held import STREAM_BYTES
from commonsky.hub.outbox import Pending
from commonsky.model import DURABLE, is_transient
from commonsky.protocol.render import PROTO, XML

from .wire import Delivery, Output

OUT_BYTES = 512 * 1024  # a delivery message stays well under NATS's 1 MB payload limit
_OUTPUT_BYTES = 64  # an output's own fields, besides its bytes (an estimate)
_REF_BYTES = 8  # a client id's or an output index's framing (an estimate)


class Packer:
    """One `Delivery` being filled (`add`, then `done`). `size` estimates its encoded
    bytes; the caller sends it and starts another once it reaches OUT_BYTES."""

    def __init__(self, parties: Container[str] = frozenset()) -> None:
        self.parties = parties  # (the hub's: to read the names a delete's link gives)
        self.outputs: list[Output] = []
        self.index: dict[int, int] = {}  # id of an output's bytes -> its place in `outputs`
        self.sends: list[tuple[list[str], list[int]]] = []
        # (mode, id of each Pending of a batch) -> the clients of the `sends` entry holding it
        self.batches: dict[tuple[object, ...], list[str]] = {}
        self.clients: set[str] = set()  # every client in `sends`
        # The objects whose ids are keys above, kept alive while this delivery is packed.
        self.keep: list[object] = []
        self.size = 0
        # Outputs too long for a TAK client's stream, by their place (core_long.py)
        self.longs: dict[int, Pending] = {}
        # The items the deletes among `outputs` name (`Delivery.ended`), in order
        self.ended: dict[tuple[str, str], None] = {}

    def add(self, conn_id: str, mode: str, batch: list[Pending], start: int = 0) -> int:
        """`batch[start:]` for client `conn_id`, its bytes in `mode`, after what the client
        got in this delivery so far. Returns where it stopped: len(batch), or earlier once
        `size` reached OUT_BYTES (the rest goes in the next delivery)."""
        again = conn_id in self.clients  # (then only a new entry keeps its order)
        self.clients.add(conn_id)
        self.size += len(conn_id) + _REF_BYTES
        key = (mode, *map(id, batch)) if start == 0 else None
        if key is not None and not again:
            sharing = self.batches.get(key)
            if sharing is not None:
                sharing.append(conn_id)
                return len(batch)
        indexes: list[int] = []
        self.sends.append(([conn_id], indexes))
        self.keep.append(batch)
        at = start
        while at < len(batch) and (at == start or self.size < OUT_BYTES):  # (one at least)
            indexes.append(self._output(batch[at], mode))
            at += 1
        if key is not None and at == len(batch):
            self.batches[key] = self.sends[-1][0]
        return at

    def _output(self, pending: Pending, mode: str) -> int:
        data = pending.rendered.wire(pending.variant, mode)  # (cached: one object per form)
        at = self.index.get(id(data))
        if at is None:
            item = pending.rendered.item
            durable = item.category in DURABLE or is_transient(item.event.type)
            at = self.index[id(data)] = len(self.outputs)
            self.outputs.append(Output(item.party, item.event.uid, item.category.value,
                                       item.received, durable, mode, data))  # fmt: skip
            self.keep.append(data)
            self.size += len(data) + _OUTPUT_BYTES
            if len(data) > STREAM_BYTES and mode in (XML, PROTO):
                self.longs[at] = pending
            if item.event.type == DELETE_TYPE:  # (the owner's or a withdrawal)
                target = target_key(item.party, item.event, self.parties, strict=False)
                if target is not None:
                    self.ended[target] = None
                    self.size += len(target[0]) + len(target[1]) + _REF_BYTES
        self.size += _REF_BYTES
        return at

    def done(self, close: list[tuple[str, str]] | None = None,
             refused: list[tuple[str, str, str]] | None = None,
             attached: list[str] | None = None) -> Delivery:  # fmt: skip
        return Delivery(self.outputs, self.sends, close or [], refused or [], attached or [],
                        list(self.ended))  # fmt: skip


def pack(flushed: Iterable[tuple[str, str, list[Pending]]],
         parties: Container[str]) -> list[Packer]:  # fmt: skip
    """What the proxies of one edge's clients flushed — (client id, mode, batch), in
    order — as deliveries of about OUT_BYTES each, in order; the last may be empty (the
    caller adds its closes, refusals and attachments). `parties`: the hub's."""
    packers = [Packer(parties)]
    for conn_id, mode, batch in flushed:
        at = 0
        while at < len(batch):
            at = packers[-1].add(conn_id, mode, batch, at)
            if packers[-1].size >= OUT_BYTES:
                packers.append(Packer(parties))
    return packers
