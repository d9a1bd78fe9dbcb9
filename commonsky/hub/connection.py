"""A client connection as the hub sees it, and whether an addressed item is for it.

Addressing (`<marti><dest …/>`): `dest party` reaches every device of that party, `dest
callsign` the devices using that callsign (the directory, `directory.py`), `dest uid` that
device (iTAK). It narrows delivery inside the sender's own party too; a party's oversight
connections (its map page) see everything the party receives.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Protocol

from commonsky.model import HUB, CotEvent, Item
from commonsky.namespace import read_name

from .outbox import Outbox


class Peer(Protocol):
    """What the hub may ask of the I/O side of one connection — nothing else. The TAK
    listener, the map's WebSocket and the in-memory test clients each give one."""

    @property
    def mode(self) -> str:
        """The wire form it reads now: "xml", "proto" (`protocol/render.py`) or "json"."""
        ...

    def close(self, reason: str) -> None:
        """End the connection; `reason` is the metric label. Adapters ignore a second call
        (the first reason is the one counted)."""
        ...

    def flush(self) -> None:
        """Write what is pending in the outbox, if the socket allows (the hub calls it once
        per burst of input, see `Connections.flush`)."""
        ...


@dataclass(eq=False)
class MemoryPeer:
    """A peer that writes nowhere (tests, benches, desks' own readers): its outbox is read
    by whoever holds it; `closed` keeps the reasons the hub closed it for."""

    mode: str = "xml"
    closed: list[str] = field(default_factory=list)

    def close(self, reason: str) -> None:
        self.closed.append(reason)

    def flush(self) -> None:
        pass


@dataclass(eq=False)
class Connection:
    """One client of one party. The I/O adapter (`peer`) owns the socket; the hub owns the
    outbox."""

    party: str
    user: str
    listener: str
    outbox: Outbox
    peer: Peer
    id: str = ""
    address: str = ""  # host:port of the client, for the log
    callsigns: set[str] = field(default_factory=set)  # the callsigns of its devices now
    devices: dict[str, str] = field(default_factory=dict)  # its devices' uids -> callsigns
    oversight: bool = False  # a party-wide view (the map page): addressing does not narrow

    def mode(self) -> str:
        return self.peer.mode

    def close(self, reason: str) -> None:
        self.peer.close(reason)

    def flush(self) -> None:
        self.peer.flush()


def addressed_to_devices(event: CotEvent) -> bool:
    """Addressed to devices (`dest callsign`, `dest uid`), not only to parties."""
    return bool(event.dest_callsigns or event.dest_uids)


def reaches(item: Item, conn: Connection, parties: Container[str], devices: bool = True) -> bool:
    """Whether the item's addressing (if any) includes this connection (with `devices`
    False: as a party, not through the devices it reported)."""
    e = item.event
    if conn.oversight or not (e.dest_parties or e.dest_callsigns or e.dest_uids):
        return True
    if conn.party in e.dest_parties:
        return True
    if not devices:
        return False
    if not conn.callsigns.isdisjoint(e.dest_callsigns):
        return True
    # (The hub writes its own items in each recipient's names.)
    writer = conn.party if item.party == HUB else item.party
    for text in e.dest_uids:
        key = read_name(writer, text, parties)
        if key.party == conn.party and key.uid in conn.devices:
            return True
    return False


def reaches_device(
    item: Item, party: str, uid: str, callsign: str, parties: Container[str]
) -> bool:
    """Whether the item's device addressing names this one device of `party` (uid and
    callsign): `dest callsign` its callsign, or `dest uid` its uid."""
    e = item.event
    if callsign in e.dest_callsigns:
        return True
    writer = party if item.party == HUB else item.party
    return any(read_name(writer, text, parties) == (party, uid) for text in e.dest_uids)
