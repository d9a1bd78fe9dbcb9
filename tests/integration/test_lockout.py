"""No party can lock another out (issue 13, class 4), on the real server.

A picture larger than the durable queue limit is fed to a connection page by page, also
after a restart; one party cannot fill another's picture past a stated quota, nor take every
connection; the hub raises its open-file limit or refuses to start below what its limits
need; refusals are logged at a bounded rate."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from commonsky.errors import UsageError
from commonsky.server import ensure_fd_budget, fd_budget
from commonsky.settings import Settings, defaults
from tests.conftest import base_config, running_hub, token_of
from tests.integration.test_tak_tcp import HOTLINE, chat, metric, track

# Small enough for a test's picture to exceed it, large enough for the hub's receipts of
# what it reads from one client between two flushes (~430 chats: its read buffer) to fit.
SMALL_QUEUE = {"limit_queue_durable": 600}


def _is_chat(event: dict) -> bool:
    return event["type"] == "b-t-f" and str(event["uid"]).startswith("USA::GeoChat.")


async def test_a_picture_larger_than_the_durable_limit_is_replayed_in_pages(
    tmp_path: Path,
) -> None:
    config = base_config(tmp_path, [HOTLINE], server=SMALL_QUEUE)
    count = 1400  # over twice limit_queue_durable, five pages
    async with running_hub(config) as hub:
        usa = await hub.connect("USA")
        for start in range(0, count, 200):  # reading the hub's receipts as they come
            last = min(start + 200, count) - 1
            usa.send(b"".join(chat(f"m{i}", f"message {i}", "RUS") for i in range(start, last + 1)))
            await usa.wait_for(
                lambda e, n=last: e["type"] == "b-t-f-d" and f"GeoChat.m{n} " in e["detail"]
            )
        rus = await hub.connect("RUS")
        await rus.wait_for(lambda e: e["uid"] == f"USA::GeoChat.m{count - 1}", timeout=10)
        assert sum(1 for e in rus.events if _is_chat(e)) == count
        assert await metric(hub, "commonsky_connections_closed_total", reason="too_slow") == 0
    # The same after a restart: the picture is read back and replayed, again in pages.
    async with running_hub(config) as hub:
        rus = await hub.connect("RUS")
        await rus.wait_for(lambda e: e["uid"] == f"USA::GeoChat.m{count - 1}", timeout=10)
        assert sum(1 for e in rus.events if _is_chat(e)) == count
        assert hub.hub.connections["RUS"]  # still connected, not closed as too slow


async def test_one_party_cannot_fill_the_picture_past_its_quota(tmp_path: Path) -> None:
    config = base_config(tmp_path, [HOTLINE], server={"limit_durable_items_per_party": 3})
    async with running_hub(config) as hub:
        headers = {"Authorization": f"Bearer {token_of('USA')}"}
        async with httpx.AsyncClient(base_url=hub.http, headers=headers) as usa:
            sent = [
                await usa.post("/api/hotline/send", json={"to": "RUS", "text": f"t{i}"})
                for i in range(4)
            ]
            assert [r.status_code for r in sent] == [201, 201, 201, 400]
            reason = sent[3].json()["error"]
            assert "limit_durable_items_per_party=3" in reason and "USA" in reason
        # Other parties are not held to USA's count: RUS's message is accepted.
        rus = await hub.connect("RUS")
        rus.send(chat("r1", "mine", "USA"))
        usa_tak = await hub.connect("USA")
        usa_tak.send(chat("m9", "over quota", "RUS"))  # refused, with a counter
        await usa_tak.sync()  # both connections' messages are taken in
        await rus.sync()
        # the API's refusal and now the TAK one
        assert await metric(hub, "commonsky_refusals_total", reason="quota") == 2
        assert ("RUS", "GeoChat.r1") in hub.hub.durable


async def test_one_party_cannot_take_every_connection(tmp_path: Path) -> None:
    server = {"limit_connections": 5, "limit_connections_per_party": 3}
    async with running_hub(base_config(tmp_path, [], server=server)) as hub:
        usa = [await hub.connect("USA") for _ in range(3)]
        for client in usa:
            await client.wait_for(lambda e: e["type"] == "t-x-takp-v")
        extra = await hub.connect("USA")
        with pytest.raises(ConnectionError):
            await extra.collect(5.0)  # closed by the hub: USA is at its own limit
        rus = [await hub.connect("RUS") for _ in range(2)]
        for client in rus:  # another party still gets in
            await client.wait_for(lambda e: e["type"] == "t-x-takp-v")
        third = await hub.connect("RUS")
        with pytest.raises(ConnectionError):
            await third.collect(5.0)  # now the hub-wide limit is reached
        assert (
            await metric(
                hub, "commonsky_connections_closed_total", reason="limit_connections_per_party"
            )
            == 1
        )
        assert (
            await metric(hub, "commonsky_connections_closed_total", reason="limit_connections") == 1
        )


def test_the_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = fd_budget(defaults())
    assert hard >= need, "this machine cannot run a hub with the default limits"
    resource.setrlimit(resource.RLIMIT_NOFILE, (need - 1, hard))
    try:
        assert ensure_fd_budget(defaults()) == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_hub_refuses_to_start_below_the_open_files_its_limits_need(tmp_path: Path) -> None:
    greedy = Settings.resolve({"limit_connections": 10**7}, environ={})
    with pytest.raises(UsageError, match=r"open-file limit .* below the 10000512"):
        ensure_fd_budget(greedy)
    # The real command, under `ulimit -n 1024`: one line, exit status 2.
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "hub"}"\nhttp = "127.0.0.1:0"\n[[party]]\nid = "USA"\n'
    )
    run = subprocess.run(
        [
            "bash",
            "-c",
            f'ulimit -n 1024 && exec "{sys.executable}" -m commonsky serve --config "{config}"',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "open-file limit 1024" in lines[0] and "ulimit -n" in lines[0]


async def test_refusals_are_logged_at_a_bounded_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = {"limit_refusals_before_close": 10_000}
    caplog.set_level(logging.WARNING, logger="commonsky.listener")
    async with running_hub(base_config(tmp_path, [], server=server)) as hub:
        usa = await hub.connect("USA")
        bad = b'<event version="2.0" uid="x" type="a-f-G" how="m-g"><point/></event>'
        usa.send(bad * 300 + track("AFTER"))
        await usa.wait_for(lambda e: e["type"] == "t-x-takp-v")
        await usa.sync()  # all 300 and AFTER are taken in
        assert await metric(hub, "commonsky_refusals_total") == 300  # every one counted
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert 1 <= len(refused) <= hub.hub.logs.per_key  # but few written
