"""What edges and the core say to each other over NATS: subjects and messages (msgspec).

Subjects and stream names all start with the cluster's `name` (`[cluster] name`), so two
clusters — or two tests — on one NATS server never meet. An edge's id is its configured name
(`[cluster] edge`, default the host's) and a token of its run: `<edge>.<run>`, two subject
tokens, so that a NATS user's permissions can name one edge (`<name>.in.<edge>.*`) while a
restarted edge is still a new one to the core (docs/nats-permissions.conf):

- `<name>.in.<edge>.<run>` (JetStream stream `<name>_IN`, work queue, deduplicated by
  `Nats-Msg-Id`): what an edge hands the core, in the order the edge took it — `Ingest` (one
  event of an authenticated client), `Attach` and `Detach` (a client came or went).
- `<name>.out.<edge>.<run>` (core NATS): `Delivery`, the core's outputs for the clients one
  edge holds, already rendered for each (disclosed, generalized, namespaced, addressed).
- `<name>.beat.<edge>.<run>` (each edge every BEAT_S, and at once when the core asks on
  `<name>.roster`): `Roster`, the clients an edge holds now. A new core asks once it holds
  the lease; the beats tell the core which edges are alive. (On the edge's own subject, not
  a reply: an edge cannot answer for another.)
- `<name>.http` (request/reply, only the core holding the lease subscribes): `HttpCall`,
  a request an edge forwards (the API, Marti, enrolment); a long body follows in `BodyPart`s
  the core acknowledges one by one (`BodyAck`), the answer comes in `HttpReply` parts the
  edge acknowledges (`ReplyAck`) (cluster/forward.py, core_http.py, parts.py).
- Replies (JetStream's acknowledgements, KV watches, HTTP answers) come to inboxes under
  `_INBOX.<name>.edge.<edge>` (an edge's) and `_INBOX.<name>.core` (a core's), so an edge's
  user may read only its own (`Names.edge_inbox`).
- KV bucket `<name>_picture`: the current picture per party (`PictureEntry`, `picture_kv.py`);
  KV bucket `<name>_live`: the live items the core holds, as accepted, for the next core
  (`live_kv.py`: cores only, never an edge); KV bucket `<name>_lease`: who is the core
  (`lease.py`).
"""

from __future__ import annotations

import hashlib
import re

import msgspec

from commonsky.model import CotEvent

BEAT_S = 1.0  # an edge's roster beat
EDGE_SILENT_S = 6.0  # an edge not heard from for this long is gone: its clients are dropped


class Ingest(msgspec.Struct, tag="in", frozen=True):
    """One event an edge took from an authenticated client. `id` is unique per message (the
    edge's run and a counter): JetStream drops a second publish of it within its window, and
    the core records it in PostgreSQL in the same commit as the item (applied once)."""

    id: str
    edge: str
    conn: str
    party: str
    user: str
    mode: str  # the client's wire form when it sent this ("xml" or "proto")
    event: CotEvent  # as parsed by the edge, with the sender's own text (CotText)
    received: float  # the edge's wall clock, seconds


class ConnInfo(msgspec.Struct, frozen=True):
    """One client of an edge: who it is (stamped from its connection, never its content),
    its wire form, and the devices it reported (uid -> callsign), for addressing."""

    conn: str
    party: str
    user: str
    listener: str
    address: str
    mode: str
    devices: dict[str, str] = {}
    oversight: bool = False  # a party-wide view (a map page on the edge): see hub/connection.py


class Attach(msgspec.Struct, tag="attach", frozen=True):
    """A client came. `replayed`: the picture KV revision up to which the edge replayed the
    picture to it already (the core sends what changed after); None: the edge replayed
    nothing, the core sends it all. `unread`: the keys of entries the edge found but could
    not read (picture_kv.read_picture): the core sends their items whatever `replayed` says."""

    edge: str
    info: ConnInfo
    replayed: int | None
    unread: list[str] = []


