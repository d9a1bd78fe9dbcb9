"""A duty officer's click on "Acknowledge" is never lost to the hotline panel's redraw.

While a message waits, the panel is redrawn every second (its deadline counts down). It used
to build every row and button anew each time, and a button replaced between the press and
the release of a click takes no click: with a press of ~0.1 s against a redraw each
second, about one acknowledgement in ten (an estimate) was lost while a message waited (a
loaded machine's run of tests/web/test_signing.py found it). The rows' nodes are now kept and
only their text written again (web/app/panels.js `renderHotline`)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from .conftest import signed_in
from .test_map import AGREEMENTS, bearer

# One chromium for the module (conftest `browser`): its tests share the module's loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

_ROW_TEXT = "() => document.querySelector('#hotline li').innerText"


async def test_a_press_held_across_the_redraw_still_acknowledges(
    web_hub: Any, browser: Browser
) -> None:
    async with web_hub(AGREEMENTS) as hub:
        async with httpx.AsyncClient(base_url=hub.http) as http:
            sent = await http.post("/api/hotline/send", headers=bearer("USA"),
                                   json={"to": "JPN", "text": "Hold, then release"})  # fmt: skip
            assert sent.status_code == 201, sent.text
            page, _ = await signed_in(browser, hub, "JPN")
            button = page.get_by_role("button", name="Acknowledge")
            await button.wait_for()
            box = await button.bounding_box()
            assert box is not None
            before = await page.evaluate(_ROW_TEXT)
            assert "JPN: ack due in" in before, before
            await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            await page.mouse.down()
            # The row redrawn while the button is held: its countdown has moved.
            await page.wait_for_function(f"(b) => ({_ROW_TEXT})() !== b", arg=before)
            await page.mouse.up()
            await page.wait_for_function(
                "() => window.commonsky.snapshot().hotline.some((m) => m.acks.JPN)"
            )
            history = (await http.get("/api/hotline", headers=bearer("JPN"))).json()
            assert "JPN" in history[0]["acks"]
            # One button per message waiting, the same node through the redraws: none now.
            await page.wait_for_function("() => !document.querySelector('#hotline button')")
