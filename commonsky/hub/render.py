"""An item's wire forms, made once per (variant, mode) and shared by every recipient.

Rule: the hub renders an item in exactly one place (`Renderer.render`): CoT XML and TAK
protobuf through `protocol/render.py` (the same function the session uses for its own
replies), JSON for the map page here. Which names an event carries for a recipient is
`naming.py`'s; what variant a party gets is routing's (`core.py`).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from msgspec.structs import replace

from commonsky.deconflict.shapes import Line, Site, Volume
from commonsky.metrics import Metrics
from commonsky.model import CotEvent, Item
from commonsky.protocol.cot import quote
from commonsky.protocol.refs import link_target
from commonsky.protocol.render import XML, render

from .deletes import DELETE_TYPE
from .naming import Naming
from .outbox import Rendered, Variant
from .pagejson import Drawing, page_fields

log = logging.getLogger("commonsky.hub")

JSON = "json"
_json_encoder = msgspec.json.Encoder()


class Renderer:
    """Makes `Rendered.wire`'s bytes: `rendered(item)` wraps an item with this as its maker."""

    def __init__(self, naming: Naming, metrics: Metrics) -> None:
        self.naming = naming
        self.metrics = metrics

    def rendered(self, item: Item) -> Rendered:
        return Rendered(item, self.render)

    def render(self, rendered: Rendered, variant: Variant, mode: str) -> bytes:
        """One wire form of an item; b"" (nothing is sent) when it cannot be rendered.

        Validation at the edge should make this impossible; if an item slips through all the
        same, it costs only itself — never the batch, the connection or another party."""
        try:
            if ":" in variant:  # names depend on the recipient: cached under the names
                names = self.naming.names(rendered, variant.partition(":")[2])
                key = (names, mode)
                data = rendered.cache.get(key)
                if data is None:
                    event = self.naming.with_names(rendered, names)
                    data = rendered.cache[key] = encode(rendered, event, mode)
                return data
            if mode == XML:  # a form that differs from the item's event only in its uid
                uid = self.naming.only_uid(rendered, variant)
                if uid is not None:
                    return _xml_with_uid(rendered, uid)
            return encode(rendered, self.naming.event(rendered, variant), mode)
        except Exception as exc:
            item = rendered.item
            self.metrics.render_failed(mode)
            log.error(
                "cannot render item #%d %s/%r as %s (%s): %s: %s; not sent in that form",
                item.seq,
                item.party,
                item.uid[:120],
                mode,
                variant,
                type(exc).__name__,
                str(exc)[:300],
            )
            return b""


# Where the uid goes in an item's XML cut around it: no accepted text holds U+0000
# (`bounds.py`), so this is in the XML exactly where the uid is written.
_UID_MARK = "\x00"


def _xml_with_uid(rendered: Rendered, uid: str) -> bytes:
    """The item's CoT XML with `uid` written as its uid, all else as `render` writes the
    item's event: the XML is made once per item, cut where the uid is written
    (`Rendered.xml_around_uid`), and each form that differs only in its uid ("own",
    "full") joins its uid in. (Rendering the whole event per form was a third of the cost
    of writing an item out: `commonsky bench relay`, docs/performance.md.)"""
    around = rendered.xml_around_uid
    if around is None:
        marked = render(replace(rendered.item.event, uid=_UID_MARK), XML)
        around = tuple(marked.split(_UID_MARK.encode()))
        rendered.xml_around_uid = around = around if len(around) == 2 else ()
    if not around:  # (the XML carries no uid, or the mark twice): the whole event
        return render(replace(rendered.item.event, uid=uid), XML)
    return b"".join((around[0], quote(uid).encode(), around[1]))


def encode(rendered: Rendered, event: CotEvent, mode: str) -> bytes:
    """`event` (the item as one recipient sees it) in `mode`: "json" (the map page) or a
    TAK wire form (`protocol.render.render`)."""
    if mode == JSON:
        return _json_encoder.encode(item_json(rendered.item, event, drawing_of(rendered, event)))
    return render(event, mode)


def drawing_of(rendered: Rendered, event: CotEvent) -> Drawing | None:
    """The airspace item a desk's check read from the item's event, if `event` (the form
    one recipient gets) draws the same: only the uid may differ (a `full` recipient's). A
    generalized form, its details stripped, is read anew (as its coarse spot)."""
    own = rendered.item.event
    for parsed in rendered.parsed:
        if isinstance(parsed, Volume | Line | Site):
            same = event is own or (
                event.detail == own.detail
                and event.point == own.point
                and event.type == own.type
                and event.start == own.start
                and event.stale == own.stale
            )
            return parsed if same else None
    return None


def item_json(item: Item, event: CotEvent, drawing: Drawing | None = None) -> dict[str, Any]:
    """The JSON form of a delivered item (WebSocket and REST): CoT names, our category,
    `detail` as sent, and the typed fields the map page draws from (`pagejson.page_fields`;
    `drawing`: the airspace item already read from `event`, if any)."""
    p = event.point
    return {
        "uid": event.uid,
        "type": event.type,
        "category": item.category.value,
        "party": item.party,
        "seq": item.seq,
        "how": event.how,  # null when the sender wrote none
        "time": event.time,
        "start": event.start,
        "stale": event.stale,
        "access": event.access,  # null when absent, "" when the sender wrote access=""
        "lat": p.lat,
        "lon": p.lon,
        "hae": p.hae,
        "ce": p.ce,
        "le": p.le,
        "callsign": event.callsign,
        "speed": event.speed,
        "course": event.course,
        "detail": event.detail,
        # The federation link it came over (commonsky/federation: origin "fed:<link>>path"), so
        # the map can say which hub an item came from; null for this hub's own.
        "via": item.origin[4:].partition(">")[0] if item.origin.startswith("fed:") else None,
        # A delete names the item it removes, as this recipient knows it (the map drops it).
        **({"deletes": link_target(event)} if event.type == DELETE_TYPE else {}),
        # What the page draws, typed (geometry as GeoJSON): pagejson.py's table.
        **page_fields(item.category, event, drawing),
    }
