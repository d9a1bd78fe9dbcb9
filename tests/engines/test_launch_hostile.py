"""A bad launch report, whatever is wrong with it, is refused with the reason and leaves
everything already made as it was: stored items, every party's fused events, the warnings
in force and the CAP feed."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from commonsky.desks.launch_core import fused_json
from commonsky.errors import RemoteProtocolError
from commonsky.model import CotEvent
from commonsky.protocol.cot import quote_text
from tests.engines.harness import World, make_world
from tests.engines.test_launch_desk import BILATERAL, GSOMIA, link, reports, send_report

HOSTILE_VALUES = [
    None,
    float("nan"),
    float("inf"),
    -1.0,
    1e300,
    "",
    "2999-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "not a time",
    [],
    {},
    True,
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (objects' keys, lists' indexes)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _event(raw: Any, like: CotEvent) -> CotEvent:
    body = quote_text(msgspec.json.encode(raw).decode())
    return msgspec.structs.replace(like, detail=f"<csky_launch>{body}</csky_launch>")


def _state(w: World) -> Any:
    desk = w.services.launch
    return (
        [(i.seq, i.uid, i.event.detail) for i in w.hub.store.since(0)],
        {p: {k: fused_json(e) for k, e in v.items()} for p, v in desk.views.items()},
        [a.identifier for a in desk.feed()],
        sorted(
            (a.identifier, a.msg_type)
            for engine in desk.core.engines.values()
            for a in engine.active()
        ),
    )


class Worlds:
    """One world with a fused event and warnings in force, shared by the examples: a refused
    report must leave it exactly as it was, so sharing it is part of the test. An accepted
    report changes it, so the next example gets a new one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[World] = []
        self.current: tuple[World, Any, CotEvent] | None = None

    def get(self) -> tuple[World, Any, CotEvent]:
        if self.current is None:
            w = make_world(
                self.root / str(len(self.made)),
                BILATERAL + GSOMIA + [link("JPN", "USA", ("alert",))],
            )
            self.made.append(w)
            kor, jpn = reports()
            send_report(w, kor)
            send_report(w, jpn)
            assert w.services.launch.feed(), "the setup must have warnings in force"
            for party in ("USA", "JPN", "KOR", "RUS"):
                w.take(party)
            raw = msgspec.to_builtins(jpn)
            self.current = (w, raw, _event(raw, w.hub.store.active(0)[0].event))
        return self.current

    def close(self) -> None:
        for w in self.made:
            w.services.close()
            w.hub.store.close()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worlds]:
    made = Worlds(tmp_path_factory.mktemp("hostile"))
    yield made
    made.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_refused_report_changes_nothing(worlds: Worlds, data: st.DataObject) -> None:
    w, raw, template = worlds.get()
    bad = copy.deepcopy(raw)
    bad["report_id"] = "hostile"  # a new report, not an update of an accepted one
    path = data.draw(st.sampled_from(_paths(bad)), label="path")
    value = data.draw(st.sampled_from(HOSTILE_VALUES), label="value")
    target = bad
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans(), label="delete") and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = value
    before = _state(w)
    reason = ""
    try:
        w.send("JPN", _event(bad, template))
    except RemoteProtocolError as exc:
        reason = str(exc)
    event("refused" if reason else "accepted")
    if not reason:
        # The change left a valid report (a field that may be absent, a value in range):
        # forget the world so the next example starts from one without it.
        worlds.current = None
        return
    assert reason.strip() and "\n" not in reason  # one line, with the reason
    assert _state(w) == before
    for party in ("USA", "JPN", "KOR", "RUS"):
        assert w.take(party) == [], party  # nothing relayed or made of it


def test_known_bad_reports_are_all_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path, BILATERAL + GSOMIA)
    kor, jpn = reports()
    send_report(w, kor)
    before = _state(w)
    template = w.hub.store.active(0)[0].event
    raw = msgspec.to_builtins(jpn)
    cases = {
        "points": dict(raw, points=[]),
        "lat": dict(raw, points=[dict(raw["points"][0], lat=95.0), *raw["points"][1:]]),
        "report_time": dict(raw, report_time="2999-01-01T00:00:00Z"),
        "sigma_h_m": dict(raw, points=[dict(raw["points"][0], sigma_h_m=-1), *raw["points"][1:]]),
        "speed": dict(
            raw, points=[raw["points"][0], dict(raw["points"][1], lon=raw["points"][1]["lon"] + 30)]
        ),
    }
    for name, bad in cases.items():
        try:
            w.send("JPN", _event(bad, template))
        except RemoteProtocolError:
            continue
        raise AssertionError(f"{name}: accepted")
    assert _state(w) == before
