"""How a desk stands on the hub: one small protocol in, one narrow view out.

A desk (hotline, deconfliction, launch warnings, the federation seam) is a feature that reads
the items the hub accepts and publishes hub-made items of its own. The hub knows a desk only
as a `Desk` (`Hub.add_desk`, this module); a desk knows the hub only as a `DeskView`
(`desk_view.py`, which imports the hub — this module must not: the hub imports it): the
clock, the rules, the picture as items, routing, and the few things it may do (publish,
resend, set aside, defer, write its own rows). It never holds the hub's pools, connections, store or
secret — so nothing a desk does can bypass routing, the store's single writer or the keys.

Rules a desk relies on:
- `check` runs for the categories it names, before anything is stored or recorded; it
  refuses by raising `RemoteProtocolError` (or `AlreadyRecorded` for a retry of what is
  held). What it returns — what it parsed — comes back to its own `observe` for that very
  item as `parsed`, so an item is parsed once (None when the desk sees an item it did not
  check: a restart's replay, another process's item).
- `observe` sees every item as it is delivered, with its routes; a desk that fails there is
  our bug, logged and counted, never the sender's problem (`Hub._observe`).
- A desk that keeps state of live items (tracks) may have `restored(items)`: the live items a
  cluster core restored into its picture at a takeover, once, after the desks' rebuild
  (`Hub.restored`). They are not delivered: the desk makes its state what it would be had it
  seen them, and tells only what the dead core did not (deconfliction.py, launch.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import Protocol

from commonsky.metrics import Metrics
from commonsky.model import Category, CotEvent, Disclosure, Item
from commonsky.store import HotlineRow, Store

Routes = dict[str, Disclosure]
log = logging.getLogger("commonsky.hub")


class Desk(Protocol):
    """What the hub asks of a desk (see the module's rules)."""

    @property
    def name(self) -> str:
        """Short and unique on a hub: the log's and the quarantine's word for it."""
        ...

    @property
    def categories(self) -> Collection[Category]:
        """The categories whose items `check` is asked about."""
        ...

    def check(self, party: str, event: CotEvent) -> object | None:
        """Refuse `event` from `party` before it is stored, or pass it; the result (what
        was parsed) is handed to `observe` for the same item."""
        ...

    def observe(self, item: Item, routes: Routes, parsed: object | None = None) -> None:
        """`item` as it is delivered now, to `routes` (the other parties and their forms)."""
        ...


class Recorder(Protocol):
    """A writer whose commits join the store's (the ledger: `desks/recorder.py`), added
    with `Hub.add_recorder`. Not a desk: it must see a durable item before anyone receives
    it, inside the transaction that stores it."""

    def record(self, batch: list[tuple[Item, Routes]]) -> None:
        """Record each stored durable item with its routes, in order."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Its own commit: entered before the store's block, left (committed) after it."""
        ...

    def journal(self, store: Store) -> None:
        """Copy what it is about to commit into `store`'s commit (repaired from there at
        the next start if a crash falls between the two commits)."""
        ...


class DeskRows(Protocol):
    """The store's rows a desk owns (today the hotline's; `store/__init__.py` documents
    each), written in the hub's transaction."""

    def put_hotline(self, row: HotlineRow) -> None: ...
    def hotline(self, sender: str, uid: str) -> bytes | None: ...
    def hotline_open(self, now: float) -> list[bytes]: ...
    def hotline_page(
        self, party: str, other: str | None, before: int | None, limit: int
    ) -> list[tuple[int, bytes]]: ...
    def meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


def give_restored(desks: list[Desk], items: list[Item], metrics: Metrics) -> None:
    """`Hub.restored`: the live items a cluster core put into its picture at a takeover, as
    the dead core held them (cluster/live_kv.py `LiveKeeper.restore`), given to each desk that
    keeps state of live items (its optional `restored`, module rules) — once, after the
    desks' rebuild. A desk that fails on them is our bug: logged and counted
    (`internal_error("restored")`), the core serves all the same."""
    for desk in desks:
        restored = getattr(desk, "restored", None)
        if restored is None:
            continue
        try:
            restored(items)
        except Exception:
            metrics.internal_error("restored")
            log.exception("desk %s failed on %d restored live items", desk.name, len(items))
