"""A minimal TAK streaming client that reads without CommonSky's codec.

XML events are split after `</event>` and parsed by the standard library; once the hub
answers `t-x-takp-r` with `status="true"`, frames (`0xbf`, varint length, TakMessage) are
read with takproto's protobuf classes. Control messages (`t-x-…`) are kept apart from items.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

import takproto
from takproto.proto import TakMessage

from .views import Unreadable, View, parse_xml, view_of_proto, view_of_xml

MAGIC = 0xBF

# The request for TAK Protocol v1 a client sends after the hub's offer (TAK's protocol.txt).
PROTO_REQUEST = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<event version="2.0" uid="protouid" type="t-x-takp-q" time="{t}" start="{t}"'
    b' stale="{t}" how="m-g"><point lat="0.0" lon="0.0" hae="0.0" ce="999999" le="999999"/>'
    b'<detail><TakControl><TakRequest version="1"/></TakControl></detail></event>'
)


def frame(message: Any) -> bytes:
    """A TakMessage framed for a TAK stream: 0xbf, varint length, payload."""
    payload = bytes(message.SerializeToString())
    length = len(payload)
    out = bytearray((MAGIC,))
    while True:
        byte = length & 0x7F
        length >>= 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + payload


def unframe(data: bytes) -> Any:
    """The TakMessage of a mesh (`bf 01 bf`) or stream (`bf` varint) frame."""
    message = takproto.parse_proto(bytearray(data))
    if message is None or not isinstance(message, TakMessage):
        raise Unreadable("not a TAK Protocol v1 frame")
    return message


class _Stop(Exception):
    pass


def event_head(raw: bytes) -> dict[str, str] | None:
    """The `<event>` attributes of an XML message, read by expat without building the rest
    (a new connection is sent the whole picture; only a few of its events are looked at)."""
    found: dict[str, str] = {}

    def start(name: str, attrs: dict[str, str]) -> None:
        if name == "event":
            found.update(attrs)
        raise _Stop

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    try:
        parser.Parse(raw, True)
    except _Stop:
        return found if found else None
    except expat.ExpatError:
        return None
    return None


@dataclass
class Received:
    """One message as received: its wire, uid and type at once, the rest when asked."""

    wire: str  # "xml" | "protobuf"
    raw: bytes
    uid: str = ""
    type: str = ""
    message: Any = None  # the TakMessage, for protobuf
    _view: View | None = None
    _error: str = ""

    @property
    def view(self) -> View | None:
        """The whole message read (None when it cannot be: `error` says why)."""
        if self._view is None and not self._error:
            try:
                if self.message is not None:
                    self._view = view_of_proto(self.message)
                else:
                    self._view = view_of_xml(parse_xml(self.raw))
            except Unreadable as exc:
                self._error = str(exc)
        return self._view

    @property
    def error(self) -> str:
        return "" if self.view is not None else self._error


def _control(kind: str) -> bool:
    return kind.startswith("t-x-takp") or kind in ("t-x-c-t", "t-x-c-t-r")


class ClosedByHub(ConnectionError):
    pass


@dataclass
class Peer:
    """One TAK connection of one party."""

    party: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    proto: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    items: list[Received] = field(default_factory=list)
    control: list[str] = field(default_factory=list)  # types of t-x-… messages seen
    closed: bool = False
    barrier_at: int | None = None  # index in `items` of the last barrier waited for

    def send(self, data: bytes) -> None:
        if self.closed or self.writer.is_closing():
            raise ClosedByHub(f"{self.party} connection closed by the hub")
        self.writer.write(data)

    def send_event(self, xml: bytes) -> None:
        """An XML event, converted by takproto when this connection speaks protobuf."""
        if self.proto:
            self.send(bytes(takproto.xml2proto(xml, takproto.TAKProtoVer.STREAM)))
        else:
            self.send(xml)

    async def _read_some(self, timeout: float) -> None:
        if self.closed:
            raise ClosedByHub(f"{self.party} connection closed by the hub")
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.closed = True
            raise ClosedByHub(f"{self.party} connection closed by the hub")
        self.buffer += data
        self._split()

    def _split(self) -> None:
        while self.buffer:
            if self.proto:
                if not self._next_frame():
                    return
                continue
            end = self.buffer.find(b"</event>")
            if end < 0:
                return
            raw = bytes(self.buffer[: end + 8]).strip()
            del self.buffer[: end + 8]
            head = event_head(raw)
            if head is None:
                self.items.append(Received("xml", raw, _error="not a CoT <event>"))
                continue
            received = Received("xml", raw, head.get("uid", ""), head.get("type", ""))
            if not _control(received.type):
                self.items.append(received)
                continue
            self.control.append(received.type)
            if received.type == "t-x-takp-r":
                try:
                    response = parse_xml(raw).find("detail/TakControl/TakResponse")
                except Unreadable:
                    response = None
                self.proto = response is not None and response.get("status") == "true"

    def _next_frame(self) -> bool:
        buffer = self.buffer
        if buffer[0] != MAGIC:
            # Not a frame: the rest of the stream cannot be read.
            error = f"byte {buffer[0]:#04x} is not 0xbf"
            self.items.append(Received("protobuf", bytes(buffer), _error=error))
            buffer.clear()
            return False
        length, shift, index = 0, 0, 1
        while True:
            if index >= len(buffer):
                return False
            byte = buffer[index]
            length |= (byte & 0x7F) << shift
            index += 1
            if not byte & 0x80:
                break
            shift += 7
        if len(buffer) < index + length:
            return False
        payload = bytes(buffer[index : index + length])
        del buffer[: index + length]
        message = TakMessage()
        try:
            message.ParseFromString(payload)
        except Exception as exc:  # any decode failure is a finding, not a crash
            error = f"undecodable TakMessage: {exc}"
            self.items.append(Received("protobuf", payload, _error=error))
            return True
        cot = message.cotEvent
        if _control(cot.type):
            self.control.append(cot.type)
            return True
        self.items.append(Received("protobuf", payload, cot.uid, cot.type, message))
        return True

    async def wait_for(self, predicate: Callable[[Received], bool], timeout: float) -> Received:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        seen = 0
        while True:
            for item in self.items[seen:]:
                if predicate(item):
                    return item
            seen = len(self.items)
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                await self._read_some(left)

    async def wait_control(self, kind: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while kind not in self.control:
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                await self._read_some(left)

    def with_uid(self, uid: str) -> list[Received]:
        return [r for r in self.items if r.uid == uid]

    async def close(self) -> None:
        self.closed = True
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def connect(party: str, port: int, proto: bool, timeout: float, now: str) -> Peer:
    """Open a connection, wait for the hub's offer (the hub has then attached it), and
    negotiate TAK Protocol v1 when `proto`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer = Peer(party, reader, writer)
    try:
        await peer.wait_control("t-x-takp-v", timeout)
        if proto:
            peer.send(PROTO_REQUEST.replace(b"{t}", now.encode()))
            await peer.wait_control("t-x-takp-r", timeout)
            if not peer.proto:
                raise ClosedByHub(f"{party}: the hub declined TAK Protocol v1")
    except BaseException:
        await peer.close()
        raise
    return peer