class Detach(msgspec.Struct, tag="detach", frozen=True):
    edge: str
    conn: str


Inbound = Ingest | Attach | Detach


class Output(msgspec.Struct, array_like=True, frozen=True):
    """One rendered output (the bytes in `mode`) and what the edge's outbox needs to merge and
    count it (the item's key, its category, whether it may be merged); shared by every client
    of the edge that receives these very bytes."""

    party: str
    uid: str
    category: str
    received: float
    durable: bool
    mode: str
    data: bytes


class Delivery(msgspec.Struct, frozen=True):
    """The core's outputs for one edge: `outputs` once each; `sends`, (client ids, indexes
    in `outputs`): each of those clients gets those outputs in that order, and a client in
    several entries gets them entry after entry (clients getting the same outputs share an
    entry: cluster/packer.py); `close`: clients to close, with a reason; `refused`: what
    the core refused of each client's events; `ended`: the keys of the items its deletes
    name."""

    outputs: list[Output] = []
    sends: list[tuple[list[str], list[int]]] = []
    close: list[tuple[str, str]] = []
    # (client id, reason, message): events of theirs the core refused (quota, a desk's
    # check, no agreement…), counted by the client's session as the single process does.
    refused: list[tuple[str, str, str]] = []
    # Clients whose Attach the core has handled: what it owed them of their picture is in
    # `sends` before this (here or in an earlier delivery to the edge).
    attached: list[str] = []
    # Items a delete among `outputs` ends (the owner's `t-x-d-d`, a withdrawal), by key:
    # what the edge holds of them for fetching ends too (edge_long.end_holdings).
    ended: list[tuple[str, str]] = []

    def pairs(self) -> list[tuple[str, int]]:
        """(client id, index in `outputs`) for every output every client gets, each
        client's in the order it gets them (for readers that count or spy: tests, benches)."""
        return [(conn, at) for conns, indexes in self.sends for conn in conns for at in indexes]


class Roster(msgspec.Struct, frozen=True):
    edge: str
    conns: list[ConnInfo]


class PictureEntry(msgspec.Struct, array_like=True, frozen=True):
    """One item of the picture as one party sees it (`picture_kv.py`): valid while `until`
    (its stale time, or the end of the agreement that lets the party see it) is ahead."""

    party: str  # the item's key: originator party and uid
    uid: str
    category: str
    received: float
    until: float
    durable: bool
    xml: bytes
    # What the map page's JSON says besides the event (hub/render.item_json): the item's
    # store sequence and the federation path it came over ("" for this hub's own).
    seq: int = 0
    origin: str = ""


class HttpCall(msgspec.Struct, frozen=True):
    """An HTTP request an edge forwards to the core (`<name>.http`, request/reply;
    cluster/forward.py): as the client sent it, headers (its bearer token) included — the
    core authenticates it again. `sent` (the edge's wall clock, seconds) and `budget_s`: the
    core does not start a call older than the budget (by its own clock from `sent`, or from
    when it came), which is shorter than the edge waits for the answer.

    `face`: which of the hub's HTTP faces the client called — "api" (`[server] http`), or a
    TAK listener as "KIND/INDEX" ("marti/0": the first `kind = "marti"` listener of the
    config). `cert`: the client certificate's DER as the edge's TLS received it (empty for
    none): the core checks it against the listener's CA and derives the identity itself.
    `body` is the first part of the body; `more`: further `BodyPart`s follow, each sent
    only once the core acknowledged the one before (`BodyAck`)."""

    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: str
    sent: float
    budget_s: float
    face: str = "api"
    cert: bytes = b""
    more: bool = False


