"""The scenario checks, judged from what the clients received and what the hub recorded.

The leak check is deliberately independent of the hub's policy code: it re-reads the
scenario's agreements as plain data, classifies every delivered CoT event by its type with
its own table, and tests areas with shapely directly. A delivery is a leak when no agreement
in the scenario could have entitled the receiving party to it in the form it arrived.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from shapely.geometry import Point as ShapelyPoint
from shapely.geometry import Polygon

from commonsky import times
from commonsky.demo.clients import Received, SimClient
from commonsky.demo.runner import Played, Runner, percentile
from commonsky.demo.scenario import CheckSpec
from commonsky.protocol.cot import detail_tree

# An independent classification, by CoT type prefix, first match wins (so the more
# specific prefixes come first). Whatever matches none is "other".
_KINDS = (
    ("b-t-f", "hotline"),
    ("a-", "track"),
    ("u-d-p", "site"),
    ("b-m-p-s-p-i", "site"),
    ("u-d-f-m", "drawing"),
    ("u-d-k", "drawing"),
    ("u-d-v", "drawing"),
    ("u-d-", "airspace"),
    ("u-rb", "drawing"),
    ("u-r-b", "drawing"),
    ("b-m-r", "airspace"),
    ("b-m-p", "marker"),
    ("b-l", "launch"),
    ("t-x-csky-launch", "launch"),
    ("b-a-o-csky", "alert"),
    ("b-a-o", "emergency"),
    ("b-a-g", "emergency"),
    ("b-r-f-h-c", "casevac"),
    ("b-i-v", "video"),
    ("b-i-x-i", "imagery"),
    ("b-f-t", "file"),
)


def kind_of(cot_type: str) -> str:
    return next((k for prefix, k in _KINDS if cot_type.startswith(prefix)), "other")


def _time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return times.epoch_of(value)
    return times.parse_time(str(value))


def entitled(
    agreements: list[dict[str, Any]],
    provider: str,
    recipient: str,
    kind: str,
    lat: float,
    lon: float,
    at: float,
) -> set[str]:
    """Disclosures (full / generalized) any agreement grants for this delivery."""
    levels = set()
    for a in agreements:
        if a["from"] != provider or recipient not in a["to"] or kind not in a["categories"]:
            continue
        start, end = _time(a.get("valid_from")), _time(a.get("valid_until"))
        if (start is not None and at < start) or (end is not None and at >= end):
            continue
        if a.get("area") and not Polygon(a["area"]).contains(ShapelyPoint(lon, lat)):
            continue
        levels.add(a.get("disclosure", "full"))
    return levels - {"conflicts-only"}


def leaks(runner: Runner, played: Played) -> list[str]:
    scenario = played.scenario
    parties = {p.id for p in scenario.party}
    # One hub serves every scenario: judge by all the agreements it was given, with
    # scenario-relative validity turned into times on the scenario clock.
    agreements = []
    for s in runner.scenarios:
        for a in s.agreement:
            a = dict(a)
            for key in ("valid_from", "valid_until"):
                if f"{key}_s" in a:
                    a[key] = runner.wall(a.pop(f"{key}_s"))
            agreements.append(a)
    found = []
    for client in runner.clients.values():
        if client.party not in parties:
            continue
        for r in client.received:
            e = r.event
            if e.type.startswith("t-x-takp") or "::" not in e.uid:
                continue
            provider, _, rest = e.uid.partition("::")
            if provider == "HUB":
                continue
            kind = kind_of(e.type)
            if kind == "drawing" and "<csky_airspace" in e.detail:
                kind = "airspace"  # a drawing its sender declared airspace
            if e.type.startswith("t-x-d-d"):
                found.append(f"{client.party} got another party's delete {e.uid}")
                continue
            # A point inside an agreement area may have been snapped by generalization.
            levels = entitled(
                agreements, provider, client.party, kind, e.point.lat, e.point.lon, r.t
            )
            if not levels:
                found.append(f"{client.party} got {e.uid} ({kind}) with no agreement")
            elif rest.startswith("g-") != ("full" not in levels):
                found.append(f"{client.party} got {e.uid} in the wrong form for {levels}")
            elif (
                "full" not in levels
                and e.detail
                and not (kind == "imagery" and _coarse_footprint(e.detail))
            ):
                found.append(f"{client.party} got details of generalized {e.uid}")
    return found


def _coarse_footprint(detail: str, grid: float = 0.1) -> bool:
    """A generalized imagery marker may carry exactly one thing: a footprint whose corners
    all lie on the generalization grid (the demo's own reading, not the hub's code)."""
    root = detail_tree(detail)
    if [child.tag for child in root] != ["csky_footprint"]:
        return False
    for vertex in root.iter("vertex"):
        for key in ("lat", "lon"):
            cells = float(vertex.get(key, "nan")) / grid
            if not abs(cells - round(cells)) < 1e-6:
                return False
    return True


def evidence(runner: Runner, played: Played, check: CheckSpec) -> tuple[bool, str]:
    """Every photograph `check.other` published is signed evidence that verifies offline —
    against a fresh ledger export and the hub CA — and `check.party` received its marker."""
    from commonsky.evidence.verify import verify_evidence
    from commonsky.ledger.export import export

    server = runner.server
    assert server is not None and server.marti is not None
    assert server.services.recorder is not None
    photos = [p for p in played.photos if p[0] == check.other]
    if len(photos) < check.value:
        return False, f"{len(photos)} photographs published by {check.other}"
    ledger = runner.data_dir / f"evidence-{check.other}.jsonl"
    export(server.services.recorder.ledger, ledger, party=check.other)
    ca = runner.data_dir / "ca" / "ca.pem"
    verified = 0
    notes = []
    for _, name, digest in photos:
        for signed in server.marti.files.derived(digest, "evidence"):
            stored = server.marti.files.content(signed.sha256)
            if stored is None or stored.path is None:  # (the demo's hub: one process)
                notes.append(f"{name}: its signed copy is not in the data folder")
                continue
            verdict = verify_evidence(stored.path, ledger, ca)
            if verdict.ok:
                verified += 1
            else:
                notes.append(f"{name}: {verdict.lines[-1]}")
    markers = [
        r
        for r in _received(runner, check.party)
        if r.event.type == "b-i-x-i" and r.event.uid.startswith(f"{check.other}::")
    ]
    ok = (
        verified >= check.value and not notes and len({m.event.uid for m in markers}) >= check.value
    )
    return ok, (
        f"{verified} verified offline, {len({m.event.uid for m in markers})} markers at "
        f"{check.party}" + (f"; {'; '.join(notes)}" if notes else "")
    )


def _received(runner: Runner, party: str) -> list[Received]:
    return [r for c in runner.clients.values() if c.party == party for r in c.received]


def _notices(runner: Runner, party: str) -> list[dict[str, Any]]:
    out = []
    for r in _received(runner, party):
        if r.event.type == "t-x-csky-conflict":
            node = detail_tree(r.event.detail).find("csky_conflict")
            if node is not None and node.text:
                out.append(json.loads(node.text))
    return out


def _hotline(services: Any, parties: Any) -> list[Any]:
    """Every hotline message of the scenario's parties (from the store: the desk holds only
    the open ones), each once."""
    seen: dict[int, Any] = {}
    for party in parties:
        for message in services.hotline.records(party.id):
            seen.setdefault(message.seq, message)
    return [seen[k] for k in sorted(seen)]


def _fused(runner: Runner, party: str) -> list[dict[str, Any]]:
    """The last version of every fused launch event the party received."""
    latest: dict[str, dict[str, Any]] = {}
    for r in _received(runner, party):
        if r.event.type == "b-l-f":
            node = detail_tree(r.event.detail).find("csky_fused")
            if node is not None and node.text:
                event = json.loads(node.text)
                latest[event["event_id"]] = event
    return list(latest.values())


Outcome = tuple[bool, str]  # (held, what was observed)


def evaluate(runner: Runner, played: Played, check: CheckSpec) -> Outcome:
    """(held, what was observed) for one check."""
    hub = runner.server.hub if runner.server else None
    services = runner.server.services if runner.server else None
    assert hub is not None and services is not None
    got = _received(runner, check.party) if check.party else []
    kind = check.kind
    outcome = (
        _delivery_check(kind, check, got)
        or _notice_check(kind, runner, hub, check)
        or _hotline_check(kind, services, played, check)
        or _launch_check(kind, runner, services, played, check)
    )
    if outcome is not None:
        return outcome
    if kind == "no_leaks":
        found = leaks(runner, played)
        return not found, "0 leaks" if not found else "; ".join(found[:3])
    if kind == "evidence":
        return evidence(runner, played, check)
    return False, f"unknown check kind {kind!r}"


def _delivery_check(kind: str, check: CheckSpec, got: list[Received]) -> Outcome | None:
    """What the party's clients received (None: not a delivery check)."""
    if kind == "delivered":
        hits = [r for r in got if r.event.uid == check.uid]
        return bool(hits), f"{len(hits)} deliveries of {check.uid}"
    if kind == "not_delivered":
        hits = [
            r
            for r in got
            if r.event.uid.startswith(check.uid) and r.event.type.startswith(check.text)
        ]
        return not hits, f"{len(hits)} deliveries matching {check.uid}*{check.text}"
    if kind == "received_tracks_from":
        hits = [
            r
            for r in got
            if r.event.uid.startswith(check.other + "::") and r.event.type.startswith("a-")
        ]
        return len(hits) >= check.value, f"{len(hits)} track updates from {check.other}"
    return None


