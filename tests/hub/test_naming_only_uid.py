"""The renderer's fast path agrees with the full render, byte for byte (hub/naming.py,
hub/render.py).

`Naming.only_uid` says which forms of an item are its event with only the uid changed;
`Renderer.render` then splices that uid into XML made once per item instead of rendering
the whole event. For every variant a recipient can be given ("own", "full", "gen",
"full:PARTY"), what `Renderer.render` writes must be exactly `render(Naming.event(...))`:
on generated events (parsed from CoT, so written back in the sender's own text, and made
by the hub) and on every message of the team's TAK corpus that parses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.errors import RemoteProtocolError
from commonsky.hub.naming import Naming
from commonsky.hub.outbox import Rendered
from commonsky.hub.render import Renderer, encode
from commonsky.metrics import Metrics
from commonsky.model import HUB, Category, CotEvent, Item, Point
from commonsky.protocol.cot import check_uid, parse_event, quote
from commonsky.protocol.render import XML

PARTIES = ("USA", "RUS", "JPN")
KNOWN = frozenset((*PARTIES, HUB))
SECRET = b"s" * 32
VARIANTS = ("own", "full", "gen", *(f"full:{p}" for p in PARTIES))
METRICS = Metrics()  # (one registry for the module: a render failure would count here)

_IN_REPO = Path(__file__).parents[1] / "corpus" / "data"
CORPUS = Path(
    os.environ.get(
        "COMMONSKY_TAK_CORPUS", _IN_REPO if _IN_REPO.is_dir() else "/work/shared/tak-corpus"
    )
)


def corpus() -> list[tuple[str, CotEvent]]:
    events = []
    for path in sorted(CORPUS.glob("*.xml")):
        try:
            events.append((path.name, parse_event(path.read_bytes().strip())))
        except RemoteProtocolError:
            continue  # refused on the way in (NaN points…): never an item to render
    return events


CORPUS_EVENTS = corpus()


def check_every_variant(item: Item, full_to: frozenset[str]) -> None:
    """Each variant of `item`, through the renderer (fast path where it applies, asked twice
    so the cached cut is used too), equals the full render of `Naming.event`'s form."""
    naming = Naming(
        KNOWN, SECRET, 0.1, lookup=lambda _k: None, keys=list, sees_full=lambda _r, p: p in full_to
    )
    renderer = Renderer(naming, METRICS)
    fast_item = renderer.rendered(item)
    for variant in VARIANTS:
        whole = Rendered(item, renderer.render)
        expected = encode(whole, naming.event(whole, variant), XML)
        assert expected, (variant, item)  # (b"" would be a render failure on both sides)
        for _ in range(2):
            assert renderer.render(fast_item, variant, XML) == expected, variant
    assert fast_item.xml_around_uid  # the fast path ran ("own" always takes it) and cut


_SPECIAL_UIDS = st.sampled_from(
    [
        "a&b",
        'q"x',
        "<tag>",
        "it's",
        "ANDROID-1234",
        "USA::own",
        "fe80::1",
        "GeoChat.ANDROID-1.All Chat Rooms.m-1",
        "GeoChat.RUS::ANDROID-9.RED FOX 1.m-2",
        "Ü-ñ-漢字",
    ]
)
_UIDS = st.one_of(
    _SPECIAL_UIDS,
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30),
).filter(lambda u: _valid(u))

_DETAILS = st.sampled_from(
    [
        "",
        '<contact callsign="RED &amp; 1"/>',
        '<link uid="RUS::t-1" relation="p-p" type="a-f-G"/>',
        '<link uid="JPN::g-0123456789abcdef" relation="p-p" type="a-f-G"/>',
        '<link uid="ANDROID-7" relation="p-p" type="a-f-G"/><remarks>a "b" &lt;c&gt;</remarks>',
        '<__chat id="All Chat Rooms" chatroom="All Chat Rooms" senderCallsign="X"/>',
    ]
)
_TYPES = st.sampled_from(["a-f-G-U-C", "b-t-f", "b-t-f-d", "b-t-f-r", "u-d-p", "t-x-d-d"])


def _valid(uid: str) -> bool:
    try:
        check_uid(uid)
    except RemoteProtocolError:
        return False
    return True


@st.composite
def events(draw: st.DrawFn) -> CotEvent:
    """An event as a sender writes it (attributes in any order, optional ones or not, read
    back through the parser so it keeps the sender's text), or as the hub makes it."""
    uid = draw(_UIDS)
    cot_type = draw(_TYPES)
    detail = draw(_DETAILS)
    t = "2026-12-01T12:00:00.5Z"
    attrs = [
        ("version", "2.0"),
        ("uid", quote(uid)),
        ("type", cot_type),
        ("time", t),
        ("start", t),
        ("stale", "2026-12-01T12:05:00Z"),
    ]
    attrs += draw(st.lists(st.sampled_from([("how", "m-g"), ("access", "Undefined")]), unique=True))
    attrs = draw(st.permutations(attrs))
    if draw(st.booleans()):
        return CotEvent(
            uid=uid, type=cot_type, time=1.0, start=1.0, stale=60.0, how="h-e",
            point=Point(10.5, -3.25), detail=detail, access=draw(st.sampled_from([None, "a&b"])),
        )  # fmt: skip
    head = "".join(f' {name}="{value}"' for name, value in attrs)
    xml = f'<event{head}><point lat="10.5" lon="-3.25" hae="0" ce="9" le="9"/>'
    xml += f"<detail>{detail}</detail></event>" if detail or draw(st.booleans()) else "</event>"
    return parse_event(xml.encode())


@settings(max_examples=300, deadline=None)
@given(
    event=events(),
    party=st.sampled_from((*PARTIES, HUB)),
    full_to=st.frozensets(st.sampled_from(PARTIES)),
)
def test_fast_path_equals_full_render_on_generated_events(
    event: CotEvent, party: str, full_to: frozenset[str]
) -> None:
    item = Item(party=party, user="u", category=Category.OTHER, event=event, received=0.0)
    check_every_variant(item, full_to)


def test_the_corpus_is_there() -> None:
    assert len(CORPUS_EVENTS) >= 80


@pytest.mark.parametrize(("name", "event"), CORPUS_EVENTS, ids=[n for n, _ in CORPUS_EVENTS])
@pytest.mark.parametrize("party", ["USA", HUB])
def test_fast_path_equals_full_render_on_the_corpus(name: str, event: CotEvent, party: str) -> None:
    item = Item(party=party, user="u", category=Category.OTHER, event=event, received=0.0)
    check_every_variant(item, frozenset({"RUS"}))
