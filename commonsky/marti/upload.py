"""Receiving an upload: the body streamed to a temporary file, hashed and bounded on the way.

Two shapes arrive (TAK Server's `MissionPackageUploadServlet` and `UploadServlet`):
`multipart/form-data` whose file part is named `assetfile` (ATAK, WinTAK) or `resource`
(browsers), and — on `/Marti/sync/upload` only — the raw file as the body (iTAK).

Rules: nothing is kept unless the whole body arrived within `timeout_upload_s`, the
multipart framing ended with its closing boundary (a truncated body is refused, never
stored as a shorter file), and the file fits the room the store has (`FileStore.room`). The
caller gets the temporary file and its SHA-256; the temporary file is removed by the
store's context manager whatever happens.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from commonsky import errors

if TYPE_CHECKING:  # (the library declares its callback table for type checkers only)
    from python_multipart.multipart import MultipartCallbacks

FIELD_LIMIT = 4096  # bytes of one non-file form field
PARTS_LIMIT = 32
FILE_PARTS = ("assetfile", "resource")


class UploadRefused(errors.Refused):
    """An upload the Marti API refuses (errors.Refused: its status, reason label and message)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status, message, reason)


@dataclass
class Received:
    sha256: str
    size: int
    filename: str = ""
    mime: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class _Sink:
    """Bytes of the file part: hashed, counted, written; refused past `room`."""

    def __init__(self, out: BinaryIO, room: int) -> None:
        self.out = out
        self.room = room
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.room:
            raise UploadRefused(413, "too_big", f"file over the {self.room} bytes allowed")
        self.hash.update(data)
        self.out.write(data)


async def receive(
    request: Request, temp: Path, room: int, timeout_s: float, allow_raw: bool
) -> Received:
    """Read the request body into `temp`. Raises UploadRefused (400 malformed or truncated,
    408 too slow, 413 too big, 415 not multipart where multipart is required)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > room + 65536:
        raise UploadRefused(413, "too_big", f"body of {declared} bytes; {room} allowed")
    content_type = request.headers.get("content-type", "")
    kind, options = parse_options_header(content_type)
    try:
        async with asyncio.timeout(timeout_s):
            # (A local temporary file, written in the chunks the socket gives: no thread.)
            with open(temp, "wb") as out:  # noqa: ASYNC230
                sink = _Sink(out, room)
                if kind == b"multipart/form-data":
                    got = await _multipart(request, options.get(b"boundary", b""), sink)
                elif allow_raw:
                    async for chunk in request.stream():
                        sink.write(chunk)
                    got = Received("", 0, "", kind.decode("latin-1"))
                else:
                    raise UploadRefused(
                        415,
                        "not_multipart",
                        "a data package upload must be multipart/form-data with the file in "
                        "a part named 'assetfile'",
                    )
    except TimeoutError:
        raise UploadRefused(408, "too_slow", f"body not received within {timeout_s:g} s") from None
    except ClientDisconnect:
        raise UploadRefused(400, "aborted", "the client went away before the body ended") from None
    got.sha256 = sink.hash.hexdigest()
    got.size = sink.size
    return got


class _Parts:
    """The multipart parser's callbacks for one body: the file part streamed into the sink,
    other fields kept (each at most FIELD_LIMIT bytes), at most PARTS_LIMIT parts and one
    file part (UploadRefused otherwise)."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.got = Received("", 0)
        self.ended = False
        self.files = 0
        self.parts = 0
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.value = bytearray()
        self.current = ""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > PARTS_LIMIT:
            raise UploadRefused(400, "bad_multipart", f"more than {PARTS_LIMIT} parts")
        self.headers.clear()
        self.value.clear()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field.extend(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value.extend(data[start:end])

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, disposition = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        self.current = name
        if name in FILE_PARTS:
            if self.files:
                raise UploadRefused(400, "bad_multipart", "more than one file part")
            self.files = 1
            self.got.filename = disposition.get(b"filename", b"").decode("utf-8", "replace")
            self.got.mime = self.headers.get(b"content-type", b"").decode("latin-1")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current in FILE_PARTS:
            self.sink.write(data[start:end])
        else:
            self.value.extend(data[start:end])
            if len(self.value) > FIELD_LIMIT:
                raise UploadRefused(400, "bad_multipart", f"form field over {FIELD_LIMIT} bytes")

    def on_part_end(self) -> None:
        if self.current not in FILE_PARTS and self.current:
            self.got.fields[self.current] = self.value.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True


async def _multipart(request: Request, boundary: bytes, sink: _Sink) -> Received:
    if not boundary:
        raise UploadRefused(400, "bad_multipart", "multipart/form-data without a boundary")
    parts = _Parts(sink)
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
    except MultipartParseError as exc:
        raise UploadRefused(400, "bad_multipart", f"malformed multipart body ({exc})") from None
    if not parts.ended:
        raise UploadRefused(
            400, "truncated", "multipart body ended before its closing boundary (truncated)"
        )
    if not parts.files:
        raise UploadRefused(
            400, "no_file_part", "no file part: send the file in a part named 'assetfile'"
        )
    return parts.got
