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
so a holding ends at the item's stale time, 600 s after its last announcement, when the
edge writes another version of the item (`EdgeHub.deliver`: `LongMessages.supersede`), and
at the next change of the agreements in force (`Policy.next_change`: the edge cannot tell
whom a change narrows, so every holding ends then; an announcement written after it holds
the form again). Its XML is the core's own where the edge has it (an XML output, a picture
entry), else the protobuf output parsed and written as XML (`as_xml`): the bytes the core
holds under the same SHA-256.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from commonsky.hub.held import LongMessages
from commonsky.hub.outbox import Rendered, Variant
from commonsky.marti.net import advertised
from commonsky.model import CotEvent
from commonsky.policy import Policy
from commonsky.protocol.cot import XmlLimits, parse_event
from commonsky.protocol.render import PROTO, XML, render
from commonsky.protocol.takv1 import parse_proto_event
from commonsky.settings import Settings

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from commonsky.config import HubConfig, ListenerConfig
    from commonsky.marti.http import HttpListener

CONTENT = "/Marti/sync/content"


def proto_header(frame: bytes) -> int:
    """The length of a TAK v1 frame's header: 0xbf and the payload length's varint."""
    at = 1
    while at < len(frame) and frame[at] & 0x80:
        at += 1
    return at + 1


def output_limits(settings: Settings) -> XmlLimits:
    """The bounds an output is read within (the core's rendering of an accepted event: a
    little longer than what was accepted)."""
    return XmlLimits(4 * settings.limit_message_bytes, settings.limit_xml_depth,
                     settings.limit_attribute_bytes)  # fmt: skip


def as_xml(mode: str, data: bytes, limits: XmlLimits) -> tuple[CotEvent, bytes]:
    """An output's event and its CoT XML: `data` itself, or a protobuf output parsed and
    written as XML. The same bytes wherever it is done (each edge, the core: core_long.py),
    so the SHA-256 an edge announces names what the core holds."""
    if mode == PROTO:
        event = parse_proto_event(data[proto_header(data) :], limits)
        return event, render(event, XML)
    return parse_event(data, limits), data


def long_messages(settings: Settings, policy: Policy, clock: Callable[[], float]) -> LongMessages:
    """The edge's store of long forms (module header)."""
    limits = output_limits(settings)

    def edge_form(rendered: Rendered, variant: Variant, mode: str,
                  data: bytes) -> tuple[bytes, float]:  # fmt: skip
        """An output's CoT XML — the core's own if the edge has it (a picture entry, an
        XML output) — held until the item's stale time or the next change of the
        agreements, the earlier."""
        xml = rendered.cache.get((variant, XML))
        event, xml = as_xml(XML, xml, limits) if xml is not None else as_xml(mode, data, limits)
        return xml, min(event.stale, policy.next_change(clock()))

    return LongMessages(clock, edge_form)


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
    sha = request.query_params.get("hash", "").lower()
    held = store.get(party, sha)
    if held is None:
        return None
    from commonsky.marti.api import held_response

    return held_response(sha, held.xml)
