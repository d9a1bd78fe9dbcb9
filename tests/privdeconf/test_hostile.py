"""A peer's bad bytes: a clear RemoteProtocolError (the adapter closes) or a Refuse that says
why; nothing of ours is harmed, and a peer's geometry outside the cells that met is measured
and never used."""

from __future__ import annotations

import msgspec
import pytest

from commonsky.errors import LocalProtocolError, RemoteProtocolError
from commonsky.privdeconf import Holding, PrivateRound, Terms
from commonsky.privdeconf.pieces import Piece
from commonsky.privdeconf.round import Accept, Answer, Exchange, Open, _decode
from tests.privdeconf.helpers import A_PARTIES, B_PARTIES, T0, TERMS, circle_volume

A = [circle_volume("A1", "a", (38.30, 34.6))]
B = [circle_volume("B1", "b", (38.40, 34.6))]


def _pair(
    terms_a: Terms = TERMS, terms_b: Terms = TERMS, a: list[Holding] = A
) -> tuple[PrivateRound, PrivateRound]:
    ini = PrivateRound(
        role="initiator",
        terms=terms_a,
        holdings=a,
        peer="hub-b",
        peer_parties=B_PARTIES,
        secret=b"a" * 32,
        now=T0,
    )
    res = PrivateRound(
        role="responder",
        terms=terms_b,
        holdings=B,
        peer="hub-a",
        peer_parties=A_PARTIES,
        secret=b"b" * 32,
        now=T0,
    )
    return ini, res


def _enc(msg: object) -> bytes:
    return msgspec.msgpack.encode(msg)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\x00garbage", "bad_privdeconf"),
        (msgspec.msgpack.encode({"type": "open", "round_id": 7}), "bad_privdeconf"),
        (msgspec.msgpack.encode([1, 2, 3]), "bad_privdeconf"),
        (b"\x00" * (256 * TERMS.max_cells + 64 * 2**20 + 1), "privdeconf_too_large"),
    ],
)
def test_bytes_that_are_no_round_message_are_refused_and_end_the_round(
    data: bytes, reason: str
) -> None:
    _, res = _pair()
    with pytest.raises(RemoteProtocolError) as err:
        res.receive(data)
    assert err.value.reason == reason
    assert res.state == "failed"
    with pytest.raises(LocalProtocolError):
        res.receive(data)  # the adapter must not feed a round that ended


def test_a_message_out_of_turn_is_refused() -> None:
    _, res = _pair()
    with pytest.raises(RemoteProtocolError) as err:
        res.receive(_enc(Exchange("r", b"", b"", b"")))
    assert err.value.reason == "privdeconf_out_of_order"


def _open_fields(ini: PrivateRound) -> Open:
    msg = _decode(ini.open())
    assert isinstance(msg, Open)
    return msg


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"version": 99}, "version 99"),
        ({"at_s": T0 + 3600}, "off our clock"),
        ({"size": 10**9}, "max_cells"),
        ({"size": 0}, "max_cells"),
        ({"grid": [5, 3600.0, 4000.0, 9260.0, 304.8, 1.0]}, "line_reach_m differs"),
        ({"grid": [7]}, "grid_level differs"),
    ],
)
def test_an_open_the_responder_will_not_take_is_refused_saying_why(change: dict, said: str) -> None:
    ini, res = _pair()
    bad = msgspec.structs.replace(_open_fields(ini), **change)
    (refusal,) = res.receive(_enc(bad))
    assert res.state == "refused" and said in (res.figures.refused or "")
    assert res.result is None  # nothing computed, nothing learnt
    ini.receive(refusal)
    assert ini.state == "refused" and said in (ini.figures.refused or "")


def test_terms_that_define_cells_differently_never_make_a_round() -> None:
    coarse = Terms(**{**msgspec.structs.asdict(TERMS), "grid_level": 4})
    ini, res = _pair(terms_b=coarse)
    (refusal,) = res.receive(ini.open())
    ini.receive(refusal)
    assert ini.state == res.state == "refused"
    assert "grid_level differs: ours 4, the peer's 5" in (res.figures.refused or "")


