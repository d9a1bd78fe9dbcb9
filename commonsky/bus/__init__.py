"""Fan-out between hub processes behind one small protocol.

The default `LocalBus` calls subscribers in the same process, synchronously, in publish
order. A NATS JetStream bus (for several hub processes) implements the same two methods.
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
