"""The hub's WebSocket protocol: uvicorn's, telling the app when uvicorn itself ends a connection.

Every close the hub makes carries a reason, in its log and in
`commonsky_connections_closed_total{reason}` (a TAK connection's and a WebSocket's alike).
Two closes of a WebSocket are made by uvicorn, below the app, and ASGI has no word for them:
the keepalive (a ping every `ws_ping_interval` s; no pong within `ws_ping_timeout` s fails
the connection with 1011) and a frame it cannot take (over `ws_max_size`: 1009; not
WebSocket or not UTF-8: 1002/1007). The app is then told only `websocket.disconnect` (1005
once the socket is gone), the very message a client that left sends, so these closes went
uncounted. This protocol writes the reason into the connection's ASGI scope
(`scope[CLOSED_BY_HUB]`) at the moment it fails the connection; the app reads it with
`closed_by_hub` when it sees the end (`http/api.py`), and ends the socket of a connection
its keepalive failed (uvicorn leaves it open for the peer to close). One small override of
uvicorn's websockets (sans-I/O) protocol, nothing else.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

CLOSED_BY_HUB = "commonsky.closed_by_hub"


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol that names its own closes in the scope (see the module)."""

    def keepalive_timeout(self) -> None:
        failing = not (self.close_sent or self.transport.is_closing())
        super().keepalive_timeout()
        if failing:
            self._mark("ping_timeout")
            # Failing a connection ends it (RFC 6455 7.1.7; websockets' own `fail` sends EOF
            # after the close frame, which uvicorn drops): a peer that did not answer a ping
            # will not echo the close either, and the app waits for the socket's end. Closed
            # once the close frame is out, aborted if even that never drains.
            self.transport.close()
            self.loop.call_later(self.close_timeout, self.transport.abort)

    def handle_parser_exception(self) -> None:
        sent = self.conn.close_sent
        super().handle_parser_exception()
        self._mark("oversized" if sent is not None and sent.code == 1009 else "bad_frame")

    def _mark(self, reason: str) -> None:
        scope: dict[str, Any] | None = getattr(self, "scope", None)  # (set at the handshake)
        if scope is not None:
            scope.setdefault(CLOSED_BY_HUB, reason)


def closed_by_hub(scope: Any) -> str | None:
    """The reason uvicorn failed this WebSocket for (`ping_timeout`, `oversized`, `bad_frame`),
    or None when it did not (the client left, or the app closed it)."""
    reason = scope.get(CLOSED_BY_HUB)
    return reason if isinstance(reason, str) else None
