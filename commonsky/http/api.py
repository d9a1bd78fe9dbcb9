"""The REST and WebSocket API: one policy for every party, the same as the TAK stream.

Every request names its party by a bearer token (`Authorization: Bearer …`, or `?token=`
for the WebSocket and the browser's EventSource-free clients). Reads go through
`Hub.visible`, writes through `Hub.accept` — so an item reaches or is shown to a party over
HTTP exactly when it would over TAK. Errors are JSON `{"error": reason}` with 400 (bad
input, nothing stored), 401 (no or wrong token), 403 (not yours / no agreement), 404, 413.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from commonsky.deconflict.formats import parse_geojson, parse_kml
from commonsky.desks.drawings import geojson_to_cot_detail
from commonsky.desks.geochat import chat_event
from commonsky.desks.launch import report_event, report_from_raw
from commonsky.errors import CommonSkyError, Refused
from commonsky.http.schemas import Ack, BodyError, HotlineSend, decode_body
from commonsky.http.websocket import closed_by_hub
from commonsky.hub.core import Connection
from commonsky.hub.outbox import Outbox
from commonsky.ledger.entry import EntryError
from commonsky.ledger.log import LedgerError, Receipt
from commonsky.metrics import Metrics
from commonsky.model import Category, CotEvent, Point
from commonsky.policy import Policy
from commonsky.protocol.bounds import check_event, check_text
from commonsky.protocol.cot import (
    XmlLimits,
    check_uid,
    encode_event,
    new_event,
    parse_event,
    quote,
)
from commonsky.services import Services

log = logging.getLogger("commonsky.api")
T = TypeVar("T")


class JSONResponse(_StarletteJSON):
    """JSON written by msgspec: a number JSON cannot carry (NaN, an infinity: CoT's unknown
    altitude in a notice, an open-ended window) is written as null, never a 500."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


class ApiError(Refused):
    """An API request refused with its status (see errors.Refused); the text is the
    `{"error": …}` the client gets."""


Handler = Callable[[Request, str], Awaitable[Response]]


def authenticate(services: Services, token: str | None) -> str:
    if not token:
        raise ApiError(401, "missing bearer token")
    for party in services.hub.policy.parties.values():
        if party.token and hmac.compare_digest(party.token.encode(), token.encode()):
            return party.id
    raise ApiError(401, "unknown token")


def caller(services: Services, token: str | None) -> str | None:
    """Who a bearer token speaks for: None for the operator (`operator_token`), else the
    party (raises ApiError 401 for none or an unknown token)."""
    operator = str(services.hub.settings.operator_token)
    if token and operator and hmac.compare_digest(operator.encode(), token.encode()):
        return None
    return authenticate(services, token)


