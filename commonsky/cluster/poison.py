"""A poison message: one stream message whose application fails in a way nobody foresaw.

`trust.py` drops what is malformed before it is applied; what is left is our own bugs and
values the database refuses (a psycopg.DataError for NUL in a message id was one, until
`bad_text`). Unhandled, such an exception left the core's consumer, the core stopped without
acknowledging the message, and every core taking the lease after it got the same message and
stopped too: one message stopped the hub for good. `ClusterCore._commit` (core.py) therefore
guards each message as the single process guards each client's event (hub/listeners.py
`_failed`): the message is dropped — counted (`commonsky_internal_errors_total{where=
"core_apply"}` and `commonsky_cluster_dropped_total{reason="internal_error"}`), one line with
its traceback naming its edge and id (rate-limited per edge) — its id recorded as applied and
acknowledged with its batch, and the other messages of its segment are applied once each.

Three cases; the first two told apart by the state of the store's transaction
(`PostgresStore.refused`, read after each message):

- The transaction is sound (a Python exception): the segment goes on in the same
  transaction, and what the failed message did before it raised stays, written and in memory,
  as when `Hub.accept` raises in one process (its transaction still commits: store/base.py
  `NestedBlocks`). Nothing is applied twice: the messages before it were applied once, the
  ones after it are applied once, all in the one commit; no re-application is needed.
- The database refused one of its statements (`Aborted`): PostgreSQL has thrown the whole
  transaction away, the segment's other messages included, while the hub's memory holds what
  they did (picture, desks' state, the ledger's frontier, their outputs queued). Memory cannot
  be rolled back, and applying them again on it would deliver and record them twice; serving on
  without applying them again would deliver durable items that are not stored. So the core
  records the message's id as applied (its own small commit: a message never comes twice) and
  stops (fail-stop, `Fatal`, its queued outputs unsent); the next core builds its memory from
  PostgreSQL, applies the others once each and finds this one's id applied. One failover, not
  a hub stopped for good.
- Recording the segment's ids fails (no one message to blame): the segment is rolled back
  (`PostgresStore.abandon`: left by an exception, the block would commit its items without
  their ids, and the next core would apply them again) and the core stops, nothing recorded.
  A message to blame for it is left to the checks (trust.py `bad_text` for NUL in an id).

Only `StoreUnavailable` (an outage: the database away, or another core is its writer) is not
guarded: an outage must stop the core, not drop messages.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from commonsky.errors import StoreUnavailable

from .wire import Detach, Ingest

if TYPE_CHECKING:
    from commonsky.hub.core import Hub
    from commonsky.store.postgres import PostgresStore

log = logging.getLogger("commonsky.cluster")


class Aborted(StoreUnavailable):
    """The database refused a statement made applying `envelope` (None: recording the
    segment's ids failed, no one message to blame): the segment's transaction is rolled back
    (a StoreUnavailable, so that the hub publishes none of its items: hub/core.py)."""

    reason = "store_refused"

    def __init__(self, envelope: Ingest | Detach | None) -> None:
        what = "the segment's ids" if envelope is None else f"message {name(envelope)}"
        super().__init__(f"the database refused what applying {what} wrote")
        self.envelope = envelope


def name(envelope: Ingest | Detach) -> str:
    """How a log line names a stream message: its edge and id (a Detach: its connection)."""
    if isinstance(envelope, Ingest):
        return f"{envelope.id[:120]!r} of edge {envelope.edge[:120]!r}"
    return f"Detach of {envelope.conn[:120]!r} from edge {envelope.edge[:120]!r}"


def report(hub: Hub, envelope: Ingest | Detach) -> None:
    """Count and log a dropped message, with the traceback of the exception being handled."""
    hub.metrics.internal_error("core_apply")
    hub.metrics.cluster_drop("internal_error")
    hub.log_limited(log, "internal_core_apply", envelope.edge[:200],
                    "core: applying message %s failed; dropped (the core goes on)",
                    name(envelope), level=logging.ERROR,
                    exc_info=True)  # fmt: skip


def stopping(hub: Hub, store: PostgresStore, envelope: Ingest | Detach | None,
             seqs: dict[str, int]) -> str:  # fmt: skip
    """The core stops on `Aborted`: the message to blame is counted, logged and its id
    recorded as applied (`seqs`: id -> stream sequence) in a commit of its own, so that the
    next core does not apply it again. Returns what became of it, for the core's last line;
    never raises (the core stops whatever happens here)."""
    if envelope is None:  # (its traceback in the core's last line: the Fatal's cause)
        hub.metrics.internal_error("core_apply")
        return "no one message to blame, none recorded"
    report(hub, envelope)
    if not isinstance(envelope, Ingest):
        return "nothing to record"
    try:
        with store.transaction():
            store.mark_applied([envelope.id], time.time(), [seqs.get(envelope.id, 0)])
    except Exception as exc:  # (then it comes again: to the next core, which stops too)
        return f"its id NOT recorded ({type(exc).__name__}: {str(exc)[:200]})"
    return "its id recorded as applied"
