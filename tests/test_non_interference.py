"""The one invariant, checked directly: what a party receives depends only on what it may see.

Random parties, agreements (categories, disclosure, areas, validity) and items go through the
real Hub (policy, routing, rendering) with in-memory connections and a fixed clock. For one
observer party, every item it may not see is replaced by a different item it also may not
see; the bytes delivered to the observer must not change by a single byte.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from commonsky.hub.core import Connection, Hub
from commonsky.hub.outbox import Outbox
from commonsky.model import Category, CotEvent, Disclosure, Item, Point
from commonsky.policy import Agreement, Party, Policy
from commonsky.settings import defaults
from commonsky.store.sqlite import SQLiteStore

PARTIES = ("USA", "RUS", "JPN", "KOR")
NOW = 1_800_000_000.0
TYPES = {
    Category.TRACK: "a-f-A",
    Category.HOTLINE: "b-t-f",
    Category.AIRSPACE: "u-d-f",
    Category.SITE: "u-d-p",
    Category.LAUNCH: "b-l",
    Category.MARKER: "b-m-p-s-m",
    Category.DRAWING: "u-rb-a",
    Category.VIDEO: "b-i-v",
    Category.FILE: "b-f-t-r",  # transient: relayed, never in the picture
    Category.EMERGENCY: "b-a-o-tbl",
    Category.CASEVAC: "b-r-f-h-c",
    Category.OTHER: "overhead_marker",
}
BOXES = (None, ((30.0, 30.0), (40.0, 30.0), (40.0, 40.0), (30.0, 40.0), (30.0, 30.0)))


@st.composite
def agreements(draw: st.DrawFn) -> Agreement:
    provider = draw(st.sampled_from(PARTIES))
    recipients = draw(
        st.lists(
            st.sampled_from([p for p in PARTIES if p != provider]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    window = draw(st.sampled_from([(None, None), (NOW - 10, NOW + 10), (NOW + 10, None)]))
    return Agreement(
        name=f"a{draw(st.integers(0, 999))}",
        provider=provider,
        recipients=tuple(recipients),
        categories=frozenset(draw(st.sets(st.sampled_from(list(TYPES)), min_size=1))),
        disclosure=draw(st.sampled_from(list(Disclosure))),
        area=draw(st.sampled_from(BOXES)),
        valid_from=window[0],
        valid_until=window[1],
    )


@st.composite
def events(draw: st.DrawFn) -> tuple[str, CotEvent]:
    party = draw(st.sampled_from(PARTIES))
    category = draw(st.sampled_from(list(TYPES)))
    callsign = draw(st.sampled_from(["", "OPS", "VIPER", "BEAR"]))
    dests = draw(st.sampled_from([(), ("OPS",), ("VIPER",)]))
    dest_parties = draw(st.sampled_from([(), ("RUS",), ("USA", "JPN")]))
    event = CotEvent(
        uid=draw(st.sampled_from(["u1", "u2", "u3", "GeoChat.x"])),
        type=TYPES[category] + draw(st.sampled_from(["", "-M", "-G"])),
        time=NOW,
        start=NOW,
        stale=NOW + draw(st.sampled_from([-5.0, 60.0, 600.0])),
        how="m-g",
        point=Point(draw(st.floats(25, 45)), draw(st.floats(25, 45)), draw(st.floats(0, 12000))),
        detail=f'<contact callsign="{callsign}"/>' if callsign else "",
        callsign=callsign,
        dest_callsigns=dests,
        dest_parties=dest_parties,
    )
    return party, event


def mutate(event: CotEvent, salt: int) -> CotEvent:
    return replace(
        event,
        point=Point(
            event.point.lat + (salt % 7) * 0.37 - 1,
            event.point.lon - (salt % 5) * 0.41 + 1,
            123.0 + salt,
        ),
        detail=f"<remarks>changed {salt}</remarks>",
        callsign="",
        stale=event.stale + salt,
    )


def run(
    policy: Policy, stream: list[tuple[str, CotEvent]], observer: str, data_dir: Path
) -> list[bytes]:
    store = SQLiteStore(data_dir)
    hub = Hub(policy, store, defaults(), b"k" * 32, clock=lambda: NOW)
    outboxes: dict[str, Outbox] = {}
    for party in PARTIES:
        outboxes[party] = Outbox(10_000, 10_000)
        hub.attach(
            Connection(
                party,
                f"{party}-client",
                "test",
                outboxes[party],
                mode=lambda: "xml",
                close=lambda reason: None,
                id=party,
            )
        )
    delivered: list[bytes] = []
    for party, event in stream:
        hub.accept(party, f"{party}-device", event)
        delivered += [p.rendered.wire(p.variant, "xml") for p in outboxes[observer].take()]
    # A late joiner of the observer's party gets the current picture too.
    late = Outbox(10_000, 10_000)
    hub.attach(Connection(observer, "late", "test", late, lambda: "xml", lambda r: None, "late"))
    delivered += [b"late:" + p.rendered.wire(p.variant, "xml") for p in late.take()]
    store.close()
    return delivered


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(agreements(), max_size=6),
    st.lists(events(), min_size=1, max_size=12),
    st.sampled_from(PARTIES),
    st.integers(0, 1000),
)
def test_invisible_changes_change_nothing_received(
    tmp_path_factory,
    deals: list[Agreement],
    stream: list[tuple[str, CotEvent]],
    observer: str,
    salt: int,
) -> None:
    policy = Policy([Party(p) for p in PARTIES], deals)
    probe = Hub(policy, _NullStore(), defaults(), b"k" * 32, clock=lambda: NOW)

    def visible(party: str, event: CotEvent) -> bool:
        if party == observer:
            return True
        item = Item(party, "x", _category(event.type), event, NOW)
        return observer in probe.route(item, NOW)

    changed = []
    for party, event in stream:
        if not visible(party, event):
            other = mutate(event, salt)
            event = other if not visible(party, other) else event
        changed.append((party, event))
    before = run(policy, stream, observer, tmp_path_factory.mktemp("a"))
    after = run(policy, changed, observer, tmp_path_factory.mktemp("b"))
    assert before == after


def _category(cot_type: str) -> Category:
    from commonsky.model import category_of

    category = category_of(cot_type)
    assert category is not None
    return category


class _NullStore:
    def append(self, item: Item) -> int:
        return 1

    def append_many(self, items: list[Item]) -> list[int]:
        return [1] * len(items)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def active(self, now: float) -> list[Item]:
        return []


def test_the_property_test_can_fail() -> None:
    """A deliberately leaky policy (everything to everyone) must be caught by `run`."""
    leaky = Policy(
        [Party(p) for p in PARTIES],
        [Agreement("leak", "RUS", ("USA",), frozenset(TYPES), Disclosure.FULL)],
    )
    event = CotEvent(
        uid="u1",
        type="a-f-A",
        time=NOW,
        start=NOW,
        stale=NOW + 60,
        how="m-g",
        point=Point(35.0, 35.0),
    )
    import tempfile

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        one = run(leaky, [("RUS", event)], "USA", Path(a))
        two = run(leaky, [("RUS", mutate(event, 3))], "USA", Path(b))
    assert one != two


@settings(max_examples=150, deadline=None)
@given(st.lists(agreements(), max_size=6), events(), st.sampled_from(PARTIES))
def test_asking_whether_a_directed_item_gets_through_agrees_with_routing_it(
    deals: list[Agreement], sent: tuple[str, CotEvent], recipient: str
) -> None:
    # The API refuses a hotline message up front when `delivers` says it would not reach its
    # addressee; that answer must be exactly what routing the message would do.
    policy = Policy([Party(p) for p in PARTIES], deals)
    party, event = sent
    assume(recipient != party)
    directed = replace(event, dest_parties=(recipient,))
    item = Item(party=party, user="t", category=Category.HOTLINE, event=directed, received=NOW)
    routed = recipient in policy.route(item, NOW)
    assert policy.delivers(party, recipient, Category.HOTLINE, event.point, NOW) == routed
