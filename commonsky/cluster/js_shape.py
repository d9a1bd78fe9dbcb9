"""What the cluster's inbound stream and KV buckets must be, checked when a process finds
them made already.

Every process of a cluster makes the stream and the buckets it uses when they are missing
(nats_io.py `ensure_stream`, `picture_bucket`, `live_bucket`), and otherwise uses what it
finds: made by another process of the cluster, by an edge's user before any core ran
(docs/architecture.md, "Why an edge may make the stream and the picture bucket"), by an
operator's `nats` command, or by another application under the same name. What it finds is
read back (`stream_info`) and compared, field by field, with what the cluster relies on. A
difference that breaks a guarantee stops the process at start with one line
(`JetStreamMismatch`, a UsageError: `commonsky serve` prints it, exit status 2) naming the
stream or bucket, each field, what it is, what it must be, and what the operator can do.
Nothing is changed on the server: a refused start leaves the stream, its messages and the
buckets as they were (a fix in place is the operator's call, not a process's).

The rules, and why (NATS: docs.nats.io, nats-concepts/jetstream/streams, its Configuration
table — the "Editable" column decides the remedy — and its RetentionPolicy note that "any
limits, if defined, will still be enforced" on a work queue):

Stream `<name>_IN` (wire.py):
- retention `workqueue` (not editable): the core's acknowledgement is what removes a
  message. `limits` keeps every message for good; `interest` drops a message published
  while no consumer exists — every message an edge takes before the first core, and those
  pending when a core deletes its durable consumer at its takeover (core.py `start`).
- storage `file` (not editable): the edge acknowledges its client once the stream holds the
  message; in memory it is lost when nats-server restarts.
- subjects exactly `<name>.in.>` (editable): without it an edge's publish is stored nowhere
  (or only some edges' are); with another subject the work queue also takes messages that
  are not inbound (another of the cluster's subjects: its requests answered by JetStream's
  acknowledgement instead of their reader).
- duplicate window at least DUPLICATE_WINDOW_S (editable): an edge publishes again, under
  the same `Nats-Msg-Id`, a message whose acknowledgement it did not get within that; a
  shorter window stores the second copy. A longer one is kept: the server remembers message
  ids longer, which costs it memory, nothing else.
- no max age, and no message, byte or per-subject limit with discard `old` (editable):
  either removes messages no core applied. A limit with discard `new` is kept: a full stream
  refuses the publish, and the edge sees the refusal (nothing acknowledged is lost).

Buckets `<name>_picture`, `<name>_live` (streams `KV_<bucket>`):
- storage `file` (not editable): the picture a late joiner is replayed, and the live items
  the next core restores (live_kv.py), must outlive a nats-server restart.
- history 1 (the stream's max messages per subject; editable): markers.py removes a delete
  marker on the rule that it is its key's only message.
- no TTL (the stream's max age; editable): an entry that expires is an item a late joiner
  or the next core never gets.

Bucket `<name>_hub` (identity.py: the hub the cluster's name is bound to):
- storage `file` and no TTL, as above: a binding lost (a nats-server restart, an expiry)
  leaves the name free for another hub's core until the next takeover binds it again.
- history is not checked: `bound_hub` reads the latest value and `bind_name` is a KV
  `create`, which a kept history changes nothing of.

Bucket `<name>_lease` (lease.py; nothing durable in it: a holder's entry, which lives the
bucket's TTL unless renewed):
- TTL (the stream's max age; editable) equal to `[cluster] lease_ttl_s`: the lease's length
  is the bucket's (lease.py sets no TTL of its own per entry), and a holder renews every
  lease_ttl_s/3 and gives up once its own lease_ttl_s nearly passed. Against a shorter TTL
  its entry expires between two renewals, a standby's `create` wins, and the holder goes on
  applying until its next renewal fails: two cores at once. A longer one only delays a
  takeover, but a bucket unlike the configuration means processes of the cluster disagree
  on it, so any difference is refused (a millisecond of rounding aside). The fix is not an
  edit in place while cores run on the old value: every process stopped, then the bucket
  removed (the next core makes it again) or `lease_ttl_s` set back.
- storage `file`: a memory bucket loses the holder's entry at a nats-server restart, and a
  standby's `create` can win before the holder's next renewal finds out (two cores).
- history is not checked: renewals and releases name the revision they follow, and `create`
  after a release takes the delete marker into account (nats-py `KeyValue.create`).

Anything else (replicas, description, size limits of a bucket, direct get, …) is kept as
found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from commonsky.errors import UsageError

if TYPE_CHECKING:
    from nats.js.api import StreamConfig


class JetStreamMismatch(UsageError):
    """The cluster's stream or a bucket exists with a configuration that breaks what the
    cluster relies on (one line: which, each field as it is and as it must be, the fix)."""


@dataclass(frozen=True)
class Wrong:
    """One field found otherwise than the cluster needs: its name as `nats stream info`
    says it, what it is, what it must be, and whether NATS lets it be edited in place."""

    field: str
    found: str
    needed: str
    editable: bool

    def __str__(self) -> str:
        return f"{self.field} {self.found} (must be {self.needed})"


def _value(x: Any) -> str:
    """An enum's value (nats-py leaves some fields as plain strings), or the thing."""
    return str(getattr(x, "value", x))


def _seconds(s: float) -> str:
    return f"{s:g} s"


