"""A party with a registered Ed25519 key, through the API: its hotline messages and
acknowledgements must be signed; each signed statement lands in the ledger as its own entry
whose signature verifies offline; a missing or wrong signature is refused and leaves nothing
behind (no entry, no acknowledgement)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commonsky.cli import main
from commonsky.ledger.entry import canonical_json
from commonsky.ledger.keys import PartyKeys
from tests.conftest import base_config, running_hub, token_of

HOTLINE = [
    {"name": f"{a}-{b}", "from": a, "to": [b], "categories": ["hotline"]}
    for a, b in (("USA", "JPN"), ("JPN", "USA"))
]


def signed(key: Ed25519PrivateKey, payload: dict[str, Any]) -> dict[str, str]:
    return {"value": base64.b64encode(key.sign(canonical_json(payload))).decode()}


async def test_signed_statements_are_recorded_and_verify_offline(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    config = base_config(tmp_path, HOTLINE)
    PartyKeys(config.data_dir).add("JPN", key.public_key())
    async with running_hub(config) as hub:
        ledger = hub.server.services.recorder.ledger  # type: ignore[union-attr]
        usa = httpx.AsyncClient(
            base_url=hub.http, headers={"Authorization": f"Bearer {token_of('USA')}"}
        )
        jpn = httpx.AsyncClient(
            base_url=hub.http, headers={"Authorization": f"Bearer {token_of('JPN')}"}
        )
        async with usa, jpn:
            sent = await usa.post("/api/hotline/send", json={"to": "JPN", "text": "Hold west"})
            assert sent.status_code == 201, sent.text
            message_id = (await jpn.get("/api/hotline")).json()[0]["id"]
            size = ledger.size
            for bad in (None, {"value": "AAAA"}, signed(key, {"ack": "something else"})):
                body = {} if bad is None else {"signature": bad}
                refused = await jpn.post(f"/api/hotline/{message_id}/ack", json=body)
                assert refused.status_code in (400, 403), refused.text
            assert ledger.size == size  # nothing recorded for any of them
            history = (await usa.get("/api/hotline")).json()
            assert history[0]["acks"] == {}  # and nobody was told JPN acknowledged
            payload = {"ack": message_id}
            ok = await jpn.post(
                f"/api/hotline/{message_id}/ack", json={"signature": signed(key, payload)}
            )
            assert ok.status_code == 200, ok.text
            text = "Copy — «west» 🚀"
            message = {"to": "USA", "text": text, "uid": "GeoChat.jpn.1"}
            ok = await jpn.post(
                "/api/hotline/send", json={**message, "signature": signed(key, message)}
            )
            assert ok.status_code == 201, ok.text
        statements = [e for e in ledger.entries() if e.kind == "statement"]
        assert [e.payload for e in statements] == [payload, message]
        assert all(e.signature is not None and e.signature.party == "JPN" for e in statements)
    out = tmp_path / "jpn.jsonl"
    argv = ["ledger", "export", "--data-dir", str(config.data_dir), "--party", "JPN"]
    for args in ([*argv, "--out", str(out)], ["ledger", "verify", str(out)]):
        assert _exit_code(args) == 0, args


def _exit_code(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
