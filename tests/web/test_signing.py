"""A party whose hub holds its Ed25519 key signs from the page: the duty officer loads the
private key, and acknowledgements and hotline messages carry signatures the hub checks and
the ledger keeps. Without the key the hub refuses them and the page says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Browser

from commonsky.ledger.keys import PartyKeys

from .conftest import TOKENS, signed_in, web_running_hub

# One chromium for the module (conftest `browser`): its tests share the module's loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

HOTLINE = [
    {"name": f"{a}-{b} hotline", "from": a, "to": [b], "categories": ["hotline"]}
    for a, b in (("USA", "JPN"), ("JPN", "USA"))
]


def bearer(party: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[party]}"}


async def test_a_signing_party_acknowledges_and_sends_with_its_key(
    tmp_path: Path, browser: Browser
) -> None:
    key = Ed25519PrivateKey.generate()
    PartyKeys(tmp_path / "hub").add("JPN", key.public_key())
    pem = tmp_path / "jpn.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    not_a_key = tmp_path / "notes.pem"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    async with web_running_hub(tmp_path, HOTLINE) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            sent = await http.post(
                "/api/hotline/send", json={"to": "JPN", "text": "Confirm"}, headers=bearer("USA")
            )
            assert sent.status_code == 201, sent.text
            assert (await http.get("/api/me", headers=bearer("JPN"))).json()["signs"] is True
            page, watched = await signed_in(browser, hub, "JPN")
            button = page.get_by_role("button", name="Acknowledge")
            await button.wait_for()
            # No key loaded: the hub refuses, the page says why, nothing is acknowledged.
            await button.click()
            await page.get_by_text("signature: required for this party").wait_for()
            # A file that is no key is refused in the page.
            await page.set_input_files("#signing-key", str(not_a_key))
            await page.get_by_text("cannot use notes.pem").wait_for()
            # The key: the ack is signed, accepted and recorded with its signature.
            await page.set_input_files("#signing-key", str(pem))
            await page.get_by_text("signing as JPN with jpn.pem").wait_for()
            await page.get_by_role("button", name="Acknowledge").click()
            await page.wait_for_function(
                "() => window.commonsky.snapshot().hotline.some((m) => m.acks.JPN)"
            )
            # A message from the page is signed too.
            await page.select_option("#compose-to", "USA")
            await page.fill("#compose-text", "Acknowledged — «seen» 🚀")
            await page.get_by_role("button", name="send").click()
            await page.wait_for_function(
                "() => window.commonsky.snapshot().hotline.some((m) => m.from === 'JPN')"
            )
        ledger = hub.server.services.recorder.ledger  # type: ignore[union-attr]
        signed: list[Any] = [
            e for e in ledger.entries() if e.signature is not None and e.signature.party == "JPN"
        ]
        kinds = sorted(e.kind for e in signed)
        assert len(signed) == 2, kinds
        assert any("Acknowledged" in str(e.payload) for e in signed)
        assert watched.problems() == [] or all("40" in p for p in watched.problems())
