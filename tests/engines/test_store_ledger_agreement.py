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
from commonsky.protocol.cot import format_time, parse_event
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
