"""Acknowledgements and signed receipts on federation links (the ledger side of #17).

For the durable items it applies from a link, the receiving hub answers with a batched
acknowledgement carrying a **receipt**: for each copy its position on the link and the
sequence of the item's entry in the receiver's own ledger, under one checkpoint the receiver
signs, with an RFC 6962 consistency proof from the last head it gave that peer. The
receiver records a `fed-ack` entry; the sender checks the signature and the proof (a peer
whose new log does not extend its last one is a FORK: logged, counted, not recorded),
records a `fed-receipt` entry and moves its cursor. Signed heads also go every
`timeout_checkpoint_s` when nothing flows. The message forms are receipts.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

    def __init__(self, seam: HubSeam, links: dict[str, Link], own: frozenset[str]) -> None:
        self.seam = seam
        self.links = links
        self.own = own
        self.acked: dict[str, int] = {}  # link -> the last position the peer acknowledged
        self.forks: dict[str, int] = {}  # link -> receipts refused as a fork
        self._ack_due: dict[str, int] = {}
        self._receipts: dict[str, list[tuple[int, int]]] = {}  # link -> (position, ledger seq)
        self._signed_size: dict[str, int] = {}  # link -> size of the last head we gave it
        self._peer_head: dict[str, tuple[bytes, int, bytes]] = {}  # link -> key, size, root
        self._heads_only: set[str] = set()  # links owed a signed head with no new entries

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
        """The peer applied everything up to `position`: move the cursor; record its
        signed receipt in our ledger once its signature holds."""
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
            self._check_fork(link, head, parsed.since, parsed.consistency)
            entries, checkpoint = parsed.entries, parsed.checkpoint
            # Who told whom what and when, for the parties of those items only: the rest of
            # ours (a rival of theirs, perhaps) learn nothing of that traffic from it.
            mine = self.seam.parties_of(self.seam.entry_at(p >> 10) for p, _ in entries)
            self.seam.record(
                KIND_RECEIPT,
                sorted(self.own & mine if entries else self.own),
                {
                    "link": link.name,
                    "entries": [list(e) for e in entries],
                    "checkpoint": checkpoint,
                },
            )
        self.acked[link.name] = position
        self.seam.set_cursor(CURSOR_OUT, link.name, position)

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
