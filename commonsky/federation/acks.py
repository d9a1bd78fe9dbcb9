"""Acknowledgements and signed receipts on federation links (the ledger side of #17).

For the durable items it applies from a link, the receiving hub answers with a batched
acknowledgement carrying a **receipt**: for each copy its position on the link and the
sequence of the item's entry in the receiver's own ledger, under one checkpoint the receiver
signs, with an RFC 6962 consistency proof from the last head it gave that peer. The
receiver records a `fed-ack` entry; the sender checks the signature and the proof (a peer
whose new log does not extend its last one is a FORK: logged, counted, not recorded),
records a `fed-receipt` entry and moves its cursor. Signed heads also go every
`timeout_checkpoint_s` when nothing flows. The message forms are receipts.py's.

A peer answers for what was sent to it only: an acknowledgement past the last durable
position given on the link moves the cursor no further than that position, and a receipt's
entries for positions never given on the link (another party's item, one never sent) are
refused — counted and logged — and never recorded, so no party's item is marked acknowledged
by a peer that never had it. Each entry (and a head alone: the link's parties) is seen only
by the parties of the items it covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from commonsky.errors import RemoteProtocolError

from .mapping import ack
from .receipts import KIND_ACK, KIND_RECEIPT, parse_receipt, receipt_json
from .seam import CURSOR_IN, CURSOR_OUT, HubSeam

if TYPE_CHECKING:
    from .link import Link

log = logging.getLogger("commonsky.federation")
ACK_DELAY_S = 0.05  # acknowledgements are batched over this long


class Acks:
    """One hub's acknowledgements and receipts, over all its links."""

    def __init__(
        self,
        seam: HubSeam,
        links: dict[str, Link],
        own: frozenset[str],
        refuse: Callable[[Link, str, str], None] = lambda link, reason, detail: None,
    ) -> None:
        self.seam = seam
        self.links = links
        self.own = own
        self.refuse = refuse  # a peer's fault: counted and logged (bridge.Federation.refuse)
        self.acked: dict[str, int] = {}  # link -> the last position the peer acknowledged
        # link -> durable positions given to the (CommonSky) peer and not yet acknowledged,
        # ascending; and the highest position given on it since this hub started.
        self._unacked: dict[str, array[int]] = {}
        self._given: dict[str, int] = {}
        self.forks: dict[str, int] = {}  # link -> receipts refused as a fork
        self._ack_due: dict[str, int] = {}
        self._receipts: dict[str, list[tuple[int, int]]] = {}  # link -> (position, ledger seq)
        self._signed_size: dict[str, int] = {}  # link -> size of the last head we gave it
        self._peer_head: dict[str, tuple[bytes, int, bytes]] = {}  # link -> key, size, root
        self._heads_only: set[str] = set()  # links owed a signed head with no new entries

    def given(self, link: Link, position: int) -> None:
        """A durable copy at `position` went into the link's stream: the peer may answer
        for it (a TAK Server does not answer: nothing kept)."""
        if not link.peer_is_commonsky:
            return
        self._given[link.name] = max(position, self._given.get(link.name, 0))
        sent = self._unacked.setdefault(link.name, array("q"))
        at = bisect_left(sent, position)
        if at == len(sent) or sent[at] != position:  # (sent again after a reconnect: kept)
            sent.insert(at, position)

    def applied(self, link: Link, position: int, ledger_seq: int | None) -> None:
        """A durable copy applied from `link` (its entry in our ledger, if any): to be
        acknowledged, with a receipt."""
        if ledger_seq is not None:
            self._receipts.setdefault(link.name, []).append((position, ledger_seq))
        self.ack(link, position)

    def ack(self, link: Link, position: int) -> None:
        if not link.peer_is_commonsky:
            return
        first = link.name not in self._ack_due
        self._ack_due[link.name] = max(position, self._ack_due.get(link.name, 0))
        if first:
            with contextlib.suppress(RuntimeError):  # (no loop: tests without I/O)
                asyncio.get_running_loop().call_later(ACK_DELAY_S, self.flush)

    def flush(self) -> None:
        """Acknowledge what was applied since the last time, each link with a receipt: the
        ledger entries of those items under one checkpoint we sign, recorded here too."""
        due, self._ack_due = self._ack_due, {}
        checkpoint = None
        for name, position in due.items():
            entries = self._receipts.pop(name, [])
            text = ""
            heads_only = name in self._heads_only
            self._heads_only.discard(name)
            if entries or heads_only:
                checkpoint = checkpoint or self.seam.sign_checkpoint()
                if checkpoint is not None:
                    # With a proof that our log still extends the one we signed for this
                    # peer last time: a hub that rewrote its past is caught as it answers.
                    since = self._signed_size.get(name, 0)
                    proof = self.seam.consistency(since, checkpoint["size"]) if since else []
                    self._signed_size[name] = checkpoint["size"]
                    text = receipt_json(entries, checkpoint, since, proof)
                    # Seen by the parties of the items it acknowledges (a head alone: the
                    # link's), never by a party of ours that none of them concerns.
                    parties = self.seam.parties_of(seq for _, seq in entries)
                    self.seam.record(
                        KIND_ACK,
                        sorted(parties) if entries else list(self.links[name].config.parties),
                        {"link": name, "entries": entries, "checkpoint_size": checkpoint["size"]},
                    )
            self.links[name].send(ack(position, self.seam.clock(), text))

    def acknowledged(self, link: Link, position: int, receipt: str) -> None:
        """The peer applied everything up to `position`: move the cursor (no further than
        what was given to it); record its signed receipt in our ledger once its signature
        holds, for what was given to it only."""
        position = min(position, self._given.get(link.name, 0))
        if receipt:
            from commonsky.ledger.entry import EntryError
            from commonsky.ledger.log import SignedCheckpoint

            parsed = parse_receipt(receipt)
            try:
                head = SignedCheckpoint.from_json(parsed.checkpoint) if parsed else None
            except EntryError:
                head = None
            if parsed is None or head is None or not head.verify():
                raise RemoteProtocolError("bad_receipt", "a receipt that does not verify")
            last = self._peer_head.get(link.name)
            self._check_fork(link, head, parsed.since, parsed.consistency)
            entries, checkpoint = self._sent_only(link, parsed.entries), parsed.checkpoint
            # A head alone that the peer gave before (same key, size, root) tells nothing
            # new: recorded once. (A peer repeating it grew our ledger an entry a message;
            # a live peer's head grows at every exchange, as it records ours.)
            again = last == (head.hub_key, head.size, head.root) and not parsed.entries
            # Who told whom what and when, for the parties of those items only: the rest of
            # ours (a rival of theirs, perhaps) learn nothing of that traffic from it — nor
            # of a head alone, which covers no item of theirs (seen by the link's parties).
            # A receipt left with none of the entries it had answers for nothing given.
            if entries or not (parsed.entries or again):
                mine = self.seam.parties_of(self.seam.entry_at(p >> 10) for p, _ in entries)
                self.seam.record(
                    KIND_RECEIPT,
                    sorted(self.own & mine) if entries else list(link.config.parties),
                    {
                        "link": link.name,
                        "entries": [list(e) for e in entries],
                        "checkpoint": checkpoint,
                    },
                )
        if position <= self.acked.get(link.name, 0):
            return
        self.acked[link.name] = position
        sent = self._unacked.get(link.name)
        if sent is not None:
            del sent[: bisect_right(sent, position)]
        self.seam.set_cursor(CURSOR_OUT, link.name, position)

    def _sent_only(self, link: Link, entries: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The receipt's entries for positions given to this peer and not acknowledged
        before. Those acknowledged before are answered for already (a copy sent again in a
        race with its acknowledgement): left out. The others were never given on this link:
        refused, counted and logged, once per receipt."""
        sent = self._unacked.get(link.name, array("q"))
        done = self.acked.get(link.name)
        if done is None:
            done = self.seam.cursor(CURSOR_OUT, link.name)

        def given(position: int) -> bool:
            at = bisect_left(sent, position)
            return at < len(sent) and sent[at] == position

        kept = [(p, s) for p, s in entries if given(p)]
        wrong = [p for p, _ in entries if p > done and not given(p)]
        if wrong:
            self.refuse(
                link,
                "ack_not_sent",
                f"a receipt for {len(wrong)} positions never given on this link (the first: "
                f"seq {wrong[0] >> 10} part {wrong[0] & 1023}); not recorded",
            )
        return kept

    def _check_fork(self, link: Link, head: Any, since: int, proof: list[bytes]) -> None:
        """The peer's new signed head must extend the last one it gave us (same key)."""
        from commonsky.ledger import merkle

        last = self._peer_head.get(link.name)
        if (
            last is not None
            and last[0] == head.hub_key
            and last[1] == since
            and not merkle.verify_consistency(since, head.size, last[2], head.root, proof)
        ):
            self.forks[link.name] = self.forks.get(link.name, 0) + 1
            log.error(
                "federation link %s: FORK: the peer's log of size %d does not extend the "
                "one of size %d it signed before; its receipts are refused",
                link.name,
                head.size,
                since,
            )
            raise RemoteProtocolError("fork", "the peer's log does not extend its last head")
        self._peer_head[link.name] = (head.hub_key, head.size, head.root)

    def send_head(self, name: str) -> None:
        """Our signed head (and consistency proof) to one CommonSky peer now."""
        link = self.links[name]
        if link.up and link.peer_is_commonsky and self.seam.recorder is not None:
            self._ack_due.setdefault(name, self.seam.cursor(CURSOR_IN, name))
            self._receipts.setdefault(name, [])
            self._heads_only.add(name)
            self.flush()

    def exchange(self) -> None:
        """Give every CommonSky peer our signed head (with the consistency proof from the
        last one it got), whether or not durable items flowed: each side's ledger records
        the other's heads, and a fork is caught within one period (`timeout_checkpoint_s`)."""
        for name, link in self.links.items():
            if link.up and link.peer_is_commonsky and name not in self._ack_due:
                self._ack_due[name] = self.seam.cursor(CURSOR_IN, name)
                self._receipts.setdefault(name, [])
                self._heads_only.add(name)
        self.flush()

    async def run(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                self.exchange()
            except Exception:  # our bug: logged, the links and the hub go on
                log.exception("federation: checkpoint exchange failed")
