"""Which hub a cluster's name on a NATS server belongs to.

Everything a cluster keeps in NATS is named after `[cluster] name` (wire.py `Names`): its
stream, its buckets, its subjects. Two clusters given the same name on one NATS server would
share them — the second one's core would stand by for the first one's lease, take it when that
core dies, and apply the first cluster's stream (other parties' items) into its own database.
So the name is bound to one hub: the bucket `<name>_hub` holds the hub_id of the database that
first served under it, and a core whose database names another hub (or an empty database
about to be made a new hub) is refused with one line — at its start, before it stands by for
the lease, and again at the takeover, when its hub_id is certain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from commonsky.errors import UsageError

from .nats_io import identity_bucket
from .wire import Names

if TYPE_CHECKING:
    from nats.js import JetStreamContext

_KEY = "hub_id"


async def bound_hub(js: JetStreamContext, names: Names) -> str | None:
    """The hub_id the cluster's name is bound to on this NATS server (None: not yet)."""
    from nats.js.errors import KeyNotFoundError

    kv = await identity_bucket(js, names)
    try:
        entry = await kv.get(_KEY)
    except KeyNotFoundError:
        return None
    return (entry.value or b"").decode("utf-8", "replace") or None


async def check_name(js: JetStreamContext, names: Names, hub_id: str | None) -> None:
    """At a core's start: refuse a database (hub `hub_id`, None for one not yet a hub's)
    that is not the hub the name is bound to. Raises UsageError (one line)."""
    bound = await bound_hub(js, names)
    if bound is not None and hub_id != bound:
        raise UsageError(_refusal(names, bound, hub_id))


async def bind_name(js: JetStreamContext, names: Names, hub_id: str) -> None:
    """At a takeover: bind the name to `hub_id` if it is not bound yet (the first core of a
    cluster, or one from before this check), else check it as `check_name` does. A `create`,
    so that two first cores racing cannot both bind. Raises UsageError (one line)."""
    from nats.js.errors import KeyWrongLastSequenceError

    kv = await identity_bucket(js, names)
    try:
        await kv.create(_KEY, hub_id.encode())
    except KeyWrongLastSequenceError:
        await check_name(js, names, hub_id)


def _refusal(names: Names, bound: str, hub_id: str | None) -> str:
    this = f"hub {hub_id}" if hub_id else "an empty database (a new hub)"
    return (
        f"[cluster] name {names.name!r} on this NATS server belongs to hub {bound}, and "
        f"store_url holds {this}: give this cluster a name of its own, or, to start the "
        f"name afresh, remove its stream and buckets ({names.stream}, KV {names.picture}, "
        f"{names.lease}, {names.identity})"
    )
