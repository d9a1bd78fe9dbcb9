"""Live items survive a failover (cluster/live_kv.py): the core keeps the tracks and devices'
positions it holds, as accepted, in the cores' own KV bucket `<name>_live`; a standby that
takes over after a kill -9 restores them before it writes the picture bucket.

- A client that connects after the takeover gets a still-connected device's last position
  without the device sending it again — in the form its agreements give it now (RUS full,
  JPN generalized: the very bytes an earlier JPN client got) — and a party no agreement
  lets see it (KOR) still gets nothing of it. (Before, the new core removed the dead core's
  live entries from the picture bucket and knew nothing of them: the late joiner waited for
  the device's next report.)
- A position whose agreement ended during the failover, or that went stale meanwhile, is
  not given; another one still entitled is.
- A live item deleted just before the kill stays deleted: its record goes before the
  delete's outputs leave (and before its stream message is acknowledged).
- Whatever the bucket holds — values another hub or a hand wrote, a record moved to
  another key, altered, or one naming no live item this hub could hold — a core starts:
  one line says how many were left out, the rest is restored, and they are deleted. (Its
  records are encrypted, bound to their key: edges may not read the bucket at all,
  test_nats_auth.py.)"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import psycopg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as Nats
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from commonsky.bench.cluster import Client, Cluster, track, until, until_async
from commonsky.bench.hubproc import hub_config
from commonsky.cluster.live_kv import LiveRecord, live_key, read_record, record_key, write_record
from commonsky.model import Category, CotEvent, Item, Point
from commonsky.times import format_time

SECRET = bytes(range(32))
KEY = record_key(SECRET)
EVENT = CotEvent("u1", "a-f-A", 1.0, 1.0, 2e9, "m-g", Point(30.0, 31.0))
RECORD = LiveRecord(Item("USA", "u", Category.TRACK, EVENT, 1.0, origin="e/c"), {"RUS": ["full"]})
NAME = live_key(("USA", "u1"))


def device(uid: str, now: float, lat: float = 30.0) -> bytes:
    """A TAK device's report of itself (its callsign, endpoint and TAK version)."""
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 600)}" how="m-g">'
        f'<point lat="{lat}" lon="31" hae="100" ce="10" le="10"/><detail>'
        f'<contact callsign="{uid}" endpoint="*:-1:stcp"/>'
        '<takv device="test" platform="ATAK-CIV" os="30" version="4.10"/></detail></event>'
    ).encode()


def delete(uid: str, now: float) -> bytes:
    return (
        f'<event version="2.0" uid="del-{uid}" type="t-x-d-d" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 60)}" how="h-g-i-g-o">'
        f'<point lat="0" lon="0" hae="0" ce="9999999" le="9999999"/><detail>'
        f'<link uid="{uid}" relation="none" type="none"/><__forcedelete/></detail></event>'
    ).encode()


def tracks(client: Client) -> list[bytes]:
    """The tracks and positions among what `client` received."""
    return [event for event in client.events if b' type="a-' in event]


async def records(live: KeyValue) -> set[str]:
    with contextlib.suppress(NoKeysError):
        return set(await live.keys())
    return set()


async def holds(live: KeyValue, *uids: tuple[str, str]) -> None:
    """Wait until the live bucket holds a record of each (party, uid) (every LIVE_EVERY_S)."""
    names = {live_key(key) for key in uids}

    async def written() -> bool:
        return names <= await records(live)

    await until_async(written, f"the live bucket holds {uids}")


# ---- records: what a value must be to be believed ----------------------------------------


SHAPE = b"\x92\xa3USA\x01"  # (msgpack ["USA", 1]: not [Item, seen])


def sealed(name: str, body: bytes, master: bytes = KEY) -> bytes:
    """`body` sealed as `write_record` seals a record's (another shape, authenticated)."""
    salt = bytes(16)
    aead = AESGCM(hmac.new(master, salt, hashlib.sha256).digest())
    return b"CSL1" + salt + aead.encrypt(bytes(12), body, name.encode())


