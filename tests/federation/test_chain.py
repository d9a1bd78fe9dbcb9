"""Three real hubs in a chain over TAK Federation v2 (mutual TLS on loopback): USA's hub and
JPN's linked, JPN's and KOR's linked, USA's and KOR's not. A marker of USA's that JPN and
KOR may both see reaches KOR's client through JPN's hub; one that only KOR may see never
leaves USA's hub (JPN's would hold what none of its parties may see). Every hop is
acknowledged with a signed receipt, and `ledger verify --peer` proves each hop offline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from .hubs import cot, hub, hub_config

AREA = [[127.0, 35.0], [129.0, 35.0], [129.0, 37.0], [127.0, 37.0], [127.0, 35.0]]
DEALS = [  # JPN may see USA's markers only near Korea; KOR may see them all
    {"name": "US-JP", "from": "USA", "to": ["JPN"], "categories": ["marker"], "area": AREA},
    {"name": "US-KR", "from": "USA", "to": ["KOR"], "categories": ["marker"]},
]


async def _until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (polling state in a test)
            await asyncio.sleep(0.02)


async def test_a_marker_crosses_two_links_and_each_hop_is_proven(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from commonsky.federation.receipts import cross_check
    from commonsky.ledger import export as ledger_export

    from ..ledger.test_export import run as cli

    kor_cfg = hub_config(
        tmp_path, "kor", ["KOR"], [{"name": "jpn", "parties": ["JPN"], "peer": "jpn",
                                    "relay": ["USA"]}], DEALS,
    )  # fmt: skip
    async with hub(kor_cfg) as kor:
        jpn_cfg = hub_config(
            tmp_path, "jpn", ["JPN"],
            [
                {"name": "usa", "parties": ["USA"], "peer": "usa"},
                {"name": "kor", "parties": ["KOR"], "peer": "kor",
                 "connect": f"127.0.0.1:{kor.server.port('federation')}"},
            ],
            DEALS,
        )  # fmt: skip
        async with hub(jpn_cfg) as jpn:
            usa_cfg = hub_config(
                tmp_path, "usa", ["USA"],
                [{"name": "jpn", "parties": ["JPN"], "peer": "jpn", "relay": ["KOR"],
                  "connect": f"127.0.0.1:{jpn.server.port('federation')}"}],
                DEALS,
            )  # fmt: skip
            async with hub(usa_cfg) as usa:
                feds = [h.server.federation for h in (usa, jpn, kor)]
                assert all(f is not None for f in feds)
                await _until(lambda: all(ln.up for f in feds for ln in f.links.values()))  # type: ignore[union-attr]
                k = await kor.connect("KOR")
                u = await usa.connect("USA")
                # Only KOR may see a marker far from Korea: it never leaves USA's hub. The
                # next one (both may see it) follows it on the same ordered durable path.
                far = '<contact callsign="FAR"/>'
                u.send(cot("p-1", "b-m-p-s-m", lat=10.0, lon=10.0, detail=far))
                u.send(cot("m-1", "b-m-p-s-m", detail='<contact callsign="SPOT"/>'))
                got = await k.wait_for(lambda e: e["uid"] == "USA::m-1", 15)
                assert got["callsign"] == "SPOT"
                assert ("USA", "p-1") in usa.hub.durable
                assert not [e for e in k.items() if "p-1" in str(e["uid"])]
                assert not [i for i in jpn.hub.store.since(0) if i.uid == "p-1"]
                assert ("USA", "m-1") in jpn.hub.durable and ("USA", "m-1") in kor.hub.durable
                recorders = [h.server.services.recorder for h in (usa, jpn, kor)]

                def receipted(i: int) -> bool:
                    ledger = recorders[i].ledger  # type: ignore[union-attr]
                    return any(e.kind == "fed-receipt" for e in ledger.entries())

                await _until(lambda: receipted(0) and receipted(1))
                paths = [tmp_path / f"{n}.jsonl" for n in ("usa", "jpn", "kor")]
                for recorder, path in zip(recorders, paths, strict=True):
                    ledger_export.export(recorder.ledger, path)  # type: ignore[union-attr]
    for sender, receiver in ((0, 1), (1, 2)):
        proven, problems = cross_check(paths[sender], paths[receiver])
        assert problems == [] and "m-1" in [p.uid for p in proven]
        code, text = cli(
            ["ledger", "verify", str(paths[sender]), "--peer", str(paths[receiver])], capsys
        )
        assert code == 0 and "acknowledged by the second" in text