def bearer_token(request: Request) -> str | None:
    return _token(request)


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("token")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body over limit_http_body_bytes={limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body over limit_http_body_bytes={limit}")
    return bytes(body)


def decode_json(data: bytes) -> Any:
    """A JSON request body, or ApiError 400 (not JSON, or nested too deeply to decode)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"not JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "not JSON we read: nested too deeply") from None


def typed_body(data: bytes, kind: type[T]) -> T:
    """A JSON request body as its Struct (http/schemas.py), or ApiError 400 with the path."""
    try:
        return decode_body(data, kind)
    except BodyError as exc:
        raise ApiError(400, str(exc)) from None


HOTLINE_PAGE_MAX = 500  # messages per history page


def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: not an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}: must be between {low} and {high}")
    return value


def json_error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def build_api(services: Services) -> list[BaseRoute]:
    """The API's routes (the OpenAPI document describing them is http/schemas.py's)."""
    hub = services.hub
    limit = hub.settings.limit_http_body_bytes
    s = hub.settings
    max_features = s.limit_airspace_features
    xml_limits = XmlLimits(
        s.limit_message_bytes,
        s.limit_xml_depth,
        s.limit_attribute_bytes,
    )

    def party_route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                party = authenticate(services, _token(request))
                return await handler(request, party)
            except Exception as exc:
                if isinstance(exc, CommonSkyError) and exc.http_status != 500:
                    # The error says how it is answered (errors.py), whoever raised it.
                    if exc.counted:
                        hub.metrics.refuse(exc.reason)
                    if exc.http_status > 500:
                        log.error("%s: %s; answered %d", request.url.path, exc, exc.http_status)
                    return json_error(exc.http_status, exc.public())
                # Our bug: logged with its traceback, answered as JSON.
                hub.metrics.internal_error("api")
                log.exception("%s %s failed", request.method, request.url.path)
                return json_error(500, "internal error (logged)")

        return endpoint

    async def body_json(request: Request) -> Any:
        return decode_json(await read_body(request, limit))

    def as_tak(event: CotEvent) -> CotEvent:
        """The event a TAK client sending the same item would have sent: written as CoT XML
        and parsed back by the TAK path's own parser and limits. So the API accepts exactly
        what TAK accepts (uid rule, sizes, characters, times) and stores what TAK would."""
        check_event(event)  # times and numbers first: the XML writer needs them in range
        return parse_event(encode_event(event), xml_limits)

    def accept(party: str, event: CotEvent) -> dict[str, Any]:
        # A hotline message nobody may receive is refused (403) before it is stored or
        # recorded.
        item = hub.accept(party, "api", event, refuse_unrouted=(Category.HOTLINE,))
        return {"uid": item.uid, "category": item.category.value, "seq": item.seq}

    # ---- reads --------------------------------------------------------------------------

    async def me(request: Request, party: str) -> Response:
        keys = services.party_keys
        signs = keys is not None and keys.raw(party) is not None  # must sign what it sends
        me = hub.policy.parties[party]
        return JSONResponse(
            {
                "party": party,
                "name": me.name,
                "country": me.country or None,
                "signs": signs,
                "clock": clock_json(hub.clock),
            }
        )

    async def parties(request: Request, party: str) -> Response:
        return JSONResponse(roster(hub.policy, party, hub.clock()))

    async def items(request: Request, party: str) -> Response:
        category = request.query_params.get("category")
        bbox = request.query_params.get("bbox")
        box: list[float] | None = None
        if bbox:
            try:
                box = [float(v) for v in bbox.split(",")]
                assert len(box) == 4
            except (ValueError, AssertionError):
                raise ApiError(400, "bbox must be minlon,minlat,maxlon,maxlat") from None
        out = []
        for rendered, variant in hub.visible(party):
            item = rendered.item
            if category and item.category.value != category:
                continue
            if box:
                # Filter on the position as this party sees it (generalized ones are snapped).
                seen = hub.event_for(item, variant) if variant == "gen" else item.event
                lon, lat = seen.point.lon, seen.point.lat
                if not (box[0] <= lon <= box[2] and box[1] <= lat <= box[3]):
                    continue
            wire = rendered.wire(variant, "json")  # the bytes the WebSocket sends too
            if wire:  # (empty: it cannot be rendered, and is left out)
                out.append(wire)
        return Response(b"[" + b",".join(out) + b"]", media_type="application/json")

    async def conflicts(request: Request, party: str) -> Response:
        return JSONResponse(services.airspace.for_party(party))

    async def launch_events(request: Request, party: str) -> Response:
        from commonsky.desks.launch import fused_json

        views = services.launch.views.get(party, {})
        return JSONResponse([fused_json(e) for e in views.values()])

    async def hotline_history(request: Request, party: str) -> Response:
        params = request.query_params
        limit = _int_param(params.get("limit"), "limit", 100, 1, HOTLINE_PAGE_MAX)
        before = _int_param(params.get("before"), "before", 0, 1, 1 << 62) or None
        page, more = services.hotline.history_page(party, params.get("with"), before, limit)
        headers = {"X-Next-Before": str(more)} if more is not None else {}
        return JSONResponse(page, headers=headers)

    # ---- writes -------------------------------------------------------------------------

    async def post_cot(request: Request, party: str) -> Response:
        event = parse_event(await read_body(request, limit), xml_limits)
        return JSONResponse(accept(party, event), status_code=201)

    async def post_airspace(request: Request, party: str) -> Response:
        data = await read_body(request, limit)
        # A GeometryError is answered by its own hints (400; 413 for TooManyFeatures).
        if data.lstrip()[:1] == b"<":  # KML (parsed with DTDs and entities refused)
            shapes = parse_kml(data, max_features)
            features: list[Any] = [{"properties": {}} for _ in shapes]
        else:
            doc = decode_json(data)
            shapes = parse_geojson(doc, max_features)
            features = doc["features"] if doc.get("type") == "FeatureCollection" else [doc]
        # Every feature is checked before any is stored. The work is bounded per request
        # (limit_airspace_features), and relaying goes on between features: each is screened
        # against every other party's items, and each conflict it raises is a stored,
        # recorded notice.
        events = []
        for f, shape in zip(features, shapes, strict=True):
            event = as_tak(_feature_event(f, shape, hub.clock()))
            services.airspace_validate(party, event)
            events.append(event)
            await asyncio.sleep(0)
        made = []
        for event in events:
            made.append(accept(party, event))
            await asyncio.sleep(0)
        return JSONResponse(made, status_code=201)

    async def post_launch(request: Request, party: str) -> Response:
        raw = await body_json(request)
        if not isinstance(raw, dict):
            raise ApiError(400, "$: a launch report is a JSON object")
        report = report_from_raw(raw, party, hub.clock())
        event = as_tak(report_event(report, hub.clock()))
        return JSONResponse(accept(party, event), status_code=201)

    async def post_hotline(request: Request, party: str) -> Response:
        body = typed_body(await read_body(request, limit), HotlineSend)
        to, text = body.to, body.text
        if not text.strip():
            raise ApiError(400, "$.text: must not be blank")
        if to not in hub.policy.parties:
            raise ApiError(400, f"to: unknown party {to[:80]!r}")
        uid = body.uid or f"GeoChat.api.{uuid.uuid4().hex[:12]}"
        check_uid(uid)  # the CoT uid rule, as for a GeoChat sent over TAK
        check_text(text, "text")
        signature = msgspec.to_builtins(body.signature) if body.signature else None
        statement = services.check_signature(party, {"to": to, "text": text, "uid": uid}, signature)
        event = as_tak(chat_event(uid, text, hub.clock(), [to], sender=party))
        if not hub.policy.delivers(party, to, Category.HOTLINE, event.point, hub.clock()):
            raise ApiError(403, f"no hotline agreement in force from {party} to {to}")
        if statement is None or services.recorder is None:
            return JSONResponse(accept(party, event), status_code=201)
        services.recorder.statements[(party, uid)] = statement
        try:
            return JSONResponse(accept(party, event), status_code=201)
        finally:  # recorded with its item by now, or refused with it: not kept either way
            services.recorder.statements.pop((party, uid), None)

    async def post_ack(request: Request, party: str) -> Response:
        message_id = request.path_params["message_id"]
        data = await read_body(request, limit)
        body = typed_body(data, Ack) if data.strip() else Ack()
        message = services.hotline.resolve(party, message_id)
        if message is None:  # not there, or not for this party: one answer for both
            raise ApiError(404, "no such message for this party")
        signature = msgspec.to_builtins(body.signature) if body.signature else None
        statement = services.check_signature(party, {"ack": message_id}, signature)
        acked = services.hotline.acknowledge(
            party, message_id, hub.clock(), via="api", statement=statement
        )
        held = hub.durable.get(message.key)
        if acked is not None and held is not None and held.item.origin.startswith("fed:"):
            # The message came over a federation link: its sender's hub learns of the
            # acknowledgement as it would from a TAK device — a read receipt of this party's
            # (`b-t-f-r`), which crosses back.
            now = hub.clock()
            # As ATAK's: uid and messageId are the GeoChat message id, in the sender's space.
            named = f"{message.sender}::{message.message_id or message.key[1]}"
            ref = quote(named)
            receipt = new_event(
                named,
                "b-t-f-r",
                now,
                now + 3600.0,
                Point(0.0, 0.0),
                f'<__chatreceipt messageId="{ref}"/><link uid="{ref}" relation="p-p"/>',
            )
            hub.accept(party, "api", receipt)
        return JSONResponse((acked or message).to_json(hub.clock()))

    async def ledger_checkpoint(request: Request) -> Response:
        # A party gets the latest signed tree head (signed afresh at most once per
        # `timeout_checkpoint_s`, so polling it cannot time other parties' traffic); the
        # operator may ask for a fresh one.
        try:
            who = caller(services, _token(request))
            if services.recorder is None:
                raise ApiError(404, "no ledger")
            ledger = services.recorder.ledger
            if who is None:
                return JSONResponse(ledger.checkpoint().to_json())
            return JSONResponse(services.party_checkpoint().to_json())
        except ApiError as exc:
            return json_error(exc.status, exc.public())

    async def ledger_receipt(request: Request, party: str) -> Response:
        if services.recorder is None:
            raise ApiError(404, "no ledger")
        ledger = services.recorder.ledger
        raw = request.path_params["seq"]
        # Outside the audience or not there: the same answer (no oracle of what exists).
        missing = ApiError(404, f"no entry {raw[:20]!r} for this party")
        try:
            seq = int(raw)
            entry = ledger.entry(seq) if 0 <= seq < ledger.size else None
        except (ValueError, LedgerError, EntryError):  # (not a number; not there; unreadable)
            raise missing from None
        if entry is None or not entry.visible_to(party):
            raise missing
        cp = services.party_checkpoint()
        if cp.size <= seq:
            wait = services.checkpoint_due_in()
            return JSONResponse(
                {"error": f"entry {seq} is not in a signed checkpoint yet; retry in {wait} s"},
                status_code=409,
                headers={"Retry-After": str(wait)},
            )
        receipt = Receipt(seq, ledger.leaf(seq), ledger.inclusion_proof(seq, cp.size), cp)
        return JSONResponse(receipt.to_json())

    # ---- live ---------------------------------------------------------------------------

    async def websocket(ws: WebSocket) -> None:
        try:
            party = authenticate(services, ws.query_params.get("token"))
        except ApiError:
            await ws.close(code=4401)
            return
        refused = hub.admit(party)
        if refused is not None:
            hub.metrics.close(refused)
            await ws.close(code=1013, reason=refused)  # "try again later"
            return
        await ws.accept()
        outbox = Outbox(hub.settings.limit_queue_tracks, hub.settings.limit_queue_durable)
        page = PagePeer(hub.metrics, outbox)
        closed = page.closed

        def ended() -> None:
            # The socket is gone: the client left, unless uvicorn failed it (its keepalive,
            # a frame it could not take), which is a close of the hub's (http/websocket.py).
            page.close(closed_by_hub(ws.scope) or "client_gone")

        async def watch_client() -> None:
            # The page sends nothing; reading is how a closed browser tab is noticed.
            try:
                while (await ws.receive())["type"] != "websocket.disconnect":
                    pass
            finally:
                ended()

        conn = Connection(
            party,
            "web",
            "websocket",
            outbox,
            page,
            id=f"ws#{uuid.uuid4().hex[:8]}",
            oversight=True,  # the party's map page: addressing narrows TAK devices, not it
        )
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        log.info("websocket %s: %s/web connected from %s", conn.id, party, peer)
        hub.attach(conn)
        watcher = asyncio.create_task(watch_client())
        try:
            while not closed:
                await outbox.ready.wait()
                outbox.ready.clear()
                batch = outbox.take()
                # An item that cannot be rendered comes back empty: left out, not the batch.
                parts = [wire for p in batch if (wire := p.rendered.wire(p.variant, "json"))]
                if parts:
                    await ws.send_bytes(b"[" + b",".join(parts) + b"]")
                    hub.record_delivery(conn, batch)
                if outbox.backlog is not None:
                    outbox.ready.set()  # the next page of the replay, once this one is sent
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if not closed:
                ended()
            log.info(
                "websocket %s: %s/web from %s disconnected (%s)",
                conn.id,
                party,
                peer,
                closed[0] if closed else "closed",
            )
            hub.detach(conn)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
            if closed[:1] != ["client_gone"]:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def cap_feed(request: Request) -> Response:
        from commonsky.alerts import atom_feed

        alerts = services.launch.feed()
        base = str(request.base_url).rstrip("/")
        return Response(atom_feed(alerts, base), media_type="application/atom+xml")

    async def cap_alert(request: Request) -> Response:
        from commonsky.alerts import cap_xml

        ident = request.path_params["ident"]
        alerts = services.launch.alerts
        if ident not in alerts:
            return json_error(404, "no such alert")
        return Response(cap_xml(alerts[ident]), media_type="application/cap+xml")

    routes: list[BaseRoute] = [
        Route("/cap/feed.atom", cap_feed),
        Route("/cap/alerts/{ident}.xml", cap_alert),
        Route("/api/me", party_route(me)),
        Route("/api/parties", party_route(parties)),
        Route("/api/items", party_route(items)),
        Route("/api/cot", party_route(post_cot), methods=["POST"]),
        Route("/api/airspace", party_route(post_airspace), methods=["POST"]),
        Route("/api/launch", party_route(post_launch), methods=["POST"]),
        Route("/api/launch/events", party_route(launch_events)),
        Route("/api/conflicts", party_route(conflicts)),
        Route("/api/hotline", party_route(hotline_history)),
        Route("/api/hotline/send", party_route(post_hotline), methods=["POST"]),
        Route("/api/hotline/{message_id}/ack", party_route(post_ack), methods=["POST"]),
        Route("/api/ledger/checkpoint", ledger_checkpoint),
        Route("/api/ledger/receipts/{seq}", party_route(ledger_receipt)),
        WebSocketRoute("/api/ws", websocket),
    ]
    return routes


def _feature_event(feature: Any, shape: Any, now: float) -> CotEvent:
    """A GeoJSON airspace feature as the TAK drawing clients will see."""
    from commonsky.deconflict.shapes import Circle, Corridor, Line, Site, Volume
    from commonsky.deconflict.shapes import Point as GPoint
    from commonsky.deconflict.shapes import Polygon as GPolygon

    props = dict(feature.get("properties") or {}) if isinstance(feature, dict) else {}
    uid = str(props.pop("uid", "") or f"airspace-{uuid.uuid4().hex[:12]}")
    callsign = str(props.pop("callsign", "") or uid)
    start, stale = now, now + 86400.0
    inner: Any = shape.shape if isinstance(shape, Volume | Site) else None
    # The checked shape, not the raw properties, says what the TAK drawing carries (levels
    # given as flight levels, KML's ExtendedData and GeoJSON all end up in metres).
    if isinstance(shape, Volume):
        start, stale = shape.start_s, shape.end_s
        props.update(
            item="volume",
            floor_m=shape.floor_m,
            ceiling_m=shape.ceiling_m,
            start=shape.start_s,
            end=shape.end_s,
        )
        props.pop("floor_fl", None), props.pop("ceiling_fl", None)
        if shape.kind:
            props["kind"] = shape.kind
    elif isinstance(shape, Line):
        props.update(item="line", left_party=shape.left_party, right_party=shape.right_party)
    else:
        props.update(item="site", floor_m=shape.floor_m, ceiling_m=shape.ceiling_m)
        props.pop("floor_fl", None), props.pop("ceiling_fl", None)
    coords: list[tuple[float, float]] = []
    centre = (0.0, 0.0)
    cot_type = "u-d-f"
    if isinstance(shape, Line):
        coords = list(shape.path)
    elif isinstance(inner, GPolygon):
        coords = list(inner.ring)
        if coords[0] != coords[-1]:
            coords.append(coords[0])
    elif isinstance(inner, Corridor):
        coords = list(inner.path)
    elif isinstance(inner, Circle):
        centre = inner.centre
        props["radius_m"] = inner.radius_m
        cot_type = "u-d-c-c" if isinstance(shape, Volume) else "u-d-p"
    elif isinstance(inner, GPoint):
        centre = inner.at
        cot_type = "u-d-p"
    if coords:
        centre = coords[0]
    detail = geojson_to_cot_detail(props, coords if cot_type == "u-d-f" else [])
    detail += f'<contact callsign="{quote(callsign)}"/>'
    return CotEvent(
        uid=uid,
        type=cot_type,
        time=now,
        start=min(start, now),
        stale=max(stale, now + 1.0),
        how="h-e",
        point=Point(centre[1], centre[0]),
        detail=detail,
    )


class PagePeer:
    """The `Peer` of one map page (WebSocket): reads JSON; the sender loop in `live`
    writes, woken by `flush`; `closed` keeps the reason first."""

    mode = "json"

    def __init__(self, metrics: Metrics, outbox: Outbox) -> None:
        self.metrics = metrics
        self.outbox = outbox
        self.closed: list[str] = []

    def close(self, reason: str) -> None:
        if not self.closed and reason != "client_gone":  # counted like a TAK connection's
            self.metrics.close(reason)
        self.closed.append(reason)
        self.outbox.ready.set()  # wake the sender loop so it sees the close

    def flush(self) -> None:
        self.outbox.ready.set()


def clock_json(clock: Callable[[], float]) -> dict[str, Any]:
    """The hub's time and how fast it runs: `rate` > 1 while a demo plays its scenarios
    compressed (the page then says it shows scenario time)."""
    rate = float(getattr(clock, "rate", 1.0))
    return {"time": clock(), "rate": rate, "scenario": bool(getattr(clock, "scenario", False))}


def roster(policy: Policy, party: str, now: float) -> list[dict[str, Any]]:
    """The parties `party` shares an agreement with (either way, in force or not), itself
    first: id, name, country, and `hotline` — whether a hotline message from `party` would
    reach it now. Parties it has no agreement with are not named (need to know)."""
    related = {party}
    for agreement in policy.agreements:
        if agreement.provider == party:
            related.update(agreement.recipients)
        elif party in agreement.recipients:
            related.add(agreement.provider)
    point = chat_event("roster", "-", now, []).point  # where a hotline message stands
    out = []
    for pid in sorted(related, key=lambda p: (p != party, p)):
        known = policy.parties.get(pid)
        if known is None:
            continue
        out.append(
            {
                "id": pid,
                "name": known.name or pid,
                "country": known.country or None,
                "you": pid == party,
                "hotline": pid != party
                and policy.delivers(party, pid, Category.HOTLINE, point, now),
            }
        )
    return out
