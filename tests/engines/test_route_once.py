"""Each item is routed once on its way in (#14): the routes the ledger records are the ones kept
with the item for delivery, and the API's hotline check hands its routes on."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from commonsky.model import Category, Item
from tests.engines.harness import World, chat, drawing, make_world, square

HOTLINE = {
    "name": "US-RU hotline",
    "from": "USA",
    "to": ["RUS"],
    "categories": ["hotline", "airspace"],
    "disclosure": "full",
}


def counted(w: World) -> Counter[tuple[str, str]]:
    """Count `Hub.route` calls per item key."""
    calls: Counter[tuple[str, str]] = Counter()
    route = w.hub.route

    def counting(item: Item, now: float) -> dict:
        calls[item.key] += 1
        return route(item, now)

    w.hub.route = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("refuse", [(), (Category.HOTLINE,)])
def test_a_hotline_message_is_routed_once(tmp_path: Path, refuse: tuple[Category, ...]) -> None:
    w = make_world(tmp_path, [HOTLINE])
    calls = counted(w)
    w.hub.accept("USA", "api", chat("GeoChat.US.1", "hello", "RUS"), refuse_unrouted=refuse)
    assert calls[("USA", "GeoChat.US.1")] == 1
    assert [e.uid for e in w.take("RUS")] == ["USA::GeoChat.US.1"]


def test_a_durable_item_is_routed_once_and_recorded_as_delivered(tmp_path: Path) -> None:
    w = make_world(tmp_path, [HOTLINE])
    calls = counted(w)
    recorded: list[dict] = []
    w.hub.add_recorder(Keeping(recorded))
    w.hub.accept("USA", "u", drawing("AREA-1", square(38.0, 34.0, 1.0), 3000, 9000))
    assert calls[("USA", "AREA-1")] == 1
    assert recorded == [w.hub.durable[("USA", "AREA-1")].routes] and "RUS" in recorded[0]
    assert [e.uid for e in w.take("RUS")] == ["USA::AREA-1"]


class Keeping:
    """A recorder that keeps the routes it is given (hub/desk.Recorder)."""

    def __init__(self, into: list[dict]) -> None:
        self.into = into

    def record(self, batch: list[tuple[Item, dict]]) -> None:
        self.into.extend(routes for _, routes in batch)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def journal(self, store: object) -> None:
        pass
