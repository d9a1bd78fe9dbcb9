"""Withdrawals at an agreement's end (hub/withdraw.py), on an in-process hub with a clock the
test moves: what is sent, to whom, under which names, and what is never withdrawn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from commonsky.hub import withdraw
from commonsky.hub.connection import MemoryPeer
from commonsky.hub.core import Connection, Hub
from commonsky.hub.outbox import Outbox, Rendered
from commonsky.model import Category, CotEvent, Disclosure, Item, Point
from commonsky.namespace import handle
from commonsky.policy import Agreement, Party, Policy
from commonsky.protocol.refs import link_target
from commonsky.settings import defaults
from commonsky.store.sqlite import SQLiteStore

NOW = 1_800_000_000.0
END = NOW + 100
SECRET = b"k" * 32
PARTIES = ("USA", "JPN", "KOR")
MARKERS = frozenset({Category.MARKER, Category.TRACK, Category.HOTLINE, Category.CONFLICT})


class World:
    def __init__(self, path: Path, agreements: list[Agreement]) -> None:
        self.now = NOW
        self.store = SQLiteStore(path)
        policy = Policy([Party(p) for p in PARTIES], agreements)
        self.hub = Hub(policy, self.store, defaults(), SECRET, clock=lambda: self.now)
        self.boxes: dict[str, Outbox] = {}
        for party in PARTIES:
            self.boxes[party] = Outbox(1000, 1000)
            conn = Connection(party, party, "test", self.boxes[party], MemoryPeer(), id=party)
            self.hub.attach(conn)

    def send(self, uid: str, cot_type: str = "b-m-p-s-m", **kw: object) -> None:
        event = CotEvent(
            uid=uid, type=cot_type, time=self.now, start=self.now, stale=self.now + 86_400,
            how="h-g-i-g-o", point=Point(35.0, 35.0), **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        self.hub.accept("USA", "u", event)

    def take(self, party: str) -> list[tuple[str, str, str]]:
        """(type, uid, linked uid) of each event queued for `party`, as it is delivered."""
        out = []
        for pending in self.boxes[party].take():
            event = self.hub.naming.event(pending.rendered, pending.variant)
            out.append((event.type, event.uid, link_target(event) or ""))
        return out

    def end(self) -> int:
        self.now = END
        return self.hub.withdrawals.check()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[object]:
    made: list[World] = []

    def make(*agreements: Agreement) -> World:
        made.append(World(tmp_path / str(len(made)), list(agreements)))
        return made[-1]

    yield make
    for w in made:
        w.store.close()


def deal(to: tuple[str, ...], level: Disclosure = Disclosure.FULL, **kw: object) -> Agreement:
    return Agreement("d", "USA", to, MARKERS, level, valid_until=END, **kw)  # type: ignore[arg-type]


def test_the_recipient_gets_a_delete_under_its_name_and_no_update_still_pending(world) -> None:
    w = world(deal(("JPN",)))
    w.send("M1")
    w.send("T1", "a-f-A")
    assert w.take("JPN") == [("b-m-p-s-m", "USA::M1", ""), ("a-f-A", "USA::T1", "")]
    w.send("T1", "a-f-A")  # an update JPN's client has not been written yet: moot
    w.take("USA")
    assert w.end() == 2
    assert w.take("JPN") == [
        ("t-x-d-d", "USA::withdrawn.M1", "USA::M1"),
        ("t-x-d-d", "USA::withdrawn.T1", "USA::T1"),
    ]
    assert w.take("USA") == [] and w.take("KOR") == []
    assert "JPN" not in w.hub.durable[("USA", "M1")].seen
    assert w.end() == 0  # (once: the change is handled)


def test_a_generalized_recipient_gets_the_handle_it_knows(world) -> None:
    w = world(deal(("JPN",), Disclosure.GENERALIZED))
    w.send("M1")
    name = handle(SECRET, "USA", "M1")
    assert [u for _, u, _ in w.take("JPN")] == [name]
    w.end()
    ((kind, _, linked),) = w.take("JPN")
    assert (kind, linked) == ("t-x-d-d", name)


def test_only_the_parties_whose_agreement_ended_and_that_got_it(world) -> None:
    stays = Agreement("stays", "USA", ("KOR",), MARKERS, Disclosure.FULL)
    w = world(deal(("JPN", "KOR")), stays)
    w.send("M1")
    w.send("TO-KOR", dest_parties=("KOR",))  # directed: JPN never got it
    w.take("JPN"), w.take("KOR")
    w.end()
    assert w.take("JPN") == [("t-x-d-d", "USA::withdrawn.M1", "USA::M1")]
    assert w.take("KOR") == []  # still entitled under "stays"


def test_hotline_and_the_hubs_own_items_are_never_withdrawn(world) -> None:
    w = world(deal(("JPN",)))
    w.send("GeoChat.dev.JPN.m1", "b-t-f", detail="<remarks>hello</remarks>")
    notice = CotEvent(
        uid="notice", type="t-x-csky-conflict", time=NOW, start=NOW, stale=NOW + 86_400,
        how="h-e", point=Point(35.0, 35.0),
    )  # fmt: skip
    w.hub.publish_from_hub(notice, Category.CONFLICT, ("JPN",))
    assert len(w.take("JPN")) == 2
    assert w.end() == 0
    assert w.take("JPN") == []


def test_a_downgrade_withdraws_the_full_form_only_and_an_upgrade_nothing(world) -> None:
    marker, track = frozenset({Category.MARKER}), frozenset({Category.TRACK})
    w = world(
        Agreement("d", "USA", ("JPN",), marker, Disclosure.FULL, valid_until=END),
        Agreement("gen", "USA", ("JPN",), marker | track, Disclosure.GENERALIZED),
        Agreement("up", "USA", ("JPN",), track, Disclosure.FULL, valid_from=END),
    )
    w.send("M1")  # in full until END, then generalized
    w.send("T1", "a-f-A")  # generalized until END, then in full
    name = handle(SECRET, "USA", "M1")
    assert [u for _, u, _ in w.take("JPN")] == ["USA::M1", handle(SECRET, "USA", "T1")]
    assert w.end() == 1
    assert w.take("JPN") == [("t-x-d-d", "USA::withdrawn.M1", "USA::M1")]  # not the handle
    assert "JPN" not in w.hub.durable[("USA", "M1")].seen
    w.send("M1")  # the next version: generalized, as JPN may now see it
    assert [u for _, u, _ in w.take("JPN")] == [name]
    assert w.hub.durable[("USA", "M1")].seen["JPN"] == {"gen"}


def test_a_downgrade_keeps_a_generalized_version_sent_after_the_change(world) -> None:
    w = world(deal(("JPN",)), Agreement("gen", "USA", ("JPN",), MARKERS, Disclosure.GENERALIZED))
    w.send("T1", "a-f-A")
    w.take("JPN")
    w.send("T1", "a-f-A")  # an update still pending in full: moot
    w.now = END + 0.5  # a version sent after the change, before the housekeeping notices it
    w.send("T1", "a-f-A")
    assert w.hub.withdrawals.check() == 1
    name = handle(SECRET, "USA", "T1")
    assert w.take("JPN") == [("t-x-d-d", "USA::withdrawn.T1", "USA::T1"), ("a-f-A", name, "")]
    assert w.hub.live[("USA", "T1")].seen["JPN"] == {"gen"}


def test_a_uid_with_xml_metacharacters_is_named_whole_in_well_formed_xml(world) -> None:
    """A uid is any string without control characters (cot.check_uid): quotes, `<` and `&`
    included. The withdrawal names it in its `<link uid>`, escaped — written raw, it ended
    the attribute and let the uid write elements of its own into the delete."""
    uid = "M\"1<&'><__forcedelete/>"
    w = world(deal(("JPN",)))
    w.send(uid)
    w.take("JPN")
    w.end()
    (pending,) = w.boxes["JPN"].take()
    event = w.hub.naming.event(pending.rendered, pending.variant)
    assert (event.type, link_target(event)) == ("t-x-d-d", f"USA::{uid}")
    root = etree.fromstring(pending.rendered.wire(pending.variant, "xml"))
    assert [link.get("uid") for link in root.iter("link")] == [f"USA::{uid}"]
    assert len(list(root.iter("__forcedelete"))) == 1


def connect(w: World, party: str) -> list[tuple[str, str, str]]:
    """A new client of `party` connects: what its replay's first page gives it."""
    w.boxes[party] = Outbox(1000, 1000)
    conn = Connection(party, party, "test", w.boxes[party], MemoryPeer(), id=f"{party}-again")
    w.hub.attach(conn)
    return w.take(party)


