"""The Marti API on the `marti` listener (TAK's 8443): mutual TLS, the certificate is the party.

Paths (TAK Server's servlets and APIs, the subset ATAK, WinTAK, iTAK and pytak call):

- `GET /Marti/api/version`: `CommonSky <version>` (text);
- `GET /Marti/api/version/config`: `{"version": "3", "type": "ServerConfig", "data": …}`;
- `GET /Marti/api/clientEndPoints`: the devices the caller's party may see (`contacts`);
- `GET /Marti/api/groups/all`: the caller's party as its one group (search.py);
- `GET /Marti/sync/search?keywords=&tool=&name=…`: the files the caller's party may fetch,
  filtered (search.py: TAK Server's `resultCount` and `results`);
- `GET /Marti/sync/missionquery?hash=`: 200 and the content URL (text) if the caller may
  fetch it, else 404;
- `POST /Marti/sync/missionupload?hash=&filename=&creatorUid=&keyword=`: multipart, the file
  in part `assetfile`; answers the content URL (text);
- `POST /Marti/sync/upload?name=&creatorUid=&keywords=`: iTAK's path, raw body or multipart;
  answers the file's metadata (JSON, TAK Server's field names);
- on either, `keywords`/`keyword` (comma-separated) are kept with the file and searched
  (search.py): at most UPLOAD_KEYWORDS of KEYWORD_CHARS, else 400 before the body is read;
- `GET`/`HEAD /Marti/sync/content?hash=`: the bytes, if the caller may fetch them, else 404
  (also an item too long for the caller's TAK stream, announced to it: hub/held.py);
- `PUT /Marti/api/sync/metadata/{hash}/tool`: the holder marks a file `public`/`private`.

Identity: the client certificate's subject — exactly one O naming a declared party, one CN —
checked on every request, as is the CA's CRL (revocation.py): a certificate revoked while
its connection is open is refused from its next request. A party that may not fetch a file
gets 404, exactly as if the file were not there (no oracle for other parties' hashes). A
`hash=` the client sends with an upload must be the SHA-256 of what arrived (400 otherwise).
Upload refusals are 400 (malformed, hostile, wrong hash), 408, 413, 415, 507 (store full),
each logged and counted as `commonsky_refusals{reason="upload_…"}`; nothing is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from commonsky import __version__, errors
from commonsky.config import ListenerConfig
from commonsky.errors import StoreUnavailable
from commonsky.marti.files import is_sha256
from commonsky.marti.ingest import Refused, Upload, ingest, may_fetch
from commonsky.marti.net import peer_cert_der
from commonsky.marti.query import fold, keywords
from commonsky.marti.search import groups, parse_query, search_answer
from commonsky.marti.state import MartiState
from commonsky.marti.upload import UploadRefused, receive
from commonsky.revocation import Revocations
from commonsky.times import format_time

log = logging.getLogger("commonsky.marti")
API_VERSION = "3"  # TAK Server's Marti API version (tak.server.Constants.API_VERSION)
TOOLS = ("public", "private")
UPLOAD_KEYWORDS = 32  # keywords an upload may give
KEYWORD_CHARS = 100  # characters of one keyword
SEARCHES_AT_ONCE = 2  # searches in worker threads at once (Marti.searching)


class _Denied(errors.Refused):
    """A Marti request denied (errors.Refused: its status, reason label and message)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status, message, reason)


Handler = Callable[["Marti", Request, str, str], Awaitable[Response]]


def certificate_identity(
    cert: x509.Certificate, revocations: Revocations, is_party: Callable[[str], bool]
) -> tuple[str, str]:
    """(party, user) from a client certificate's O and CN; errors.Refused (403) for a
    revoked one, a subject without exactly one O and CN, or an O naming no party. (The
    Marti app checks it on every request; a cluster's edge too, before it forwards one.)"""
    if revocations.revoked(cert.serial_number):
        raise _Denied(403, "certificate_revoked", "this certificate has been revoked")
    orgs = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if len(orgs) != 1 or len(names) != 1:
        raise _Denied(403, "certificate_subject", "certificate needs exactly one O and CN")
    party, user = str(orgs[0].value), str(names[0].value)
    if not is_party(party):
        raise _Denied(403, "unknown_party", f"certificate O={party[:40]!r} is no party")
    return party, user


