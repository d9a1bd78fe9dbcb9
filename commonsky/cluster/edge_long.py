"""Items too long for a TAK client's stream, on a cluster's edge (hub/held.py).

The edge holds the client's connection and its outbox, so the edge does what the single
process does (docs/architecture.md, "Message size"): the TAK listeners write, in place of
an output over 65,536 bytes bound for a TAK TLS client whose certificate the edge's `marti`
listener accepts, a `b-f-t-r` naming it at that listener's `/Marti/sync/content?hash=`;
the form is held in the single process's store (`LongMessages`, bounded the same:
HELD_BYTES, HOLD_S), read by `edge_form`; and the edge answers that fetch itself
(`held_answer`), to a party the announcement was written to. Every other request, and a
hash not held here for the caller, goes to the core as before: the core holds every long
output it sends a TAK TLS client too (core_long.py), so a client whose fetch reaches
another edge than the one it streams to (edges sharing a port by SO_REUSEPORT, a load
balancer) gets it from the core, under the core's own checks (`HubPort.held`); anyone
else gets 404.

What the edge knows of an output is its bytes, the item's key and its version (`received`),
so a holding ends (`end_holdings`) at the item's stale time, 600 s after its last
announcement, when the edge is sent another version of the item (`LongMessages.supersede`),
when it is sent a delete of the item — the owner's `t-x-d-d` or a withdrawal, whose output
carries the delete's own uid: the core names the item it ends (`Delivery.ended`, packer.py;
`LongMessages.end`) — and at the next change of the agreements in force
(`Policy.next_change`: the edge cannot tell whom a change narrows, so every holding ends
then; an announcement written after it holds the form again). Ending more than needed costs
nothing but a forward: a fetch of what the edge does not hold goes to the core. Its XML is
the core's own where the edge has it (an XML output, a picture entry), else the protobuf
output parsed and written as XML (`as_xml`): the bytes the core holds under the same
SHA-256. The core's rendering is read within `output_limits`, which admit its own renaming;
a form that still cannot be read is logged once per item version (rate-limited) and the
item written whole, without reading it again on every write (`read_once`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from commonsky.hub.held import Form, LongMessages
from commonsky.hub.outbox import Rendered, Variant
from commonsky.marti.net import advertised
from commonsky.model import CotEvent
from commonsky.policy import Policy
from commonsky.protocol.cot import XmlLimits, parse_event
from commonsky.protocol.render import PROTO, XML, frame_header, render
from commonsky.protocol.takv1 import parse_proto_event
from commonsky.ratelog import RateLimitedLog
from commonsky.settings import Settings

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from commonsky.config import HubConfig, ListenerConfig
    from commonsky.marti.http import HttpListener

    from .wire import Delivery

log = logging.getLogger("commonsky.cluster")

CONTENT = "/Marti/sync/content"
_FAILED_KEPT = 4096  # item versions whose long form could not be read, remembered at most


def output_limits(settings: Settings) -> XmlLimits:
    """The bounds an output is read within: the core's rendering of an accepted event, a
    little longer than what was accepted — names gain their party's prefix (`PARTY::uid`),
    so an attribute accepted at `limit_attribute_bytes` is longer in the output: each
    attribute is bounded by the output's own bound only."""
    most = 4 * settings.limit_message_bytes
    return XmlLimits(most, settings.limit_xml_depth, most)


def as_xml(mode: str, data: bytes, limits: XmlLimits) -> tuple[CotEvent, bytes]:
    """An output's event and its CoT XML: `data` itself, or a protobuf output parsed and
    written as XML. The same bytes wherever it is done (each edge, the core: core_long.py),
    so the SHA-256 an edge announces names what the core holds."""
    if mode == PROTO:
        event = parse_proto_event(data[frame_header(data) :], limits)
        return event, render(event, XML)
    return parse_event(data, limits), data


def read_once(form: Form, logs: RateLimitedLog, who: str) -> Form:
    """`form`, where a failure to read an output is logged once per item version
    (rate-limited: `logs`) and remembered, so that the item is written whole (not held)
    without reading it again on every write."""
    failed: dict[tuple[object, ...], None] = {}

    def once(rendered: Rendered, variant: Variant, mode: str,
             data: bytes) -> tuple[bytes, float]:  # fmt: skip
        item = rendered.item
        seen = (item.key, item.received, variant, mode)
        if seen in failed:
            return b"", 0.0
        try:
            return form(rendered, variant, mode, data)
        except Exception as exc:  # (a rendering it cannot read: the item goes whole)
            if len(failed) >= _FAILED_KEPT:
                del failed[next(iter(failed))]
            failed[seen] = None
            logs.log(log, logging.ERROR, "long_form", f"{item.key[0]}/{item.key[1][:120]}",
                     "%s: the long form of %s/%r (%d bytes, %s) is unreadable, written whole: "
                     "%s", who, item.key[0], item.key[1][:120], len(data), mode,
                     str(exc)[:300])  # fmt: skip
            return b"", 0.0

    return once


def end_holdings(store: LongMessages, delivery: Delivery) -> None:
    """What `delivery` ends of the forms held (module header): those of another version of
    an item it carries, and every one of an item one of its deletes names."""
    for o in delivery.outputs:
        store.supersede((o.party, o.uid), o.received)
    for key in delivery.ended:
        store.end(key)


def long_messages(settings: Settings, policy: Policy, clock: Callable[[], float],
                  logs: RateLimitedLog | None = None) -> LongMessages:  # fmt: skip
    """The edge's store of long forms (module header); `logs`: the edge's."""
    limits = output_limits(settings)

    def edge_form(rendered: Rendered, variant: Variant, mode: str,
                  data: bytes) -> tuple[bytes, float]:  # fmt: skip
        """An output's CoT XML — the core's own if the edge has it (a picture entry, an
        XML output) — held until the item's stale time or the next change of the
        agreements, the earlier."""
        xml = rendered.cache.get((variant, XML))
        event, xml = as_xml(XML, xml, limits) if xml is not None else as_xml(mode, data, limits)
        return xml, min(event.stale, policy.next_change(clock()))

    return LongMessages(clock, read_once(edge_form, logs or RateLimitedLog(), "edge"))


def serve_long(held: LongMessages, listener: HttpListener, config: ListenerConfig) -> None:
    """Announce long items to the edge's TAK TLS clients of `config`'s CA, fetched from
    `listener` (this edge's first `marti` listener, started)."""
    assert config.ca is not None
    held.serve(lambda: f"https://{advertised(config, listener.port)}", Path(config.ca))


def serve_core_marti(held: LongMessages, config: HubConfig) -> None:
    """Role `all`: announce long items naming the core's own `marti` listener (the first
    with a CA, at its configured address), whose store holds them too (core_long.py)."""
    lc = next((lc for lc in config.listeners if lc.kind == "marti" and lc.ca), None)
    if lc is not None and lc.ca is not None:
        held.serve(lambda: f"https://{advertised(lc, lc.port)}", Path(lc.ca))


def held_answer(store: LongMessages, request: Request, party: str) -> Response | None:
    """The fetch of a form this edge holds for `party` (its CoT XML), else None."""
    if request.url.path != CONTENT or request.method not in ("GET", "HEAD"):
        return None
    from commonsky.errors import Refused
    from commonsky.marti.api import hash_param, held_response

    try:
        sha = hash_param(request)  # (read as the core reads it; a bad one is the core's 400)
    except Refused:
        return None
    held = store.get(party, sha)
    if held is None:
        return None

    return held_response(sha, held.xml)