def _on_disk(config: StreamConfig) -> list[Wrong]:
    """[] for a stream kept in files; else its storage, which cannot be edited in place."""
    if _value(config.storage) == "file":
        return []
    return [Wrong("storage", repr(_value(config.storage)), "'file'", False)]


def stream_wrongs(config: StreamConfig, inbound: str, window_s: float) -> list[Wrong]:
    """What is wrong with the inbound stream `config` (nats-py's, as `stream_info` read it:
    durations in seconds) for a cluster whose inbound subject is `inbound` and whose edges
    retry within `window_s` seconds; [] when it will do."""
    wrongs: list[Wrong] = []
    if _value(config.retention) != "workqueue":
        wrongs.append(Wrong("retention", repr(_value(config.retention)), "'workqueue'", False))
    wrongs += _on_disk(config)
    subjects = list(config.subjects or [])
    if subjects != [inbound]:
        wrongs.append(Wrong("subjects", repr(subjects), repr([inbound]), True))
    if (config.duplicate_window or 0.0) < window_s:
        found = _seconds(config.duplicate_window or 0.0)
        wrongs.append(Wrong("duplicate window", found, f"at least {_seconds(window_s)}", True))
    if config.max_age:
        wrongs.append(Wrong("max age", _seconds(config.max_age), "0, none", True))
    if _value(config.discard) != "new":
        limits = (("max messages", config.max_msgs), ("max bytes", config.max_bytes),
                  ("max messages per subject", config.max_msgs_per_subject))  # fmt: skip
        for field, limit in limits:
            if limit is not None and limit > 0:
                needed = "-1, none, while discard is 'old'"
                wrongs.append(Wrong(field, str(limit), needed, True))
    return wrongs


def bucket_wrongs(config: StreamConfig, history: bool = True) -> list[Wrong]:
    """What is wrong with a picture or live bucket's stream `config` (`history`: checked;
    False for the identity bucket); [] when it will do."""
    wrongs = _on_disk(config)
    if history and config.max_msgs_per_subject != 1:
        wrongs.append(Wrong("history", str(config.max_msgs_per_subject), "1", True))
    if config.max_age:
        wrongs.append(Wrong("ttl", _seconds(config.max_age), "0, none", True))
    return wrongs


#: How far the lease bucket's TTL may be from `lease_ttl_s` (seconds): the server keeps
#: nanoseconds, nats-py converts floats.
_TTL_SLACK_S = 0.001


def lease_wrongs(config: StreamConfig, ttl_s: float) -> list[Wrong]:
    """What is wrong with the lease bucket's stream `config` for processes whose
    `lease_ttl_s` is `ttl_s` seconds; [] when it will do."""
    wrongs = _on_disk(config)
    found = config.max_age or 0.0
    if abs(found - ttl_s) > _TTL_SLACK_S:
        said = _seconds(found) if found else "0 (none)"
        needed = f"{_seconds(ttl_s)}, as $.cluster.lease_ttl_s says"
        wrongs.append(Wrong("ttl", said, needed, True))
    return wrongs


def stream_refusal(cluster: str, stream: str, wrongs: list[Wrong]) -> JetStreamMismatch:
    """The one line for the inbound stream `stream` of cluster `cluster` found `wrongs`."""
    what = f"NATS stream {stream}"
    if all(w.editable for w in wrongs):
        fix = f"change it with `nats stream edit {stream}`"
    else:
        fix = (f"stop the cluster's processes and remove it with `nats stream rm {stream}` "
               "(the messages in it no core applied are lost), then start them again")  # fmt: skip
    return _refusal(cluster, what, wrongs, fix)


def bucket_refusal(cluster: str, bucket: str, wrongs: list[Wrong]) -> JetStreamMismatch:
    """The one line for the KV bucket `bucket` of cluster `cluster` found `wrongs`."""
    what = f"NATS KV bucket {bucket}"
    if all(w.editable for w in wrongs):
        fix = f"change it with `nats stream edit KV_{bucket}`"
    else:
        fix = (f"stop the cluster's processes and remove it with `nats kv rm {bucket}` (its "
               "entries are lost), then start them again")  # fmt: skip
    return _refusal(cluster, what, wrongs, fix)


def lease_refusal(cluster: str, bucket: str, wrongs: list[Wrong]) -> JetStreamMismatch:
    """The one line for the lease bucket `bucket` of cluster `cluster` found `wrongs`. Not an
    edit in place: a core still running on the bucket's TTL would hold the lease by other
    rules than a new one; when the TTL alone differs, setting it back is offered too."""
    what = f"NATS KV bucket {bucket}"
    fix = (f"stop every process of the cluster, remove it with `nats kv rm {bucket}` (it "
           "holds nothing durable: the next core makes it again) and start them again")  # fmt: skip
    if len(wrongs) == 1 and wrongs[0].field == "ttl" and wrongs[0].found.endswith(" s"):
        fix += f", or set $.cluster.lease_ttl_s back to {wrongs[0].found.removesuffix(' s')}"
    return _refusal(cluster, what, wrongs, fix)


def _refusal(cluster: str, what: str, wrongs: list[Wrong], fix: str) -> JetStreamMismatch:
    fixed = [w.field for w in wrongs if not w.editable]
    cannot = f"; {' and '.join(fixed)} cannot be changed in place" if fixed else ""
    found = ", ".join(str(w) for w in wrongs)
    return JetStreamMismatch(
        f"[cluster] name {cluster!r}: {what} exists with {found}{cannot}: {fix} (or, if it "
        f"is not this cluster's, give the cluster another name: $.cluster.name)"
    )