def test_a_request_larger_than_declared_is_refused() -> None:
    ini, res = _pair()
    (accept,) = res.receive(ini.open())
    msg = _decode(accept)
    assert isinstance(msg, Accept)
    lied = msgspec.structs.replace(msg, size=msg.size - 1)
    with pytest.raises(RemoteProtocolError) as err:
        ini.receive(_enc(lied))
    assert err.value.reason == "privdeconf_size"


def test_psi_bytes_the_library_refuses_are_a_remote_error() -> None:
    ini, res = _pair()
    (accept,) = res.receive(ini.open())
    (exchange,) = ini.receive(accept)
    msg = _decode(exchange)
    assert isinstance(msg, Exchange)
    with pytest.raises(RemoteProtocolError) as err:
        res.receive(_enc(msgspec.structs.replace(msg, setup=b"\xff\xfe not a setup")))
    assert err.value.reason in ("bad_privdeconf_psi", "privdeconf_size")


def _to_answer(a: list[Holding] = A) -> tuple[PrivateRound, Answer]:
    ini, res = _pair(a=a)
    (accept,) = res.receive(ini.open())
    (exchange,) = ini.receive(accept)
    (answer,) = res.receive(exchange)
    msg = _decode(answer)
    assert isinstance(msg, Answer) and msg.pieces
    return ini, msg


def _far_piece(**change: object) -> Piece:
    ring = [[10.0, 10.0], [10.1, 10.0], [10.1, 10.1], [10.0, 10.1], [10.0, 10.0]]
    fields = {
        "layer": "v",
        "role": "volume",
        "handle": "h",
        "party": "B1",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "floor_m": 0.0,
        "ceiling_m": 9000.0,
        "start_s": T0,
        "end_s": T0 + 3600,
        **change,
    }
    return msgspec.convert(fields, Piece)


def test_geometry_outside_the_cells_that_met_is_measured_and_not_used() -> None:
    # We also have a volume far from anything of the peer's; the peer (cheating, or broken)
    # sends a piece there, over ours, in cells that never met.
    far = circle_volume("A2", "far", (10.05, 10.05), radius_m=3000)
    ini, answer = _to_answer([*A, far])
    ini.receive(_enc(msgspec.structs.replace(answer, pieces=[*answer.pieces, _far_piece()])))
    assert ini.result is not None
    assert ini.result.figures.outside_m2 > 1e8  # ~11 km x 11 km, all of it outside
    own = {c.a.uid if c.a.party in A_PARTIES else c.b.uid for c in ini.result.conflicts}
    assert own == {"a"}  # the honest conflict stands; nothing from the piece outside


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"geometry": {"type": "Point", "coordinates": [0, 0]}}, "Polygon or MultiPolygon"),
        (
            {"geometry": {"type": "Polygon", "coordinates": [[[0, 95], [1, 0], [0, 1], [0, 95]]]}},
            "outside the earth",
        ),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}}, "4 or more"),
        (
            {"geometry": {"type": "Polygon", "coordinates": [[["a", 0], [1, 0], [0, 1], [0, 0]]]}},
            "malformed",
        ),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0.0, 0.0]] * 60_000]}}, "vertices"),
        ({"party": "RUS"}, "does not speak for"),
        ({"end_s": None}, "finite end_s"),
        ({"role": "site"}, "site piece in layer 'v'"),
        ({"layer": "l", "role": "line"}, "names no party"),
    ],
)
def test_a_piece_that_is_no_piece_is_a_remote_error(change: dict, said: str) -> None:
    ini, answer = _to_answer()
    bad = _far_piece(**change)
    with pytest.raises(RemoteProtocolError, match=said):
        ini.receive(_enc(msgspec.structs.replace(answer, pieces=[bad])))
    assert ini.state == "failed" and ini.result is None


def test_pieces_where_no_geometry_step_was_agreed_are_refused() -> None:
    no_geometry = Terms(**{**msgspec.structs.asdict(TERMS), "geometry": False})
    ini, res = _pair(terms_a=no_geometry)
    (accept,) = res.receive(ini.open())
    (exchange,) = ini.receive(accept)
    (answer,) = res.receive(exchange)
    msg = _decode(answer)
    assert isinstance(msg, Answer) and msg.pieces == []
    with pytest.raises(RemoteProtocolError, match="no geometry step"):
        ini.receive(_enc(msgspec.structs.replace(msg, pieces=[_far_piece()])))
