"""Launch routes: a launch report in (`POST /api/launch`), the fused launch events a party
may see, and the public CAP alerts (Atom feed and one alert's XML)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from commonsky.desks.launch import report_event, report_from_raw
from commonsky.http.base import Api, ApiError, JSONResponse, json_error


def routes(api: Api) -> list[BaseRoute]:
    async def cap_feed(request: Request) -> Response:
        from commonsky.alerts import atom_feed

        alerts = api.services.launch.feed()
        base = str(request.base_url).rstrip("/")
        return Response(atom_feed(alerts, base), media_type="application/atom+xml")

    async def cap_alert(request: Request) -> Response:
        from commonsky.alerts import cap_xml

        ident = request.path_params["ident"]
        alerts = api.services.launch.alerts
        if ident not in alerts:
            return json_error(404, "no such alert")
        return Response(cap_xml(alerts[ident]), media_type="application/cap+xml")

    return [
        Route("/cap/feed.atom", cap_feed),
        Route("/cap/alerts/{ident}.xml", cap_alert),
        Route("/api/launch", api.party_route(post_launch), methods=["POST"]),
        Route("/api/launch/events", api.party_route(launch_events)),
    ]


async def launch_events(api: Api, request: Request, party: str) -> Response:
    from commonsky.desks.launch import fused_json

    views = api.services.launch.views.get(party, {})
    return JSONResponse([fused_json(e) for e in views.values()])


async def post_launch(api: Api, request: Request, party: str) -> Response:
    raw = await api.body_json(request)
    if not isinstance(raw, dict):
        raise ApiError(400, "$: a launch report is a JSON object")
    report = report_from_raw(raw, party, api.hub.clock())
    event = api.as_tak(report_event(report, api.hub.clock()))
    return JSONResponse(api.accept(party, event), status_code=201)
