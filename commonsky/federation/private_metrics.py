"""`/metrics` per private-deconfliction link (private.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class PrivateDesk(Protocol):
    """What the metrics read of private.PrivateDesk: its links (`PrivateLink`: `rounds`
    by outcome, `bytes_sent`/`bytes_received`, `conflicts`, the latest `figures`)."""

    @property
    def links(self) -> Mapping[str, Any]: ...


class PrivateMetrics(Collector):
    """`/metrics` per private link: rounds by outcome, the last round's cells and bytes."""

    def __init__(self, desk: PrivateDesk) -> None:
        self.desk = desk

    def collect(self) -> Iterator[Metric]:
        rounds = CounterMetricFamily(
            "commonsky_privdeconf_rounds",
            "Private deconfliction rounds with a peer hub, by outcome.",
            labels=["link", "outcome"],
        )
        cells = GaugeMetricFamily(
            "commonsky_privdeconf_cells",
            "The last finished round's cells: ours submitted, the peer's, in both.",
            labels=["link", "set"],
        )
        geometry = GaugeMetricFamily(
            "commonsky_privdeconf_geometry_bytes",
            "The last finished round's geometry bytes, by direction.",
            labels=["link", "direction"],
        )
        wire = CounterMetricFamily(
            "commonsky_privdeconf_bytes",
            "Round message bytes on the link, by direction.",
            labels=["link", "direction"],
        )
        conflicts = GaugeMetricFamily(
            "commonsky_privdeconf_conflicts",
            "Conflicts the last finished round found with the peer.",
            labels=["link"],
        )
        for name, p in self.desk.links.items():
            for outcome, count in p.rounds.items():
                rounds.add_metric([name, outcome], count)
            wire.add_metric([name, "sent"], p.bytes_sent)
            wire.add_metric([name, "received"], p.bytes_received)
            conflicts.add_metric([name], len(p.conflicts))
            done = [f for f in p.figures if f["outcome"] == "done"]
            if done:
                f = done[-1]
                cells.add_metric([name, "ours"], f["cells_submitted"])
                cells.add_metric([name, "peer"], f["peer_cells"])
                cells.add_metric([name, "both"], f["intersection"])
                geometry.add_metric([name, "sent"], f["geometry_bytes_sent"])
                geometry.add_metric([name, "received"], f["geometry_bytes_received"])
        yield from (rounds, cells, geometry, wire, conflicts)
