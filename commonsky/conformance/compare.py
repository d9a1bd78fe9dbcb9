"""Whether a delivered event is the one that was sent: a precise, strict definition.

"Unchanged" means, for `compare(sent, received)` (both `View`s, the sent one already put
through the documented uid mapping for the recipient):

- `<event>` attributes: the same names with the same values, compared as the text the
  sender wrote (`access=""` is not a missing `access`; no `how` may be filled in). A wire
  that cannot carry a name (protobuf has no `version`) is not asked to; protobuf and JSON
  read an empty string as "absent or empty".
- `time`, `start`, `stale`: the same text when both sides are XML; when one side carries a
  number (protobuf milliseconds, JSON seconds), the same instant within that resolution.
- `<point>`: the same attribute text when both sides are XML; the same double when one side
  carries a number (NaN equals NaN; JSON writes NaN as null).
- `<detail>`: the same elements in the same order, each with the same tag, the same
  attributes (text compared as written), the same text and the same children. Whitespace
  between elements is indentation, not content; a leaf's text is content. Attribute order
  and quoting are not content (XML says so).
- TAK Protocol v1's typed detail fields (`contact`, `__group`, `precisionlocation`, `status`,
  `takv`, `track`) stand for exactly one element with exactly that field's attributes: every
  required one present, `contact@endpoint` present exactly when not empty, no other
  attribute, no text, no children; strings equal, numbers equal as numbers. An element that
  does not fit that shape must travel in `xmlDetail`.

Each difference is one line: where, what was expected (what was sent, put through the
documented uid mapping) and what was received.
"""

from __future__ import annotations

import difflib
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from commonsky.model import UNKNOWN

from .views import OPTIONAL, TIMES, TYPED, Instant, Node, Value, View, instant_of

_PROTO_CARRIES = frozenset({"type", "access", "qos", "opex", "uid", "how"})
_API_CARRIES = frozenset({"uid", "type", "how", "access"})
_ABSENT = "(absent)"


def compare(sent: View, received: View) -> list[str]:
    """Every difference between what was sent and what was received, one line each."""
    out: list[str] = []
    _event(sent, received, out)
    _times(sent, received, out)
    _point(sent, received, out)
    _detail(sent, received, out)
    return out


def _carries(view: View) -> frozenset[str] | None:
    if view.wire == "protobuf":
        return _PROTO_CARRIES
    if view.wire == "api":
        return _API_CARRIES
    return None


def _show(value: object) -> str:
    if isinstance(value, Instant):
        whole = int(value.seconds)
        moment = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        fraction = str(value.seconds - whole)[1:] if value.seconds != whole else ""
        return f"{moment}{fraction}Z (as a number)"
    return _ABSENT if value is None else repr(value)


# ---- <event> -----------------------------------------------------------------------------


def _event(sent: View, received: View, out: list[str]) -> None:
    sent_carries, received_carries = _carries(sent), _carries(received)
    for name in sorted(set(sent.event) | set(received.event)):
        if received_carries is not None and name not in received_carries:
            continue  # the receiving wire has no place for it
        s, r = sent.event.get(name), received.event.get(name)
        if sent_carries is not None and name not in sent_carries:
            if name == "version" and r == "2.0":
                continue  # CoT XML requires it; the sending wire had no place for it
            out.append(f"event@{name}: not expected, received {r!r}")
            continue
        if s == r:
            continue
        loose = (sent.loose and s == "") or (received.loose and r == "")
        if loose and (s or "") == (r or ""):
            continue
        if received.wire == "api" and r is None and name in ("how", "access") and s:
            out.append(f"event@{name}: expected {s!r}, /api/items does not carry it")
            continue
        out.append(f"event@{name}: expected {_show(s)}, received {_show(r)}")


# ---- times and point ---------------------------------------------------------------------


def _as_instant(value: Value) -> Instant | None:
    if isinstance(value, Instant):
        return value
    if isinstance(value, str):
        try:
            return Instant(instant_of(value), Decimal(0))
        except ValueError:
            return None
    return None


