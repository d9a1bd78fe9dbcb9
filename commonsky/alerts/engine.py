# Rule: one CAP message stream per (hazard, region): Alert when a region first becomes
# threatened, Update only when what we tell it materially changes, Cancel when the threat is
# over, no longer reaches the region, or disappears from the input. The engine is pure state
# driven by `step(now, hazards)`: no clock, no I/O, identifiers derived from names only
# (`{sender-token}.{hazard}.{region}.{n}`), so the same inputs always give the same messages.
# One engine per issuing party: feed it only hazards computed from what that party may see.

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from commonsky.alerts.cap import CapAlert, CapArea, CapInfo
from commonsky.alerts.fusion import FusedEvent
from commonsky.alerts.hazard import Hazard, Threatened, assess_launch
from commonsky.alerts.regions import Region, RegionRegistry
from commonsky.alerts.threats import DEFAULT_HORIZON, ThreatTrack, assess_track

_INSTRUCTION = {
    "ballistic-missile": (
        "Take shelter immediately in a sturdy building or underground. If there is no "
        "building nearby, take cover or lie face down and protect your head."
    ),
    "default": (
        "Go to a shelter or the innermost room now. Keep away from windows. Stay there until "
        "the all-clear."
    ),
}


def _token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


@dataclass
class _Stream:
    region: Region
    messages: list[CapAlert] = field(default_factory=list)  # of the current opening
    key: tuple[str, ...] = ()
    open: bool = False
    seq: int = 0