def _notice_check(kind: str, runner: Runner, hub: Any, check: CheckSpec) -> Outcome | None:
    """Conflict notices and withdrawn airspace (None: not such a check)."""
    if kind == "conflict_notice":
        notices = [
            n
            for n in _notices(runner, check.party)
            if check.text in n["kind"] and n["other_party"] == check.other
        ]
        return bool(notices), f"{len(notices)} {check.text} notices about {check.other}"
    if kind == "notice_hides":
        text = json.dumps(_notices(runner, check.party))
        return (
            check.uid not in text,
            f"{check.uid!r} {'absent' if check.uid not in text else 'present'}",
        )
    if kind == "withdrawn":
        gone = all((p, check.uid) not in hub.durable for p in check.parties)
        return gone, "withdrawn" if gone else "still active"
    return None


def _hotline_check(kind: str, services: Any, played: Played, check: CheckSpec) -> Outcome | None:
    """Hotline messages and conflict threads acknowledged (None: not such a check)."""
    if kind == "hotline_all_acked":
        messages = [
            m
            for m in _hotline(services, played.scenario.party)
            if {m.sender, *m.recipients} <= {p.id for p in played.scenario.party} | {"HUB"}
            and m.conflict is None
            and m.sender != "HUB"
        ]
        acked = [m for m in messages if set(m.recipients) <= set(m.acks)]
        ok = len(messages) >= check.value and len(acked) == len(messages)
        return ok, f"{len(acked)}/{len(messages)} hotline messages acknowledged"
    if kind == "threads_acked":
        threads = [
            m
            for m in _hotline(services, played.scenario.party)
            if m.conflict and set(m.recipients) == set(check.parties)
        ]
        acked = [m for m in threads if set(m.recipients) <= set(m.acks)]
        return bool(threads) and len(acked) == len(
            threads
        ), f"{len(acked)}/{len(threads)} conflict threads acknowledged by both"
    return None


