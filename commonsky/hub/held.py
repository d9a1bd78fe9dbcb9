"""Messages too long for a TAK client's stream reader, held for it to fetch over HTTPS.

ATAK's and WinTAK's stream reader (commoncommo) holds 65,536 bytes: a longer CoT event, or
a TAK protobuf message declaring a longer length, is dropped without a word. So a TAK TLS
connection is written, in place of an item's form over that (`Joined`, listeners.py: one
length test per item written), a file-transfer request (`b-f-t-r`, the `<fileshare>` commo
reads) naming that very form as CoT XML at `/Marti/sync/content?hash=SHA-256`; commo fetches
it with the stream's own client certificate, checks its size and SHA-256, and ATAK imports
a file that is no zip as the CoT event it is (docs/architecture.md, "Message size").

Only a party an announcement was written to may fetch what it names (`grant`, at the
write), and only while that party would still be written the same form of the same version
of the item (`HubPort.held`): a withdrawn agreement, a newer version, a delete or the
item's stale time end it. What is held is bounded: each form until its item's stale time
and at most HOLD_S past its last announcement, HELD_BYTES in all (the oldest dropped
first) — a form dropped is held again if it is written again (a replay).

A cluster's edge holds the connections, so it holds their long forms too, in a store of its
own (`form`: what it knows of an output is its bytes; cluster/edge_long.py): its holdings end
also when the edge writes another version of the item (`supersede`) or is told of its
delete (`end`). The core holds them as well, for a fetch that reaches another edge
(cluster/core_long.py; `Held.mode`: the wire form a holding's XML was read from, so that
`current` reads it the same way again).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from commonsky.model import CotEvent, Point
from commonsky.protocol.render import PROTO, XML, frame_header, render

from .outbox import Rendered, Variant

STREAM_BYTES = 65_536  # commoncommo's stream buffer (rxBufSize): the longest message it reads
HOLD_S = 600.0  # a form is held at most this long after it was last announced
HELD_BYTES = 64 << 20  # all forms held at once (each ≤ a few times limit_message_bytes)
ANNOUNCE_STALE_S = 100.0  # an announcement is an offer: stale soon (a replay makes a new one)
_NOT_IN_NAMES = '/\\:*?"<>|'
_EVENT_UID = re.compile(rb"""<event\b[^>]*?\suid=(["'])(.*?)\1""", re.DOTALL)
#: How a store reads a long wire form: (`rendered` in `variant`, written in `mode` as `data`)
#: -> its CoT XML and the time its holding ends at the latest (the item's stale time).
Form = Callable[[Rendered, Variant, str, bytes], tuple[bytes, float]]


@dataclass(slots=True, eq=False)
class Held:
    """One over-long form of one item version: its CoT XML and who may fetch it."""

    sha256: str
    xml: bytes
    rendered: Rendered
    variant: Variant
    mode: str  # the wire form it was first held from (`Form`'s `mode`)
    until: float
    ends: float  # the latest `until` may be (`Form`: the item's stale time)
    parties: set[str] = field(default_factory=set)
    announced: dict[str, tuple[float, bytes]] = field(default_factory=dict)  # mode -> made
    wires: set[bytes] = field(default_factory=set)  # its keys in `LongMessages._by_wire`


def too_long(data: bytes, mode: str) -> bool:
    """Whether commo's reader drops `data` (a wire form in `mode`): an XML event longer than
    its buffer, or a protobuf frame whose declared length is (the frame's header aside)."""
    if len(data) <= STREAM_BYTES:
        return False
    if mode != PROTO:
        return True
    return len(data) - frame_header(data) > STREAM_BYTES


def hub_form(rendered: Rendered, variant: Variant, mode: str, data: bytes) -> tuple[bytes, float]:
    """The single process's `Form`: the item's XML rendering, until its stale time."""
    xml = data if mode == XML else rendered.wire(variant, XML)
    return xml, rendered.item.event.stale


class LongMessages:
    """The forms held for fetching, by the wire bytes they stand for and by SHA-256."""

    def __init__(self, clock: Callable[[], float], form: Form = hub_form) -> None:
        self.clock = clock
        self.form = form
        self.url: Callable[[], str] | None = None  # https://HOST:PORT of the Marti listener
        self.ca: Path | None = None  # the CA its client certificates chain to
        self._by_wire: dict[bytes, Held] = {}
        self._by_sha: dict[str, Held] = {}
        self._by_key: dict[tuple[str, str], list[Held]] = {}  # by the item's key
        self._bytes = 0

    def serve(self, url: Callable[[], str], ca: Path) -> None:
        """Announce long items to TAK TLS clients of `ca`: the Marti listener is up."""
        self.url, self.ca = url, ca.resolve()

    def serves(self, kind: str, ca: str | Path | None) -> bool:
        """Whether connections of a listener (its kind and CA) get announcements: TAK TLS
        whose client certificates the Marti listener accepts (commo fetches with the
        stream's own certificate; a `tak-tcp` client has none, and is written the item)."""
        if self.url is None or kind != "tak-tls" or ca is None:
            return False
        return Path(ca).resolve() == self.ca

    def announce(self, rendered: Rendered, variant: Variant, mode: str, data: bytes) -> Held | None:
        """The holding that stands for `data` (`rendered` in `variant`, written in `mode`),
        made when first asked; None if `data` is not too long or there is no Marti URL."""
        held = self._by_wire.get(data)
        now = self.clock()
        if held is None or held.until <= now:
            if self.url is None or not too_long(data, mode):
                return None
            xml, ends = self.form(rendered, variant, mode, data)
            if not xml:
                return None
            held = self._hold(rendered, variant, mode, data, xml, ends, now)
        held.until = min(held.ends, now + HOLD_S)
        return held

    def wire(self, held: Held, mode: str) -> bytes:
        """The announcement of `held` in `mode` (made anew once half its stale time passed)."""
        now = self.clock()
        made = held.announced.get(mode)
        if made is None or made[0] + ANNOUNCE_STALE_S / 2 < now:
            assert self.url is not None
            made = held.announced[mode] = (now, render(_announcement(held, self.url(), now), mode))
        return made[1]

    def grant(self, party: str, held: Iterable[Held]) -> None:
        """`party` was written these announcements: it may fetch what they name."""
        for one in held:
            one.parties.add(party)

    def get(self, party: str, sha256: str) -> Held | None:
        """What `party` was announced under `sha256` and still held, else None."""
        held = self._by_sha.get(sha256)
        if held is None or party not in held.parties or held.until <= self.clock():
            return None
        return held

    def supersede(self, key: tuple[str, str], received: float) -> None:
        """Version `received` of item `key` is written: what is held of others ends."""
        for old in list(self._by_key.get(key, ())):
            if old.rendered.item.received != received:
                self._drop(old)

    def end(self, key: tuple[str, str]) -> None:
        """Item `key` is deleted (or withdrawn): what is held of it ends."""
        for old in list(self._by_key.get(key, ())):
            self._drop(old)

    def current(self, held: Held) -> bool:
        """Whether `held`'s item version, rendered in its variant now, is still its form
        (the names it gives a party can change with no new version)."""
        rendered, variant, mode = held.rendered, held.variant, held.mode
        return self.form(rendered, variant, mode, rendered.wire(variant, mode))[0] == held.xml

    def __len__(self) -> int:
        return len(self._by_sha)

    def _hold(self, rendered: Rendered, variant: Variant, mode: str, data: bytes, xml: bytes,
              ends: float, now: float) -> Held:  # fmt: skip
        sha = hashlib.sha256(xml).hexdigest()
        held = self._by_sha.get(sha)
        if held is None or held.until <= now:
            self._drop(held)
            held = Held(sha, xml, rendered, variant, mode, now, ends)
            self._by_sha[sha] = held
            self._by_key.setdefault(rendered.item.key, []).append(held)
            self._bytes += len(xml)
        other = self._by_wire.get(data)
        if other is not None and other is not held:
            other.wires.discard(data)  # (that data stands for this holding now)
        self._by_wire[data] = held
        held.wires.add(data)
        self._prune(now, keep=held)
        return held

    def _prune(self, now: float, keep: Held) -> None:
        for old in list(self._by_sha.values()):  # (oldest first: insertion order)
            if old is not keep and (old.until <= now or self._bytes > HELD_BYTES):
                self._drop(old)

    def _drop(self, held: Held | None) -> None:
        if held is None or self._by_sha.get(held.sha256) is not held:
            return
        del self._by_sha[held.sha256]
        key = held.rendered.item.key
        same = self._by_key[key] = [h for h in self._by_key[key] if h is not held]
        if not same:
            del self._by_key[key]
        self._bytes -= len(held.xml)
        for wire in held.wires:
            if self._by_wire.get(wire) is held:
                del self._by_wire[wire]
        held.wires.clear()


def _announcement(held: Held, base: str, now: float) -> CotEvent:
    """A `b-f-t-r` naming `held`'s XML: every `<fileshare>` attribute commo requires
    (sha256, name, filename, senderUrl, sizeInBytes, senderUid, senderCallsign). Its uid
    and senderUid are the SHA-256: no device's, so commo's acknowledgement reaches no one
    and it fetches with the certificate of the stream it came on."""
    found = _EVENT_UID.search(held.xml[:4096])
    uid = html.unescape(found.group(2).decode("utf-8", "replace")) if found else held.sha256
    # (a file name on the device: no path, nothing FAT refuses)
    name = "".join(c if c.isprintable() and c not in _NOT_IN_NAMES else "_" for c in uid)
    name = name[:100] + ".cot"
    share = etree.Element(
        "fileshare",
        filename=name,
        name=name,
        senderUrl=f"{base}/Marti/sync/content?hash={held.sha256}",
        sizeInBytes=str(len(held.xml)),
        sha256=held.sha256,
        senderUid=held.sha256,
        senderCallsign="CommonSky",
    )
    return CotEvent(
        uid=held.sha256,
        type="b-f-t-r",
        time=now,
        start=now,
        stale=now + ANNOUNCE_STALE_S,
        how="h-e",
        point=Point(lat=0.0, lon=0.0, hae=9999999.0, ce=9999999.0, le=9999999.0),
        detail=etree.tostring(share).decode(),
    )