GARBAGE: dict[str, Callable[[bytes], tuple[str, bytes]]] = {
    "not msgpack": lambda good: (NAME, b"\xc1\xc1\xc1"),
    "JSON": lambda good: (NAME, b'{"item": {"party": "USA"}}'),
    "empty": lambda good: (NAME, b""),
    "truncated": lambda good: (NAME, good[:-3]),
    "altered": lambda good: (NAME, good[:-1] + bytes([good[-1] ^ 1])),
    "moved to another key": lambda good: (live_key(("USA", "u2")), good),
    "another hub's": lambda good: (NAME, write_record(NAME, RECORD, record_key(b"x" * 32))),
    "another shape, authenticated": lambda good: (NAME, sealed(NAME, SHAPE)),
}


@pytest.mark.parametrize("make", GARBAGE.values(), ids=list(GARBAGE))
def test_a_value_no_core_of_this_hub_wrote_there_is_a_value_error(
    make: Callable[[bytes], tuple[str, bytes]],
) -> None:
    name, value = make(write_record(NAME, RECORD, KEY))
    with pytest.raises(ValueError, match="not a live record"):
        read_record(name, value, KEY)


def test_a_record_reads_back_as_written_and_its_bytes_disclose_nothing() -> None:
    """Undisclosed as a record is, its bytes say nothing of it without the hub's secret
    (should they leave the bucket another way than a core's read: the server's disk, a
    stream copied from it), and two writes of one record differ (each its own key)."""
    value = write_record(NAME, RECORD, KEY)
    assert read_record(NAME, value, KEY) == RECORD
    for clear in (b"USA", b"u1", b"a-f-A", b"RUS", b"full", b"e/c"):
        assert clear not in value[4:], clear
    assert write_record(NAME, RECORD, KEY) != value


@given(name=st.text(max_size=60), value=st.binary(max_size=300))
def test_any_value_reads_as_a_record_or_a_value_error(name: str, value: bytes) -> None:
    """Whatever the bucket holds under whatever key: a ValueError, never another error (and
    a record only where the authentication holds: not by chance)."""
    with pytest.raises(ValueError, match="live record"):
        read_record(name, value, KEY)


# ---- a cluster ------------------------------------------------------------------------------


