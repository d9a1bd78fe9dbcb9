"""Items too long for a TAK client's stream, held by a cluster's core as well (hub/held.py).

An edge announces such an item to its TAK TLS client and holds it (edge_long.py); but the
edges of a host share the `marti` port (SO_REUSEPORT spreads connections, not clients), so
the client's fetch may reach another edge, which forwards it to the core. So the core holds
each long output too, in its hub's own store (`LongMessages`, the same HOLD_S and
HELD_BYTES), before the output leaves for an edge (`hold_sent`: one length test per output
of a delivery, made as it is packed), granted to the parties of the TAK TLS clients it goes
to; and the items an edge gives a client from the picture bucket, when the core handles
its Attach (`replayed_long`). Its marti app answers the fetch as the single process does
(`HubPort.held`: only to a party it was written to, only while that party would still be
written that very form of that version; else 404). Its CoT XML is read from the output's
bytes as the edges read it (`edge_long.as_xml`: a protobuf output parsed and written as
XML), so the SHA-256 an edge announces names what the core holds. Role `all` falls out:
its edge announces naming the core's own `marti` listener (run.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from commonsky.hub.held import STREAM_BYTES, Held, LongMessages
from commonsky.hub.outbox import Pending, Rendered, Variant
from commonsky.protocol.render import PROTO, XML

from .edge_long import as_xml, output_limits, read_once

if TYPE_CHECKING:
    from commonsky.hub.connection import Connection
    from commonsky.hub.core import Hub

    from .packer import Packer

log = logging.getLogger("commonsky.cluster")

#: What `PictureWriter.covered` is: whether the edge gave a client this item from the bucket.
Covered = Callable[[str, Pending, int, frozenset[str]], bool]


def hold_forms(hub: Hub) -> None:
    """The core's store reads a long output's CoT XML as the edges do (module header)."""
    limits = output_limits(hub.settings)

    def core_form(rendered: Rendered, variant: Variant, mode: str,
                  data: bytes) -> tuple[bytes, float]:  # fmt: skip
        xml = as_xml(mode, data, limits)[1] if mode == PROTO else data
        return xml, rendered.item.event.stale

    hub.wires.held.form = read_once(core_form, hub.logs, "core")


def _hold(store: LongMessages, pending: Pending, mode: str, data: bytes | None) -> Held | None:
    """`pending`'s form in `mode` held (`data`: its bytes; None: the XML rendered, and held
    only if too long), or None."""
    try:
        if data is None:
            data = pending.rendered.wire(pending.variant, mode)
            if len(data) <= STREAM_BYTES:
                return None
        return store.announce(pending.rendered, pending.variant, mode, data)
    except Exception:  # (our bug: it costs the holding only; the edge's own still answers)
        log.exception("core: cannot hold long item #%d", pending.rendered.item.seq)
        return None


def hold_sent(store: LongMessages, proxies: Mapping[tuple[str, str], Connection], edge: str,
              packers: list[Packer]) -> None:  # fmt: skip
    """Before they leave: each long output of `packers` (deliveries to `edge`) held,
    granted to the parties of the TAK TLS clients (`proxies`: by edge and id) it goes to."""
    for packer in packers:
        if not packer.longs:
            continue
        helds: dict[int, Held | None] = {}
        for conn_ids, indexes in packer.sends:
            long = [at for at in indexes if at in packer.longs]
            if not long:
                continue
            conns = [c for c in (proxies.get((edge, i)) for i in conn_ids) if c is not None]
            parties = {c.party for c in conns if c.listener == "tak-tls"}
            if not parties:
                continue
            for at in long:
                if at not in helds:
                    out = packer.outputs[at]
                    helds[at] = _hold(store, packer.longs[at], out.mode, out.data)
                held = helds[at]
                if held is not None:
                    for party in parties:
                        store.grant(party, (held,))


def replayed_long(covered: Covered, store: LongMessages, conn: Connection) -> Covered:
    """`covered`, holding each long item it finds the edge gave `conn` (a TAK TLS client)
    from the picture bucket — the entry's XML, the core's rendering — for `conn`'s party."""
    if conn.listener != "tak-tls" or store.url is None:
        return covered

    def replayed(party: str, pending: Pending, upto: int, unread: frozenset[str]) -> bool:
        if not covered(party, pending, upto, unread):
            return False
        held = _hold(store, pending, XML, None)
        if held is not None:
            store.grant(party, (held,))
        return True

    return replayed
