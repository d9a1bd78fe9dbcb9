"""The REST API's bodies as msgspec Structs, and its OpenAPI document built from them.

Rule: a request body is decoded once, at the handler's edge, into its Struct (an error
names the path of the bad value: `$.to: Expected str, got int`); a response with a fixed
shape is declared here too, and tests/http checks real responses against it. `ENDPOINTS` is
the one list of routes the document describes, so a route's body, answer and summary are
written once (msgspec's `schema_components` writes the JSON Schema of every Struct).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from commonsky.alerts.report import LaunchReport
from commonsky.errors import CommonSkyError

T = TypeVar("T")


class BodyError(CommonSkyError):
    """A request body that is not JSON or not of its Struct; `str()` is one line with the
    path of the bad value (`$.to: Expected str, got int`). Answered 400."""

    http_status = 400
    reason = "bad_body"


def decode_body(data: bytes, kind: type[T]) -> T:
    """`data` (a JSON request body) as `kind`, or BodyError naming the path. Read as JSON
    first, so that a body nested too deeply is named as such whatever its type."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BodyError(f"not JSON: {exc}") from None
    except RecursionError:
        raise BodyError("not JSON we read: nested too deeply") from None
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        reason, _, path = str(exc).partition(" - at `")
        raise BodyError(f"{path.rstrip('`') or '$'}: {reason.replace('`', '')}") from None


# ---- requests -------------------------------------------------------------------------


class Signature(msgspec.Struct):
    """A party's Ed25519 signature over the canonical JSON of what it sends (base64)."""

    value: str


class HotlineSend(msgspec.Struct):
    """`POST /api/hotline/send`: a message to one party; `uid` makes a retry harmless."""

    to: str
    text: str
    uid: str | None = None
    signature: Signature | None = None


class Ack(msgspec.Struct):
    """`POST /api/hotline/{message_id}/ack`: the body is optional (a signature, if any)."""

    signature: Signature | None = None


# ---- responses ------------------------------------------------------------------------


class Error(msgspec.Struct):
    """Every 4xx and 5xx answer: the reason, one line."""

    error: str


class Accepted(msgspec.Struct):
    """An item stored and relayed: its uid as the sender named it, category, store seq."""

    uid: str
    category: str
    seq: int


class Clock(msgspec.Struct):
    """The hub's time (POSIX s) and how fast it runs (> 1 while a demo plays compressed)."""

    time: float
    rate: float
    scenario: bool


class Me(msgspec.Struct):
    party: str
    name: str
    country: str | None
    signs: bool  # the party must sign what it sends (it registered a key)
    clock: Clock


class RosterEntry(msgspec.Struct):
    id: str
    name: str
    country: str | None
    you: bool
    hotline: bool  # a hotline message from the asking party would reach it now


class Checkpoint(msgspec.Struct):
    """A signed tree head of the ledger (RFC 6962): size, root hex, signature base64."""

    log: str
    size: int
    root: str
    time_us: int
    signature: str
    hub_key: str


class Receipt(msgspec.Struct):
    """One ledger entry of the party's audience with its inclusion proof (hex hashes)."""

    seq: int
    leaf: str
    leaf_hash: str
    proof: list[str]
    checkpoint: Checkpoint


class HotlineMessage(msgspec.Struct, rename={"sender": "from"}):
    id: str
    seq: int
    sender: str
    to: list[str]
    audience: list[str]
    text: str
    sent: float
    deadlines: dict[str, float]
    acks: dict[str, Any]
    read: dict[str, Any]
    pending: list[str]
    overdue: list[str]
    awaiting: list[str]
    escalated: list[str]
    ledger_seq: int | None
    conflict: Any
    closed: Any