def _launch_check(
    kind: str, runner: Runner, services: Any, played: Played, check: CheckSpec
) -> Outcome | None:
    """Fused launch events, CAP warnings and their latency (None: not such a check)."""
    if kind == "fused_parties":
        seen = [e["parties"] for e in _fused(runner, check.party)]
        return sorted(check.parties) in seen, f"events fused from {seen}"
    if kind == "fused_complete":
        complete = [
            e
            for e in _fused(runner, check.party)
            if e["launch"] and e["impact"] and len(e["parties"]) > 1
        ]
        return bool(complete), f"{len(complete)} events with launch point and impact area"
    if kind in ("cap_alert", "no_cap_alert", "cap_cancel"):
        feed = services.launch.feed() if services.launch else []
        mine = [
            a
            for a in feed
            if any(
                v == check.region
                for info in a.info
                for area in info.areas
                for _, v in area.geocodes
            )
        ]
        types = [a.msg_type for a in mine]
        if kind == "cap_alert":
            return "Alert" in types, f"{check.region}: {types}"
        if kind == "cap_cancel":
            return "Alert" in types and types[-1] == "Cancel", f"{check.region}: {types}"
        return not mine, f"{check.region}: {types or 'no warning'}"
    if kind == "warning_latency":
        lat = warning_latency(runner, played)
        return (not math.isnan(lat) and lat <= check.value), f"{lat:.3f} s"
    return None


