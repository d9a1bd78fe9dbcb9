"""A TAK Server (the TAK-shaped client of takpeer.py) federated with a real CommonSky hub:
its events are attributed to the one party its link speaks for and routed by our agreements;
ours reach it only under an agreement, as plain TAK messages (no acknowledgements expected)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from commonsky.federation.mapping import federated, receive
from commonsky.protocol.cot import parse_event

from .hubs import ca_dir, cot, hub, hub_config
from .takpeer import TakClient


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (polling state in a test)
            await asyncio.sleep(0.02)


async def test_a_tak_server_federates_with_our_hub(tmp_path: Path) -> None:
    config = hub_config(
        tmp_path,
        "kor",
        ["KOR", "RUS"],
        [{"name": "tak-usa", "parties": ["USA"], "peer": "tak"}],
        [
            {"name": "k-u", "from": "KOR", "to": ["USA"], "categories": ["track", "marker"]},
            {"name": "u-k", "from": "USA", "to": ["KOR"], "categories": ["track"]},
        ],
    )
    tak_ca = ca_dir(tmp_path, "tak")
    async with hub(config) as kor:
        fed = kor.server.federation
        assert fed is not None
        client = TakClient(
            f"127.0.0.1:{kor.server.port('federation')}",
            tak_ca,
            (ca_dir(tmp_path, "kor") / "ca.pem").read_bytes(),
        )
        k = await kor.connect("KOR")
        r = await kor.connect("RUS")
        try:
            await client.connect()
            await _until(lambda: fed.links["tak-usa"].up)
            # TAK -> us: no envelope, plain uid: USA's (the link's one party)
            client.send(federated(parse_event(cot("ANDROID-7"))))
            got = await k.wait_for(lambda e: e["uid"] == "USA::ANDROID-7", 10)
            assert got["callsign"] == "EAGLE"
            # us -> TAK: RUS has no agreement with USA, KOR has
            r.send(cot("rus-1"))
            k.send(cot("kor-1", "b-m-p-s-m", detail="<remarks>durable</remarks>"))
            first = receive(await client.next_event()).event
            assert first is not None and first.uid == "KOR::kor-1"
            assert "durable" in first.detail
            # no acknowledgement from a TAK Server: the cursor moved when it was handed over
            assert fed.seam.cursor("fed-out", "tak-usa") > 0
            k.send(cot("kor-2"))
            second = receive(await client.next_event()).event
            assert second is not None and second.uid == "KOR::kor-2"  # (rus-1 never came)
            assert fed.links["tak-usa"].peer_is_commonsky is False
        finally:
            await client.close()
