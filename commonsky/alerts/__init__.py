"""Launch warnings: launch reports, fusion, regions, threat tracks and CAP 1.2 output.

Everything here is pure (no sockets, time passed in); the hub owns I/O and who sees what.
"""

from __future__ import annotations

from commonsky.alerts.cap import CapAlert, CapInvalid, atom_feed, cap_xml, validate_cap
from commonsky.alerts.correlation import Correlator, correlate
from commonsky.alerts.engine import AlertEngine
from commonsky.alerts.fusion import FusedEvent, fuse
from commonsky.alerts.hazard import Hazard, assess_launch
from commonsky.alerts.regions import Region, RegionRegistry
from commonsky.alerts.report import LaunchReport, ReportRejected, report_from_json, validate_report
from commonsky.alerts.threats import ThreatTrack, assess_track

__all__ = [
    "AlertEngine",
    "CapAlert",
    "CapInvalid",
    "Correlator",
    "FusedEvent",
    "Hazard",
    "LaunchReport",
    "Region",
    "RegionRegistry",
    "ReportRejected",
    "ThreatTrack",
    "assess_launch",
    "assess_track",
    "atom_feed",
    "cap_xml",
    "correlate",
    "fuse",
    "report_from_json",
    "validate_cap",
    "validate_report",
]