def _times(sent: View, received: View, out: list[str]) -> None:
    for name in TIMES:
        s, r = sent.times.get(name), received.times.get(name)
        if s is None and r is None:
            continue
        if s is None or r is None:
            if received.wire == "api" and r is None:
                out.append(f"event@{name}: expected {_show(s)}, /api/items does not carry it")
            elif s is None and received.wire == "xml" and sent.wire == "xml":
                out.append(f"event@{name}: expected {_ABSENT}, received {_show(r)}")
            elif r is None:
                out.append(f"event@{name}: expected {_show(s)}, received {_ABSENT}")
            continue
        if isinstance(s, str) and isinstance(r, str):
            if s != r:
                note = ""
                si, ri = _as_instant(s), _as_instant(r)
                if si is not None and ri is not None and si.seconds == ri.seconds:
                    note = " (same instant, different text)"
                out.append(f"event@{name}: expected {s!r}, received {r!r}{note}")
            continue
        si, ri = _as_instant(s), _as_instant(r)
        if si is None or ri is None:
            out.append(f"event@{name}: expected {_show(s)}, received {_show(r)} (not a time)")
            continue
        if abs(si.seconds - ri.seconds) >= max(si.resolution, ri.resolution, Decimal("1e-9")):
            out.append(f"event@{name}: expected {_show(s)}, received {_show(r)}")


