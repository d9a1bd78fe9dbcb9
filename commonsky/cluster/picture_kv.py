"""The current picture for late joiners, in a NATS KV bucket the edges read.

The core writes, for every item of its picture and every party that may see it now, that
party's rendering (XML: disclosed, generalized, namespaced) under `<party>.<hash of key>`
(`wire.picture_key`), and deletes the entry when the party may no longer see it (superseded
by a version it may not see, deleted, stale, quarantined). Entries carry `until`: the
earlier of the item's stale time and the next change of the agreements (`Policy
.next_change`); an edge never replays an entry past it. Items addressed to devices are not
written: the core gives them when the device reports itself, as the single process does.

An edge reads only the entries of the parties of the clients it holds (a KV watch on
`<party>.>`, latest value per key), so an edge with no entitled client never reads what a
party may not see. The read ends with the highest revision it saw, R: every entry of that
party with revision <= R was in the read (the watch delivers in stream order). The edge
replays what it read, then announces the client with R (`wire.Attach.replayed`); the core
sends that client the rest of its picture — each item whose entry for the party was written
after R, is not written yet, or is not the version the core holds now — so nothing is missed
or doubled between the read and the live stream (`PictureWriter.covered`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec

from commonsky.hub.deletes import DELETE_TYPE, target_key
from commonsky.hub.outbox import Pending, Rendered, Variant
from commonsky.hub.render import item_json
from commonsky.model import DURABLE, Category, Item
from commonsky.protocol.cot import XmlLimits, parse_event

from .live_kv import Kept, LiveKeeper
from .nats_io import read_bucket
from .spread import LiveSpread
from .stream_acks import StreamPublisher
from .wire import PictureEntry, encode, entry_decoder, picture_key, token

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from commonsky.hub.core import Hub

log = logging.getLogger("commonsky.cluster")

_CATEGORIES = frozenset(c.value for c in Category)
YIELD_EVERY = 64  # writes of one flush between two turns of the loop (`flush`)
#: Seconds a flush waits for its writes' acknowledgements; one not come by then is given up
#: (cancelled) and written again at the next flush. An acknowledgement can be lost (a NATS
#: reconnect, a server shedding load), and nats-py's future for it would never finish: a
#: core waiting for it would stop applying the stream for good.
ACK_WAIT_S = 5.0


@dataclass(slots=True)
class Held:
    """What the bucket holds (or is being written) for one (party, key)."""

    rendered: Rendered
    variant: Variant
    until: float
    revision: int | None  # None while the write is in flight (or failed)


class PictureWriter:
    """The core's side: keeps the bucket equal to the hub's picture as each party sees it.

    Items are noted as the hub publishes them (its bus: after commit); `flush` writes the
    noted keys, `reconcile` checks every key (a new core, the agreements changed, prune).
    With a `keeper`, each key's record in the live bucket is written in the same pass as
    its entries (live_kv.py). Writes are published with `stream` (`StreamAcks` on the
    core's connection: its futures give the stream sequence, the entry's revision);
    `timer` (monotonic seconds) paces the live items' writes (spread.py)."""

    def __init__(self, hub: Hub, kv: KeyValue, clock: Callable[[], float],
                 stream: StreamPublisher, bucket: str, keeper: LiveKeeper | None = None,
                 timer: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.hub = hub
        self.keeper = keeper
        self.kept_urgent: set[asyncio.Future[Any]] = set()  # urgent record writes in flight
        self.kv = kv
        self.stream = stream
        self.prefix = f"$KV.{bucket}."  # (the bucket's subjects: a write is a publish there)
        self.unsettled: set[asyncio.Future[Any]] = set()  # writes sent, not acknowledged yet
        self.unsettled_urgent: set[asyncio.Future[Any]] = set()  # (`flush`'s urgent ones)
        self.clock = clock
        self.viewers = sorted(hub.policy.parties)
        self.held: dict[tuple[str, tuple[str, str]], Held] = {}
        # Per key with entries: whether they are durable, and the parties holding one
        # (`_urgent` decides from it whether a live item's entries are written before its
        # outputs leave).
        self.kinds: dict[tuple[str, str], tuple[bool, frozenset[str]]] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.undeleted: set[tuple[str, tuple[str, str]]] = set()  # deletes that failed
        # Live items (tracks, positions) are written within LIVE_EVERY_S of their change, a
        # share in each upkeep round (spread.py): a client joining meanwhile gets an older
        # position from the bucket and the current one from the core (`covered` is false
        # for a version the bucket does not hold).
        self.dirty_live: LiveSpread[tuple[str, str]] = LiveSpread(timer)
        self.full = True  # the first flush writes everything (this core is new)
        self.lock = asyncio.Lock()
        self.writes = 0
        # What an earlier core left in the bucket (`load`): kv key -> (revision, value). An
        # entry this core would write the same is kept with its revision, so edges that read
        # it before this core came are not sent it again.
        self.found: dict[str, tuple[int, bytes]] = {}
        hub.bus.subscribe(self._note)

    async def load(self, timeout: float = 5.0) -> int:
        """Read what the bucket holds (a new core, before its first flush); returns how many
        entries. Raises what `read_bucket` raises."""
        latest, _ = await read_bucket(self.kv, timeout=timeout)
        self.found = {key: (rev, value) for key, (rev, value) in latest.items() if value}
        return len(self.found)

    def _note(self, item: Item) -> None:
        key = item.key
        if item.event.type == DELETE_TYPE:
            target = target_key(item.party, item.event, self.hub.parties, strict=False)
            if target is not None:
                self._dirty(target)  # (its entries go before the delete's outputs leave)
            self._dirty(key)
            self.full = True  # (names of other items may change with it)
        elif item.category in DURABLE or self._urgent(key):
            self._dirty(key)
        else:
            self.dirty_live.note(key)

    def _dirty(self, key: tuple[str, str]) -> None:
        """Note `key` as urgent: its entries (and its live record) before its outputs leave."""
        self.dirty.add(key)
        if self.keeper is not None:
            self.keeper.mark(key)

    def dropped(self, key: tuple[str, str]) -> None:
        """`key` left the picture without the hub publishing anything (a restored live item
        dropped: `LiveKeeper.redelivered`)."""
        self._dirty(key)

    @property
    def live_due(self) -> bool:
        """Whether live records' urgent changes are noted or in flight (`ClusterCore._apply`
        acknowledges the stream messages behind them only once they are not)."""
        return self.keeper is not None and bool(self.keeper.urgent or self.kept_urgent)

    def _urgent(self, key: tuple[str, str]) -> bool:
        """Whether a live item's new version must reach the bucket before its outputs leave,
        like a durable one's: the bucket holds a durable entry under its key (an edge
        replays durable entries at once, so a late joiner would be given the superseded
        item), or an entry for a party that may not see the item now (it was superseded by
        a version that party may not see, arrived stale, or ended: the edge would give the
        entry, the core nothing). Otherwise the bucket holds older live versions only, and
        the core sends the late joiner the current one (`covered`). The same for the key's
        record in the live bucket (live_kv.py): a next core would restore it, and give it to
        a party that may see it and not the current version."""
        kind = self.kinds.get(key)
        kept = self.keeper.held.get(key) if self.keeper is not None else None
        if kind is None and kept is None:
            return False
        durable, holders = kind if kind is not None else (False, frozenset[str]())
        if durable:
            return True
        rendered = self.hub.picture.get(key)
        if rendered is None:
            return True
        if kept is not None:
            holders = holders | kept.viewers
        return not holders <= self._wanted(key, self.clock()).keys()

    def reconcile(self) -> None:
        """Have the next flush check every key (held or in the picture)."""
        self.full = True

    def _wanted(self, key: tuple[str, str], now: float) -> dict[str, tuple[Rendered, str, float]]:
        rendered = self.hub.picture.get(key)
        if rendered is None:
            return {}
        e = rendered.item.event
        addressed = bool(e.dest_parties or e.dest_callsigns or e.dest_uids)
        wanted: dict[str, tuple[Rendered, str, float]] = {}
        for viewer in self.viewers:
            if addressed and viewer not in e.dest_parties:
                continue  # (given by the core when a device reports itself)
            variant = self.hub.router.variant_for(rendered, viewer, now)
            if variant is None:
                continue
            until = e.stale
            if viewer != rendered.item.party:
                until = min(until, rendered.routes_until)
                rendered.seen.setdefault(viewer, set()).add(variant.partition(":")[0])
            wanted[viewer] = (rendered, variant, until)
        return wanted

    async def flush(self, live: bool = True, share: bool = True) -> int:
        """Write what changed since the last flush (`live` and `share`: and this upkeep
        round's share of the live items changed since their last write, `LiveSpread`);
        returns how many writes. Returns once every write sent so far (this flush's and any
        other's; with `live` False, every urgent one: durable entries, deletes, entries
        replacing a durable one — `_urgent`) is acknowledged or failed: what the hub
        published before the call is in the bucket then. A failed write leaves its entry
        unconfirmed (`covered` is then False: the core sends the item).

        A full pass (`reconcile`) checks every key but leaves a changed live key that is not
        urgent to its round: written there within LIVE_EVERY_S all the same, and a pass
        every _RECONCILE_EVERY_S writing them all at once was a burst like the one the
        rounds spread (spread.py).

        Writes are sent while the lock is held and acknowledged after it: NATS stores one
        connection's publishes in the order sent, so a key's newer version is never
        overwritten by an older one. A long flush (every key, or thousands of live ones)
        lets go of the lock and the loop every YIELD_EVERY writes: a flush of urgent
        entries (the core's sender, whose outputs wait for it) gets in between and writes
        the keys noted so far — each key is taken out of the noted sets when it is written,
        so none is left to a flush that has not reached it yet."""
        full = self.full  # (every key checked)
        shared = self.dirty_live.share() if live and share else []
        if self.full:
            self.full = False
            kept = self.keeper.held if self.keeper is not None else {}
            pools = (self.hub.picture.durable, self.hub.picture.live, self.kinds, self.dirty,
                     kept, shared)  # fmt: skip
            keys = list({k: None for pool in pools for k in pool})
        else:
            keys = list(self.dirty) + shared
        this_round = set(shared)
        sent = at = 0
        while True:
            async with self.lock:
                now, budget = self.clock(), float(YIELD_EVERY)
                while at < len(keys) and budget > 0:
                    key = keys[at]
                    at += 1
                    if key in self.dirty or key in this_round:
                        pass
                    elif not full:
                        continue  # (written meanwhile by another flush)
                    elif key in self.dirty_live and not self._urgent(key):
                        budget -= 0.25
                        continue  # (its round writes it: above)
                    self.dirty.discard(key)
                    self.dirty_live.take(key)
                    wrote = await self._write_key(key, now)
                    sent += wrote
                    budget -= wrote or 0.25  # (a key that needs no write costs little)
                if at >= len(keys):
                    # (A flush of urgent entries alone waits for the urgent writes sent so
                    # far — another flush may have sent some; the others for every write.)
                    waiting = list(self.unsettled if live else self.unsettled_urgent)
                    break
            await asyncio.sleep(0)
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=ACK_WAIT_S)
            for ack in late:
                ack.cancel()  # (`_settled`: written again at the next flush)
            if late:
                await asyncio.sleep(0)  # (so their `_settled` has run when this returns)
        self.writes += sent
        return sent

    async def _write_key(self, key: tuple[str, str], now: float) -> int:
        """Bring every party's entry of `key` up to date; returns how many writes were sent.
        `kinds` is widened before the first write (a note meanwhile sees the entries that
        may still be there) and made exact after the last."""
        wanted = self._wanted(key, now)
        rendered = next(iter(wanted.values()))[0] if wanted else None
        durable = rendered is not None and rendered.item.category in DURABLE
        was = self.kinds.get(key)
        urgent = durable or (was is not None and was[0])
        if was is not None or wanted:
            holders = frozenset(wanted) | (was[1] if was is not None else frozenset())
            self.kinds[key] = (urgent, holders)
        sent = 0
        for viewer in self.viewers:
            held = self.held.get((viewer, key))
            want = wanted.get(viewer)
            if want is None:
                if held is not None or (viewer, key) in self.undeleted:
                    self.held.pop((viewer, key), None)
                    self.undeleted.discard((viewer, key))
                    sent += await self._send(viewer, key, None, True)
            elif (
                held is None
                or held.rendered is not want[0]
                or held.variant != want[1]
                or held.until != want[2]
            ):
                fresh = Held(want[0], want[1], want[2], None)
                self.held[(viewer, key)] = fresh
                self.undeleted.discard((viewer, key))
                sent += await self._send(viewer, key, fresh, urgent)
        if wanted:
            self.kinds[key] = (durable, frozenset(wanted))
        else:
            self.kinds.pop(key, None)
        if self.keeper is not None:
            sent += await self._keep(key, frozenset(wanted), now)
        return sent

    async def _keep(self, key: tuple[str, str], viewers: frozenset[str], now: float) -> int:
        """Bring `key`'s live record up to date (live_kv.py); returns 1 when a write was
        sent. Its acknowledgement is waited for as an entry's; an urgent one's (`_dirty`) by a
        flush of urgent entries too, which `ClusterCore._apply` runs before it acknowledges
        the stream messages behind it (`live_due`)."""
        keeper = self.keeper
        assert keeper is not None
        urgent = key in keeper.urgent
        keeper.urgent.discard(key)  # (up to date already, or sent now)
        change = keeper.change(key, viewers, now)
        if change is None:
            return 0
        name, value, kept = change
        headers = None if value is not None else {"KV-Operation": "DEL"}
        try:
            ack = await self.stream.publish_async(keeper.prefix + name, value or b"", headers)
        except Exception as exc:  # NATS away: written again at the next flush
            log.warning("live bucket: writing %r failed: %s", key[1][:80], exc)
            self._unkept(key, kept, urgent)
            return 0
        self.unsettled.add(ack)
        if urgent:
            self.unsettled_urgent.add(ack)
            self.kept_urgent.add(ack)
        ack.add_done_callback(lambda done: self._kept(done, key, kept, urgent))
        return 1

    def _kept(self, ack: asyncio.Future[Any], key: tuple[str, str], kept: Kept | None,
              urgent: bool) -> None:  # fmt: skip
        self.unsettled.discard(ack)
        self.unsettled_urgent.discard(ack)
        self.kept_urgent.discard(ack)
        if ack.cancelled() or ack.exception() is not None:
            self._unkept(key, kept, urgent)
            why = "no acknowledgement" if ack.cancelled() else str(ack.exception())
            self.hub.log_limited(log, "live_write", key[0], "live bucket: writing %r failed "
                                 "(%s); written again at the next flush", key[1][:80],
                                 why[:200])  # fmt: skip
        elif kept is not None:
            kept.revision = ack.result()

    def _unkept(self, key: tuple[str, str], kept: Kept | None, urgent: bool) -> None:
        assert self.keeper is not None
        if self.keeper.failed(key, kept):  # (not superseded meanwhile: written again)
            self.dirty.add(key)
            if urgent:
                self.keeper.urgent.add(key)

    async def _send(self, viewer: str, key: tuple[str, str], held: Held | None,
                    urgent: bool) -> int:  # fmt: skip
        """Send one write (`held` None: a delete) without awaiting its acknowledgement;
        returns 1 when sent, 0 when nothing needed sending. `urgent`: a flush of urgent
        entries waits for it (`flush`)."""
        name = picture_key(viewer, key)
        value = b""
        headers: dict[str, str] | None = {"KV-Operation": "DEL"}  # (None: a value)
        if held is not None:
            item = held.rendered.item
            value = encode(PictureEntry(
                party=key[0],
                uid=key[1],
                category=item.category.value,
                received=item.received,
                until=held.until if math.isfinite(held.until) else 1e18,
                durable=item.category in DURABLE,
                xml=held.rendered.wire(held.variant, "xml"),
                seq=item.seq,
                origin=item.origin,
            ))  # fmt: skip
            headers = None
            found = self.found.pop(name, None)
            if found is not None and found[1] == value:
                held.revision = found[0]  # (so written by an earlier core: edges may have read it)
                return 0
        try:
            ack = await self.stream.publish_async(self.prefix + name, value, headers)
        except Exception as exc:  # NATS away: the entry stays unconfirmed
            log.warning("picture bucket: writing %s/%r failed: %s", viewer, key[1][:80], exc)
            return 0
        self.unsettled.add(ack)
        if urgent:
            self.unsettled_urgent.add(ack)
        ack.add_done_callback(lambda done: self._settled(done, held, viewer, key))
        return 1

    def _settled(self, ack: asyncio.Future[Any], held: Held | None, viewer: str,
                 key: tuple[str, str]) -> None:  # fmt: skip
        self.unsettled.discard(ack)
        self.unsettled_urgent.discard(ack)
        if ack.cancelled() or ack.exception() is not None:
            # The bucket may hold an older entry (or one that should be gone): the next
            # flush writes the key again, and until then `covered` is false for it.
            if self.held.get((viewer, key)) is held:  # (not superseded meanwhile)
                if held is None:
                    self.undeleted.add((viewer, key))
                else:
                    del self.held[(viewer, key)]
                self.dirty.add(key)
            why = "no acknowledgement" if ack.cancelled() else str(ack.exception())
            self.hub.log_limited(log, "picture_write", viewer, "picture bucket: writing "
                                 "%s/%r failed (%s); written again at the next flush",
                                 viewer, key[1][:80], why[:200])  # fmt: skip
        elif held is not None:
            held.revision = ack.result()

    async def drop_strays(self) -> int:
        """Delete the entries an earlier core left that this core's first flush did not keep;
        returns how many."""
        strays, self.found = list(self.found), {}  # (what the first flush did not keep)
        for name in strays:
            await self.kv.delete(name)
        return len(strays)

    def covered(self, party: str, pending: Pending, replayed: int,
                unread: frozenset[str] = frozenset()) -> bool:  # fmt: skip
        """Whether the edge that read `party`'s entries up to revision `replayed` has given
        this version of the item to its client already (not if its entry was among those the
        edge could not read, `unread`: another writer's or a damaged value)."""
        key = pending.rendered.item.key
        if unread and picture_key(party, key) in unread:
            return False
        held = self.held.get((party, key))
        return (
            held is not None
            and held.rendered is pending.rendered
            and held.variant == pending.variant
            and held.revision is not None
            and held.revision <= replayed
            and held.until > self.clock()
        )


