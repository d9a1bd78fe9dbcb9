"""Private deconfliction's messages on a federation link (private.py's rule): a round's
bytes cut into `Chunk`s, each carried as a `GeoEvent` of type `t-x-csky-pd` (sent only to
CommonSky peers that agreed `deconflict = "private"`) in its `binary` field."""

from __future__ import annotations

from typing import Any

import msgspec

from commonsky.privdeconf import Terms

from . import federation_pb2 as pb

PD_TYPE = "t-x-csky-pd"  # a round's bytes on the link (CommonSky peers that agreed only)
CHUNK = 512 * 1024  # bytes of a round message per link message (gRPC's limit is 4 MiB)
__all__ = ["CHUNK", "PD_TYPE", "Chunk", "canonical", "chunk_message", "decode_chunk", "encode"]
__all__ += ["is_private", "max_message_bytes"]


class Chunk(msgspec.Struct, frozen=True, tag=True):
    """One link message of a round: part `index` of `count` of one round message, or
    (`kick`) the accepting side asking the initiator for a round."""

    round_id: str
    index: int = 0
    count: int = 0
    data: bytes = b""
    kick: bool = False
    notice: bytes = b""  # a conflicts-only notice for a party of the receiving hub (JSON)
    action: str = ""  # its change: raised | updated | cleared


decode_chunk = msgspec.msgpack.Decoder(Chunk).decode
encode = msgspec.msgpack.Encoder().encode


def canonical(value: Any) -> Any:
    """`value` with every float as its repr text: ledger payloads have no floats (the
    canonical JSON of ledger/entry.py), and repr round-trips exactly."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def max_message_bytes(terms: Terms) -> int:
    """The largest round message we take from a peer under our terms."""
    return 256 * terms.max_cells + 16 * 2**20


def is_private(message: pb.FederatedEvent) -> bool:
    return message.HasField("event") and message.event.type == PD_TYPE


def chunk_message(chunk: Chunk, now: float) -> pb.FederatedEvent:
    message = pb.FederatedEvent()
    ms = round(now * 1000)
    message.event.CopyFrom(
        pb.GeoEvent(
            uid="csky-pd",
            type=PD_TYPE,
            send_time=ms,
            start_time=ms,
            stale_time=ms + 60_000,
            binary=pb.BinaryBlob(data=encode(chunk), filename="csky-pd"),
        )
    )
    return message
