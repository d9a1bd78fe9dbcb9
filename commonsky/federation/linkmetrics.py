"""`/metrics` per federation link: state, items in/out, refused, reconnects, lag."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .acks import Acks
from .link import Link


class Federation(Protocol):
    """What the metrics read of bridge.Federation."""

    links: dict[str, Link]
    out: dict[str, Any]  # link -> its session's progress (`position`)
    acks: Acks
    refused: dict[tuple[str, str], int]


class LinkMetrics(Collector):
    """`/metrics` per link: state, items in/out, refused, reconnects, lag."""

    def __init__(self, federation: Federation) -> None:
        self.f = federation

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "commonsky_federation_link_up", "1 while the link is up.", labels=["link"]
        )
        inbound = CounterMetricFamily(
            "commonsky_federation_items_in", "Messages received on a link.", labels=["link"]
        )
        outbound = CounterMetricFamily(
            "commonsky_federation_items_out", "Messages queued to a link.", labels=["link"]
        )
        refused = CounterMetricFamily(
            "commonsky_federation_refused",
            "Messages refused from a link, by reason.",
            labels=["link", "reason"],
        )
        reconnects = CounterMetricFamily(
            "commonsky_federation_reconnects",
            "Sessions that replaced an earlier one.",
            labels=["link"],
        )
        pending = GaugeMetricFamily(
            "commonsky_federation_pending",
            "Messages queued to a link, not yet written.",
            labels=["link"],
        )
        lag = GaugeMetricFamily(
            "commonsky_federation_lag_seconds",
            "Seconds since the last message from the peer.",
            labels=["link"],
        )
        unacked = GaugeMetricFamily(
            "commonsky_federation_unacked",
            "Durable copies sent and not yet acknowledged (CommonSky peers).",
            labels=["link"],
        )
        now = time.time()
        for name, link in self.f.links.items():
            up.add_metric([name], 1.0 if link.up else 0.0)
            inbound.add_metric([name], link.items_in)
            outbound.add_metric([name], link.items_out)
            reconnects.add_metric([name], link.reconnects)
            session = link.session
            pending.add_metric([name], session.queue.qsize() if session is not None else 0)
            lag.add_metric([name], now - link.last_in if link.last_in else 0.0)
            given = self.f.out[name].position if name in self.f.out else 0
            sent = given >> 10
            acked = self.f.acks.acked.get(name, given) >> 10
            unacked.add_metric([name], max(0, sent - acked))
        for (name, reason), count in self.f.refused.items():
            refused.add_metric([name, reason], count)
        for name, link in self.f.links.items():
            if link.dropped:
                refused.add_metric([name, "dropped_live_over_limit"], link.dropped)
            if link.internal_errors:
                refused.add_metric([name, "internal_error"], link.internal_errors)
        yield from (up, inbound, outbound, refused, reconnects, pending, lag, unacked)
