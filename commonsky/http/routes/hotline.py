"""Hotline routes: a party's message history (paged), sending a message (signed when the
party must sign), and acknowledging one (a read receipt back over federation)."""

from __future__ import annotations

import uuid

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from commonsky.desks.geochat import chat_event
from commonsky.http.base import Api, ApiError, JSONResponse, int_param, typed_body
from commonsky.http.schemas import Ack, HotlineSend
from commonsky.model import Category, Point
from commonsky.protocol.bounds import check_text
from commonsky.protocol.cot import check_uid, new_event, quote

HOTLINE_PAGE_MAX = 500  # messages per history page


def routes(api: Api) -> list[BaseRoute]:
    return [
        Route("/api/hotline", api.party_route(hotline_history)),
        Route("/api/hotline/send", api.party_route(post_hotline), methods=["POST"]),
        Route("/api/hotline/{message_id}/ack", api.party_route(post_ack), methods=["POST"]),
    ]


async def hotline_history(api: Api, request: Request, party: str) -> Response:
    params = request.query_params
    limit = int_param(params.get("limit"), "limit", 100, 1, HOTLINE_PAGE_MAX)
    before = int_param(params.get("before"), "before", 0, 1, 1 << 62) or None
    page, more = api.services.hotline.history_page(party, params.get("with"), before, limit)
    headers = {"X-Next-Before": str(more)} if more is not None else {}
    return JSONResponse(page, headers=headers)


async def post_hotline(api: Api, request: Request, party: str) -> Response:
    hub, services = api.hub, api.services
    body = typed_body(await api.body(request), HotlineSend)
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
    event = api.as_tak(chat_event(uid, text, hub.clock(), [to], sender=party))
    if not hub.policy.delivers(party, to, Category.HOTLINE, event.point, hub.clock()):
        raise ApiError(403, f"no hotline agreement in force from {party} to {to}")
    if statement is None or services.recorder is None:
        return JSONResponse(api.accept(party, event), status_code=201)
    services.recorder.statements[(party, uid)] = statement
    try:
        return JSONResponse(api.accept(party, event), status_code=201)
    finally:  # recorded with its item by now, or refused with it: not kept either way
        services.recorder.statements.pop((party, uid), None)


async def post_ack(api: Api, request: Request, party: str) -> Response:
    hub, services = api.hub, api.services
    message_id = request.path_params["message_id"]
    data = await api.body(request)
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
