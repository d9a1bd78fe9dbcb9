"""Play captured CoT through a private hub and record what each party receives.

The hub is a real one (its TAK listeners on loopback, its HTTP API) with two parties, ALPHA
and BRAVO, that share everything: a `full` agreement for every category, both ways. It is
one process or a cluster (`targets.py`: where clients connect, where the API is).
Each file is sent by a fresh ALPHA connection, retimed to now, and watched by four fresh
receivers — ALPHA and BRAVO, each over XML and over TAK Protocol v1 — then by one late
joiner per party and by `GET /api/items` of each party. In a cluster the sender is on the
first edge, each party's XML and protobuf receivers are on different edges (ALPHA's XML one
with the sender, BRAVO's not), and so are the two late joiners (ALPHA's not with the sender).

Nothing is judged by waiting: after the file the sender sends a position report that every
receiver is entitled to (a barrier); once a receiver has it, whatever the file caused has
reached it, and anything else did not come. A message addressed with `<marti><dest …>` is
addressed to receivers that first announce that callsign (or that uid) as their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from takproto.functions import xml2message

from . import ALPHA, BRAVO
from .client import ClosedByHub, Peer, Received, connect, frame, unframe
from .compare import compare
from .retime import offset_to, retime_proto, retime_xml
from .targets import SingleHub, Target
from .views import (
    PARTIES,
    RECEIPT_TYPES,
    SEPARATOR,
    Unreadable,
    View,
    dest_addresses,
    instant_of,
    map_event_uid,
    map_name,
    map_references,
    parse_xml,
    view_of_api,
    view_of_proto,
    view_of_xml,
)

# Messages about other items, not items: chat receipts, file-transfer requests and
# acknowledgements (`b-f-t-…`), an emergency's cancel, deletes, pings. Relayed, never part
# of the picture a late joiner gets (README, "How items flow"). A type or its subtypes.
TRANSIENT_TYPES = ("b-t-f-d", "b-t-f-r", "b-f-t", "b-a-o-can", "t-x-d-d", "t-x-c-t")
_UID = re.compile(rb"<event\b[^>]*?\suid\s*=\s*([\"'])(.*?)\1", re.DOTALL)


def transient(cot_type: str) -> bool:
    return any(cot_type == t or cot_type.startswith(t + "-") for t in TRANSIENT_TYPES)


@dataclass(frozen=True)
class Sample:
    """One captured message: a `.xml` CoT event, or a `.bin` TAK Protocol v1 frame."""

    name: str
    data: bytes
    kind: str  # "xml" | "protobuf"

    @classmethod
    def load(cls, path: Path) -> Sample:
        """Raises OSError when the file cannot be read."""
        kind = "protobuf" if path.suffix == ".bin" else "xml"
        return cls(path.name, path.read_bytes(), kind)


@dataclass
class Delivery:
    """What one receiver got of one file."""

    receiver: str  # e.g. "BRAVO protobuf", "ALPHA late join", "BRAVO /api/items"
    expected: bool  # whether a conformant hub delivers it there
    copies: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if not self.expected:
            return self.copies == 0
        return self.copies == 1 and not self.differences

    @property
    def status(self) -> str:
        if not self.expected:
            return "none (right)" if self.copies == 0 else "unexpected"
        if self.copies == 0:
            return "missing"
        if self.copies > 1:
            return f"{self.copies} copies"
        return "changed" if self.differences else "unchanged"

    def to_json(self) -> dict[str, Any]:
        return {
            "receiver": self.receiver,
            "expected": self.expected,
            "copies": self.copies,
            "status": self.status,
            "ok": self.ok,
            "differences": self.differences,
        }


@dataclass
class FileResult:
    """Everything one file did in the hub."""

    name: str
    wire: str  # how it was sent: "xml" | "protobuf"
    type: str = ""
    uid: str = ""
    sent: bool = False  # False when it could not even be sent (see problems)
    accepted: bool = False
    refusal: str = ""
    persists: bool = False  # a late joiner and /api/items should see it
    within: list[Delivery] = field(default_factory=list)
    across: list[Delivery] = field(default_factory=list)
    late: list[Delivery] = field(default_factory=list)
    api: list[Delivery] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def deliveries(self) -> list[Delivery]:
        return [*self.within, *self.across, *self.late, *self.api]

    @property
    def ok(self) -> bool:
        return self.accepted and not self.problems and all(d.ok for d in self.deliveries)

    def differences(self) -> list[str]:
        """Every finding, one line each, receiver first."""
        lines = list(self.problems)
        if self.sent and not self.accepted:
            lines.append(f"refused: {self.refusal or 'no reason logged'}")
        for d in self.deliveries:
            if d.ok:
                continue
            if not d.expected:
                lines.append(f"[{d.receiver}] unexpected: it is not for this receiver")
            elif not (d.copies == 1 and d.differences):
                lines.append(f"[{d.receiver}] {d.status}")
            if d.expected and d.copies:
                lines.extend(f"[{d.receiver}] {diff}" for diff in d.differences)
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.name,
            "sent_as": self.wire,
            "type": self.type,
            "uid": self.uid,
            "sent": self.sent,
            "accepted": self.accepted,
            "refusal": self.refusal,
            "persists": self.persists,
            "within": [d.to_json() for d in self.within],
            "across": [d.to_json() for d in self.across],
            "late_join": [d.to_json() for d in self.late],
            "api_items": [d.to_json() for d in self.api],
            "problems": self.problems,
            "ok": self.ok,
        }


# Where each party's barrier and announcement reports are: far from each other and from the
# corpus, so that the hub's conflict screening finds nothing to say about them.
_SPOT = {ALPHA: ("-60.0", "-150.0"), BRAVO: ("60.0", "150.0")}


def _position(uid: str, callsign: str, party: str, now: float) -> bytes:
    """A device's position report, shaped as ATAK's (`contact` with an endpoint, `takv`: a
    hub learns a device's callsign from such reports), written here by hand (never by
    CommonSky's codec), stale after a few seconds so that the picture does not fill up."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".000Z"
    stale = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 20)) + ".000Z"
    lat, lon = _SPOT[party]
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><event version="2.0" uid="{uid}"'
        f' type="a-f-G-U-C" time="{stamp}" start="{stamp}" stale="{stale}" how="m-g">'
        f'<point lat="{lat}" lon="{lon}" hae="10.0" ce="5.0" le="5.0"/>'
        f'<detail><contact callsign="{callsign}" endpoint="*:-1:stcp"/>'
        f'<takv device="conformance" platform="CommonSky" os="any" version="1"/>'
        f"</detail></event>"
    ).encode()


