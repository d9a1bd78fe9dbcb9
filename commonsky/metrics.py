"""Prometheus metrics, one registry per hub (so several hubs can live in one test process).

Labelled children are cached: a delivery costs a dict lookup, not a label resolution.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "commonsky_connections", "Open TAK connections.", ["listener", "party"], registry=r
        )
        # Counted per item and per write: lock-free (`FastCounter`), like the latency.
        self.items_in = FastCounter(
            "commonsky_items_in", "Items accepted from parties.", ("party", "category")
        )
        self.items_out = FastCounter(
            "commonsky_items_out", "Items written to connections.", ("party", "category")
        )
        r.register(self.items_in)
        r.register(self.items_out)
        self.refusals = Counter(
            "commonsky_refusals", "Messages refused, by reason.", ["reason"], registry=r
        )
        self.queue_drops = Counter(
            "commonsky_queue_drops",
            "Live updates dropped or coalesced for slow readers.",
            ["policy"],
            registry=r,
        )
        self.closed = Counter(
            "commonsky_connections_closed", "Connections closed by the hub.", ["reason"], registry=r
        )
        self.quarantined = Counter(
            "commonsky_quarantined_items",
            "Stored items set aside at start because they could not be rebuilt (see the "
            "log and DATA_DIR/quarantine.jsonl), by where they were found.",
            ["where"],
            registry=r,
        )
        self.render_failures = Counter(
            "commonsky_render_failures",
            "Items that could not be rendered in one wire form (not sent in it).",
            ["mode"],
            registry=r,
        )
        self.internal_errors = Counter(
            "commonsky_internal_errors",
            "Our own bugs caught and logged with a traceback, by where (should stay 0).",
            ["where"],
            registry=r,
        )
        self.cluster_dropped = Counter(
            "commonsky_cluster_dropped",
            "Messages a cluster core took from its inbound stream and dropped, failing its "
            "checks of what an edge may say (cluster/trust.py), by reason, or (internal_error) "
            "whose application failed (cluster/poison.py); and picture entries, roster "
            "answers an edge or core could not read.",
            ["reason"],
            registry=r,
        )
        self.latency = FastHistogram(
            "commonsky_delivery_latency_seconds",
            "From acceptance to the write on a recipient's socket.",
            _LATENCY_BUCKETS,
        )
        r.register(self.latency)
        # Launch warnings: how long each round of fusion and assessment takes, and how many
        # reports it settles (more than one: the hub caught up on a burst).
        self.launch_round = FastHistogram(
            "commonsky_launch_round_seconds",
            "Settling one round of launch reports: fusion, assessment, publication.",
            _LATENCY_BUCKETS,
        )
        self.launch_round_reports = FastHistogram(
            "commonsky_launch_round_reports",
            "Launch reports settled per round.",
            (1, 2, 4, 8, 16, 32, 64),
        )
        r.register(self.launch_round)
        r.register(self.launch_round_reports)
        self._cache: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}

    def child(self, metric: MetricWrapperBase, *labels: str) -> MetricWrapperBase:
        key = (id(metric), labels)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = metric.labels(*labels)
        return found

    def count_in(self, party: str, category: str) -> None:
        self.items_in.inc((party, category))

    def count_out(self, party: str, category: str, n: int = 1) -> None:
        self.items_out.inc((party, category), n)

    def refuse(self, reason: str) -> None:
        self.child(self.refusals, reason).inc()  # type: ignore[attr-defined]

    def drop(self, policy: str) -> None:
        self.child(self.queue_drops, policy).inc()  # type: ignore[attr-defined]

    def close(self, reason: str) -> None:
        self.child(self.closed, reason).inc()  # type: ignore[attr-defined]

    def render_failed(self, mode: str) -> None:
        self.child(self.render_failures, mode).inc()  # type: ignore[attr-defined]

    def cluster_drop(self, reason: str) -> None:
        self.child(self.cluster_dropped, reason).inc()  # type: ignore[attr-defined]

    def internal_error(self, where: str) -> None:
        self.child(self.internal_errors, where).inc()  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def render_for(self, party: str) -> bytes:
        """Only the series labelled with `party` (its own activity): the hub-wide figures
        (refusals, latency, other parties' traffic) are the operator's."""
        return generate_latest(_OnlyParty(self.registry, party))

    def render_public(self, version: str) -> bytes:
        """What anyone may scrape without a token: that this process answers (`commonsky_up`)
        and its build, nothing that moves with any party's traffic (counts of items,
        connections or deliveries would tell one rival of another's activity)."""
        public = CollectorRegistry()
        Gauge("commonsky_up", "1 while this hub process serves.", registry=public).set(1)
        Gauge(
            "commonsky_build_info", "The CommonSky version.", ["version"], registry=public
        ).labels(version).set(1)
        return PUBLIC_NOTE + generate_latest(public)


#: The first line of the token-less /metrics (a Prometheus comment).
PUBLIC_NOTE = (
    b"# commonsky: the other series need a bearer token: operator_token for all of them, "
    b"a party's own token for that party's\n"
)


class _OnlyParty(Collector):
    def __init__(self, registry: CollectorRegistry, party: str) -> None:
        self.registry = registry
        self.party = party

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [s for s in family.samples if s.labels.get("party") == self.party]
            if samples:
                own = Metric(family.name, family.documentation, family.type, family.unit)
                own.samples = samples
                yield own


class FastCounter(Collector):
    """A lock-free labelled counter for the hot path (one event loop writes it), exposed as
    prometheus_client's `Counter` is: `NAME_total` and `NAME_created` for each label set.

    prometheus_client's takes a lock and resolves a child per increment; items in and out
    are counted per item and per write (`commonsky bench relay`, docs/performance.md)."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}  # epoch seconds of the first count

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """Add `amount` (>= 0) to the series of `labels` (one value per label name)."""
        values = self.values
        if labels in values:
            values[labels] += amount
        else:
            values[labels] = float(amount)
            self.created[labels] = time.time()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(list(labels), value, created=self.created[labels])
        yield family


class Tally(NamedTuple):
    """Observations bucketed once (`FastHistogram.tally`): (bucket index, count) for each
    bucket that has any, and their sum."""

    buckets: tuple[tuple[int, int], ...]
    sum: float


class FastHistogram(Collector):
    """A lock-free histogram for the delivery hot path (one event loop writes it).

    prometheus_client's Histogram takes a lock per observation; at tens of thousands of
    deliveries a second that is measurable, and only one thread ever observes here.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        if value < 0.0:
            value = 0.0
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def tally(self, values: Iterable[float]) -> Tally:
        """`values` as observations to `add` later, once or several times (a batch of items
        written to each connection of a party: bucketed once, added per connection).

        A batch's latencies mostly fall in one or two buckets: the buckets of its least and
        greatest value are found, and only the bounds between them are looked up (in the
        sorted values), instead of a search of the bounds per value, which was half the
        cost of summing up a batch (docs/performance.md, #19). The same counts and sum as
        `observe` of each: a negative value (a clock that stepped) is 0; a NaN takes the
        value-by-value way (it sorts nowhere)."""
        given = values if isinstance(values, list) else list(values)
        if not given:
            return Tally((), 0.0)
        bounds = self.bounds
        low, high = min(given), max(given)
        kept = [0.0 if value < 0.0 else value for value in given] if low < 0.0 else given
        total = sum(kept, 0.0)
        if total != total or (bounds and bounds[0] < 0.0):  # (NaN; or bounds not ours)
            return self._tally_each(given)
        first, last = bisect_left(bounds, max(low, 0.0)), bisect_left(bounds, high)
        if first == last:
            return Tally(((first, len(kept)),), total)
        ordered = sorted(kept)
        buckets = []
        below = 0  # values in the buckets before `index`
        for index in range(first, last):  # (a value is in bucket i when it is <= bounds[i])
            upto = bisect_right(ordered, bounds[index])
            if upto > below:
                buckets.append((index, upto - below))
                below = upto
        buckets.append((last, len(kept) - below))
        return Tally(tuple(buckets), total)

    def _tally_each(self, values: list[float]) -> Tally:
        """`tally`, value by value (as `observe` counts each)."""
        counts = [0] * (len(self.bounds) + 1)
        total = 0.0
        bounds = self.bounds
        for value in values:
            if value < 0.0:
                value = 0.0
            counts[bisect_left(bounds, value)] += 1
            total += value
        return Tally(tuple((i, n) for i, n in enumerate(counts) if n), total)

    def add(self, tally: Tally) -> None:
        """The observations of `tally`, as if each was `observe`d."""
        counts = self.counts
        for index, n in tally.buckets:
            counts[index] += n
        self.sum += tally.sum

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation)
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric([], buckets, self.sum)
        yield family
