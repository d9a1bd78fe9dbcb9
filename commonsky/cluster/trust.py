"""The core's checks of what it consumes from the inbound stream (`<name>_IN`).

An edge is the only place a client's identity is established (its listener, its
certificate); the core believes what an edge says about its own clients, and nothing else.
Every message the core takes from the stream passes these checks first; one that fails is
`Untrusted`: acknowledged (it never comes again), counted (`commonsky_cluster_dropped_total`
by reason), logged in one rate-limited line naming the edge and the reason, and never applied
or delivered. What the checks hold to (docs/architecture.md, "Cluster", "What the core
believes"):

- Size: at most `envelope_limit(settings)` bytes (`oversize`): an edge's message carries one
  event its parser took (at most `limit_message_bytes` as sent; our re-serialisation can
  escape characters, hence the factor) or one client's description.
- Form: it decodes as one of `wire.Inbound` (`undecodable`).
- Subject: it came on `<name>.in.<edge>.<run>` of the edge it names (`wrong_subject`; a
  roster likewise on the edge's `<name>.beat.<edge>.<run>`); with NATS permissions that let
  each edge publish only on its own subjects (docs/nats-permissions.conf), an edge cannot
  speak for another edge's clients. An Ingest's id starts with its edge's name (`bad_id`): the id is
  the exactly-once key (`commonsky_applied`), which one edge must not spend for another.
- Text: the envelope's own strings (edge, message id, connection, user, a client's listener,
  address, devices, unread keys) hold no character XML 1.0 cannot carry (`bad_text`,
  `protocol/bounds.XML_IMPOSSIBLE`): they go into PostgreSQL (the applied ids, the callsign
  directory), which refuses NUL in text, and into log lines. Without it a message id with NUL
  failed the core's batch at its first query, on every core that took the lease after it
  (a message that stops every core; found by the property test in test_trust_core.py). The
  event's own text is `check_event`'s, in `Hub.accept`, as for any client.
- Party: a declared `[[party]]` (`unknown_party`), never the hub's own `HUB` (`hub_party`:
  the originator of the hub's notices, receipts and fused events, which a client must not
  write as).
- Wire form: "xml" or "proto" for an event, those or "json" (a map page) for a client
  (`unknown_mode`).
- The event as the edge's parser would have made it: a uid a CoT peer can use (`bad_uid`:
  not empty, bounded, no control character), a type (`empty_type`), and a `<detail>` that is
  well-formed XML within the parser's limits (`bad_detail`): the core writes it into every
  recipient's `<event>` as it is, so a detail that closes its element would put an event of
  the sender's choosing, under another originator, into every stream.
- Consistency (`ClusterCore`, per message in stream order: `agrees`): an event's party is the
  one its edge Attached (or listed in its roster) for that connection, and a client's party
  never changes (`party_mismatch`). A connection the core has not heard of (its Attach was
  taken by an earlier core, and the edge's roster answer was late) is taken on its edge's
  word, as before, and held to that party from then on.

What needs the hub's state (agreements, quotas, desks, times and values: `check_acceptable`)
stays with `Hub.accept`, whose refusals go back to the client's session as in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from commonsky.errors import RemoteProtocolError
from commonsky.model import HUB
from commonsky.protocol.bounds import XML_IMPOSSIBLE
from commonsky.protocol.cot import XmlLimits, check_detail, check_uid
from commonsky.settings import Settings

from .wire import (
    Attach,
    ConnInfo,
    Detach,
    Inbound,
    Ingest,
    Names,
    Roster,
    inbound_decoder,
    roster_decoder,
)

#: The wire forms of an event an edge hands on (protocol/stream.py) and of a client (a map
#: page reads "json").
EVENT_MODES = frozenset({"xml", "proto"})
CLIENT_MODES = EVENT_MODES | {"json"}
#: An escaped character takes at most this many times its bytes when our parser writes the
#: text again (`"` -> `&quot;`); and room for the envelope's own fields.
_EXPANSION = 6
_ROOM = 64 * 1024
_ROSTER_LIMIT = 64 * 1024 * 1024  # (NATS's own payload limit is far lower)
_MAX_ID = 512  # a message id: the edge's name, a run token and a counter

REASONS = (
    "oversize",
    "undecodable",
    "wrong_subject",
    "bad_id",
    "unknown_party",
    "hub_party",
    "unknown_mode",
    "bad_uid",
    "empty_type",
    "bad_detail",
    "party_mismatch",
    "bad_text",
)


class Untrusted(RemoteProtocolError):
    """A stream message that fails the core's checks (module docstring): dropped, never
    applied. `reason` is one of REASONS; `edge` the edge it names (or its subject's, or
    "?"), for the one log line."""

    def __init__(self, reason: str, edge: str, message: str) -> None:
        super().__init__(reason, message)
        self.edge = edge


def envelope_limit(settings: Settings) -> int:
    """The largest inbound message the core reads, in bytes (module docstring, "Size")."""
    return _EXPANSION * settings.limit_message_bytes + _ROOM


def beyond_nats(settings: Settings, max_payload: int) -> str | None:
    """Why an event of `limit_message_bytes`, as sent, cannot cross NATS, whose server takes
    no message over `max_payload` bytes (its INFO), or None. An event crosses as one message:
    its text as the client sent it, in an envelope (at most 64 KiB of fields). One over
    `max_payload` was published again and again, forever, and its edge published nothing
    behind it — for any client — while one process took the event: so a process of the
    cluster with such a limit refuses to start. (An envelope over `max_payload` all the same
    — the server's lowered since, or TAK protobuf whose typed fields our XML escapes — is
    refused by its edge, `oversized`, and the edge goes on.)"""
    need = settings.limit_message_bytes + _ROOM
    if need <= max_payload:
        return None
    most = max_payload - _ROOM
    lower = f"lower limit_message_bytes to {most} or " if most > 0 else ""
    return (
        f"[server] limit_message_bytes = {settings.limit_message_bytes}: a cluster carries an "
        f"event in one NATS message of up to limit_message_bytes + 64 KiB = {need} bytes, "
        f"over the NATS server's max_payload of {max_payload}; {lower}raise max_payload in "
        "the NATS server's configuration"
    )


@dataclass(frozen=True, slots=True)
class Checks:
    """The checks that need only the message, its subject and the configuration."""

    names: Names
    parties: frozenset[str]  # declared parties (HUB never one of them)
    limit: int  # bytes
    xml: XmlLimits

    @classmethod
    def of(cls, names: Names, parties: frozenset[str] | set[str], settings: Settings) -> Checks:
        limits = XmlLimits(
            _EXPANSION * settings.limit_message_bytes,
            settings.limit_xml_depth,
            _EXPANSION * settings.limit_attribute_bytes,
        )
        return cls(names, frozenset(parties) - {HUB}, envelope_limit(settings), limits)

    def read(self, subject: str, data: bytes) -> Inbound:
        """The message `data` taken from `subject`, decoded and checked. Raises Untrusted."""
        edge = self._subject_edge(subject)
        if len(data) > self.limit:
            raise Untrusted("oversize", edge, f"{len(data)} bytes, over {self.limit}")
        try:
            envelope = inbound_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise Untrusted("undecodable", edge, f"not an inbound message: {exc}") from None
        self.check(subject, envelope)
        return envelope

    def _subject_edge(self, subject: str) -> str:
        prefix = f"{self.names.name}.in."
        return subject[len(prefix) :][:80] if subject.startswith(prefix) else "?"

    def check(self, subject: str, envelope: Inbound) -> None:
        """Raises Untrusted unless `envelope` passes every check but `agrees`."""
        edge = envelope.edge
        if subject != self.names.ingest(edge):
            raise Untrusted("wrong_subject", edge[:80],
                            f"names edge {edge[:80]!r} but came on {subject[:120]!r}")  # fmt: skip
        if isinstance(envelope, Ingest):
            _plain(edge, envelope.id, edge, envelope.conn, envelope.user, envelope.mode)
        elif isinstance(envelope, Detach):
            _plain(edge, edge, envelope.conn)
        else:
            _plain(edge, edge, *envelope.unread)
        if isinstance(envelope, Detach):
            return
        if isinstance(envelope, Attach):
            self.client(edge, envelope.info)
            return
        if not envelope.id.startswith(f"{edge}.") or len(envelope.id) > _MAX_ID:
            raise Untrusted("bad_id", edge, f"message id {envelope.id[:120]!r}")
        self._party(edge, envelope.party)
        if envelope.mode not in EVENT_MODES:
            raise Untrusted("unknown_mode", edge, f"event wire form {envelope.mode[:40]!r}")
        event = envelope.event
        try:
            check_uid(event.uid)
        except RemoteProtocolError as exc:
            raise Untrusted("bad_uid", edge, str(exc)) from None
        if not event.type:  # (the parser's rule: `<event> needs uid and type`)
            raise Untrusted("empty_type", edge, "the event has no type")
        if event.detail:
            try:
                check_detail(event.detail, self.xml)
            except RemoteProtocolError as exc:
                raise Untrusted("bad_detail", edge, f"{exc.reason}: {str(exc)[:200]}") from None

    def client(self, edge: str, info: ConnInfo) -> None:
        """Raises Untrusted unless the client `info` (an Attach's, a roster's) has a declared
        party other than HUB and a wire form the core knows."""
        _plain(edge, info.conn, info.user, info.listener, info.address, info.mode,
               *info.devices, *info.devices.values())  # fmt: skip
        self._party(edge, info.party)
        if info.mode not in CLIENT_MODES:
            raise Untrusted("unknown_mode", edge, f"client wire form {info.mode[:40]!r}")

    def roster(self, data: bytes, subject: str | None = None) -> tuple[Roster, list[Untrusted]]:
        """An edge's roster (its beat, or its answer to the roster request: a beat too) from
        `subject` (None: not checked): the roster of the clients that pass `client`, and why
        each other one was left out. Raises Untrusted as `beat`."""
        return self.clients(self.beat(data, subject))

    def beat(self, data: bytes, subject: str | None = None) -> Roster:
        """An edge's beat, read: Untrusted (`undecodable`, `oversize`) for one that cannot be
        read at all, `wrong_subject` for one naming another edge than its subject's
        (`<name>.beat.<edge>.<run>`: only that edge may publish there). Its clients are not
        checked (`clients`)."""
        if len(data) > _ROSTER_LIMIT:
            raise Untrusted("oversize", "?", f"a roster of {len(data)} bytes")
        try:
            roster = roster_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise Untrusted("undecodable", "?", f"not a roster: {exc}") from None
        if subject is not None and subject != self.names.beat(roster.edge):
            raise Untrusted("wrong_subject", roster.edge[:80], f"a roster naming edge "
                            f"{roster.edge[:80]!r} came on {subject[:120]!r}")  # fmt: skip
        return roster

    def clients(self, roster: Roster) -> tuple[Roster, list[Untrusted]]:
        """`roster` with only the clients that pass `client`, and why each other one went."""
        kept: list[ConnInfo] = []
        left: list[Untrusted] = []
        for info in roster.conns:
            try:
                self.client(roster.edge, info)
                kept.append(info)
            except Untrusted as exc:
                left.append(exc)
        return Roster(roster.edge, kept), left

    def _party(self, edge: str, party: str) -> None:
        if party == HUB:
            raise Untrusted("hub_party", edge, "a client cannot write as the hub (HUB)")
        if party not in self.parties:
            raise Untrusted("unknown_party", edge, f"party {party[:40]!r} is not declared")


def agrees(envelope: Ingest | Attach, known: str | None) -> None:
    """Raises Untrusted (`party_mismatch`) unless `envelope`'s party is `known`, the party
    its edge gave that connection before (None: not heard of, taken on the edge's word)."""
    party = envelope.party if isinstance(envelope, Ingest) else envelope.info.party
    conn = envelope.conn if isinstance(envelope, Ingest) else envelope.info.conn
    if known is not None and party != known:
        raise Untrusted(
            "party_mismatch",
            envelope.edge,
            f"connection {conn[:80]!r} is {known}'s (its Attach), not {party[:40]!r}",
        )


def _plain(edge: str, *texts: str) -> None:
    """Raises Untrusted (`bad_text`) if any of `texts` holds a character XML cannot carry
    (module docstring, "Text"); the edge named in it is shown with such characters escaped."""
    found = XML_IMPOSSIBLE.search("\n".join(texts))
    if found is not None:
        shown = XML_IMPOSSIBLE.sub(lambda c: f"\\x{ord(c.group()):02x}", edge[:80])
        raise Untrusted("bad_text", shown, f"character U+{ord(found.group()):04X} in the "
                        "message's own text (id, edge, connection, user or a client's "
                        "details): not storable, not carried in XML")  # fmt: skip