class HttpReply(msgspec.Struct, tag="reply", frozen=True):
    """One part of the core's answer to an `HttpCall`, sent to the call's reply subject:
    `n` counts the parts from 0; the first carries the status and headers; `last` ends it.
    `to`: in part 0 of an answer in several parts, where the edge acknowledges each part
    (`ReplyAck`): the core keeps at most `REPLY_WINDOW` parts unacknowledged."""

    n: int
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    last: bool
    to: str = ""


class BodyAck(msgspec.Struct, tag="ack", frozen=True):
    """The core took body part `n` of a call (0: the call's own `body`): the edge may send
    part n + 1, to subject `to` (the core's inbox for this call)."""

    n: int
    to: str


class BodyPart(msgspec.Struct, tag="part", frozen=True):
    """Body part `n` (from 1) of a call; `last` ends the body; `abort`: the body will not
    come whole (the client went away, or sent more than the edge allows): nothing of it may
    be kept."""

    n: int
    data: bytes
    last: bool
    abort: bool = False


class ReplyAck(msgspec.Struct, tag="rack", frozen=True):
    """The edge handed answer part `n` on to its client."""

    n: int


#: Parts of an answer the core sends ahead of the edge's acknowledgements.
REPLY_WINDOW = 4


inbound_decoder = msgspec.msgpack.Decoder(Inbound)
delivery_decoder = msgspec.msgpack.Decoder(Delivery)
roster_decoder = msgspec.msgpack.Decoder(Roster)
entry_decoder = msgspec.msgpack.Decoder(PictureEntry)
call_decoder = msgspec.msgpack.Decoder(HttpCall)
reply_decoder = msgspec.msgpack.Decoder(HttpReply)
to_edge_decoder = msgspec.msgpack.Decoder(HttpReply | BodyAck)  # (on a call's reply subject)
to_core_decoder = msgspec.msgpack.Decoder(BodyPart | ReplyAck)  # (on the core's call inbox)
encode = msgspec.msgpack.Encoder().encode

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def token(text: str) -> str:
    """`text` as one NATS subject token / KV key token (party ids and edge ids usually are
    one already; anything else is hashed)."""
    if _TOKEN.match(text):
        return text
    return "h" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def picture_key(viewer: str, key: tuple[str, str]) -> str:
    """The KV key of item `key` as party `viewer` sees it: `<viewer>.<hash of key>`."""
    raw = f"{key[0]}\x00{key[1]}".encode("utf-8", "surrogatepass")
    return f"{token(viewer)}.{hashlib.sha256(raw).hexdigest()[:40]}"


def edge_subject(edge: str) -> str:
    """The subject tokens of edge id `edge` (`<edge name>.<run>`: two tokens; any other text
    is made one or two tokens, `token`)."""
    return ".".join(token(part) for part in edge.split(".", 1))


class Names:
    """The subjects, stream, buckets and inboxes of cluster `name`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stream = f"{name}_IN"
        self.consumer = f"{name}_core"
        self.inbound = f"{name}.in.>"
        self.roster = f"{name}.roster"
        self.beats = f"{name}.beat.>"  # (the core's subscription: every edge's beat)
        self.picture = f"{name}_picture"
        self.live = f"{name}_live"  # (the cores' alone: live_kv.py)
        self.lease = f"{name}_lease"
        self.identity = f"{name}_hub"  # the hub the name is bound to (identity.py)
        self.http = f"{name}.http"  # API requests the edges forward (request/reply)
        self.core_inbox = f"_INBOX.{name}.core"  # (nats-py's inbox_prefix of a core)

    def ingest(self, edge: str) -> str:
        return f"{self.name}.in.{edge_subject(edge)}"

    def out(self, edge: str) -> str:
        return f"{self.name}.out.{edge_subject(edge)}"

    def beat(self, edge: str) -> str:
        return f"{self.name}.beat.{edge_subject(edge)}"

    def edge_inbox(self, edge_name: str) -> str:
        """The inbox prefix of the edges named `edge_name` (`[cluster] edge`)."""
        return f"_INBOX.{self.name}.edge.{token(edge_name)}"
