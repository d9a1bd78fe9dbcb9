"""The live route: a map page's WebSocket (`/api/ws?token=…`), a hub connection like a TAK
client's whose peer (`PagePeer`) writes JSON batches of what the party may see."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from commonsky.http.base import Api, ApiError, authenticate, log
from commonsky.http.websocket import closed_by_hub
from commonsky.hub.core import Connection, Hub
from commonsky.hub.outbox import Outbox
from commonsky.metrics import Metrics


def routes(api: Api) -> list[BaseRoute]:
    async def websocket(ws: WebSocket) -> None:
        try:
            party = authenticate(api.services, ws.query_params.get("token"))
        except ApiError:
            await ws.close(code=4401)
            return
        await serve_page(api.hub, ws, party)

    return [WebSocketRoute("/api/ws", websocket)]


class PagePeer:
    """The `Peer` of one map page (WebSocket): reads JSON; the sender loop in `serve_page`
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


async def serve_page(hub: Hub, ws: WebSocket, party: str) -> None:
    """One map page's connection, from admission to detach (always, in `finally`)."""
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
        await _send_loop(hub, ws, conn, outbox, closed)
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


async def _send_loop(
    hub: Hub, ws: WebSocket, conn: Connection, outbox: Outbox, closed: list[str]
) -> None:
    """Send the outbox as JSON arrays until the page's peer is closed."""
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