async def test_a_late_joiner_after_a_failover_gets_a_connected_device_s_position(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    first = await cluster.core()
    standby = await cluster.core(wait=False)
    _, a = await cluster.edge()
    _, b = await cluster.edge()
    eagle = await Client("USA", a["USA"]).connect()  # (stays connected, silent after one report)
    hawk = await Client("KOR", a["KOR"]).connect()
    rus = await Client("RUS", b["RUS"]).connect()
    jpn = await Client("JPN", b["JPN"]).connect()
    kor = await Client("KOR", b["KOR"]).connect()
    now = time.time()
    await eagle.send(device("USA-EAGLE", now))
    await hawk.send(device("KOR-HAWK", now))
    await until(lambda: rus.got("USA-EAGLE") >= 1, "RUS sees USA's device (us-ru: full)")
    await until(lambda: len(tracks(jpn)) >= 1, "JPN sees it generalized (us-jp)")
    await until(lambda: kor.got("KOR-HAWK") >= 1, "KOR sees its own device")
    live = await nc.jetstream().key_value(f"{cluster_name}_live")
    await holds(live, ("USA", "USA-EAGLE"), ("KOR", "KOR-HAWK"))
    first.kill()
    await standby.wait_log(r"cluster core \S+ serving")
    late_rus = await Client("RUS", a["RUS"]).connect()
    late_jpn = await Client("JPN", a["JPN"]).connect()
    late_kor = await Client("KOR", b["KOR"]).connect()
    await until(lambda: late_rus.got("USA-EAGLE") >= 1,
                "a RUS client joining after the takeover gets USA's device")  # fmt: skip
    await until(lambda: late_kor.got("KOR-HAWK") >= 1, "and KOR its own")
    await until(lambda: len(tracks(late_jpn)) >= 1, "and JPN its generalized form")
    # A barrier behind the late KOR client's replay: its own next track, through the core,
    # to the other KOR client on its edge.
    await late_kor.send(track("KOR-BARRIER", time.time()))
    await until(lambda: kor.got("KOR-BARRIER") >= 1, "KOR's barrier")
    assert late_kor.got("USA-EAGLE") == kor.got("USA-EAGLE") == 0  # (no agreement us → kr)
    assert tracks(late_jpn) == tracks(jpn)  # (the same generalized bytes: one item, one secret)
    assert len(tracks(jpn)) == 1 and b"USA-EAGLE" not in tracks(jpn)[0]
    assert late_rus.got("USA-EAGLE") == rus.got("USA-EAGLE") == 1  # (not sent again)
    assert "2 live items restored (0 stale" in standby.text(), standby.text()[-3000:]
    for client in (eagle, hawk, rus, jpn, kor, late_rus, late_jpn, late_kor):
        await client.close()


def with_kr_tracks(us_kr_until: float | None) -> Callable[[Path, int, dict[str, int], str], str]:
    """The bench's parties and agreements, and tracks from USA and JPN to KOR (USA's until
    `us_kr_until`)."""

    def base(folder: Path, http: int, ports: dict[str, int], extra: str) -> str:
        until_line = f'valid_until = "{format_time(us_kr_until)}"\n' if us_kr_until else ""
        return hub_config(folder, http, ports, extra) + "".join(
            f'\n[[agreement]]\nname = "{name}"\nfrom = "{src}"\nto = ["KOR"]\n'
            f'categories = ["track"]\ndisclosure = "full"\n{more}'
            for name, src, more in (
                ("us-kr-tracks", "USA", until_line),
                ("jp-kr-tracks", "JPN", ""),
            )
        )

    return base


async def test_a_position_whose_agreement_ended_or_went_stale_in_the_failover_is_not_given(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    cluster.base = with_kr_tracks(None)
    first = await cluster.core()
    _, a = await cluster.edge()
    usa = await Client("USA", a["USA"]).connect()
    jpn = await Client("JPN", a["JPN"]).connect()
    kor = await Client("KOR", a["KOR"]).connect()
    rus = await Client("RUS", a["RUS"]).connect()
    now = time.time()
    await usa.send(track("US-ENDED", now))  # to KOR (us-kr-tracks, ends in the failover), RUS
    await jpn.send(track("JP-STAYS", now))  # to KOR (jp-kr-tracks) and USA
    await usa.send(track("US-SHORT", now, stale_s=12))  # to RUS; stale before the takeover
    await until(lambda: kor.got("US-ENDED") + kor.got("JP-STAYS") >= 2, "KOR sees both")
    await until(lambda: rus.got("US-SHORT") >= 1, "RUS sees the short one")
    live = await nc.jetstream().key_value(f"{cluster_name}_live")
    await holds(live, ("USA", "US-ENDED"), ("JPN", "JP-STAYS"), ("USA", "US-SHORT"))
    first.kill()
    # The agreement ended while no core served (the next core's configuration says so), and
    # the short track's stale time passed.
    cluster.base = with_kr_tracks(time.time() + 0.5)
    await until(lambda: time.time() > now + 12.5, "the short track is stale")
    second = await cluster.core()
    late_kor = await Client("KOR", a["KOR"]).connect()
    late_rus = await Client("RUS", a["RUS"]).connect()
    await until(lambda: late_kor.got("JP-STAYS") >= 1, "KOR still gets JPN's track")
    await until(lambda: late_rus.got("US-ENDED") >= 1, "RUS still gets USA's (us-ru)")
    await late_kor.send(track("KOR-BARRIER", time.time()))
    await late_rus.send(track("RUS-BARRIER", time.time()))
    await until(lambda: kor.got("KOR-BARRIER") >= 1, "KOR's barrier")
    await until(lambda: rus.got("RUS-BARRIER") >= 1, "RUS's barrier")
    assert late_kor.got("US-ENDED") == 0  # (its agreement ended)
    assert late_rus.got("US-SHORT") == 0  # (stale)
    assert "2 live items restored (1 stale" in second.text(), second.text()[-3000:]
    assert live_key(("USA", "US-SHORT")) not in await records(live)  # (deleted, not restored)
    for client in (usa, jpn, kor, rus, late_kor, late_rus):
        await client.close()


async def test_a_live_item_deleted_just_before_the_kill_stays_deleted(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    first = await cluster.core()
    standby = await cluster.core(wait=False)
    _, a = await cluster.edge()
    usa = await Client("USA", a["USA"]).connect()
    rus = await Client("RUS", a["RUS"]).connect()
    now = time.time()
    await usa.send(track("US-GONE", now))
    await usa.send(track("US-KEPT", now))
    live = await nc.jetstream().key_value(f"{cluster_name}_live")
    await holds(live, ("USA", "US-GONE"), ("USA", "US-KEPT"))
    await usa.send(delete("US-GONE", time.time()))
    await until(lambda: rus.got('type="t-x-d-d"') >= 1, "RUS is told of the delete")
    first.kill()  # (at once: no live round of LIVE_EVERY_S in between)
    await standby.wait_log(r"cluster core \S+ serving")
    late = await Client("RUS", a["RUS"]).connect()
    await until(lambda: late.got("US-KEPT") >= 1, "the late joiner gets the kept track")
    await late.send(track("RUS-BARRIER", time.time()))
    await until(lambda: rus.got("RUS-BARRIER") >= 1, "RUS's barrier")
    assert late.got("US-GONE") == 0
    assert "1 live items restored" in standby.text(), standby.text()[-3000:]
    for client in (usa, rus, late):
        await client.close()


def hub_secret(store_url: str) -> bytes:
    with psycopg.connect(store_url) as db:
        row = db.execute(
            "SELECT value FROM commonsky_hub_state WHERE name = 'hub-secret'"
        ).fetchone()
    assert row is not None
    return bytes(row[0])


async def test_whatever_the_live_bucket_holds_a_core_starts_and_restores_the_rest(
    cluster: Cluster, nc: Nats, cluster_name: str, postgres_url: str
) -> None:
    first = await cluster.core()
    standby = await cluster.core(wait=False)
    _, a = await cluster.edge()
    usa = await Client("USA", a["USA"]).connect()
    rus = await Client("RUS", a["RUS"]).connect()
    now = time.time()
    await usa.send(track("US-GOOD", now))
    live = await nc.jetstream().key_value(f"{cluster_name}_live")
    await holds(live, ("USA", "US-GOOD"))
    good_name = live_key(("USA", "US-GOOD"))
    good = (await live.get(good_name)).value or b""
    master = record_key(hub_secret(postgres_url))
    genuine = read_record(good_name, good, master)
    item = genuine.item
    # Values no core of this hub wrote there...
    planted = {f"USA.garbage{n}": make(good)[1] for n, make in enumerate(GARBAGE.values())}
    planted[live_key(("USA", "US-MOVED"))] = good  # (authenticated for another key)

    # ... and authenticated records of nothing this hub could hold as a live item.
    def signed(uid: str, under: str = "", **changes: object) -> tuple[str, bytes]:
        event = msgspec.structs.replace(item.event, uid=uid, **changes)
        party = "ZZZ" if uid == "ZZZ-TRACK" else item.party
        record = LiveRecord(msgspec.structs.replace(item, party=party, event=event), {})
        name = live_key((party, under or uid))
        return name, write_record(name, record, master)

    forged = [
        signed("FORGED-MARKER", type="b-m-p-s-m"),  # (a marker: durable, never a record)
        signed("ZZZ-TRACK"),  # (a party this hub does not have)
        signed("FORGED-LAT", point=Point(200.0, 31.0)),  # (past the acceptance rules)
        signed("FORGED-DETAIL", detail="<contact callsign='x'"),  # (a detail that does not parse)
        signed("FORGED-KEY", under="US-ELSEWHERE"),  # (under another item's key)
    ]
    planted.update(forged)
    planted.update([signed("US-STALE", stale=now - 1)])
    for name, value in planted.items():
        await live.put(name, value)
    first.kill()
    await standby.wait_log(r"cluster core \S+ serving")
    late = await Client("RUS", a["RUS"]).connect()
    await until(lambda: late.got("US-GOOD") >= 1, "the genuine record is restored")
    await late.send(track("RUS-BARRIER", time.time()))
    await until(lambda: rus.got("RUS-BARRIER") >= 1, "RUS's barrier")
    assert late.got("US-GOOD") == 1
    for uid in ("FORGED", "ZZZ", "US-MOVED", "US-STALE"):
        assert late.got(uid) == 0, (uid, late.uids())
    refused = len(GARBAGE) + 1 + len(forged)
    text = standby.text()
    lines = [line for line in text.splitlines() if "records left out" in line]
    assert len(lines) == 1 and f"live bucket: {refused} records left out" in lines[0], lines
    assert f"1 live items restored (1 stale, 0 superseded by a stored item, {refused} left out)" \
        in text, text[-3000:]  # fmt: skip
    assert "Traceback" not in text
    assert await records(live) == {good_name}  # (the rest deleted)
    for client in (usa, rus, late):
        await client.close()


def zone(uid: str, now: float) -> bytes:
    """An operating area (a TAK drawing with its extent: lon 38–39, lat 34–35, 0–10,000 m),
    valid two hours."""
    ring = [(38.0, 34.0), (39.0, 34.0), (39.0, 35.0), (38.0, 35.0), (38.0, 34.0)]
    links = "".join(f'<link point="{lat},{lon}"/>' for lon, lat in ring)
    return (
        f'<event version="2.0" uid="{uid}" type="u-d-f" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 7200)}" how="h-e">'
        '<point lat="34" lon="38" hae="0" ce="10" le="10"/><detail>'
        f'{links}<csky_airspace kind="operating-area" floor_m="0" ceiling_m="10000" '
        f'start="{now}" end="{now + 7200}"/></detail></event>'
    ).encode()


def fighter(uid: str, now: float, lon: float, course: float) -> bytes:
    """A fighter at 34.5° N, 5,000 m, 250 m/s on `course`."""
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-A-M-F" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 600)}" how="m-g">'
        f'<point lat="34.5" lon="{lon}" hae="5000" ce="10" le="10"/><detail>'
        f'<contact callsign="{uid}"/><track speed="250" course="{course}"/></detail></event>'
    ).encode()


def notices(client: Client) -> list[bytes]:
    return [event for event in client.events if b'type="t-x-csky-conflict"' in event]


async def test_a_restored_track_is_in_the_deconfliction_engine_at_once(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    """A track restored at a takeover is known to the deconfliction desk (desks/
    deconfliction.py `restored`): another party's new track head-on with it raises a
    conflict at the next screening, without the restored track reporting again; and the
    conflict the dead core told between it and a zone is neither cleared nor told again.
    (Before, the new core's rebuild cleared that conflict, and the head-on one went unfound
    until the restored track reported again.) tests/cluster/test_desk_restore.py has the
    rest, on one in-memory hub."""
    first = await cluster.core()
    standby = await cluster.core(wait=False)
    _, a = await cluster.edge()
    usa = await Client("USA", a["USA"]).connect()
    rus = await Client("RUS", a["RUS"]).connect()
    now = time.time()
    await usa.send(zone("US-ZONE", now))  # (to RUS: us-ru, airspace)
    await until(lambda: rus.got("US-ZONE") >= 1, "RUS sees USA's zone")
    # RUS's fighter 20 km west of it, heading in (RUS's tracks reach USA: ru-us): a conflict
    # whose figures are its report's, whenever it is screened.
    await rus.send(fighter("RU-SU35", now, 37.8, 90.0))
    await until(lambda: len(notices(rus)) >= 1 and len(notices(usa)) >= 1,
                "both told of the fighter heading into the zone")  # fmt: skip
    live = await nc.jetstream().key_value(f"{cluster_name}_live")
    await holds(live, ("RUS", "RU-SU35"))
    first.kill()
    await standby.wait_log(r"cluster core \S+ serving")
    await usa.send(fighter("US-F22", time.time(), 38.6, 270.0))  # head-on with RU-SU35
    await until(lambda: rus.got("track-track") >= 1,
                "RUS told of USA's fighter head-on with its restored one")  # fmt: skip
    assert "1 live items restored" in standby.text(), standby.text()[-3000:]
    told = notices(rus)
    assert len(told) == 2, told  # (the zone's, once, before the kill; the head-on one)
    assert b"track-volume" in told[0] and b"track-track" in told[1]
    assert not any(b'state="cleared"' in n for n in told + notices(usa))
    for client in (usa, rus):
        await client.close()
