"""Issue 13, class 3: under any mix of accepted and refused input, every stored durable item
has its ledger entry and every entry its stored item (property test on the desk harness)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonsky.errors import RemoteProtocolError
from commonsky.ledger.agreement import disagreements
from commonsky.protocol.cot import parse_event
from commonsky.times import format_time
from tests.engines.harness import T0, make_world

EVERYTHING = [
    {
        "name": f"{a}-{b}",
        "from": a,
        "to": [b],
        "categories": ["hotline", "airspace", "site", "track", "launch"],
        "disclosure": "full",
    }
    for a, b in (("USA", "RUS"), ("RUS", "USA"))
]
NUMBERS = ["0", "-1e300", "1e301", "9999999", "-12000", "1e8", "1e308", "-0", "35.5", "1e-300"]
TIMES = [
    format_time(T0),
    format_time(T0 + 600),
    "9999-12-31T23:59:59-23:59",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z",
]
DETAILS = {
    "b-t-f": '<__chat chatroom="hotline"/><marti><dest party="RUS"/></marti><remarks>hi</remarks>',
    "u-d-f": '<link point="30,30"/><link point="30,31"/><link point="31,31"/><link point="30,30"/>'
    '<csky_airspace floor_m="{n}" ceiling_m="9000" start="{n}" end="{n}"/>',
    "u-d-p": '<csky_airspace item="site" radius_m="{n}"/>',
    "a-f-A": '<track speed="{n}" course="{n}"/>',
}


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(DETAILS)))
    n = draw(st.sampled_from(NUMBERS))
    stale = draw(st.sampled_from(TIMES[1:]))
    text = (
        f'<event version="2.0" uid="u{draw(st.integers(0, 5))}" type="{kind}" '
        f'time="{TIMES[0]}" start="{draw(st.sampled_from(TIMES))}" stale="{stale}" how="m-g">'
        f'<point lat="30" lon="30" hae="{draw(st.sampled_from(NUMBERS))}" ce="{n}" le="1"/>'
        f"<detail>{DETAILS[kind].format(n=draw(st.sampled_from(NUMBERS)))}</detail></event>"
    )
    return draw(st.sampled_from(["USA", "RUS"])), text.encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=12))
def test_store_and_ledger_agree_whatever_is_sent(sent: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(Path(tmp), EVERYTHING)
        for party, data in sent:
            with contextlib.suppress(RemoteProtocolError):  # refused: nothing kept
                world.send(party, parse_event(data))
        recorder = world.services.recorder
        assert recorder is not None
        assert disagreements(world.hub.store.since(0), recorder.ledger.entries()) == []
        world.services.close()
        world.hub.store.close()


def test_a_number_the_ledger_recorded_before_a_crash_goes_to_no_other_item(
    tmp_path: Path,
) -> None:
    from commonsky.ledger.entry import EntryFields
    from tests.engines.harness import chat

    world = make_world(tmp_path, EVERYTHING)
    first = world.send("USA", chat("m1", "before", "RUS"))
    recorder = world.services.recorder
    assert recorder is not None
    # Killed after the ledger's commit and before the store's: the ledger records the next
    # number, the store never got the item.
    lost = first.seq + 10
    recorder.ledger.append(
        EntryFields("item", 0, "USA", ["USA"], {"store_seq": lost, "uid": "m-lost"})
    )
    world.services.close()
    world.hub.store.close()
    again = make_world(tmp_path, EVERYTHING)
    after = again.send("USA", chat("m2", "after", "RUS"))
    assert after.seq > lost
    assert again.services.recorder is not None
    found = disagreements(again.hub.store.since(0), again.services.recorder.ledger.entries())
    # Named as what it is (recorded, never stored), not as another item's record.
    assert len(found) == 1 and found[0].endswith(f"records store item {lost}, which is not stored")


_DIE_BETWEEN_THE_COMMITS = """
import contextlib, os, sys
from pathlib import Path
from tests.engines.harness import chat, make_world
from tests.engines.test_store_ledger_agreement import EVERYTHING

world = make_world(Path(sys.argv[1]), EVERYTHING)
world.send("USA", chat("m1", "before", "RUS"))

class DieAfterTheStoreCommits:
    def record(self, batch):
        pass

    @contextlib.contextmanager
    def transaction(self):
        # Joined after the ledger's block and left before it: the store has committed (it
        # is left first), the ledger has not.
        yield
        os._exit(9)

    def journal(self, store):
        pass

world.hub.add_recorder(DieAfterTheStoreCommits())
world.send("USA", chat("m2", "lost between the commits?", "RUS"))
"""


def test_a_kill_between_the_store_and_the_ledger_commit_loses_no_entry(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.engines.harness import chat

    done = subprocess.run(
        [sys.executable, "-c", _DIE_BETWEEN_THE_COMMITS, str(tmp_path)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 9, done.stderr
    world = make_world(tmp_path, EVERYTHING)  # the next start completes the ledger
    recorder = world.services.recorder
    assert recorder is not None
    stored = list(world.hub.store.since(0))
    assert "m2" in [i.uid for i in stored]  # the store committed it before the kill
    assert disagreements(stored, recorder.ledger.entries()) == []
    # The log is whole: its entries hash to the root a fresh checkpoint signs, and it goes on.
    assert recorder.ledger.checkpoint().verify()
    after = world.send("USA", chat("m3", "after", "RUS"))
    assert disagreements(world.hub.store.since(0), recorder.ledger.entries()) == []
    assert after.seq == stored[-1].seq + 1


def test_the_bus_publishes_only_what_is_committed(tmp_path: Path) -> None:
    # A subscriber in another process could only read what is committed: this one reads the
    # store and the ledger through connections of its own at the moment it is handed an item.
    import sqlite3

    from commonsky.model import DURABLE
    from tests.engines.harness import chat, receipt

    world = make_world(tmp_path, EVERYTHING)
    store = sqlite3.connect(tmp_path / "hub.sqlite3")
    ledger = sqlite3.connect(tmp_path / "ledger.sqlite3")
    seen: list[tuple[str, bool, bool]] = []

    def elsewhere(item) -> None:  # type: ignore[no-untyped-def]
        if item.category not in DURABLE or item.seq == 0:
            return
        stored = store.execute("SELECT 1 FROM items WHERE seq = ?", (item.seq,)).fetchone()
        entries = [bytes(leaf) for (leaf,) in ledger.execute("SELECT leaf FROM ledger_entry")]
        recorded = any(f'"store_seq":{item.seq},'.encode() in leaf for leaf in entries)
        seen.append((item.uid, stored is not None, recorded))

    world.hub.bus.subscribe(elsewhere)
    world.send("USA", chat("m1", "one", "RUS"))
    world.send("RUS", receipt("m1", "m1"))
    world.send("USA", chat("m2", "two", "RUS"))
    assert len(seen) >= 2 and "m1" in {uid for uid, _, _ in seen}
    assert all(stored and recorded for _, stored, recorded in seen), seen