class Bench:
    """A private hub (`Target`) and the clients that play files through it (see the
    module's rule)."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.tokens = target.tokens
        self.timeout = timeout
        self._serial = 0
        self._open: list[Peer] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, timeout: float = 10.0) -> AsyncIterator[Bench]:
        """A bench on a private single-process hub (`targets.SingleHub`)."""
        async with SingleHub.running() as target:
            yield cls(target, timeout)

    # ---- connections -------------------------------------------------------------------

    def port(self, party: str, edge: int = 0) -> int:
        """The TAK TCP port of `party` on `edge` (a client connecting there is that party)."""
        return self.target.port(party, edge)

    def _edge(self, party: str, proto: bool) -> int:
        """Where a receiver connects: each party's XML and protobuf receivers on different
        edges (when there are several), ALPHA's XML one on the sender's."""
        return ((party != ALPHA) + proto) % self.target.edges

    def _late_edge(self, party: str) -> int:
        """Where a late joiner connects: ALPHA's away from the sender, BRAVO's with it."""
        return (party == ALPHA) % self.target.edges

    def _named(self, name: str, edge: int) -> str:
        return f"{name} @edge{edge}" if self.target.edges > 1 else name

    def _next(self, what: str) -> str:
        self._serial += 1
        return f"conformance-{what}-{self._serial}"

    async def _join(self, party: str, proto: bool, edge: int = 0) -> Peer:
        """A new connection (to `edge`), closed when the file's play ends."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        peer = await connect(party, self.port(party, edge), proto, self.timeout, stamp)
        self._open.append(peer)
        return peer

    async def _sender(self, sender: Peer) -> Peer:
        """`sender`, or a new ALPHA connection when the hub closed it."""
        return await self._join(ALPHA, False) if sender.closed else sender

    async def _announce(self, peers: list[Peer], sender: Peer, sent: View | None) -> list[bool]:
        """Make receivers the addressees a `<marti><dest>` names; which ones a conformant
        hub delivers to (addressing, and a receipt's owner: `_for_party`)."""
        callsigns, dest_uids = dest_addresses(sent) if sent is not None else ([], [])
        if not callsigns and not dest_uids:
            return [_for_party(sent, peer.party) for peer in peers]
        addressed: list[bool] = []
        announced: list[str] = []  # uids as the sender sees them
        taken: set[str] = set()
        now = time.time()
        for peer in peers:
            own = [
                u
                for u in (map_name(d, ALPHA, peer.party) for d in dest_uids)
                if "::" not in u and u not in taken
            ]
            if own:
                uid, callsign = own[0], callsigns[0] if callsigns else self._next("device")
                taken.add(uid)
            elif callsigns:
                uid, callsign = self._next("device"), callsigns[0]
            else:
                addressed.append(False)
                continue
            peer.send_event(_position(uid, callsign, peer.party, now))
            announced.append(map_name(uid, peer.party, ALPHA))
            addressed.append(_for_party(sent, peer.party))
        for uid in announced:
            await sender.wait_for(_has_uid(uid), self.timeout)
        return addressed

    async def _barrier(self, sender: Peer, peers: Iterable[Peer], problems: list[str]) -> Peer:
        """Send a position every receiver is entitled to and wait until each has it; the
        items each received before it are what the file caused. Returns the sender used
        (a new one when the hub closed the first)."""
        uid = self._next("barrier")
        data = _position(uid, "BARRIER", ALPHA, time.time())
        try:
            sender.send_event(data)
        except ClosedByHub:
            sender = await self._join(ALPHA, False)
            sender.send(data)
        for peer in peers:
            try:
                got = await peer.wait_for(_has_uid(map_name(uid, ALPHA, peer.party)), self.timeout)
            except TimeoutError:
                problems.append(f"{peer.party}: the barrier did not arrive in {self.timeout:g} s")
                peer.barrier_at = len(peer.items)
                continue
            except ClosedByHub:
                problems.append(f"{peer.party}: connection closed by the hub")
                peer.barrier_at = len(peer.items)
                continue
            peer.barrier_at = peer.items.index(got)
        return sender

    # ---- one file ----------------------------------------------------------------------

    def _prepare(self, sample: Sample, wire: str, now: float) -> tuple[bytes, View | None]:
        """The bytes to send and what they say (None when our reader cannot read them)."""
        if sample.kind == "protobuf":
            message = unframe(sample.data)
            retime_proto(message, now)
            return frame(message), view_of_proto(message)
        data = retime_xml(sample.data, offset_to(sample.data, now))
        if wire == "protobuf":
            try:
                message = xml2message(data)
            except Exception as exc:  # takproto's own converter, on anything
                raise Unreadable(f"takproto cannot convert it to protobuf: {exc}") from None
            return frame(message), view_of_proto(message)
        try:
            return data, view_of_xml(parse_xml(data))
        except Unreadable:
            return data, None

    async def play(self, sample: Sample, wire: str = "xml") -> FileResult:
        """Send one file as `wire` ("xml" or "protobuf") and record every delivery."""
        result = FileResult(sample.name, "protobuf" if sample.kind == "protobuf" else wire)
        now = time.time()
        try:
            payload, sent = self._prepare(sample, result.wire, now)
        except Unreadable as exc:
            result.problems.append(str(exc))
            return result
        if sent is None:
            result.problems.append("not a CoT event our reader can read; sent as it is")
            match = _UID.search(payload)
            result.uid = match.group(2).decode("utf-8", "replace") if match else ""
        else:
            result.uid, result.type = sent.uid, sent.type
        try:
            await self._play(result, payload, sent)
        except (ClosedByHub, TimeoutError, OSError) as exc:
            result.problems.append(f"could not finish: {exc or type(exc).__name__}")
        finally:
            opened, self._open = self._open, []
            for peer in opened:
                await peer.close()
        return result

    async def _play(self, result: FileResult, payload: bytes, sent: View | None) -> None:
        sender = await self._join(ALPHA, result.wire == "protobuf")
        receivers: list[tuple[str, Peer]] = []
        for party in (ALPHA, BRAVO):
            for proto in (False, True):
                edge = self._edge(party, proto)
                peer = await self._join(party, proto, edge)
                name = f"{party} {'protobuf' if proto else 'xml'}"
                receivers.append((self._named(name, edge), peer))
        addressed = await self._announce([p for _, p in receivers], sender, sent)
        problems = result.problems
        # What came before this barrier is the picture a new connection gets (an earlier
        # file may have used the same uid): not this file's doing.
        sender = await self._barrier(sender, (p for _, p in receivers), problems)
        for _, peer in receivers:
            peer.items = peer.items[(peer.barrier_at or 0) + 1 :]
        refusals, lines = await self.target.refusals(), len(self.target.log_lines())
        sender.send(payload)
        result.sent = True
        sender = await self._sender(
            await self._barrier(sender, (p for _, p in receivers), problems)
        )
        await self._judge_acceptance(result, refusals, lines)
        for (name, peer), wanted in zip(receivers, addressed, strict=True):
            delivery = self._delivery(name, peer, sent, result.uid, wanted)
            (result.within if peer.party == ALPHA else result.across).append(delivery)
        # A client that joins now gets the picture: the file again, unless it is transient.
        result.persists = sent is not None and _persists(sent, time.time())
        places = [(party, self._late_edge(party)) for party in (ALPHA, BRAVO)]
        late = [await self._join(party, False, edge) for party, edge in places]
        late_addressed = await self._announce(late, sender, sent)
        await self._barrier(sender, late, problems)
        for peer, (_, edge), wanted in zip(late, places, late_addressed, strict=True):
            name = self._named(f"{peer.party} late join", edge)
            result.late.append(
                self._delivery(name, peer, sent, result.uid, wanted and result.persists)
            )
        for party in (ALPHA, BRAVO):
            wanted = result.persists and any(
                w for (_, p), w in zip(receivers, addressed, strict=True) if p.party == party
            )
            result.api.append(await self._api(party, sent, result.uid, wanted))
        for level, line in self.target.log_lines()[lines:]:
            if level >= logging.ERROR:
                problems.append(f"hub logged: {line}")

    async def _judge_acceptance(self, result: FileResult, refusals: float, lines: int) -> None:
        result.accepted = await self.target.refusals() == refusals
        if not result.accepted:
            said = [line for _, line in self.target.log_lines()[lines:] if "refused" in line]
            result.refusal = "; ".join(said) or "counted in commonsky_refusals_total"

    def _delivery(
        self, name: str, peer: Peer, sent: View | None, uid: str, expected: bool
    ) -> Delivery:
        seen_uid = map_event_uid(sent.type if sent else "", uid, ALPHA, peer.party)
        before = peer.items[: peer.barrier_at]
        copies = [r for r in before if r.uid == seen_uid]
        if not copies:
            # Under another name (a GeoChat uid renamed whole, or not at all) it still came:
            # "changed" (its uid differs) says more than "missing".
            others = {map_name(uid, ALPHA, peer.party), uid} - {seen_uid}
            copies = [r for r in before if r.uid in others]
        delivery = Delivery(name, expected, len(copies))
        for bad in (r for r in before if r.view is None):
            delivery.differences.append(f"unreadable message: {bad.error}")
        if sent is None:
            return delivery
        want = map_references(sent, ALPHA, peer.party)
        for copy in copies:
            if copy.view is not None:
                delivery.differences.extend(compare(want, copy.view))
        return delivery

    async def _api(self, party: str, sent: View | None, uid: str, expected: bool) -> Delivery:
        name = f"{party} /api/items"
        try:
            items = await asyncio.to_thread(self._get_items, party)
        except (OSError, ValueError) as exc:
            return Delivery(name, expected, 0, [f"GET /api/items failed: {exc}"])
        seen_uid = map_event_uid(sent.type if sent else "", uid, ALPHA, party)
        found = [i for i in items if isinstance(i, dict) and i.get("uid") == seen_uid]
        if not found:
            others = {map_name(uid, ALPHA, party), uid} - {seen_uid}
            found = [i for i in items if isinstance(i, dict) and i.get("uid") in others]
        delivery = Delivery(name, expected, len(found))
        if sent is None:
            return delivery
        want = map_references(sent, ALPHA, party)
        for item in found:
            try:
                delivery.differences.extend(compare(want, view_of_api(item)))
            except Unreadable as exc:
                delivery.differences.append(f"detail: {exc}")
            if item.get("party") != ALPHA:
                delivery.differences.append(f"party: sent by {ALPHA}, says {item.get('party')!r}")
            callsign = _callsign(sent)
            if (item.get("callsign") or "") != callsign:
                delivery.differences.append(
                    f"callsign: sent {callsign!r}, says {item.get('callsign')!r}"
                )
        return delivery

    def _get_items(self, party: str) -> list[Any]:
        request = urllib.request.Request(
            f"{self.target.api_base()}/api/items",
            headers={"Authorization": f"Bearer {self.tokens[party]}"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            body = json.loads(response.read())
        if not isinstance(body, list):
            raise ValueError("/api/items did not answer a JSON array")
        return body


# A private hub for one wire: the wire's name -> the hub, started (and stopped on leaving).
Hubs = Callable[[str], contextlib.AbstractAsyncContextManager[Target]]


@contextlib.asynccontextmanager
async def per_wire(
    wires: Iterable[str], timeout: float = 10.0, hubs: Hubs | None = None
) -> AsyncIterator[dict[str, Bench]]:
    """A private hub (`Bench`; from `hubs`, by default a single process each) for each wire,
    so that each wire's play is the only traffic of its file. The same file sent as XML and
    then as protobuf would be one message sent twice: a hub that has recorded a GeoChat
    takes the same content again once and relays it no more (exactly once), and refuses
    other content under its uid (`hotline_immutable`) — which takproto's conversion makes of
    a GeoChat whose `<detail>` spans several lines."""
    async with contextlib.AsyncExitStack() as stack:
        benches: dict[str, Bench] = {}
        for wire in dict.fromkeys(wires):
            hub = hubs(wire) if hubs is not None else SingleHub.running()
            benches[wire] = Bench(await stack.enter_async_context(hub), timeout)
        yield benches


def _for_party(sent: View | None, party: str) -> bool:
    """Whether a message is for `party` by its kind: a receipt (`b-t-f-d`, `b-t-f-r`)
    answers one message, and is for the party whose message its uid (the message id)
    names; anything else is for every party its addressing allows."""
    if sent is None or sent.type not in RECEIPT_TYPES:
        return True
    prefix, separator, rest = sent.uid.partition(SEPARATOR)
    owner = prefix if separator and prefix in PARTIES and rest else ALPHA
    return party == owner


def _has_uid(uid: str) -> Callable[[Received], bool]:
    return lambda received: received.uid == uid


def _persists(sent: View, now: float) -> bool:
    if transient(sent.type):
        return False
    stale = sent.times.get("stale")
    try:
        if isinstance(stale, str):
            return float(instant_of(stale)) > now
        if stale is not None and not isinstance(stale, float):
            return float(stale.seconds) > now
    except ValueError:
        return False
    return False


def _callsign(sent: View) -> str:
    if "contact" in sent.typed:
        return str(sent.typed["contact"]["callsign"])
    if sent.detail is not None:
        for child in sent.detail.children:
            if child.tag == "contact":
                return child.attrib.get("callsign", "")
    return ""
