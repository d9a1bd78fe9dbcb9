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
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from commonsky import errors

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


async def _multipart(request: Request, boundary: bytes, sink: _Sink) -> Received:
    if not boundary:
        raise UploadRefused(400, "bad_multipart", "multipart/form-data without a boundary")
    got = Received("", 0)
    state: dict[str, object] = {"file": None, "ended": False, "files": 0, "parts": 0}
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}
    value = bytearray()
    current: list[str] = [""]

    def on_part_begin() -> None:
        state["parts"] = int(state["parts"]) + 1  # type: ignore[call-overload]
        if int(state["parts"]) > PARTS_LIMIT:  # type: ignore[call-overload]
            raise UploadRefused(400, "bad_multipart", f"more than {PARTS_LIMIT} parts")
        headers.clear()
        value.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        current[0] = name
        if name in FILE_PARTS:
            if state["files"]:
                raise UploadRefused(400, "bad_multipart", "more than one file part")
            state["files"] = 1
            state["file"] = name
            got.filename = disposition.get(b"filename", b"").decode("utf-8", "replace")
            got.mime = headers.get(b"content-type", b"").decode("latin-1")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current[0] in FILE_PARTS:
            sink.write(data[start:end])
        else:
            value.extend(data[start:end])
            if len(value) > FIELD_LIMIT:
                raise UploadRefused(400, "bad_multipart", f"form field over {FIELD_LIMIT} bytes")

    def on_part_end() -> None:
        if current[0] not in FILE_PARTS and current[0]:
            got.fields[current[0]] = value.decode("utf-8", "replace")

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
    except MultipartParseError as exc:
        raise UploadRefused(400, "bad_multipart", f"malformed multipart body ({exc})") from None
    if not state["ended"]:
        raise UploadRefused(
            400, "truncated", "multipart body ended before its closing boundary (truncated)"
        )
    if not state["files"]:
        raise UploadRefused(
            400, "no_file_part", "no file part: send the file in a part named 'assetfile'"
        )
    return got