class Marti:
    """What every Marti route shares: the listener's state and config, who the client
    certificate names (`identify`), and how a refusal is answered, counted and logged."""

    def __init__(self, state: MartiState, config: ListenerConfig) -> None:
        assert config.ca is not None
        self.state = state
        self.config = config
        self.port = state.port
        self.revocations = state.revocations[Path(config.ca)]
        self.settings = self.port.settings
        self.started = time.time()
        # Searches in worker threads at once; the others wait on the loop. A flood of them
        # held every thread of the loop's executor (seconds), and every upload's checks,
        # download's reads and private federation round waited behind it.
        self.searching = asyncio.Semaphore(SEARCHES_AT_ONCE)

    def identify(self, request: Request) -> tuple[str, str]:
        """(party, user) from the client certificate's O and CN (`certificate_identity`)."""
        der = peer_cert_der(request.scope)
        if der is None:
            raise _Denied(403, "no_certificate", "a client certificate is required")
        return certificate_identity(self.state.peer(der), self.revocations, self.port.is_party)

    def refused(
        self, request: Request, status: int, reason: str, message: str, who: str
    ) -> Response:
        self.port.refuse(f"marti_{reason}" if status == 403 else f"upload_{reason}")
        self.port.log_limited(
            log,
            reason,
            who,
            "%s: %s %s from %s refused (%d): %s",
            self.config.kind,
            request.method,
            request.url.path,
            who,
            status,
            message,
        )
        return PlainTextResponse(f"{message}\n", status_code=status)

    def route(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint for `handler(marti, request, party, user)`: identified first, every
        refusal answered as plain text with its status."""

        async def endpoint(request: Request) -> Response:
            peer = request.client.host if request.client else "?"
            try:
                party, user = self.identify(request)
            except _Denied as exc:
                return self.refused(request, exc.status, exc.reason, str(exc), peer)
            try:
                return await handler(self, request, party, user)
            except (Refused, UploadRefused) as exc:
                return self.refused(request, exc.status, exc.reason, str(exc), f"{party}/{user}")
            except StoreUnavailable as exc:  # (a cluster's database away: try again later)
                log.warning("%s: %s %s: %s", self.config.kind, request.method,
                            request.url.path, exc)  # fmt: skip
                return PlainTextResponse(
                    "the hub cannot reach its store; try again\n",
                    status_code=503,
                    headers={"Retry-After": "5"},
                )

        return endpoint

    def content_url(self, sha256: str) -> str:
        return f"{self.state.base_url()}/Marti/sync/content?hash={sha256}"


def marti_app(state: MartiState, config: ListenerConfig) -> Starlette:
    """The Marti listener's application (the paths in this module's header)."""
    marti = Marti(state, config)
    route = marti.route
    routes = [
        Route("/Marti/api/version", route(version), methods=["GET"]),
        Route("/Marti/api/version/config", route(version_config), methods=["GET"]),
        Route("/Marti/api/clientEndPoints", route(client_endpoints), methods=["GET"]),
        Route("/Marti/api/groups/all", route(groups_all), methods=["GET"]),
        Route("/Marti/sync/search", route(sync_search), methods=["GET"]),
        Route("/Marti/sync/missionquery", route(mission_query), methods=["GET"]),
        Route("/Marti/sync/missionupload", route(mission_upload), methods=["POST"]),
        Route("/Marti/sync/upload", route(sync_upload), methods=["POST"]),
        Route("/Marti/sync/content", route(content), methods=["GET", "HEAD"]),
        Route("/Marti/api/sync/metadata/{hash}/tool", route(set_tool), methods=["PUT"]),
        Route(
            "/Marti/api/device/profile/connection",
            route(_no_content),
            methods=["GET"],
        ),
    ]
    return Starlette(routes=routes)


# ---- version, contacts ----------------------------------------------------------------


async def version(marti: Marti, request: Request, party: str, user: str) -> Response:
    return PlainTextResponse(f"CommonSky {__version__}")


async def version_config(marti: Marti, request: Request, party: str, user: str) -> Response:
    data = {"version": __version__, "api": API_VERSION, "hostname": request.url.hostname}
    return JSONResponse(
        {"version": API_VERSION, "type": "ServerConfig", "data": data, "nodeId": "commonsky"}
    )


async def client_endpoints(marti: Marti, request: Request, party: str, user: str) -> Response:
    data = [
        {
            "callsign": c.callsign,
            "uid": c.uid,
            "team": c.team or None,
            "role": c.role or None,
            "lastEventTime": format_time(c.last),
            "lastStatus": "Connected" if c.connected else "Disconnected",
        }
        for c in marti.port.contacts(party)
    ]
    data = [{k: v for k, v in d.items() if v is not None} for d in data]
    return JSONResponse(
        {
            "version": API_VERSION,
            "type": "com.bbn.marti.remote.ClientEndpoint",
            "data": data,
            "nodeId": "commonsky",
        }
    )


async def groups_all(marti: Marti, request: Request, party: str, user: str) -> Response:
    use_cache = request.query_params.get("useCache", "")
    return JSONResponse(groups(party, use_cache, marti.started, API_VERSION))


# ---- files ----------------------------------------------------------------------------


async def sync_search(marti: Marti, request: Request, party: str, user: str) -> Response:
    query = parse_query(request.query_params.multi_items())
    async with marti.searching:  # (waiting here holds no worker thread)
        body, complete = await asyncio.to_thread(search_answer, marti.state, party, query)
    headers = {} if complete else {"CommonSky-Search": "truncated"}
    return Response(body, media_type="text/json", headers=headers)


def hash_param(request: Request, required: bool = True) -> str:
    """The request's `hash` (64 hex digits, any case, lowered); Refused 400 for another, or
    for two that differ (which one a client meant is not the hub's guess)."""
    given = {v.strip().lower() for v in request.query_params.getlist("hash")}
    if len(given) > 1:
        raise Refused(400, "bad_hash", "more than one hash given")
    value = given.pop() if given else ""
    if not value and not required:
        return ""
    if not is_sha256(value):
        raise Refused(400, "bad_hash", "hash must be 64 hexadecimal digits (SHA-256)")
    return value


async def mission_query(marti: Marti, request: Request, party: str, user: str) -> Response:
    sha = hash_param(request)
    if may_fetch(marti.state, party, sha) is None:
        return PlainTextResponse("not found\n", status_code=404)
    return PlainTextResponse(marti.content_url(sha))


async def content(marti: Marti, request: Request, party: str, user: str) -> Response:
    state = marti.state
    sha = hash_param(request)
    row = may_fetch(state, party, sha)
    stored = state.files.content(sha) if row is not None else None
    if row is None or stored is None:
        return _held(marti, party, sha)
    media_type = row.mime or "application/octet-stream"
    if stored.path is not None:  # (a file of this process: sendfile, ranges)
        return FileResponse(
            stored.path, media_type=media_type, filename=row.name or sha,
            headers={"ETag": f'"{sha}"'},
        )  # fmt: skip
    headers = {
        "ETag": f'"{sha}"',
        "Content-Length": str(stored.size),
        "Content-Disposition": _disposition(row.name or sha),
    }
    if request.method == "HEAD" or stored.stream is None:
        return Response(media_type=media_type, headers=headers)
    return StreamingResponse(stored.stream(), media_type=media_type, headers=headers)


def _held(marti: Marti, party: str, sha: str) -> Response:
    """An item too long for the caller's TAK stream, announced to it in its place
    (hub/held.py): its CoT XML, as the stream would have carried it; else 404."""
    xml = marti.port.held(party, sha)
    if xml is None:
        return PlainTextResponse("not found\n", status_code=404)
    return held_response(sha, xml)


def held_response(sha: str, xml: bytes) -> Response:
    """The answer that gives a held item's CoT XML (here, and a cluster's edge: its own)."""
    headers = {"ETag": f'"{sha}"', "Content-Disposition": _disposition(f"{sha}.cot")}
    return Response(xml, media_type="application/xml", headers=headers)


def _disposition(name: str) -> str:
    """`Content-Disposition: attachment` naming the file (RFC 6266; RFC 5987 beyond ASCII)."""
    from urllib.parse import quote

    quoted = quote(name, safe="")
    if quoted == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename*=utf-8''{quoted}"


async def do_upload(marti: Marti, request: Request, party: str, user: str, itak: bool) -> Upload:
    state = marti.state
    room, full = state.files.room(party)
    if full is not None:
        raise Refused(507, "store_full", f"the hub keeps no more files ({full} reached)")
    params = request.query_params
    declared = hash_param(request, required=False)
    words = _keywords(params.get("keywords") or params.get("keyword") or "")
    with state.files.temporary() as temp:
        timeout = marti.settings.timeout_upload_s
        got = await receive(request, temp, room, timeout, allow_raw=itak)
        if declared and declared != got.sha256:
            raise Refused(
                400,
                "wrong_hash",
                f"hash={declared} but the file's SHA-256 is {got.sha256}; nothing kept",
            )
        if got.size == 0:
            raise Refused(400, "empty", "the file is empty")
        name = params.get("filename") or params.get("name") or got.filename
        upload = Upload(
            party,
            user,
            _plain_name(name),
            _printable(got.mime) if got.mime not in ("", "application/octet-stream") else "",
            got.sha256,
            got.size,
            _printable(params.get("creatorUid") or got.fields.get("creatorUid", ""))[:200],
            "private" if params.get("tool") == "private" else "public",
            words,
        )
        await ingest(state, temp, upload)
    return upload


async def mission_upload(marti: Marti, request: Request, party: str, user: str) -> Response:
    upload = await do_upload(marti, request, party, user, itak=False)
    return PlainTextResponse(marti.content_url(upload.sha256))


async def sync_upload(marti: Marti, request: Request, party: str, user: str) -> Response:
    upload = await do_upload(marti, request, party, user, itak=True)
    row = next(r for r in marti.state.files.rows(upload.sha256) if r.party == party)
    return JSONResponse(_metadata(row, marti.content_url(upload.sha256)), media_type="text/json")


async def set_tool(marti: Marti, request: Request, party: str, user: str) -> Response:
    sha = str(request.path_params["hash"]).lower()
    if not is_sha256(sha):
        raise Refused(400, "bad_hash", "hash must be 64 hexadecimal digits (SHA-256)")
    body = (await request.body())[:64].decode("utf-8", "replace").strip()
    if body not in TOOLS:
        raise Refused(400, "bad_tool", "tool must be public or private")
    if not marti.state.files.set_tool(sha, party, body):
        return PlainTextResponse("not found\n", status_code=404)
    return Response(status_code=200)


async def _no_content(marti: Marti, request: Request, party: str, user: str) -> Response:
    return Response(status_code=204)  # no device profiles kept (TAK Server's "none")


def _keywords(text: str) -> tuple[str, ...]:
    """An upload's keywords (`keywords`/`keyword`, comma-separated, as TAK Server reads
    them): printable, trimmed, each once (capitals aside); Refused (400) beyond UPLOAD_KEYWORDS of
    KEYWORD_CHARS each."""
    kept: dict[str, str] = {}  # (each once, whatever its capitals: the first spelling)
    for word in _printable(text).split(","):
        if word.strip():
            kept.setdefault(fold(word.strip()), word.strip())
    words = tuple(kept.values())
    if len(words) > UPLOAD_KEYWORDS or any(len(w) > KEYWORD_CHARS for w in words):
        raise Refused(400, "bad_keywords", f"keywords: at most {UPLOAD_KEYWORDS}, "
                      f"of {KEYWORD_CHARS} characters each")  # fmt: skip
    return words


def _plain_name(name: str) -> str:
    """A file name to show and to offer in `b-f-t-r`: its last path segment, no control
    characters, at most 200 characters (never used as a path on the hub)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _printable(name)[:200]


def _printable(text: str) -> str:
    """`text` without control characters (NUL and the like: not part of a name or type)."""
    return "".join(c for c in text if c.isprintable())


def _metadata(row: Any, url: str) -> dict[str, Any]:
    """The upload's metadata in TAK Server's field names (iTAK reads `Hash`, `UID`)."""
    return {
        "UID": row.sha256,
        "Hash": row.sha256,
        "Name": row.name,
        "MIMEType": row.mime,
        "Size": row.size,
        "SubmissionUser": row.user,
        "CreatorUid": row.creator_uid,
        "SubmissionDateTime": format_time(row.received),
        "Tool": row.tool,
        "Keywords": keywords(row),
        "DownloadPath": url,
    }
