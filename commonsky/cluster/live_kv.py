"""The live items a core holds, kept for the next core in a NATS KV bucket only cores read.

Live items (tracks, devices' positions: `LIVE`) are never stored in PostgreSQL, so a core
that builds its hub after a failover would not know them: a client joining then would not
see a still-connected device until it reported again. The core therefore keeps, in KV bucket
`<name>_live`, the latest version of each live item of its picture *as accepted* — the
`Item` with the party and origin stamped from its connection, undisclosed — under
`<party>.<hash of key>` (`live_key`), with the parties it reached and the forms each got
(`Rendered.seen`: a delete after the failover still reaches them). A record is deleted when
its item leaves the picture (superseded by a durable version, deleted, arrived stale, gone
stale).

The picture writer (picture_kv.py) writes a key's record in the same pass as its picture
entries: an update every `LIVE_EVERY_S`, as the picture's live entries; a change a new core
must not miss (the item left the picture, or a party that may see the held record may not
see the current version: `PictureWriter._urgent`) is `urgent`, and the core acknowledges the
stream messages that caused it only once NATS acknowledged the record's change
(`ClusterCore._apply`). A message applied but not acknowledged when a core died comes
again; if the dead core had recorded it as applied, the next core drops the restored
version of its key instead of applying it twice (`LiveKeeper.redelivered`).

What a record holds, a party may not be entitled to see: edges never read this bucket. The
NATS permissions give it to the core's user alone (docs/nats-permissions.conf), and each
value is encrypted and authenticated besides (`seal`: AES-256-GCM bound to its KV key,
under a key derived from the hub's secret — in PostgreSQL, never in NATS): bytes that leave
the bucket another way (the server's disk, a stream an edge's user could make from it)
disclose nothing, and a value a core of this hub did not write there is not believed.

A new core, after building its hub from PostgreSQL and before writing the picture bucket,
puts every record that passes (`read_record`, `LiveKeeper._admit`) into its picture as
already-applied state (`restore`): nothing is sent to anyone, nothing is recorded again. The
desks are given them too (`Hub.restored`), as the single hub's rule has it — a hub's desks
are rebuilt from the picture it starts with, and tell only what differs from what was told
before (the notices stored in PostgreSQL): a single hub starts with no live items, a core
taking over with the dead core's. So a restored track inside another party's zone is in the
deconfliction engine at once (a conflict with the next item is found at once, not at the
track's next report), a conflict the dead core told is not told again, one it never told is
raised once; a restored threat track is in the warnings desk's index, its warnings taken as
issued (desks/deconfliction.py, desks/launch.py). Its picture entries are then written for
the parties that may see it under the agreements in force now. A record that fails is left
out (one line for all of them) and deleted with the stale ones.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from commonsky.errors import CommonSkyError
from commonsky.hub.outbox import Rendered
from commonsky.model import Category, CotEvent, Item, category_of_event, is_transient
from commonsky.namespace import Key
from commonsky.protocol.bounds import check_event
from commonsky.protocol.cot import detail_tree

from .nats_io import read_bucket
from .wire import encode, token

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from commonsky.hub.core import Hub

log = logging.getLogger("commonsky.cluster")

#: The categories whose items are live (latest per uid, kept in memory only: model.DURABLE).
LIVE = frozenset({Category.POSITION, Category.TRACK})

_MAGIC = b"CSL1"  # (a value's first bytes: this layout, version 1)
_SALT_BYTES = 16
_NONCE = bytes(12)  # (each value has a key of its own: `_value_key`)


class LiveRecord(msgspec.Struct, array_like=True, frozen=True):
    """One live item as its core accepted it, and who it reached (party -> forms: "own",
    "full", "gen")."""

    item: Item
    seen: dict[str, list[str]] = {}


_record_decoder = msgspec.msgpack.Decoder(LiveRecord)


def record_key(secret: bytes) -> bytes:
    """The key behind records' keys: derived from the hub's 32-byte secret (hub/shared.py),
    used for nothing else."""
    return hmac.new(secret, b"commonsky live bucket v1", hashlib.sha256).digest()


def live_key(key: tuple[str, str]) -> str:
    """The KV key of item `key`'s record: `<party>.<hash of key>`."""
    raw = f"{key[0]}\x00{key[1]}".encode("utf-8", "surrogatepass")
    return f"{token(key[0])}.{hashlib.sha256(raw).hexdigest()[:40]}"