def scenario_alerts(runner: Runner, played: Played) -> list[Any]:
    """Warnings issued by this scenario's parties (one hub may serve several scenarios)."""
    assert runner.server is not None
    senders = {f"commonsky.{p.id.lower()}" for p in played.scenario.party}
    return [a for a in runner.server.services.launch.feed() if a.sender in senders]


def warning_latency(runner: Runner, played: Played) -> float:
    """Worst delay, in real seconds, from a launch report to the warning it triggered.

    Each first `Alert` for a region is matched with the latest report posted before it
    (both on the scenario clock); NaN when no report led to any warning.
    """
    services = runner.server.services if runner.server else None
    if not played.report_posts or services is None:
        return math.nan
    delays = []
    for alert in scenario_alerts(runner, played):
        if alert.msg_type != "Alert":
            continue
        sent = alert.sent.timestamp()
        # A warning read back from its CAP document (hubs in their own processes) carries
        # CAP's whole seconds: the report that triggered it may lie within that second.
        slack = 1.0 if alert.sent.microsecond == 0 else 1e-3
        before = [p for p in played.report_posts if p <= sent + slack]
        if before:
            delays.append(max(0.0, sent - max(before)) / runner.speed)
    return max(delays) if delays else math.nan


def track_latencies(runner: Runner, played: Played) -> list[float]:
    parties = {p.id for p in played.scenario.party}
    sent = {uid_t: at for uid_t, at in played.sent_tracks.items()}
    by_uid_time: dict[tuple[str, float], float] = {}
    for (uid, t), at in sent.items():
        by_uid_time[(uid, t)] = at
    out = []
    for client in runner.clients.values():
        if client.party not in parties:
            continue
        for r in client.received:
            if not r.event.type.startswith("a-") or "::" not in r.event.uid:
                continue
            uid = r.event.uid.partition("::")[2]
            sent_at = by_uid_time.get((uid, round(r.event.time, 3)))
            if sent_at is not None:
                out.append(r.at - sent_at)
    return out


def summarize(runner: Runner, played: Played, ledger_ok: bool) -> dict[str, Any]:
    scenario = played.scenario
    checks = []
    for check in scenario.check:
        held, observed = evaluate(runner, played, check)
        checks.append({"name": check.name, "kind": check.kind, "held": held, "observed": observed})
    checks.append(
        {
            "name": "ledger export verifies (whole log and every party's)",
            "kind": "ledger",
            "held": ledger_ok,
            "observed": "verified" if ledger_ok else "FAILED",
        }
    )
    checks.append(
        {
            "name": "timeline played to the end without API errors",
            "kind": "played",
            "held": played.finished and not played.api_errors,
            "observed": "; ".join(played.api_errors[:3]) or "ok",
        }
    )
    parties = {p.id for p in scenario.party}
    services = runner.server.services if runner.server else None
    assert services is not None
    latencies = track_latencies(runner, played)
    notices = sum(1 for p in parties for n in _notices(runner, p) if n["other_party"] in parties)
    threads = [
        m for m in _hotline(services, scenario.party) if m.conflict and set(m.recipients) <= parties
    ]
    feed = scenario_alerts(runner, played)
    from commonsky.demo.runner import deliveries

    return {
        "name": scenario.name,
        "title": scenario.title,
        "checks": checks,
        "all_held": all(c["held"] for c in checks),
        "items_sent": played.items_sent,
        "deliveries": deliveries(runner.clients, parties),
        "conflict_notices": notices,
        "conflicts_acknowledged": sum(1 for m in threads if set(m.recipients) <= set(m.acks)),
        "conflict_threads": len(threads),
        "launch_events": sum(len(_fused(runner, p)) for p in parties),
        "alerts": len(feed),
        "leaks": len(leaks(runner, played)),
        "latency_ms": {
            "p50": 1000 * percentile(latencies, 0.5),
            "p99": 1000 * percentile(latencies, 0.99),
            "samples": len(latencies),
        },
        "warning_latency_s": warning_latency(runner, played),
    }


Evaluator = Callable[[Runner, Played, CheckSpec], tuple[bool, str]]
__all__ = ["SimClient", "evaluate", "leaks", "summarize"]