def test_a_client_away_at_the_end_is_given_the_delete_when_it_connects(world) -> None:
    """JPN's only client was off line when the agreement ended: no connection of JPN was
    there to queue the delete to, and the replay (the picture as JPN may see it now) does
    not name the marker — its map kept it until its stale time, a day away."""
    w = world(deal(("JPN",)))
    w.send("M1")
    w.take("JPN")
    w.hub.detach(next(iter(w.hub.wires.by_party["JPN"])))
    w.send("M1")  # a newer version, never delivered to JPN: its map shows the older one
    assert w.end() == 0  # nobody of JPN's to queue it to
    assert connect(w, "JPN") == [("t-x-d-d", "USA::withdrawn.M1", "USA::M1")]
    assert connect(w, "KOR") == []  # never routed to KOR: nothing owed
    w.now = END + 86_400  # the version's stale time: JPN's map drops it by itself
    assert connect(w, "JPN") == []


def test_what_is_owed_leaves_out_a_form_the_party_sees_again(world) -> None:
    """Owed the full form (a downgrade): a client connecting gets the handle in the replay
    and a delete for `USA::M1`; once an agreement gives the full form again, the replay
    brings `USA::M1` and no delete may take it off."""
    marker = frozenset({Category.MARKER})
    again = END + 1000
    w = world(
        Agreement("d", "USA", ("JPN",), marker, Disclosure.FULL, valid_until=END),
        Agreement("gen", "USA", ("JPN",), marker, Disclosure.GENERALIZED),
        Agreement("again", "USA", ("JPN",), marker, Disclosure.FULL, valid_from=again),
    )
    w.send("M1")
    w.hub.detach(next(iter(w.hub.wires.by_party["JPN"])))
    w.end()
    name = handle(SECRET, "USA", "M1")
    assert connect(w, "JPN") == [
        ("t-x-d-d", "USA::withdrawn.M1", "USA::M1"),
        ("b-m-p-s-m", name, ""),
    ]
    w.now = again
    w.hub.withdrawals.check()
    assert connect(w, "JPN") == [("b-m-p-s-m", "USA::M1", "")]


