# Builders shared by the ledger tests: deterministic entry fields with a recognisable payload.
from __future__ import annotations

from commonsky.ledger.entry import EntryFields


def fields(i: int, audience: tuple[str, ...] = ("JPN", "USA"), kind: str = "item") -> EntryFields:
    return EntryFields(
        kind=kind,
        time_us=1_700_000_000_000_000 + i,
        originator="USA",
        audience=list(audience),
        payload={"category": "launch", "uid": f"u-{i}", "secret": f"payload-{i}"},
    )
