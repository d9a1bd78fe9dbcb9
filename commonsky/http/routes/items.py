"""Routes of the shared picture: who am I, who do I share with, the items I may see, the
conflicts for me, and raw CoT in (`POST /api/cot`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from commonsky.desks.geochat import chat_event
from commonsky.http.base import Api, ApiError, JSONResponse
from commonsky.model import Category
from commonsky.policy import Policy
from commonsky.protocol.cot import parse_event


def routes(api: Api) -> list[BaseRoute]:
    return [
        Route("/api/me", api.party_route(me)),
        Route("/api/parties", api.party_route(parties)),
        Route("/api/items", api.party_route(items)),
        Route("/api/cot", api.party_route(post_cot), methods=["POST"]),
        Route("/api/conflicts", api.party_route(conflicts)),
    ]


async def me(api: Api, request: Request, party: str) -> Response:
    keys = api.services.party_keys
    signs = keys is not None and keys.raw(party) is not None  # must sign what it sends
    me = api.hub.policy.parties[party]
    return JSONResponse(
        {
            "party": party,
            "name": me.name,
            "country": me.country or None,
            "signs": signs,
            "clock": clock_json(api.hub.clock),
        }
    )


async def parties(api: Api, request: Request, party: str) -> Response:
    return JSONResponse(roster(api.hub.policy, party, api.hub.clock()))


async def items(api: Api, request: Request, party: str) -> Response:
    hub = api.hub
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


async def conflicts(api: Api, request: Request, party: str) -> Response:
    return JSONResponse(api.services.airspace.for_party(party))


async def post_cot(api: Api, request: Request, party: str) -> Response:
    event = parse_event(await api.body(request), api.xml_limits)
    return JSONResponse(api.accept(party, event), status_code=201)


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