@dataclass(slots=True)
class Read:
    """An edge's read of one party's picture (`read_picture`)."""

    entries: list[PictureEntry]  # valid at the read's `now`: durable first, then by revision
    top: int  # R, the highest revision the read saw
    unread: list[str]  # keys whose latest entry could not be read (left out, said once)


def read_entry(value: bytes) -> PictureEntry:
    """One bucket value as a `PictureEntry` the edge can replay. Raises ValueError (not one:
    not msgpack, another shape or version, an unknown category, no XML)."""
    try:
        entry = entry_decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a picture entry: {exc}") from None
    if entry.category not in _CATEGORIES or not entry.uid:
        raise ValueError(f"not a picture entry: category {entry.category[:40]!r}")
    xml = entry.xml
    if xml.startswith(b"<?xml"):
        xml = xml[xml.find(b"?>") + 2 :].lstrip()
    # One `<event>` document, as the core renders one (not parsed: a late joiner's whole
    # picture is read at once; a map page's entries are, `entry_json`).
    if not (xml.startswith(b"<event ") and xml.endswith(b"</event>")
            and xml.count(b"<event") == 1 and xml.count(b"</event>") == 1):  # fmt: skip
        raise ValueError(f"not a picture entry: its XML is not one <event> ({xml[:40]!r})")
    return entry