def _value_key(master: bytes, salt: bytes) -> AESGCM:
    """One value's AES-256-GCM key, from its random salt: no key is used twice, so a fixed
    nonce never repeats under one (random 96-bit nonces under one key are good for 2**32
    writes; a busy core writes more in its life)."""
    return AESGCM(hmac.new(master, salt, hashlib.sha256).digest())


def write_record(name: str, record: LiveRecord, master: bytes) -> bytes:
    """The bucket value of `record` under KV key `name`: `CSL1`, a 16-byte salt, and the
    record encrypted and authenticated with the KV key as associated data (`read_record`)."""
    salt = os.urandom(_SALT_BYTES)
    sealed = _value_key(master, salt).encrypt(_NONCE, encode(record), _aad(name))
    return _MAGIC + salt + sealed


def _aad(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def read_record(name: str, value: bytes, master: bytes) -> LiveRecord:
    """The record a core of this hub wrote under `name`. Raises ValueError (not one: another
    layout, an authentication that fails — another hub's, altered, moved from another key —
    or a body that does not decode)."""
    head = len(_MAGIC) + _SALT_BYTES
    if len(value) < head + 16 or not value.startswith(_MAGIC):
        raise ValueError("not a live record")
    try:
        body = _value_key(master, value[len(_MAGIC) : head]).decrypt(
            _NONCE, value[head:], _aad(name)
        )
    except InvalidTag:
        raise ValueError("not a live record of this hub (its authentication fails)") from None
    try:
        return _record_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a live record: {exc}") from None


@dataclass(slots=True)
class Kept:
    """What the bucket holds (or is being written) for one key."""

    rendered: Rendered
    revision: int | None  # None while the write is in flight
    # The parties that may see it, as of the last pass over its key: a new version some of
    # them may not see makes the record's change urgent (`PictureWriter._urgent`).
    viewers: frozenset[str] = field(default_factory=frozenset)


@dataclass(slots=True)
class Restored:
    """What `LiveKeeper.restore` found (counts), and why the first record left out was."""

    restored: int = 0
    stale: int = 0
    superseded: int = 0  # a stored (durable) version of the key is in the picture
    refused: int = 0  # unreadable, or breaking the rules every accepted item passed
    first: str = ""


class LiveKeeper:
    """The core's side of the live bucket: what it holds per key, and the changes to make.

    Writes go through the picture writer (`PictureWriter._keep`: one connection, one order);
    this class decides them (`change`), and restores a dead core's records (`restore`)."""

    def __init__(self, hub: Hub, kv: KeyValue, bucket: str) -> None:
        self.hub = hub
        self.kv = kv
        self.prefix = f"$KV.{bucket}."
        self.master = record_key(hub.secret)
        self.held: dict[tuple[str, str], Kept] = {}
        self.undeleted: set[tuple[str, str]] = set()  # deletes that failed
        # Keys whose record must change before the stream messages that changed their item
        # are acknowledged (`PictureWriter._dirty`); taken when the change is sent.
        self.urgent: set[tuple[str, str]] = set()
        self.restored: dict[tuple[str, str], Rendered] = {}  # (`redelivered`)
        self.found: dict[str, int] = {}  # KV keys an earlier core left, not restored

    def mark(self, key: tuple[str, str]) -> None:
        """`key`'s item changed in a way its record must follow before the messages that
        changed it are acknowledged."""
        if key in self.held or key in self.undeleted:
            self.urgent.add(key)

    def change(self, key: tuple[str, str], viewers: frozenset[str],
               now: float) -> tuple[str, bytes | None, Kept | None] | None:  # fmt: skip
        """What brings `key`'s record up to date — (KV key, value or None for a delete, what
        is held then) — or None when it is; `held` says it from now on. `viewers`: the
        parties that may see the item now."""
        rendered = self.hub.picture.live.get(key)
        if rendered is not None and rendered.item.event.stale <= now:
            rendered = None
        held = self.held.get(key)
        name = live_key(key)
        if rendered is None:
            if held is None and key not in self.undeleted:
                return None
            self.held.pop(key, None)
            self.undeleted.discard(key)
            return name, None, None
        if held is not None and held.rendered is rendered:
            held.viewers = viewers
            return None
        kept = self.held[key] = Kept(rendered, None, viewers)
        self.undeleted.discard(key)
        self.found.pop(name, None)
        seen = {party: sorted(forms) for party, forms in rendered.seen.items()}
        return name, write_record(name, LiveRecord(rendered.item, seen), self.master), kept

    def failed(self, key: tuple[str, str], kept: Kept | None) -> bool:
        """A change of `key`'s record was not acknowledged: returns whether it must be sent
        again (it was not superseded meanwhile)."""
        if kept is None:  # (a delete: unless a new record was written since)
            if key in self.held:
                return False
            self.undeleted.add(key)
            return True
        if self.held.get(key) is not kept:
            return False
        del self.held[key]
        return True

    # ---- a new core ---------------------------------------------------------------------

    async def restore(self, timeout: float = 5.0) -> Restored:
        """Read the bucket and put each record that passes into the hub's picture, as
        applied already, then give them to the desks (module header). Returns the counts;
        what was not restored is deleted by `drop_strays`. Raises what `read_bucket` raises."""
        latest, _ = await read_bucket(self.kv, timeout=timeout)
        out = Restored()
        items: list[Item] = []
        now = self.hub.clock()
        for name, (revision, value) in latest.items():
            if value is None:
                continue  # (deleted; an empty value is read: not a record, deleted)
            self.found[name] = revision
            try:
                record = read_record(name, value, self.master)
                why = self._admit(name, record, now)
            except Exception as exc:  # (whatever is in a value, a core starts: module header)
                out.refused += 1
                why = str(exc) if isinstance(exc, (ValueError, CommonSkyError)) else repr(exc)
                out.first = out.first or f"{name[:120]}: {why[:200]}"
                continue
            if why == "stale":
                out.stale += 1
            elif why == "superseded":
                out.superseded += 1
            else:
                self._place(name, revision, record)
                items.append(record.item)
                out.restored += 1
        self.hub.restored(items)  # (the desks: once, all of them, after their rebuild)
        if out.refused:
            log.warning("core: live bucket: %d records left out (unreadable, or not this hub's); "
                        "the first, %s", out.refused, out.first)  # fmt: skip
        return out

    def _admit(self, name: str, record: LiveRecord, now: float) -> str:
        """Empty when `record` may be restored, "stale" or "superseded" when past; raises
        ValueError, or what the acceptance rules raise (CommonSkyError; lxml's XMLSyntaxError
        for a detail that does not parse), when it is not an item this hub could hold."""
        item, event = record.item, record.item.event
        if name != live_key(item.key):
            raise ValueError(f"a record of {item.party[:40]}/{event.uid[:80]!r} under another key")
        if item.party not in self.hub.parties:
            raise ValueError(f"a record of party {item.party[:40]!r}, not one of this hub")
        category = category_of_event(event)
        if category not in LIVE or category is not item.category or is_transient(event.type):
            raise ValueError(f"a record of type {event.type[:40]!r} as {item.category}: not live")
        # The rules every accepted item passed (as a stored item's at a restart: hub/core.py).
        check_event(event)
        if event.detail:
            detail_tree(event.detail)
        if event.stale <= now:
            return "stale"
        if item.key in self.hub.picture.durable or item.key in self.hub.picture.live:
            return "superseded"  # (a stored version wins, as after a single hub's restart)
        return ""

    def _place(self, name: str, revision: int, record: LiveRecord) -> None:
        hub, item = self.hub, record.item
        rendered = hub.renderer.rendered(item)
        hub.picture.place(rendered, False, hub.clock())
        rendered.seen = {p: set(f) for p, f in record.seen.items() if p in hub.parties}
        hub.naming.entered(Key(*item.key))
        self.held[item.key] = Kept(rendered, revision)
        self.restored[item.key] = rendered
        del self.found[name]

    def redelivered(self, key: tuple[str, str], event: CotEvent | None) -> bool:
        """A stream message about `key` that the dead core recorded as applied came again
        (`ClusterCore._again`; `event`: the version it carries, None for a delete). Its
        record may predate it (the core died before the record changed): unless the
        restored version is that very event, it leaves the picture — the item is shown again
        when its sender reports it. Returns whether it left."""
        rendered = self.restored.pop(key, None)
        if rendered is None or self.hub.picture.live.get(key) is not rendered:
            return False
        if event is not None and rendered.item.event == event:
            return False
        self.hub.picture.remove(key)
        return True

    async def drop_strays(self) -> int:
        """Delete the records an earlier core left that were not restored (stale, superseded,
        refused); returns how many."""
        strays, self.found = list(self.found), {}
        for name in strays:
            await self.kv.delete(name)
        return len(strays)
