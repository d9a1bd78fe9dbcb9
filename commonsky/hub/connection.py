"""A client connection as the hub sees it, and whether an addressed item is for it.

Addressing (`<marti><dest …/>`): `dest party` reaches every device of that party, `dest
callsign` the devices using that callsign (the directory, `directory.py`), `dest uid` that
device (iTAK). It narrows delivery inside the sender's own party too; a party's oversight
connections (its map page) see everything the party receives.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field

from commonsky.model import HUB, CotEvent, Item
from commonsky.namespace import read_name

from .outbox import Outbox


@dataclass(eq=False)
class Connection:
    """One client of one party. The I/O adapter owns the socket; the hub owns the outbox."""

    party: str
    user: str
    listener: str
    outbox: Outbox
    mode: Callable[[], str]
    close: Callable[[str], None]
    flush: Callable[[], None] = lambda: None  # write what is pending, if the socket allows
    id: str = ""
    peer: str = ""
    refusals: int = 0
    callsigns: set[str] = field(default_factory=set)  # the callsigns of its devices now
    devices: dict[str, str] = field(default_factory=dict)  # its devices' uids -> callsigns
    oversight: bool = False  # a party-wide view (the map page): addressing does not narrow


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