def test_a_restart_owes_what_the_changes_it_missed_withdrew(world, tmp_path: Path) -> None:
    """The hub was down across the agreement's end: its clients come back to a hub that
    never saw the change happen, and must still take the marker off."""
    w = world(deal(("JPN",)))
    w.send("M1")
    w.send("GeoChat.dev.JPN.m1", "b-t-f", detail="<remarks>hello</remarks>")
    w.store.close()
    store = SQLiteStore(w.store.path.parent)
    policy = Policy([Party(p) for p in PARTIES], [deal(("JPN",))])
    w.now = END + 10
    w.store = store
    w.hub = Hub(policy, store, defaults(), SECRET, clock=lambda: w.now)
    assert w.hub.withdrawals.catch_up() == 0  # (run as the hub started: once)
    assert connect(w, "JPN") == [("t-x-d-d", "USA::withdrawn.M1", "USA::M1")]
    own = connect(w, "USA")  # its own items, no delete: nothing is owed to the owner
    assert sorted(kind for kind, _, _ in own) == ["b-m-p-s-m", "b-t-f"]


def test_clients_away_when_the_owner_deletes_a_marker_are_told_when_they_connect(world) -> None:
    """The same for an owner's delete: JPN's client and the owner's other device were off
    line when USA deleted the marker — the delete was queued to nobody of theirs, and the
    replay no longer names the marker."""
    w = world(deal(("JPN",)))
    w.send("M1")
    w.take("JPN")
    for party in ("JPN", "USA"):
        w.hub.detach(next(iter(w.hub.wires.by_party[party])))
    w.send("del-1", "t-x-d-d", detail='<link uid="M1" relation="none" type="b-m-p-s-m"/>')
    assert ("USA", "M1") not in w.hub.durable
    assert connect(w, "JPN") == [("t-x-d-d", "USA::withdrawn.M1", "USA::M1")]
    assert connect(w, "USA") == [("t-x-d-d", "withdrawn.M1", "M1")]
    assert connect(w, "KOR") == []
    w.send("M1")  # made again, and JPN may see it: no delete may take it off now
    assert connect(w, "JPN") == [("b-m-p-s-m", "USA::M1", "")]
    assert connect(w, "USA") == [("b-m-p-s-m", "M1", "")]