async def read_picture(kv: KeyValue, party: str, now: float, timeout: float = 5.0) -> Read:
    """An edge's read of `party`'s picture. An entry that cannot be read (`read_entry`: an
    earlier version's, or not the core's at all) is left out, named in the log and in
    `unread`: the core sends that item itself."""
    values, top = await read_bucket(kv, f"{token(party)}.>", timeout)
    latest: list[tuple[int, PictureEntry]] = []
    unread: dict[str, str] = {}
    for key, (revision, value) in values.items():
        if not value:
            continue  # (a delete or purge)
        try:
            latest.append((revision, read_entry(value)))
        except ValueError as exc:
            unread[key] = str(exc)
    if unread:
        key, why = next(iter(unread.items()))
        log.warning("picture bucket: %d entries of %s unreadable, left out (the core sends "
                    "their items); the first, %s: %s", len(unread), party, key[:120],
                    why[:200])  # fmt: skip
    held = sorted(((rev, e) for rev, e in latest if e.until > now), key=lambda pair: pair[0])
    entries = [e for _, e in held if e.durable] + [e for _, e in held if not e.durable]
    return Read(entries, top, sorted(unread))


@dataclass(slots=True, frozen=True)
class EntryItem:
    """What `hub.render.item_json` reads of an item besides its event, from an entry."""

    party: str
    category: Category
    seq: int
    origin: str


def entry_json(entry: PictureEntry, limits: XmlLimits) -> bytes:
    """An entry as the map page's JSON (the bytes the core sends a page for this very
    version: `item_json` of the event as the party sees it, which the entry's XML is).
    Raises what parsing the XML raises (RemoteProtocolError; the core wrote it: our bug)."""
    item = EntryItem(entry.party, Category(entry.category), entry.seq, entry.origin)
    return msgspec.json.encode(item_json(cast(Item, item), parse_event(entry.xml, limits)))