def _number(value: Value | None) -> float | None:
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _same_number(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _point(sent: View, received: View, out: list[str]) -> None:
    if sent.point is None or received.point is None:
        if (sent.point is None) != (received.point is None):
            out.append(
                f"point: expected {'none' if sent.point is None else 'one'}, "
                f"received {'none' if received.point is None else 'one'}"
            )
        return
    for name in sorted(set(sent.point) | set(received.point)):
        s, r = sent.point.get(name), received.point.get(name)
        if isinstance(s, str | None) and isinstance(r, str | None):
            if s != r:
                a, b = _number(s), _number(r)
                note = (
                    " (same number, different text)"
                    if a is not None and b is not None and _same_number(a, b)
                    else ""
                )
                out.append(f"point@{name}: expected {_show(s)}, received {_show(r)}{note}")
            continue
        if s is None and name in ("hae", "ce", "le"):
            s = UNKNOWN  # a numeric wire must say "unknown" for what the sender left out
        a, b = _number(s), _number(r)
        if a is None or b is None or not _same_number(a, b):
            out.append(f"point@{name}: expected {_show(s)}, received {_show(r)}")


# ---- <detail> ----------------------------------------------------------------------------


def _empty(node: Node | None) -> bool:
    return node is None or (not node.children and not node.attrib and not any(node.texts))


def _detail(sent: View, received: View, out: list[str]) -> None:
    s, r = sent.detail, received.detail
    if (s is None) != (r is None) and not (sent.loose or received.loose):
        out.append(
            f"detail: expected {'no <detail>' if s is None else '<detail>'}, "
            f"received {'no <detail>' if r is None else '<detail>'}"
        )
    if _empty(s) and _empty(r) and not sent.typed and not received.typed:
        return
    sent_nodes = list(s.children) if s is not None else []
    received_nodes = list(r.children) if r is not None else []
    _typed(sent, received, sent_nodes, received_nodes, out)
    if s is not None and r is not None:
        _attrib("detail", s.attrib, r.attrib, out)
    _nodes("detail", sent_nodes, received_nodes, out)


def _typed(
    sent: View,
    received: View,
    sent_nodes: list[Node],
    received_nodes: list[Node],
    out: list[str],
) -> None:
    """Match typed fields on either side with the element they stand for on the other;
    matched elements are taken out of the lists, which are then compared as XML."""
    for name in TYPED:
        s, r = sent.typed.get(name), received.typed.get(name)
        tag = TYPED[name][0]
        if s is not None and r is not None:
            for attr in TYPED[name][1]:
                if not _same_field(s[attr], r[attr]):
                    out.append(
                        f"detail/{tag} (typed): {attr} expected {s[attr]!r}, received {r[attr]!r}"
                    )
        elif r is not None:
            if not _take(sent_nodes, name, r):
                candidates = [n for n in sent_nodes if n.tag == tag]
                why = _misfit(candidates[0], name, r) if candidates else "no such element sent"
                out.append(f"detail/{tag}: received as protobuf's typed {name} but {why}")
        elif s is not None and not _take(received_nodes, name, s):
            candidates = [n for n in received_nodes if n.tag == tag]
            why = _misfit(candidates[0], name, s) if candidates else "not received"
            out.append(f"detail/{tag}: expected as protobuf's typed {name}, {why}")


def _same_field(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return _same_number(a, b)
    return bool(a == b)


def _take(nodes: list[Node], name: str, values: dict[str, Any]) -> bool:
    for index, node in enumerate(nodes):
        if node.tag == TYPED[name][0] and _misfit(node, name, values) is None:
            del nodes[index]
            return True
    return False


def _misfit(node: Node, name: str, values: dict[str, Any]) -> str | None:
    """Why `node` is not exactly what the typed field `name` with `values` stands for
    (None when it is)."""
    tag, attrs = TYPED[name]
    shown = _brief(node)
    if node.children or any(node.texts):
        return f"{shown} has text or children the typed field cannot carry"
    extra = sorted(set(node.attrib) - set(attrs))
    if extra:
        return f"{shown} has attributes the typed field cannot carry: {', '.join(extra)}"
    for attr, kind in attrs.items():
        text = node.attrib.get(attr)
        value = values[attr]
        if text is None:
            if (tag, attr) in OPTIONAL and value == "":
                continue
            return f"{shown} has no {attr} (the typed field has {value!r})"
        if kind is str:
            if (tag, attr) in OPTIONAL and text == "":
                return f"{shown} has an empty {attr}, which the typed field cannot carry"
            if text != value:
                return f"{shown}: {attr} {text!r} is not {value!r}"
        elif kind is int:
            if not text.isdigit() or int(text) != value:
                return f"{shown}: {attr} {text!r} is not the integer {value!r}"
        else:
            number = _number(text)
            if number is None or not _same_number(number, float(value)):
                return f"{shown}: {attr} {text!r} is not the number {value!r}"
    return None


def _brief(node: Node) -> str:
    attrs = " ".join(f"{k}={v!r}" for k, v in node.attrib.items())
    text = f"<{node.tag}{' ' if attrs else ''}{attrs}/>"
    return text if len(text) <= 120 else text[:117] + "…"


def _attrib(path: str, sent: dict[str, str], received: dict[str, str], out: list[str]) -> None:
    for name in sorted(set(sent) | set(received)):
        s, r = sent.get(name), received.get(name)
        if s != r:
            out.append(f"{path}@{name}: expected {_show(s)}, received {_show(r)}")


def _nodes(path: str, sent: list[Node], received: list[Node], out: list[str]) -> None:
    matcher = difflib.SequenceMatcher(
        a=[n.tag for n in sent], b=[n.tag for n in received], autojunk=False
    )
    counts: dict[str, int] = {}

    def where(node: Node) -> str:
        counts[node.tag] = counts.get(node.tag, 0) + 1
        return f"{path}/{node.tag}[{counts[node.tag]}]"

    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            for s, r in zip(sent[a0:a1], received[b0:b1], strict=True):
                _node(where(s), s, r, out)
            continue
        for s in sent[a0:a1]:
            out.append(f"{where(s)}: expected {_brief(s)}, not received")
        for r in received[b0:b1]:
            out.append(f"{path}/{r.tag}: not expected, received {_brief(r)}")


def _node(path: str, sent: Node, received: Node, out: list[str]) -> None:
    _attrib(path, sent.attrib, received.attrib, out)
    if not (sent.children or received.children):
        if sent.texts != received.texts:
            out.append(f"{path} text: expected {sent.texts[0]!r}, received {received.texts[0]!r}")
    else:
        s_text = [t for t in sent.texts if t]
        r_text = [t for t in received.texts if t]
        if s_text != r_text:
            out.append(f"{path} text between elements: expected {s_text!r}, received {r_text!r}")
    _nodes(path, list(sent.children), list(received.children), out)