def test_what_a_party_is_owed_is_bounded(world, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(withdraw, "OWED_PER_PARTY", 2)
    w = world(deal(("JPN",)))
    w.hub.detach(next(iter(w.hub.wires.by_party["JPN"])))
    for uid in ("M1", "M2", "M3"):
        w.send(uid)
        w.send(f"del-{uid}", "t-x-d-d", detail=f'<link uid="{uid}" relation="none" type="none"/>')
    assert [linked for _, _, linked in connect(w, "JPN")] == ["USA::M2", "USA::M3"]


def test_a_start_catches_up_only_on_the_changes_no_start_or_check_saw(world) -> None:
    """The store remembers up to when the changes were handled (a check, or a start):
    a first start has nothing to catch up on, a start after the change was handled live
    owes nothing again (what was owed then is not kept), one after a missed change does."""
    w = world(deal(("JPN",)))
    w.send("M1")
    assert w.store.meta(withdraw.CHECKED) == repr(NOW)  # (the first start's)
    assert w.end() == 1  # handled live, JPN connected
    assert w.store.meta(withdraw.CHECKED) == repr(END)
    restarted = Hub(w.hub.router.policy, w.store, defaults(), SECRET, clock=lambda: w.now)
    assert restarted.withdrawals.owed == {}
    w.store.set_meta(withdraw.CHECKED, "not a time")  # (damaged: as a first start)
    again = Hub(w.hub.router.policy, w.store, defaults(), SECRET, clock=lambda: w.now)
    assert again.withdrawals.owed == {} and w.store.meta(withdraw.CHECKED) == repr(END)


def test_an_owed_delete_is_rendered_once_for_a_partys_clients_and_anew_when_it_changes(
    world,
) -> None:
    """Clients of JPN coming back after USA deleted a marker: the delete they are owed is
    rendered once for them all; a newer version deleted since, or time enough passed, makes
    it anew (never an older delete, or one near its stale time, for what is owed now)."""
    w = world(deal(("JPN",)))
    renders: list[float] = []
    render = w.hub.withdrawals.render

    def counted(item: Item) -> Rendered:
        renders.append(item.event.time)
        return render(item)

    w.hub.withdrawals.render = counted
    w.hub.detach(next(iter(w.hub.wires.by_party["JPN"])))

    def made(uid: str, delete: str) -> None:
        w.send(uid)
        w.send(delete, "t-x-d-d", detail=f'<link uid="{uid}" relation="none" type="none"/>')

    def served() -> list[tuple[str, float]]:
        """(linked uid, time) of each delete a new client of JPN is given first."""
        w.boxes["JPN"] = Outbox(1000, 1000)
        w.hub.attach(Connection("JPN", "JPN", "test", w.boxes["JPN"], MemoryPeer()))
        out = []
        for pending in w.boxes["JPN"].take():
            event = w.hub.naming.event(pending.rendered, pending.variant)
            out.append((link_target(event) or "", event.time))
        return out

    made("M1", "del-1")
    assert served() == [("USA::M1", NOW)]
    w.now += 10
    assert served() == [("USA::M1", NOW)]  # the first client's delete, still fresh
    assert renders == [NOW]
    made("M1", "del-2")  # a newer version, deleted: the entry changed
    assert served() == [("USA::M1", NOW + 10)]
    w.now += withdraw.REUSE_S  # the delete made then is half way to its stale time
    assert served() == [("USA::M1", NOW + 10 + withdraw.REUSE_S)]
    assert renders == [NOW, NOW + 10, NOW + 10 + withdraw.REUSE_S]
    owed = w.hub.withdrawals.owed["JPN"][("USA", "M1")]
    assert owed.delete is not None
    w.now += withdraw.REUSE_S
    w.hub.withdrawals.check()  # (the housekeeping's: a delete none may be given is freed)
    assert owed.delete is None and w.hub.withdrawals.owed["JPN"][("USA", "M1")] is owed


def test_what_an_owners_delete_owes_is_owed_again_after_a_restart(
    world, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """JPN's client and the owner's other device were off line when USA deleted markers,
    and the hub restarted before they came back: the deletes they are owed are owed again,
    from the tombstones in the store (a stored delete that cannot be owed is skipped)."""
    w = world(deal(("JPN",)))
    for uid in ("M1", "M2", "M3"):
        w.send(uid)
    for party in ("JPN", "USA"):
        w.hub.detach(next(iter(w.hub.wires.by_party[party])))
    for uid in ("M1", "M2"):
        w.send(f"del-{uid}", "t-x-d-d", detail=f'<link uid="{uid}" relation="none"/>')
    w.store._db.execute(  # a damaged row where a tombstone would be: skipped, set aside
        "INSERT INTO items (party, uid, category, stale, body) VALUES (?,?,?,?,?)",
        ("USA", "M3", "marker", w.now, b"\xc1 not msgpack"),
    )
    route = w.hub.router.route

    def refusing(item: Item, now: float) -> dict[str, Disclosure]:
        if item.uid == "M2" and now == NOW:  # (M2's routes at its delete cannot be had)
            raise ValueError("no routes")
        return route(item, now)

    monkeypatch.setattr(type(w.hub.router), "route", lambda _, item, now: refusing(item, now))
    w.now += 10
    w.hub = Hub(w.hub.router.policy, w.store, defaults(), SECRET, clock=lambda: w.now)
    assert "stored delete" in caplog.text and "'M2'" in caplog.text
    assert list(w.hub.quarantine.items) == [6]
    assert connect(w, "JPN")[0] == ("t-x-d-d", "USA::withdrawn.M1", "USA::M1")
    assert connect(w, "USA")[:2] == [
        ("t-x-d-d", "withdrawn.M1", "M1"),
        ("t-x-d-d", "withdrawn.M2", "M2"),  # (its own party: nothing to route)
    ]
    assert connect(w, "KOR") == []
    w.now = NOW + 86_400  # the deleted versions' stale time: nothing owed any more
    again = Hub(w.hub.router.policy, w.store, defaults(), SECRET, clock=lambda: w.now)
    assert again.withdrawals.owed == {}


def test_a_stored_delete_whose_version_has_no_stale_time_is_not_owed_for_ever(
    world, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged disk: the deleted version's body decodes, its stale time NaN (no time a
    prune could pass). The hub starts, that delete is not owed (one line), the rest is."""
    import math

    import msgspec

    w = world(deal(("JPN",)))
    for uid in ("M1", "M2"):
        w.send(uid)
    w.hub.detach(next(iter(w.hub.wires.by_party["JPN"])))
    for uid in ("M1", "M2"):
        w.send(f"del-{uid}", "t-x-d-d", detail=f'<link uid="{uid}" relation="none"/>')
    seq, body = w.store._db.execute(
        "SELECT seq, body FROM items WHERE uid = 'M1' ORDER BY seq LIMIT 1"
    ).fetchone()
    item = msgspec.msgpack.decode(body, type=Item)
    damaged = msgspec.structs.replace(item.event, stale=math.nan)
    body = msgspec.msgpack.encode(msgspec.structs.replace(item, event=damaged))
    w.store._db.execute("UPDATE items SET body = ? WHERE seq = ?", (body, seq))
    w.now += 10
    w.hub = Hub(w.hub.router.policy, w.store, defaults(), SECRET, clock=lambda: w.now)
    assert "not owed: its stale time is nan" in caplog.text
    assert [key for key, _ in w.hub.withdrawals.owed["JPN"].items()] == [("USA", "M2")]
