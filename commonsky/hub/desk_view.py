"""The hub as a desk sees it: what a desk may read and do, nothing else (rules: `desk.py`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from commonsky.metrics import Metrics
from commonsky.model import Category, CotEvent, Item
from commonsky.namespace import Key, handle
from commonsky.policy import Policy
from commonsky.settings import Settings

from .core import Hub
from .desk import DeskRows, Routes
from .directory import Directory
from .outbox import Variant
from .quarantine import Quarantine


class DeskView:
    """Everything a desk may read and do on one hub."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    # ---- what it reads ------------------------------------------------------------------

    def clock(self) -> float:
        """Hub time, epoch seconds (a scenario clock in the demo, a fake one in tests)."""
        return self._hub.clock()

    @property
    def policy(self) -> Policy:
        return self._hub.policy

    @property
    def settings(self) -> Settings:
        return self._hub.settings

    @property
    def metrics(self) -> Metrics:
        return self._hub.metrics

    @property
    def directory(self) -> Directory:
        return self._hub.directory

    @property
    def parties(self) -> frozenset[str]:
        """Every namespace a name may claim (the declared parties and the hub's own)."""
        return self._hub.parties

    @property
    def rows(self) -> DeskRows:
        return self._hub.store

    def held(self, key: tuple[str, str]) -> Item | None:
        """The durable item of `key` in the picture, or None."""
        rendered = self._hub.durable.get(key)
        return rendered.item if rendered is not None else None

    def held_items(self) -> list[Item]:
        """Every durable item in the picture, in the picture's order (last update last)."""
        return [r.item for r in list(self._hub.durable.values())]

    def is_live(self, key: tuple[str, str]) -> bool:
        """Whether a live item (track, position) of `key` is in the picture."""
        return key in self._hub.live

    def visible_live(
        self, party: str, keys: Iterable[tuple[str, str]]
    ) -> Iterator[tuple[Item, Variant]]:
        """The live items of `keys` `party` may see now, with the form it sees them in."""
        for rendered, variant in self._hub.visible_live(party, keys):
            yield rendered.item, variant

    def event_for(self, item: Item, variant: Variant) -> CotEvent:
        """`item`'s event as delivered under `variant` (names, generalization)."""
        return self._hub.event_for(item, variant)

    def route(self, item: Item, now: float) -> Routes:
        """The other parties that receive `item` at `now`, and in which form."""
        return self._hub.route(item, now)

    def chat_key(self, name: Key) -> tuple[str, str] | None:
        """The key of the GeoChat message in the picture whose message id is `name`."""
        return self._hub.chat_key(name)

    def handle(self, party: str, uid: str) -> str:
        """The uid under which `party`'s item `uid` reaches a generalized recipient."""
        return handle(self._hub.secret, party, uid)

    def id_key(self) -> bytes:
        """A key for ids the hub makes (conflict ids): stable across restarts, secret."""
        return self._hub.secret[:16]

    # ---- what it does -------------------------------------------------------------------

    def publish_from_hub(
        self, event: CotEvent, category: Category, audience: Iterable[str]
    ) -> Item:
        return self._hub.publish_from_hub(event, category, audience)

    def publish_each_from_hub(
        self, events: Iterable[tuple[CotEvent, str]], category: Category
    ) -> list[Item]:
        return self._hub.publish_each_from_hub(events, category)

    def submit(self, item: Item) -> Item:
        return self._hub.submit(item)

    def resend(self, key: tuple[str, str], party: str) -> bool:
        return self._hub.resend(key, party)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One commit for the store, the ledger and the desk's rows."""
        return self._hub.transaction()

    @property
    def quarantine(self) -> Quarantine:
        return self._hub.quarantine

    def quarantine_item(self, item: Item, where: str, reason: str) -> None:
        self._hub.quarantine_item(item, where, reason)

    def rebuild(self, where: str, rebuild: Callable[[Item], None], since: int = 0) -> int:
        return self._hub.rebuild(where, rebuild, since)

    def defer(self, callback: Callable[[], None]) -> bool:
        """Run `callback` once the event loop has taken the input that has arrived (a burst
        handled as one). False when the hub runs without a loop (tests, tools): the desk
        does the work now."""
        call_soon = self._hub.call_soon
        if call_soon is None:
            return False
        call_soon(callback)
        return True
