"""A connection's replay of the picture: drawn page by page as it drains, never a burst
against the durable queue limit, never an item's superseded version."""

from __future__ import annotations

from pathlib import Path

from tests.engines.harness import make_world


def test_a_late_connection_is_replayed_in_pages_without_stale_versions(tmp_path: Path) -> None:
    from commonsky.hub.connection import MemoryPeer
    from commonsky.hub.core import Connection
    from commonsky.hub.outbox import REPLAY_PAGE, Outbox
    from tests.engines.harness import drawing, square

    share = {"name": "areas", "from": "USA", "to": ["RUS"], "categories": ["airspace"]}
    w = make_world(tmp_path, [dict(share, disclosure="full")])
    count = REPLAY_PAGE + 40
    for i in range(count):
        w.send("USA", drawing(f"A{i}", square(-170 + (i % 300) * 1.1, -60 + i // 300 * 2, 0.5)))
    late = Outbox(10_000, 50)  # a durable limit far below the picture: paging must hold
    w.hub.attach(Connection("RUS", "late", "test", late, MemoryPeer(), "late"))
    first = [p.rendered.item.uid for p in late.take()]
    assert len(first) == REPLAY_PAGE and late.backlog is not None
    # Two updates while the replay is under way: one of an item already sent, one not yet.
    w.send("USA", drawing("A0", square(-170, -60, 0.4)))
    w.send("USA", drawing(f"A{count - 1}", square(0, 0, 0.4)))
    rest = [p.rendered.item for p in late.take()]
    assert late.backlog is None and late.take() == []
    uids = first + [i.uid for i in rest]
    assert uids.count("A0") == 2 and uids.count(f"A{count - 1}") == 1  # never the old one
    assert len(set(uids)) == count


def test_the_first_page_of_a_replay_goes_before_what_arrives_after_the_connection_opened(
    tmp_path: Path,
) -> None:
    """A round waits turns of the loop (hub/connections.py, ROUND_TURNS) in which others'
    input is queued; a connection that just opened is written its first page at once, so
    that what arrives after it opened comes after that page and the next one — not between
    them (a conformant late joiner's barrier, tests/corpus)."""
    from collections.abc import Callable
    from dataclasses import dataclass

    from commonsky.hub.connection import MemoryPeer
    from commonsky.hub.core import Connection
    from commonsky.hub.outbox import REPLAY_PAGE, Outbox
    from tests.engines.harness import drawing, square

    @dataclass(eq=False)
    class Taking(MemoryPeer):
        """Writes what the outbox gives when flushed (a socket that keeps up)."""

        outbox: Outbox | None = None
        written: list[str] | None = None

        def flush(self) -> None:
            assert self.outbox is not None and self.written is not None
            self.written.extend(p.rendered.item.uid for p in self.outbox.take())

    share = {"name": "areas", "from": "USA", "to": ["RUS"], "categories": ["airspace"]}
    w = make_world(tmp_path, [dict(share, disclosure="full")])
    count = REPLAY_PAGE + 1
    for i in range(count):
        w.send("USA", drawing(f"A{i}", square(-170 + (i % 300) * 1.1, -60 + i // 300 * 2, 0.5)))
    soon: list[Callable[[], None]] = []
    w.hub.call_soon = soon.append  # (the event loop's turns, run below)
    late = Outbox(10_000, 10_000)
    peer = Taking(outbox=late, written=[])
    w.hub.attach(Connection("RUS", "late", "test", late, peer, "late"))
    w.send("USA", drawing("NEW", square(0, 0, 0.4)))  # after it opened, before any turn
    while soon:
        soon.pop(0)()
    while late.backlog is not None or len(late):  # (the writer task: the rest as it drains)
        peer.flush()
    assert peer.written is not None
    assert peer.written.index(f"A{count - 1}") < peer.written.index("NEW")
    assert len(peer.written) == count + 1
