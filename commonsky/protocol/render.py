"""One event into wire bytes for a connection's mode: the only place that knows the forms.

Rule: every path that writes a CoT event to a TAK peer — the hub's items (`hub/render.py`),
the session's own replies (pong, negotiation: `stream.py`), the demo's and bench's clients —
comes through `render`, so an event is never framed two ways. Modes are the values of
`stream.Mode` plus the hub's `"json"` (the map page), which needs the item around the event
and so lives beside the hub (`hub/render.py`).

TAK Protocol v1 streaming framing: 0xbf, the payload length as a protobuf varint, then the
`TakMessage` (the payload: `takv1.py`).
"""

from __future__ import annotations

from commonsky.errors import LocalProtocolError
from commonsky.model import CotEvent
from commonsky.protocol.cot import encode_event
from commonsky.protocol.takv1 import event_to_proto

MAGIC = 0xBF
XML = "xml"
PROTO = "proto"


def encode_varint(value: int) -> bytes:
    """A non-negative int as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame_proto(payload: bytes) -> bytes:
    """A serialized `TakMessage` framed for the TAK v1 stream: 0xbf, varint length, payload."""
    return bytes((MAGIC,)) + encode_varint(len(payload)) + payload


def frame_header(frame: bytes) -> int:
    """The length of a `frame_proto` frame's header: 0xbf and the payload length's varint
    (one byte per 7 bits: each but the last has its high bit set)."""
    at = 1
    while at < len(frame) and frame[at] & 0x80:
        at += 1
    return at + 1


def render(event: CotEvent, mode: str) -> bytes:
    """`event` as bytes for a TAK peer speaking `mode` ("xml": a CoT `<event>` document;
    "proto": a framed TAK v1 message). Raises LocalProtocolError for any other mode (our
    bug: a connection's mode is one of these) and whatever the encoders raise for an event
    they cannot carry (the acceptance rules, `bounds.py`, should make that impossible)."""
    if mode == XML:
        return encode_event(event)
    if mode == PROTO:
        return frame_proto(event_to_proto(event))
    raise LocalProtocolError(f"no TAK wire form for mode {mode!r}")
