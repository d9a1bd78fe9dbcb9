"""What every API route shares: bearer-token identity, bounded bodies, JSON errors, and
`Api` — the hub, its limits and the one way an API write becomes an item.

Every request names its party by a bearer token (`Authorization: Bearer …`, or `?token=`
for the WebSocket and the browser's EventSource-free clients). Errors are JSON
`{"error": reason}` with 400 (bad input, nothing stored), 401 (no or wrong token), 403 (not
yours / no agreement), 404, 413.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response

from commonsky.errors import CommonSkyError, Refused
from commonsky.http.schemas import BodyError, decode_body
from commonsky.model import Category, CotEvent
from commonsky.policy import Policy
from commonsky.protocol.bounds import check_event
from commonsky.protocol.cot import XmlLimits, encode_event, parse_event
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


def authenticate(services: Services, token: str | None) -> str:
    return token_party(services.hub.policy, token)


def token_party(policy: Policy, token: str | None) -> str:
    """The party whose `token` this is; ApiError 401 for none or an unknown token."""
    if not token:
        raise ApiError(401, "missing bearer token")
    for party in policy.parties.values():
        if party.token and hmac.compare_digest(party.token.encode(), token.encode()):
            return party.id
    raise ApiError(401, "unknown token")


def caller(services: Services, token: str | None) -> str | None:
    """Who a bearer token speaks for: None for the operator (`operator_token`), else the
    party (raises ApiError 401 for none or an unknown token)."""
    return token_caller(services.hub.policy, str(services.hub.settings.operator_token), token)


def token_caller(policy: Policy, operator: str, token: str | None) -> str | None:
    """`caller` from the policy and the operator's token (a cluster's edge has no `Services`)."""
    if token and operator and hmac.compare_digest(operator.encode(), token.encode()):
        return None
    return token_party(policy, token)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("token")


def presented_token(request: Request) -> str | None:
    """The bearer token of a request to an answer that has a public form (`/metrics`):
    None when it presents no credential at all; "" (a 401) when what it presents is no one
    bearer token — another scheme (`Basic …`), `Bearer` alone, two Authorization headers,
    two `token` parameters — so a credential that is not a good token never reads as none."""
    headers = request.headers.getlist("authorization")
    tokens = request.query_params.getlist("token")
    if not headers and not tokens:
        return None
    if len(headers) > 1 or len(tokens) > 1:
        return ""
    if not headers:
        return tokens[0]
    scheme, _, token = headers[0].strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


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


def int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query parameter as an int in [low, high], `default` when absent; ApiError 400."""
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


PartyHandler = Callable[["Api", Request, str], Awaitable[Response]]


class Api:
    """What the route modules (`http/routes/`) share: the services, the hub, the body and
    XML limits, and the one way an API write becomes an item (`as_tak`, then `accept`)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.hub = services.hub
        s = self.hub.settings
        self.limit = s.limit_http_body_bytes
        self.max_features = s.limit_airspace_features
        self.xml_limits = XmlLimits(
            s.limit_message_bytes,
            s.limit_xml_depth,
            s.limit_attribute_bytes,
        )

    def party_route(self, handler: PartyHandler) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint for `handler(api, request, party)`: the party from the bearer token,
        every refusal answered by its own hints (errors.py), our bugs logged and a 500."""
        hub = self.hub

        async def endpoint(request: Request) -> Response:
            try:
                party = authenticate(self.services, bearer_token(request))
                return await handler(self, request, party)
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

    async def body(self, request: Request) -> bytes:
        return await read_body(request, self.limit)

    async def body_json(self, request: Request) -> Any:
        return decode_json(await self.body(request))

    def as_tak(self, event: CotEvent) -> CotEvent:
        """The event a TAK client sending the same item would have sent: written as CoT XML
        and parsed back by the TAK path's own parser and limits. So the API accepts exactly
        what TAK accepts (uid rule, sizes, characters, times) and stores what TAK would."""
        check_event(event)  # times and numbers first: the XML writer needs them in range
        return parse_event(encode_event(event), self.xml_limits)

    def accept(self, party: str, event: CotEvent) -> dict[str, Any]:
        """Accept `event` from `party` as an API write: `{uid, category, seq}`."""
        # A hotline message nobody may receive is refused (403) before it is stored or
        # recorded.
        item = self.hub.accept(party, "api", event, refuse_unrouted=(Category.HOTLINE,))
        return {"uid": item.uid, "category": item.category.value, "seq": item.seq}