# ---- the document ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    summary: str
    method: str = "get"
    body: Any = None  # a Struct type, or a media type's name when the body is not JSON
    media: str = "application/json"
    answer: Any = None  # the Struct (or list[Struct]) of a 2xx answer, when it has one shape
    status: int = 200
    token: bool = True  # needs a party's bearer token
    body_required: bool = True


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "/healthz", "Liveness: 200 while the hub serves (no token; says nothing else).", token=False
    ),
    Endpoint(
        "/metrics",
        "Prometheus metrics (text exposition format): all with the operator token, a "
        "party's own series with its token, without a token only commonsky_up and "
        "commonsky_build_info.",
    ),
    Endpoint("/openapi.json", "This document (OpenAPI 3.1).", token=False),
    Endpoint("/api/me", "The party this token speaks for, and the hub's clock.", answer=Me),
    Endpoint(
        "/api/parties",
        "Parties this party has agreements with: id, name, country, and whether a "
        "hotline message would reach them now.",
        answer=list[RosterEntry],
    ),
    Endpoint(
        "/api/items", "Items the party may see now (?category=&bbox=minlon,minlat,maxlon,maxlat)."
    ),
    Endpoint(
        "/api/cot",
        "Submit one CoT event as this party.",
        "post",
        body="CoT XML",
        media="application/xml",
        answer=Accepted,
        status=201,
    ),
    Endpoint(
        "/api/airspace",
        "Submit GeoJSON volumes, lines and sites (or KML placemarks).",
        "post",
        body="GeoJSON Feature or FeatureCollection",
        media="application/geo+json",
        answer=list[Accepted],
        status=201,
    ),
    Endpoint(
        "/api/launch",
        "Submit a launch report.",
        "post",
        body=LaunchReport,
        answer=Accepted,
        status=201,
    ),
    Endpoint("/api/launch/events", "Launch events fused from the reports this party may see."),
    Endpoint("/api/conflicts", "Current conflict notices for this party."),
    Endpoint(
        "/api/hotline",
        "Hotline history, a page of the newest messages oldest first (?with=PARTY"
        "&limit=1..500, default 100&before=SEQ); the X-Next-Before header is the "
        "cursor of the next older page.",
        answer=list[HotlineMessage],
    ),
    Endpoint(
        "/api/hotline/send",
        "Send a hotline message {to, text, uid?, signature?}.",
        "post",
        body=HotlineSend,
        answer=Accepted,
        status=201,
    ),
    Endpoint(
        "/api/hotline/{message_id}/ack",
        "Acknowledge a hotline message.",
        "post",
        body=Ack,
        body_required=False,
        answer=HotlineMessage,
    ),
    Endpoint(
        "/api/ledger/checkpoint",
        "The latest signed ledger checkpoint (signed afresh at most once per "
        "timeout_checkpoint_s; with the operator token, always fresh).",
        answer=Checkpoint,
    ),
    Endpoint(
        "/api/ledger/receipts/{seq}",
        "An entry of this party's audience with its inclusion proof (404 for an entry "
        "outside it or not there alike; 409 with Retry-After before a checkpoint covers it).",
        answer=Receipt,
    ),
    Endpoint("/api/ws", "WebSocket (?token=): JSON arrays of items as they are delivered."),
    Endpoint("/cap/feed.atom", "Atom feed of public warnings.", token=False),
    Endpoint("/cap/alerts/{id}.xml", "One CAP 1.2 alert.", token=False),
)

_ERRORS = {
    "400": "bad input (nothing stored)",
    "401": "no or wrong token",
    "403": "forbidden by the agreements",
    "404": "not there, or not this party's",
    "413": "body too large",
}
REF = "#/components/schemas/{name}"


def openapi_paths(endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> tuple[dict[str, Any], Any]:
    """The `paths` of the OpenAPI 3.1 document and its `components.schemas`, written from
    the endpoints' Structs."""
    types = sorted(
        {
            t
            for e in endpoints
            for t in (e.body, e.answer)
            if t is not None and not isinstance(t, str)
        },
        key=repr,
    )
    schemas, components = msgspec.json.schema_components([Error, *types], ref_template=REF)
    by_type = dict(zip([Error, *types], schemas, strict=True))
    paths: dict[str, Any] = {}
    for e in endpoints:
        ok: dict[str, Any] = {"description": "OK" if e.status == 200 else "Created"}
        if e.answer is not None:
            ok["content"] = {"application/json": {"schema": by_type[e.answer]}}
        responses: dict[str, Any] = {str(e.status): ok}
        if e.token:
            error = {"application/json": {"schema": by_type[Error]}}
            responses.update(
                {code: {"description": text, "content": error} for code, text in _ERRORS.items()}
            )
        spec: dict[str, Any] = {"summary": e.summary, "responses": responses}
        if e.token:
            spec["security"] = [{"bearer": []}]
        if e.body is not None:
            schema = (
                {"type": "string", "description": e.body}
                if isinstance(e.body, str)
                else by_type[e.body]
            )
            spec["requestBody"] = {
                "required": e.body_required,
                "content": {e.media: {"schema": schema}},
            }
        paths.setdefault(e.path, {})[e.method] = spec
    return paths, components
