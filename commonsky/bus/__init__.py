"""Fan-out between hub processes behind one small protocol.

Rule: an item is published once what it is part of has committed (store and ledger), never
before — a subscriber in another process must never see what a crash could undo. The hub
applies its own items directly (picture, outboxes, desks, inside the commit); the bus carries
them to subscribers elsewhere. The default `LocalBus` calls subscribers in the same process,
synchronously, in publish order (none, in a single-process hub). A NATS JetStream bus (for
several hub processes) implements the same two methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from commonsky.model import Item

Subscriber = Callable[[Item], None]


class Bus(Protocol):
    def publish(self, item: Item) -> None: ...

    def subscribe(self, subscriber: Subscriber) -> None: ...


class LocalBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def publish(self, item: Item) -> None:
        for subscriber in self._subscribers:
            subscriber(item)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)
