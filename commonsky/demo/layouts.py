"""Where the parties of a federated demo live: which hub holds which parties, the links
between the hubs, and what the checks read of a hub (`HubSnapshot`) and of the run
(`FederatedRun`: federated.py's runner, as federated_checks.py sees it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from commonsky.alerts.cap import CapAlert
from commonsky.demo.clients import SimClient


@dataclass(frozen=True)
class Layout:
    """Which hub holds which parties, the links ((dialer, listener), each pair once), the
    hub whose HTTP port is --http, and the extra `[[federate]]` keys of every link (private
    deconfliction's terms)."""

    hubs: dict[str, tuple[str, ...]]
    links: tuple[tuple[str, str], ...]
    map_hub: str
    terms: dict[str, Any] = field(default_factory=dict)
    #: Checks of the single-hub scenario that these hubs cannot meet by design, with why:
    #: shown in the summary as not judged (never as held), and left out of `all_held`.
    unjudged: dict[str, str] = field(default_factory=dict)
    photos: bool = True  # (photographs travel by file federation, not implemented)


KOREA = Layout(
    {"jpn": ("JPN",), "kor": ("KOR",), "usa": ("USA",)},
    (("jpn", "kor"), ("usa", "jpn"), ("usa", "kor")),
    "jpn",
)
_PLANS_HOME = "plans stay home on a private link; the private checks below replace it"
_TRACKS = (
    "tracks cross only under an agreement and these are conflicts-only; live tracks are "
    "not in the private path (docs/private-deconfliction.md)"
)
_THREADS = (
    "each hub opens the thread of a conflict for its own parties; judged across the hubs below"
)
_FILES = "photographs cross by file federation (SendOneBlob), not implemented"
#: Syria on the coalition's hub and Russia's, deconflicting privately (issue #18): H3 level
#: 5 (cells ~252 km², edges ~9.9 km), 10-minute slots, 3 km bands; a round on every change of
#: either side's plans, at most one every 20 hub seconds (2 s at the demo's speed 10).
SYRIA = Layout(
    {"coalition": ("USA", "GBR", "FRA"), "russia": ("RUS", "SYR")},
    (("coalition", "russia"),),
    "coalition",
    {
        "deconflict": "private",
        "grid_level": 5,
        "time_slot_s": 600,
        "altitude_band_m": 3000,
        "reveal": "cells",
        "min_interval_s": 20,
        "round_every_s": 300,
    },
    unjudged={
        "Russia sees the coalition's operating area": _PLANS_HOME,
        "the coalition sees Russia's operating area": _PLANS_HOME,
        "stacked encounter: CPA conflict raised to the US": _TRACKS,
        "stacked encounter: CPA conflict raised to Russia": _TRACKS,
        "the strike plan conflicts with Syrian ground forces": _TRACKS,
        "conflict threads acknowledged by both sides": _THREADS,
        "the coalition's photograph verifies offline, and Russia has it": _FILES,
        "Russia's photograph verifies offline, and the coalition has it": _FILES,
    },
    photos=False,
)
LAYOUTS = {"korea": KOREA, "syria": SYRIA}
HUBS, LINKS, MAP_HUB = KOREA.hubs, KOREA.links, KOREA.map_hub  # (the default: Korea)


@dataclass
class HubSnapshot:
    """What the checks read of one hub, asked over its HTTP API once the timeline ended."""

    alerts: list[CapAlert] = field(default_factory=list)
    hotline: dict[str, list[Any]] = field(default_factory=dict)  # party -> its messages
    durable: set[tuple[str, str]] = field(default_factory=set)  # (party, uid) held now
    rounds: dict[str, dict[str, int]] = field(default_factory=dict)  # link -> outcome -> n
    last_round: dict[str, Any] = field(default_factory=dict)  # link -> figures


class FederatedRun(Protocol):
    """What the federated checks read of the run."""

    layout: Layout
    snapshots: dict[str, HubSnapshot]
    home: dict[str, str]  # party -> its hub
    clients: dict[str, SimClient]
    start_wall: float

    def hub_dir(self, name: str) -> Path: ...
