"""One logical hub on several processes: edges and one core, over NATS JetStream and PostgreSQL.

The decided shape (docs/architecture.md, "Cluster"; ../DESIGN.md §5): edge processes hold the
clients' connections and publish what they accept to a JetStream stream; one core at a time
(`lease.Lease`) applies the stream to the hub (policy, PostgreSQL store, ledger, desks) and sends
each edge only what its clients may see. `[cluster]` in the config (`config.ClusterSettings`)
turns it on; without it, `commonsky serve` is the embedded single process, unchanged.

nats-py is an optional dependency (`pip install 'commonsky[cluster]'`): `require_nats` says so in
one line when a cluster is configured without it.
"""

from __future__ import annotations

from commonsky.errors import UsageError


def require_nats() -> None:
    """Raise UsageError (one line) when nats-py, which a cluster needs, is not installed."""
    try:
        import nats  # noqa: F401
    except ImportError:
        raise UsageError("[cluster] needs nats-py: pip install 'commonsky[cluster]'") from None
