"""Mutated inputs for `commonsky bench fuzz`: the mutations made from the seeds
(fuzz_seeds.py: real TAK traffic and our own message kinds; for the API, hotline send and
acknowledgement, GeoJSON, KML, launch reports, CoT bodies and reads with odd parameters).

Mutations are structure-aware — an attribute, field or JSON value set to one at or past an
edge (times no format carries, numbers past every range, text XML cannot carry, uids naming
another party's namespace), elements added, removed, repeated or nested deep — and
byte-level (bit flips, insertions, deletions, truncation, splices, repeats, framing). Every
choice comes from one seeded `random.Random`, so a run can be replayed.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from takproto.proto import TakMessage

from commonsky.bench.fuzz_seeds import (
    PARSER,
    PARTIES,
    ApiSeeds,
    corpus_seeds,
    launch_report,
    own_seeds,
    stamp,
)
from commonsky.protocol.cot import parse_event
from commonsky.protocol.stream import encode_varint
from commonsky.protocol.takv1 import event_to_proto

# (The seeds are fuzz_seeds.py's; still importable from here.)
__all__ = [
    "PARTIES",
    "ApiSeeds",
    "Mutator",
    "corpus_seeds",
    "launch_report",
    "own_seeds",
]


# Values at and past every edge. (Lists written one per line by the formatter would make this
# module twice as long: they are split from text, `|` between values.)
TIMES = (  # noqa: SIM905
    "9999-12-31T23:59:59-23:59|9999-12-31T23:59:59.999Z|0001-01-01T00:00:00Z|"
    "1969-12-31T23:59:59Z|1970-01-01T00:00:00Z|2030-02-30T00:00:00Z|2025-13-01T00:00:00Z|"
    "+275760-09-13T00:00:00Z|1e308||T|2026-01-01T00:00:00+14:00"
).split("|")
NUMBERS = [
    *"0|-0|NaN|nan|inf|-Infinity|1e308|-1e308|1e300|-1e300|1e301|9999999|9999999.0|-12001|"  # noqa: SIM905
    "100000001|1e-320|0x10|1_000| 1 ||-91|181|360.0|-360.1|20000.1|3.4028235e38|-1|5".split("|"),
    "9" * 400,
]
STRINGS = [
    *" |a b|\t|RUS::x|USA::|::|HUB|HUB::x|é|\u2028|\U0001f600|<|&amp;|'\"|%s%n|a\nb".split("|"),  # noqa: SIM905
    "",
    "../../etc/passwd",
    "x" * 300,
    "x" * 5000,
]
# What XML cannot carry, for JSON (which can) and for protobuf strings.
IMPOSSIBLE = ["\x00", "a\x01b", "\x0b", "\ufffe", "\uffff", "\x1f"]
# Raw bytes no well-formed UTF-8 XML holds, spliced into serialised XML.
BAD_BYTES = (
    b"\x00|\x01|\x0b|\xef\xbf\xbe|&#0;|&#1;|&#xFFFE;|\xed\xa0\x80|\xff|\xc3|]]>|<!DOCTYPE x>|&x;"
).split(b"|")
TYPES = (  # noqa: SIM905
    "a-f-A-M-F|a-h-A-W-M-S-B|a-h-A-M-F-Q|a-f-G|b-t-f|b-t-f-r|b-t-f-d|u-d-f|u-d-r|u-d-c-c|u-d-p|"
    "b-m-r|b-m-p-s-p-i|b-l-r|b-l-f|b-a-o-csky|t-x-csky-conflict|t-x-d-d|t-x-c-t|t-x-takp-q|"
    "b-i-x-i|b-r-f-h-c|"
).split("|")
# Few uids: the picture, and the conflicts between parties' items, stay bounded over a run.
UIDS = [f"fz-{i}" for i in range(6)] + ["RUS::fz-0", "USA::fz-1", "HUB::x", "GeoChat.fz"]
SNIPPETS = [
    '<track speed="{n}" course="{n}"/>',
    '<link point="{n},{n}"/>',
    '<link point="30.5,30.5,{n}"/>',
    '<csky_airspace item="volume" floor_m="{n}" ceiling_m="{n}" start="{n}" end="{n}"/>',
    '<csky_airspace item="site" radius_m="{n}"/>',
    '<csky_airspace item="line" left_party="USA" right_party="{p}"/>',
    '<marti><dest party="{p}"/></marti>',
    '<marti><dest callsign="{s}"/></marti>',
    '<__chat chatroom="hotline" senderCallsign="{s}" messageId="{s}"/>',
    "<remarks>{s}</remarks>",
    '<contact callsign="{s}" endpoint="{s}"/>',
    '<shape><ellipse major="{n}" minor="{n}" angle="{n}"/></shape>',
    '<link uid="{p}::fz-1" relation="p-p"/>',
    '<__chatreceipt messageId="{p}::fz-2"/>',
    '<status battery="{n}"/>',
    "<csky_launch>{{}}</csky_launch>",
    '<precisionlocation geopointsrc="{s}" altsrc="{s}"/>',
]


@dataclass
class Mutator:
    rng: random.Random
    xml_seeds: list[bytes]
    now: float = field(default_factory=time.time)  # the times it writes are about this one
    trees: list[etree._Element] = field(default_factory=list)
    protos: list[TakMessage] = field(default_factory=list)

    def __post_init__(self) -> None:
        for seed in self.xml_seeds:
            try:
                self.trees.append(etree.fromstring(seed, PARSER))
            except etree.XMLSyntaxError:
                continue
            try:
                message = TakMessage()
                message.ParseFromString(event_to_proto(parse_event(seed)))
                self.protos.append(message)
            except Exception:
                continue

    # ---- values ------------------------------------------------------------------------

    def number(self) -> str:
        return (
            self.rng.choice(NUMBERS)
            if self.rng.random() < 0.7
            else repr(self.rng.uniform(-200, 200))
        )

    def text(self) -> str:
        return self.rng.choice(STRINGS)

    def value_for(self, name: str) -> str:
        if name in ("time", "start", "stale"):
            return (
                self.rng.choice(TIMES)
                if self.rng.random() < 0.6
                else stamp(self.now + self.rng.uniform(-1e5, 1e5))
            )
        if name in (
            "lat",
            "lon",
            "hae",
            "ce",
            "le",
            "speed",
            "course",
            "major",
            "minor",
            "floor_m",
            "ceiling_m",
            "radius_m",
            "battery",
            "end",
        ):
            return self.number()
        if name == "uid":
            return self.rng.choice(UIDS + STRINGS)
        if name == "type":
            return self.rng.choice(TYPES)
        if name == "party":
            return self.rng.choice([*PARTIES, "HUB", "NOBODY", ""])
        return self.text()

    def snippet(self) -> str:
        return (
            self.rng.choice(SNIPPETS)
            .format(n=self.number(), p=self.rng.choice([*PARTIES, "HUB", "X"]), s=self.text())
            .replace("&", "&amp;")
            .replace("<<", "&lt;<")
        )

    # ---- CoT XML -----------------------------------------------------------------------

    def xml(self) -> bytes:
        """One mutated CoT event: structure first, then (sometimes) bytes."""
        rng = self.rng
        root = copy.deepcopy(rng.choice(self.trees))
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            self._mutate_tree(root)
        data = etree.tostring(root)
        if rng.random() < 0.25:
            data = self.bytes_(data)
        return data

    def _mutate_tree(self, root: etree._Element) -> None:
        rng = self.rng
        elements = list(root.iter())
        element = rng.choice(elements)
        op = rng.randrange(10)
        try:
            if op <= 2:
                names = [str(n) for n in element.attrib] or ["uid"]
                name = rng.choice([*names, "time", "stale", "uid", "type", "hae", "speed"])
                element.set(name, self.value_for(name))
            elif op == 3 and element.attrib:
                del element.attrib[rng.choice(list(element.attrib))]
            elif op in (4, 5):
                detail = root.find("detail")
                if detail is None:
                    detail = etree.SubElement(root, "detail")
                snippet = etree.fromstring(f"<x>{self.snippet()}</x>", PARSER)
                for child in snippet:
                    detail.insert(rng.randrange(len(detail) + 1), child)
            elif op == 6 and element is not root and element.getparent() is not None:
                element.getparent().remove(element)  # type: ignore[union-attr]
            elif op == 7 and element is not root:
                parent = element.getparent()
                for _ in range(rng.choice((1, 1, 2, 10, 100))):  # (thousands: `bytes_`)
                    if parent is not None:
                        parent.append(copy.deepcopy(element))
            elif op == 8:
                inner = element
                for _ in range(rng.choice((5, 31, 40, 200))):
                    inner = etree.SubElement(inner, "n")
            else:
                element.text = self.text()
        except (ValueError, TypeError, etree.XMLSyntaxError):
            pass  # a value lxml will not hold: the byte mutations cover it

    # ---- bytes -------------------------------------------------------------------------

    def bytes_(self, data: bytes) -> bytes:
        rng = self.rng
        out = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 4))):
            op = rng.randrange(9)
            at = rng.randrange(len(out) + 1)
            if op == 0 and out:
                out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                out[at:at] = rng.choice(BAD_BYTES)
            elif op == 2:
                del out[at : at + rng.choice((1, 4, 64))]
            elif op == 3:
                out = out[:at]
            elif op == 4:
                other = rng.choice(self.xml_seeds)
                cut = rng.randrange(len(other) + 1)
                out = out[:at] + other[cut:]
            elif op == 5:
                chunk = out[at : at + rng.choice((8, 64, 512))]
                out[at:at] = chunk * rng.choice((2, 50, 500))
            elif op == 6:
                out[at:at] = b"</event>"
            elif op == 7:
                out[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 8, 64))))
            else:
                out[at:at] = b"9" * rng.choice((20, 400, 5000))
        return bytes(out)

    # ---- TAK protobuf ------------------------------------------------------------------

    def proto(self) -> bytes:
        """One framed TAK Protocol v1 message; its fields or bytes mutated."""
        rng = self.rng
        message = TakMessage()
        message.CopyFrom(rng.choice(self.protos))
        cot = message.cotEvent
        for _ in range(rng.choice((0, 1, 2, 3))):
            op = rng.randrange(7)
            try:
                if op == 0:
                    name = rng.choice(("sendTime", "startTime", "staleTime"))
                    now_ms = int(self.now * 1000)
                    setattr(
                        cot,
                        name,
                        rng.choice(
                            (
                                0,
                                1,
                                now_ms,
                                now_ms + 60_000,
                                2**63 - 1,
                                2**64 - 1,
                                253402300800000,
                                253402300799999,
                            )
                        ),
                    )
                elif op == 1:
                    name = rng.choice(("lat", "lon", "hae", "ce", "le"))
                    setattr(
                        cot,
                        name,
                        rng.choice(
                            (
                                float("nan"),
                                float("inf"),
                                -float("inf"),
                                1e308,
                                -1e300,
                                91.0,
                                -181.0,
                                9999999.0,
                                -0.0,
                                1e-320,
                            )
                        ),
                    )
                elif op == 2:
                    name = rng.choice(("uid", "type", "how", "access", "qos", "opex"))
                    setattr(cot, name, rng.choice(UIDS + STRINGS + IMPOSSIBLE + TYPES))
                elif op == 3:
                    cot.detail.xmlDetail = rng.choice(
                        [
                            self.snippet(),
                            "<a>" * 50,
                            "<!DOCTYPE x>",
                            "<x>&e;</x>",
                            "<x",
                            "x" * (70000 if rng.random() < 0.05 else 5000),  # (>64 KB: fatal)
                            "",
                        ]
                    )
                elif op == 4:
                    cot.detail.contact.callsign = rng.choice(STRINGS + IMPOSSIBLE)
                elif op == 5:
                    cot.detail.track.speed = rng.choice((1e308, float("nan"), -5.0, 300.0))
                    cot.detail.track.course = rng.choice((1e10, float("inf"), 90.0))
                else:
                    cot.detail.status.battery = rng.choice((0, 2**32 - 1, 100))
            except (ValueError, TypeError):
                pass
        payload = bytes(message.SerializeToString())
        if rng.random() < 0.15:
            payload = self.bytes_(payload)
        frame = b"\xbf" + encode_varint(len(payload)) + payload
        if rng.random() < 0.001:  # framing itself: fatal for the connection, as it must be
            frame = rng.choice((b"\x00" + frame[1:], b"\xbf\xff\xff\xff\xff\x0f" + payload))
        return frame

    # ---- JSON (the API) ----------------------------------------------------------------

    def json_value(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                rng.choice(IMPOSSIBLE),
                rng.choice(STRINGS),
                1e308,
                -1e300,
                10**30,
                -1,
                0,
                None,
                True,
                [],
                {},
                [1] * rng.choice((3, 5000)),
                "\ud800",
                float("nan"),
                rng.choice(TIMES),
                {"a": {"b": {"c": []}}},
                rng.choice(PARTIES),
            ]
        )

    def json_doc(self, doc: Any) -> bytes:
        """A JSON document with values, keys or depth mutated, then (sometimes) its bytes."""
        rng = self.rng
        doc = copy.deepcopy(doc)
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            doc = self._mutate_json(doc)
        try:
            data = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        except (ValueError, TypeError):
            data = b"{}"
        if rng.random() < 0.1:
            data = rng.choice((b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000))
        elif rng.random() < 0.2:
            data = self.bytes_(data)
        return data

    def _mutate_json(self, doc: Any) -> Any:
        rng = self.rng
        paths: list[tuple[Any, Any]] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key in list(node):
                    paths.append((node, key))
                    walk(node[key])
            elif isinstance(node, list):
                for index in range(min(len(node), 50)):
                    paths.append((node, index))
                    walk(node[index])

        walk(doc)
        if not paths:
            return self.json_value()
        parent, key = rng.choice(paths)
        op = rng.randrange(5)
        if op <= 2:
            parent[key] = self.json_value()
        elif op == 3 and isinstance(parent, dict):
            del parent[key]
        elif op == 3:
            parent.extend([copy.deepcopy(parent[key])] * rng.choice((1, 10, 200)))
        elif isinstance(parent, dict):
            parent[rng.choice(STRINGS + IMPOSSIBLE + ["uid", "callsign", "floor_fl"])] = (
                self.json_value()
            )
        return doc

    # ---- API requests ------------------------------------------------------------------

    def api_request(self, api_seeds: ApiSeeds) -> tuple[str, str, str, bytes]:
        """(method, path with query, party, body) for one mutated API request."""
        rng = self.rng
        party = rng.choice(PARTIES)
        kind = rng.randrange(12)
        if kind <= 2:
            body = {"to": rng.choice(PARTIES), "text": "fz", "uid": rng.choice(UIDS)}
            return "POST", "/api/hotline/send", party, self.json_doc(body)
        if kind == 3:
            ref = f"{rng.choice(PARTIES)}::{rng.choice(UIDS)}"
            path = "/api/hotline/" + _quote(rng.choice((ref, self.text()))) + "/ack"
            return "POST", path, party, self.json_doc({}) if rng.random() < 0.5 else b""
        if kind in (4, 5):
            return "POST", "/api/airspace", party, self.json_doc(rng.choice(api_seeds.geojson))
        if kind == 6:
            return (
                "POST",
                "/api/airspace",
                party,
                self.bytes_(api_seeds.kml) if rng.random() < 0.5 else api_seeds.kml,
            )
        if kind in (7, 8):
            return "POST", "/api/launch", party, self.json_doc(api_seeds.report)
        if kind == 9:
            return "POST", "/api/cot", party, self.xml()
        path = rng.choice(
            [
                "/api/items?category=" + _quote(rng.choice(["track", "hotline", "", self.text()])),
                "/api/items?bbox="
                + _quote(",".join(self.number() for _ in range(rng.choice((3, 4))))),
                "/api/conflicts",
                "/api/launch/events",
                "/api/me",
                "/api/ledger/checkpoint",
                "/api/hotline?with=" + _quote(rng.choice([*PARTIES, self.text()])),
                "/api/ledger/receipts/"
                + _quote(rng.choice(["0", "1", "-1", "99999999", self.number()])),
                "/cap/feed.atom",
                "/metrics",
                "/healthz",
            ]
        )
        return "GET", path, party, b""


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text.encode("utf-8", "surrogatepass"), safe="")
