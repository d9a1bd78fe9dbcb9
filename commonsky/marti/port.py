"""Everything the Marti and enrollment listeners ask of the hub — and nothing else.

The HTTP side of TAK stands beside the hub, not inside it: it never touches the hub's
connections, picture or store. These few calls are the whole surface (so the hub core can be
rebuilt behind them without this package noticing):

- `accept(party, user, event)`: an item from `party`, exactly as if its TAK client had sent
  it (identity from the certificate, never the content); raises RemoteProtocolError.
- `entitled(item)`: the other parties the agreements let receive `item` now, with the
  disclosure each gets (the policy's answer; `conflicts-only` grants nothing to deliver).
- `announce(events, category)`: hub-made messages, each to exactly one party (a `b-f-t-r`
  naming a file that party may fetch).
- `record(kind, originator, audience, payload, time)`: a fact in the signed ledger.
- `contacts(party)`: the devices `party` may see in the current picture, as it sees them,
  then those it would see of the devices' last reports no longer there (hub/directory.py).
- `serve_long(url, ca)` / `held(party, sha256)`: items too long for a TAK client's stream,
  announced to it and fetched from the Marti listener (hub/held.py).
- `refuse(reason)` / `log_limited(...)`: the hub's counters and rate-limited log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commonsky.hub.directory import Seen, device_callsign, device_group
from commonsky.model import Category, CotEvent, Disclosure, Item, Point, category_of_event
from commonsky.namespace import foreign_uid
from commonsky.settings import Settings

if TYPE_CHECKING:
    from commonsky.services import Services


_FULL = Disclosure.FULL


@dataclass(frozen=True, slots=True)
class Contact:
    """A device as `clientEndPoints` lists it: the names the asking party knows it by."""

    uid: str
    callsign: str
    team: str
    role: str
    last: float  # epoch seconds of its last report
    connected: bool = False  # a connection of its party holds the device now


class HubPort:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._hub = services.hub
        self.settings: Settings = self._hub.settings

    # ---- who and when -------------------------------------------------------------------

    def clock(self) -> float:
        return self._hub.clock()

    def is_party(self, party: str) -> bool:
        return party in self._hub.policy.parties

    # ---- items --------------------------------------------------------------------------

    def accept(self, party: str, user: str, event: CotEvent) -> Item:
        return self._hub.accept(party, user, event)

    def entitled(self, item: Item) -> dict[str, Disclosure]:
        return self._hub.policy.entitled(item, self._hub.clock())

    def providers_to(self, party: str) -> frozenset[str]:
        return self._hub.policy.providers_to(party)

    def announce(self, events: Iterable[tuple[CotEvent, str]], category: Category) -> None:
        events = list(events)
        if events:
            self._hub.publish_each_from_hub(events, category)

    def record(
        self,
        kind: str,
        originator: str,
        audience: Iterable[str],
        payload: Mapping[str, Any],
        time_s: float,
    ) -> int | None:
        recorder = self._services.recorder
        if recorder is None:  # (an in-memory hub keeps no ledger)
            return None
        return recorder.record_fact(kind, originator, sorted(set(audience)), dict(payload), time_s)

    def contacts(self, party: str) -> list[Contact]:
        """Devices in the picture `party` may see in full (its own and other parties' under
        an agreement): a generalized one has no callsign to list, so it is left out. A device
        is `connected` while a connection of its party has reported it (TAK Server's
        `lastStatus` "Connected" / "Disconnected"). Then the devices no longer in the
        picture (their report stale, or the hub restarted since), from their last report
        (hub/directory.py `Seen`), under the same rule (`_remembered`)."""
        out: list[Contact] = []
        online = {(conn.party, uid) for conn in self._hub.wires for uid in conn.devices}
        for rendered, variant in self._hub.visible(party, durable=False):
            item = rendered.item
            if device_callsign(item.event) is None or variant == "gen":
                continue
            event = item.event if variant == "own" else self._hub.event_for(item, variant)
            team, role = device_group(event.detail)
            connected = item.key in online
            out.append(Contact(event.uid, event.callsign, team, role, item.received, connected))
        return out + self._remembered(party, online)

    def _remembered(self, party: str, online: set[tuple[str, str]]) -> list[Contact]:
        """Devices whose last report is no longer in the picture, that `party` would see in
        full were that report there now: its own; another party's when the report was not
        addressed (`Seen.open`) and the agreements in force give `party` its category at its
        position in full — as for a live report, named as it would be (`PARTY::uid`)."""
        hub = self._hub
        now = hub.clock()
        out: list[Contact] = []
        for (owner, uid), callsign, seen in hub.directory.last_seen():
            live = hub.picture.get((owner, uid))
            if live is not None and live.item.event.stale > now:
                continue  # (in the picture: listed above, or not to be listed)
            name = uid
            if owner != party:
                if not seen.open or self._disclosure(owner, uid, seen, now, party) != _FULL:
                    continue
                name = foreign_uid(owner, uid)
            connected = (owner, uid) in online
            out.append(Contact(name, callsign, seen.team, seen.role, seen.last, connected))
        return out

    def _disclosure(
        self, owner: str, uid: str, seen: Seen, now: float, party: str
    ) -> Disclosure | None:
        """What `party` would be given now of `owner`'s report `seen` (its category at its
        position: what the agreements decide by)."""
        event = CotEvent(
            uid=uid, type=seen.type, time=seen.last, start=seen.last, stale=seen.last,
            how=None, point=Point(seen.lat, seen.lon),
        )  # fmt: skip
        category = category_of_event(event) or Category.OTHER
        item = Item(party=owner, user="", category=category, event=event, received=seen.last)
        return self._hub.policy.entitled(item, now).get(party)

    # ---- items too long for a TAK client's stream (hub/held.py) ------------------------

    def serve_long(self, url: Callable[[], str], ca: Path) -> None:
        """Announce over-long items to TAK TLS clients of `ca`, fetched at `url()`."""
        self._hub.wires.held.serve(url, ca)

    def held(self, party: str, sha256: str) -> bytes | None:
        """The CoT XML an announcement written to `party` names, while `party` would still
        be written that very form of that version of the item; else None."""
        hub = self._hub
        held = hub.wires.held.get(party, sha256)
        if held is None:
            return None
        rendered, now = held.rendered, hub.clock()
        if hub.picture.get(rendered.item.key) is not rendered:
            return None  # (a newer version, or deleted, or gone stale)
        if hub.router.variant_for(rendered, party, now) != held.variant:
            return None  # (withdrawn, or another form now)
        if ":" in held.variant and not hub.wires.held.current(held):
            return None  # (its names for `party` changed since)
        return held.xml

    # ---- telling the operator -----------------------------------------------------------

    def refuse(self, reason: str) -> None:
        self._hub.metrics.refuse(reason)

    def log_limited(
        self,
        logger: logging.Logger,
        reason: str,
        key: str,
        msg: str,
        *args: object,
        level: int = logging.WARNING,
    ) -> None:
        self._hub.log_limited(logger, reason, key, msg, *args, level=level)