class AlertEngine:
    """Turns hazards into CAP messages per threatened region (Alert -> Update* -> Cancel)."""

    def __init__(
        self,
        regions: RegionRegistry,
        sender: str,
        *,
        status: Literal["Actual", "Exercise"] = "Actual",
        sender_name: str | None = None,
        language: str = "en-US",
    ) -> None:
        self.regions = regions
        self.sender = sender
        self.status: Literal["Actual", "Exercise"] = status
        self.sender_name = sender_name
        self.language = language
        self._prefix = _token(sender)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._hazards: dict[str, Hazard] = {}
        self._log: list[CapAlert] = []

    # -- queries ------------------------------------------------------------------------------

    def history(self) -> list[CapAlert]:
        """Every message issued so far, in issue order (the feed's contents)."""
        return list(self._log)

    def active(self) -> list[CapAlert]:
        """The latest message of every stream still open."""
        return [s.messages[-1] for _k, s in sorted(self._streams.items()) if s.open]

    # -- driving ------------------------------------------------------------------------------

    def step_events(
        self,
        now: datetime,
        events: Mapping[str, FusedEvent] | Iterable[FusedEvent] = (),
        tracks: Iterable[ThreatTrack] = (),
        horizon: timedelta = DEFAULT_HORIZON,
    ) -> list[CapAlert]:
        """Assess fused launch events and threat tracks at `now`, then `step`."""
        evs = events.values() if isinstance(events, Mapping) else events
        hazards = [assess_launch(e, self.regions, now) for e in evs]
        hazards += [assess_track(t, self.regions, now, horizon) for t in tracks]
        return self.step(now, hazards)

    def step(self, now: datetime, hazards: Iterable[Hazard]) -> list[CapAlert]:
        """New messages due at `now` given the full current set of hazards."""
        out: list[CapAlert] = []
        current = {h.hazard_id: h for h in hazards}
        # Each hazard's streams, in (hazard, region) order: looked up, not searched for.
        streams: dict[str, list[tuple[str, _Stream]]] = {}
        for (h, rid), stream in sorted(self._streams.items()):
            streams.setdefault(h, []).append((rid, stream))
        for hid in sorted(set(self._hazards) - set(current)):
            old = self._hazards.pop(hid)
            for _rid, s in streams.get(hid, ()):
                if s.open:
                    out.append(self._cancel(now, old, s, "This warning has been withdrawn."))
        known = self._known()
        for hid in sorted(current):
            hz = current[hid]
            self._hazards[hid] = hz
            wanted = {t.region_id: t for t in hz.threatened if t.region_id in known}
            for rid, s in streams.get(hid, ()):
                if not s.open:
                    continue
                if hz.over:
                    out.append(self._cancel(now, hz, s, hz.outcome or "The threat is over."))
                elif rid not in wanted:
                    text = f"{s.region.name} is no longer in the predicted threat area."
                    out.append(self._cancel(now, hz, s, text))
            if hz.over:
                self._hazards.pop(hid)
                continue
            for rid in sorted(wanted):
                t = wanted[rid]
                key = (t.reason, t.severity, t.certainty, hz.revision)
                s = self._streams.setdefault((hid, rid), _Stream(self.regions[rid]))
                if not s.open:
                    s.open, s.messages, s.key = True, [], key
                    out.append(self._issue(now, hz, s, "Alert", t))
                elif s.key != key:
                    s.key = key
                    out.append(self._issue(now, hz, s, "Update", t))
        self._log.extend(out)
        return out

    # -- message building -----------------------------------------------------------------

    def _known(self) -> set[str]:
        return {r.id for r in self.regions}

    def _new(
        self, now: datetime, hz: Hazard, s: _Stream, msg_type: Literal["Alert", "Update", "Cancel"]
    ) -> tuple[str, tuple[str, ...]]:
        s.seq += 1
        ident = f"{self._prefix}.{_token(hz.hazard_id)}.{_token(s.region.id)}.{s.seq}"
        refs = tuple(m.ref for m in s.messages) if msg_type != "Alert" else ()
        return ident, refs

    def _area(self, region: Region) -> CapArea:
        return CapArea(
            area_desc=region.name,
            polygons=tuple(tuple(ring) for ring in region.outlines()),
            geocodes=(("ISO3166-2", region.id),),
        )

    def _issue(
        self,
        now: datetime,
        hz: Hazard,
        s: _Stream,
        msg_type: Literal["Alert", "Update"],
        t: Threatened,
    ) -> CapAlert:
        ident, refs = self._new(now, hz, s, msg_type)
        what = {
            "impact": f"may fall in {s.region.name}",
            "overflight": f"may pass over {s.region.name}",
            "approach": f"is heading towards {s.region.name}",
        }[t.reason]
        eta = f" Expected from {t.eta.strftime('%H:%M:%S %Z')}." if t.eta is not None else ""
        info = CapInfo(
            category=("Safety", "Security"),
            event=hz.event,
            urgency="Immediate",
            severity=t.severity,
            certainty=t.certainty,
            response_type=("Shelter",),
            language=self.language,
            onset=t.eta if t.eta is not None and t.eta > now else None,
            expires=max(hz.expires, now + timedelta(minutes=1)),
            sender_name=self.sender_name,
            headline=f"{hz.event} {what}: take shelter now",
            description=f"{hz.summary}{eta}",
            instruction=_INSTRUCTION.get(hz.kind, _INSTRUCTION["default"]),
            parameters=(("COMMONSKY_HAZARD", hz.hazard_id), ("COMMONSKY_REASON", t.reason)),
            areas=(self._area(s.region),),
        )
        msg = CapAlert(
            ident, self.sender, now, self.status, msg_type, references=refs, info=(info,)
        )
        s.messages.append(msg)
        return msg

    def _cancel(self, now: datetime, hz: Hazard, s: _Stream, why: str) -> CapAlert:
        ident, refs = self._new(now, hz, s, "Cancel")
        info = CapInfo(
            category=("Safety", "Security"),
            event=hz.event,
            urgency="Past",
            severity="Minor",
            certainty="Observed",
            response_type=("AllClear",),
            language=self.language,
            sender_name=self.sender_name,
            headline=f"{hz.event}: all clear for {s.region.name}",
            description=why,
            parameters=(("COMMONSKY_HAZARD", hz.hazard_id),),
            areas=(self._area(s.region),),
        )
        msg = CapAlert(
            ident, self.sender, now, self.status, "Cancel", references=refs, info=(info,)
        )
        s.messages.append(msg)
        s.open = False
        return msg
