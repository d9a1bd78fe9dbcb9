"""`Policy.entitled` keeps, per (provider, category) without an area, the parties entitled in
the current era (between two consecutive starts or ends of agreements): what it returns must
be what the agreements give at that very time, wherever the item is, asked in any order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from commonsky.model import Category, CotEvent, Disclosure, Item, Point
from commonsky.policy import Agreement, Party, Policy

PARTIES = ("USA", "RUS", "JPN")
NOW = 1_800_000_000.0
BOX = ((30.0, 30.0), (40.0, 30.0), (40.0, 40.0), (30.0, 40.0), (30.0, 30.0))
WINDOWS = [(None, None), (NOW - 10, NOW + 10), (NOW + 10, None), (None, NOW)]
TIMES = [NOW - 20, NOW - 10, NOW - 5, NOW, NOW + 5, NOW + 10, NOW + 20]
CATEGORIES = [Category.TRACK, Category.AIRSPACE]


@st.composite
def agreements(draw: st.DrawFn) -> Agreement:
    provider = draw(st.sampled_from(PARTIES))
    others = [p for p in PARTIES if p != provider]
    window = draw(st.sampled_from(WINDOWS))
    return Agreement(
        name=f"a{draw(st.integers(0, 99))}",
        provider=provider,
        recipients=tuple(draw(st.lists(st.sampled_from(others), min_size=1, unique=True))),
        categories=frozenset(draw(st.sets(st.sampled_from(CATEGORIES), min_size=1))),
        disclosure=draw(st.sampled_from(list(Disclosure))),
        area=draw(st.sampled_from([None, BOX])),
        valid_from=window[0],
        valid_until=window[1],
    )


def item(party: str, category: Category, lon: float) -> Item:
    event = CotEvent(
        uid="u", type="a-f-A", time=NOW, start=NOW, stale=NOW + 60, how="m-g",
        point=Point(35.0, lon),
    )  # fmt: skip
    return Item(party=party, user="u", category=category, event=event, received=NOW)


def plainly(policy: Policy, asked: Item, now: float) -> dict[str, Disclosure]:
    """The rule itself: every grant in force (and covering the item) to each recipient, the
    most generous, conflicts-only left out."""
    return {
        p: d
        for p, d in policy.disclosures(asked.party, asked.category, asked.event.point, now).items()
        if d is not Disclosure.CONFLICTS_ONLY
    }


@given(
    st.lists(agreements(), max_size=5),
    st.lists(
        st.tuples(
            st.sampled_from(PARTIES),
            st.sampled_from(CATEGORIES),
            st.sampled_from([35.0, 50.0]),  # inside the box, outside it
            st.sampled_from(TIMES),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_entitled_is_the_agreements_at_each_time_asked(
    given_agreements: list[Agreement], asks: list[tuple[str, Category, float, float]]
) -> None:
    policy = Policy([Party(p) for p in PARTIES], given_agreements)
    for party, category, lon, now in asks:
        asked = item(party, category, lon)
        got = policy.entitled(asked, now)
        assert got == plainly(policy, asked, now)
        got.clear()  # the caller's to narrow: what is kept is not changed by it
        assert policy.entitled(asked, now) == plainly(policy, asked, now)


def test_an_agreement_that_starts_and_ends_is_seen_to() -> None:
    window = Agreement(
        "w", "USA", ("RUS",), frozenset({Category.TRACK}), Disclosure.FULL,
        valid_from=NOW, valid_until=NOW + 10,
    )  # fmt: skip
    policy = Policy([Party(p) for p in PARTIES], [window])
    track = item("USA", Category.TRACK, 35.0)
    assert policy.entitled(track, NOW - 1) == {}
    assert policy.entitled(track, NOW) == {"RUS": Disclosure.FULL}
    assert policy.entitled(track, NOW + 9.5) == {"RUS": Disclosure.FULL}
    assert policy.entitled(track, NOW + 10) == {}
    assert policy.entitled(track, NOW - 1) == {}  # (a clock set back)


def test_an_agreement_with_an_area_is_asked_where_each_item_is() -> None:
    boxed = Agreement("b", "USA", ("RUS",), frozenset({Category.TRACK}), Disclosure.FULL, area=BOX)
    policy = Policy([Party(p) for p in PARTIES], [boxed])
    assert policy.entitled(item("USA", Category.TRACK, 35.0), NOW) == {"RUS": Disclosure.FULL}
    assert policy.entitled(item("USA", Category.TRACK, 50.0), NOW) == {}
    assert policy.entitled(item("USA", Category.TRACK, 35.0), NOW) == {"RUS": Disclosure.FULL}
