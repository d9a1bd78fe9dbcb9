"""The hub's HTTP side on a cluster's edges (cluster/edge_http.py, core_http.py): two edges and
a core as their own processes, on the machine's NATS and a fresh PostgreSQL database. A map
page's WebSocket on one edge gets what TAK clients send on the other under the agreements,
and nothing else; the API answers through an edge as the core's own HTTP does; refusals (bad
token, body too large, no core) come from the edge, at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from typing import Any

import httpx
import websockets
from nats.aio.client import Client as Nats
from nats.js.errors import NoKeysError

from commonsky.bench.cluster import (
    Client,
    Cluster,
    Process,
    cluster_config,
    marker,
    track,
    until,
    until_async,
)
from commonsky.bench.fuzz_inputs import PARTIES
from commonsky.bench.hubproc import OPERATOR, parse_metrics, token
from commonsky.cluster.edge_http import FORWARD_S
from commonsky.cluster.run import FAIL_STOP
from commonsky.cluster.wire import picture_key


def bearer(party: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(party)}"}


class Page:
    """A map page's live feed without a browser: every item JSON it was sent, in order."""

    def __init__(self, party: str, port: int) -> None:
        self.party, self.port = party, port
        self.items: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None
        self.ws: Any = None

    async def connect(self) -> Page:
        url = f"ws://127.0.0.1:{self.port}/api/ws?token={token(self.party)}"
        self.ws = await websockets.connect(url)
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self.ws:
                self.items.extend(json.loads(message))

    def got(self, uid: str) -> list[dict[str, Any]]:
        """The items whose uid is `uid`, in its namespaced form too (`USA::uid`)."""
        return [i for i in self.items if i["uid"].rpartition("::")[2] == uid]

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


async def test_a_page_on_one_edge_sees_what_tak_clients_send_on_the_other(
    cluster: Cluster,
) -> None:
    core = await cluster.core()
    a, _ = await cluster.edge()
    _, ports_b = await cluster.edge()
    rus_page = await Page("RUS", a.http).connect()
    jpn_page = await Page("JPN", a.http).connect()
    kor_page = await Page("KOR", a.http).connect()
    usa = await Client("USA", ports_b["USA"]).connect()
    kor = await Client("KOR", ports_b["KOR"]).connect()
    await usa.send(track("us-web-1", time.time()))
    # us-ru: tracks in full; us-jp: generalized (USA's own uid never shown to JPN).
    await until(lambda: bool(rus_page.got("us-web-1")), "RUS's page (edge A) gets USA's track")
    await until(lambda: bool(jpn_page.items), "JPN's page gets the generalized track")
    assert not jpn_page.got("us-web-1"), jpn_page.items
    assert all(i["party"] == "USA" and i["category"] == "track" for i in jpn_page.items)
    # Barrier for KOR (no agreement with USA): a later KOR track, through the same edges.
    await kor.send(track("kor-web-1", time.time()))
    await until(lambda: bool(kor_page.got("kor-web-1")), "KOR's page gets KOR's own track")
    assert [i["uid"] for i in kor_page.items] == ["kor-web-1"], kor_page.items  # (its own)
    # The page's JSON is the core's: what the API gives RUS for the item, byte for byte.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{core.http}") as direct:
        items = (await direct.get("/api/items", headers=bearer("RUS"))).json()
    assert rus_page.got("us-web-1")[-1] == next(i for i in items if i["uid"] == "USA::us-web-1")
    for page in (rus_page, jpn_page, kor_page):
        await page.close()
    for client in (usa, kor):
        await client.close()


async def test_a_late_page_gets_its_picture_from_the_bucket_as_the_cores_json(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    core = await cluster.core()
    a, _ = await cluster.edge()
    _, ports_b = await cluster.edge()
    usa = await Client("USA", ports_b["USA"]).connect()
    await usa.send(marker("us-web-marker", time.time()))
    kv = await nc.jetstream().key_value(f"{cluster_name}_picture")
    wanted = picture_key("USA", ("USA", "us-web-marker"))

    async def written() -> bool:
        with contextlib.suppress(NoKeysError):
            return wanted in await kv.keys()
        return False

    await until_async(written, "the picture bucket holds USA's marker")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{core.http}") as direct:
        items = (await direct.get("/api/items", headers=bearer("USA"))).json()
    expected = next(i for i in items if i["uid"] == "us-web-marker")
    core.kill()  # no core: the page's picture can only come from the bucket, made at the edge
    page = await Page("USA", a.http).connect()
    await until(lambda: bool(page.got("us-web-marker")), "a late USA page gets the marker")
    assert page.got("us-web-marker") == [expected]
    await page.close()
    await usa.close()


PATHS = ("/api/me", "/api/parties", "/api/items", "/api/conflicts", "/openapi.json",
         "/api/hotline", "/api/launch/events", "/cap/feed.atom")  # fmt: skip


async def test_the_api_through_an_edge_answers_as_the_core(cluster: Cluster) -> None:
    core = await cluster.core()
    a, _ = await cluster.edge()
    edge = httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.http}", timeout=30)
    direct = httpx.AsyncClient(base_url=f"http://127.0.0.1:{core.http}", timeout=30)
    now = time.time()
    r = await edge.post("/api/cot", content=track("us-api-1", now), headers=bearer("USA"))
    assert r.status_code == 201, r.text
    assert r.json()["uid"] == "us-api-1"
    for path in PATHS:
        via = await edge.get(path, headers=bearer("RUS"))
        own = await direct.get(path, headers=bearer("RUS"))
        assert via.status_code == own.status_code, path
        assert via.headers["content-type"] == own.headers["content-type"], path
        if path not in ("/api/me", "/cap/feed.atom"):  # (the hub's clock; the feed's time)
            assert via.content == own.content, path
    seen = (await edge.get("/api/items", headers=bearer("RUS"))).json()
    assert any(i["uid"] == "USA::us-api-1" for i in seen)
    # A bad token: 401 from the edge; a refusal of the core's own (a bad body): its 400.
    r = await edge.get("/api/items", headers={"Authorization": "Bearer not-a-token-of-anyone"})
    assert (r.status_code, r.json()) == (401, {"error": "unknown token"})
    assert (await edge.get("/api/items")).status_code == 401
    r = await edge.post("/api/cot", content=b"<event", headers=bearer("USA"))
    assert r.status_code == 400 and r.json() == (await direct.post(
        "/api/cot", content=b"<event", headers=bearer("USA"))).json()  # fmt: skip
    # A body past limit_http_body_bytes (1 MiB): 413 at the edge, nothing forwarded; one of
    # that size is the core's to judge (it comes in parts: more than one NATS message).
    r = await edge.post("/api/cot", content=b"x" * 1_048_577, headers=bearer("USA"))
    assert r.status_code == 413 and "limit_http_body_bytes" in r.json()["error"], r.text
    r = await edge.post("/api/cot", content=b"x" * 1_048_576, headers=bearer("USA"))
    assert r.status_code == 400 and r.json() == (await direct.post(
        "/api/cot", content=b"x" * 1_048_576, headers=bearer("USA"))).json()  # fmt: skip
    # Each process's metrics: the edge's own, the core's through the edge and directly.
    own = {"Authorization": f"Bearer {OPERATOR}"}
    edge_metrics = parse_metrics((await edge.get("/metrics", headers=own)).text)
    core_metrics = parse_metrics((await edge.get("/core/metrics", headers=own)).text)
    own_metrics = parse_metrics((await direct.get("/metrics", headers=own)).text)
    assert core_metrics.keys() == own_metrics.keys()
    assert edge_metrics != core_metrics
    # Without a token, the edge's and the core's public series only (up and build).
    for path in ("/metrics", "/core/metrics"):
        public = await edge.get(path)
        assert public.status_code == 200 and "commonsky_up 1.0" in public.text, path
        assert "party=" not in public.text and "items_in" not in public.text, path
    assert (
        await edge.get("/core/metrics", headers={"Authorization": "Bearer nope"})
    ).status_code == 401
    await edge.aclose()
    await direct.aclose()


async def test_without_a_core_an_edge_answers_503_at_once(cluster: Cluster) -> None:
    a, ports = await cluster.edge()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.http}", timeout=30) as edge:
        started = time.monotonic()
        r = await edge.get("/api/items", headers=bearer("USA"))
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1 and "error" in r.json()
        assert time.monotonic() - started < 5.0
        r = await edge.post("/api/cot", content=track("us-nocore", time.time()),
                            headers=bearer("USA"))  # fmt: skip
        assert r.status_code == 503
        assert (await edge.get("/healthz")).json() == {"status": "ok"}
        assert (await edge.get("/")).status_code in (200, 503)  # (503: map not installed)
        # The core's public metrics (no token) are answered here: nothing anonymous reaches
        # a core. With a token, forwarded as before (no core: 503).
        r = await edge.get("/core/metrics")
        assert r.status_code == 200 and "commonsky_up 1.0" in r.text
        assert "party=" not in r.text and "items_in" not in r.text
        assert (await edge.post("/core/metrics")).status_code == 405
        own = {"Authorization": f"Bearer {OPERATOR}"}
        assert (await edge.get("/core/metrics", headers=own)).status_code == 503
        assert (await edge.get("/core/metrics/x")).status_code == 401
        # The live feed is the edge's: a page connects; a core coming later serves it.
        page = await Page("USA", a.http).connect()
        await cluster.core()
        usa = await Client("USA", ports["USA"]).connect()
        await usa.send(track("us-after-core", time.time()))
        await until(lambda: bool(page.got("us-after-core")), "the page gets the new core's items")
        r = await edge.get("/api/items", headers=bearer("USA"))
        assert r.status_code == 200 and any(i["uid"] == "us-after-core" for i in r.json())
        await page.close()
        await usa.close()


HOSTILE = ("/api/../metrics", "/api/items/%00", "/nothing", "/api/items?bbox=1,2,x,4",
           "/api/hotline?limit=-1", "/api/ledger/receipts/99999999999999999999",
           "/cap/alerts/%2e%2e.xml", "/core/core/metrics",
           "/api/items?" + "a=1&" * 500)  # fmt: skip


async def test_hostile_calls_are_answered_as_the_core_answers_them(
    cluster: Cluster, nc: Nats, cluster_name: str
) -> None:
    core = await cluster.core()
    a, _ = await cluster.edge()
    # Junk on the core's subject (not an HttpCall): dropped, counted; the core goes on.
    with contextlib.suppress(Exception):
        await nc.request(f"{cluster_name}.http", b"\xc1junk", timeout=1.0)
    own = {"Authorization": f"Bearer {OPERATOR}"}
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.http}", timeout=30) as edge,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{core.http}", timeout=30) as direct,
    ):
        for path in HOSTILE:
            via = await edge.get(path, headers=bearer("USA"))
            mine = await direct.get(path.removeprefix("/core"), headers=bearer("USA"))
            assert (via.status_code, via.content) == (mine.status_code, mine.content), path
        for method in ("DELETE", "PUT", "PATCH"):
            via = await edge.request(method, "/api/cot", headers=bearer("USA"))
            mine = await direct.request(method, "/api/cot", headers=bearer("USA"))
            assert via.status_code == mine.status_code == 405, method
        metrics = parse_metrics((await direct.get("/metrics", headers=own)).text)
        errors = metrics.get("commonsky_internal_errors_total", {})
        assert any("cluster_http" in labels for labels in errors), errors


async def test_a_write_the_edge_gave_up_on_is_never_applied(cluster: Cluster) -> None:
    """A core frozen (SIGSTOP) with a forwarded write in hand: the edge answers 504 within its
    bound; a standby takes over; the frozen core, resumed, neither applies the write nor
    serves on (it lost its lease). A core built afresh from PostgreSQL shows only the write
    that followed."""
    frozen = await cluster.core()
    a, _ = await cluster.edge()
    assert frozen.proc is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.http}", timeout=60) as edge:
        r = await edge.post("/api/cot", content=marker("frozen-1", time.time()),
                            headers=bearer("USA"))  # fmt: skip
        assert r.status_code == 201, r.text  # (the marker's own uid: a barrier for the core)
        frozen.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        r = await edge.post("/api/cot", content=marker("frozen-2", time.time()),
                            headers=bearer("USA"))  # fmt: skip
        assert r.status_code == 504, r.text
        assert time.monotonic() - started < FORWARD_S + 5
        # A standby takes the lease once the frozen core's has expired (then waits for the
        # data folder the frozen core holds: cores share it).
        standby = await cluster.core(wait=False)
        await standby.wait_log(r"lease \S+ taken by")
        frozen.proc.send_signal(signal.SIGCONT)
        assert await asyncio.to_thread(frozen.proc.wait, 60) == FAIL_STOP
        await standby.wait_log(r"cluster core \S+ serving")
        r = await edge.post("/api/cot", content=marker("after-1", time.time()),
                            headers=bearer("USA"))  # fmt: skip
        assert r.status_code == 201, r.text
        standby.kill()
        await cluster.core()  # its picture read from PostgreSQL, after every core above
        uids = {i["uid"] for i in (await edge.get("/api/items", headers=bearer("USA"))).json()}
        assert {"frozen-1", "after-1"} <= uids and "frozen-2" not in uids, uids


def big_marker(uid: str, now: float, size: int) -> bytes:
    """A marker whose remarks make it about `size` bytes (under limit_message_bytes)."""
    return marker(uid, now).replace(
        b"</detail>", b"<remarks>" + b"r" * size + b"</remarks></detail>"
    )


async def test_an_answer_larger_than_a_nats_message_comes_whole(cluster: Cluster) -> None:
    core = await cluster.core()
    a, _ = await cluster.edge()
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.http}", timeout=60) as edge,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{core.http}", timeout=60) as direct,
    ):
        for n in range(40):  # 40 × ~60 kB: the answer spans 3 NATS messages
            r = await edge.post("/api/cot", content=big_marker(f"big-{n}", time.time(), 60_000),
                                headers=bearer("USA"))  # fmt: skip
            assert r.status_code == 201, r.text
        via = await edge.get("/api/items", headers=bearer("USA"))
        own = await direct.get("/api/items", headers=bearer("USA"))
        assert via.status_code == 200 and len(via.content) > 2_000_000
        assert via.content == own.content


async def test_a_page_keeps_its_feed_across_a_failover(cluster: Cluster) -> None:
    first = await cluster.core()
    a, _ = await cluster.edge()
    _, ports_b = await cluster.edge()
    page = await Page("RUS", a.http).connect()
    usa = await Client("USA", ports_b["USA"]).connect()
    await usa.send(track("us-before", time.time()))
    await until(lambda: bool(page.got("us-before")), "the page gets USA's track")
    first.kill()
    await cluster.core()  # (a new core: the page is on the roster the edges give it)
    await usa.send(track("us-after", time.time()))
    await until(lambda: bool(page.got("us-after")), "the page gets what the new core applies")
    assert len(page.got("us-before")) == 1, page.items  # (not replayed again)
    assert not page.ws.close_code
    await page.close()
    await usa.close()


async def test_edges_share_the_http_port_and_one_serves_when_the_other_dies(
    cluster: Cluster,
) -> None:
    await cluster.core()
    first, ports = await cluster.edge()
    second, _ = await cluster.edge(ports, http=first.http)  # SO_REUSEPORT, not "in use"
    assert second.http == first.http
    # The kernel spreads new connections over both: pages on both edges (16: all on one
    # edge by chance once in 32,768 runs), each fed.
    pages = [await Page("USA", first.http).connect() for _ in range(16)]
    usa = await Client("USA", ports["USA"]).connect()
    await usa.send(track("shared-http", time.time()))
    for page in pages:
        await until(lambda p=page: bool(p.got("shared-http")), "every page gets the track")
    first.kill()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first.http}", timeout=30) as edge:
        r = await edge.get("/api/items", headers=bearer("USA"))  # (a new connection: the live edge)
        assert r.status_code == 200 and any(i["uid"] == "shared-http" for i in r.json())
    usa2 = await Client("USA", ports["USA"]).connect()  # (the live edge: usa may be gone)
    await usa2.send(track("shared-http-2", time.time()))
    gone = [p for p in pages if p.task is not None and p.task.done()]
    for page in pages:  # each one on the dead edge (closed), or served by the live one
        await until(lambda p=page: bool(p.got("shared-http-2")) or p.ws.close_code is not None,
                    "each page closed with its edge, or still served")  # fmt: skip
    served = [p for p in pages if p.got("shared-http-2")]
    assert served and len(served) < len(pages), "the kernel spread the pages over both edges"
    assert all(p.ws.close_code is not None for p in pages if p not in served), gone
    for page in pages:
        await page.close()
    await usa.close()
    await usa2.close()


async def test_an_edge_whose_http_port_is_taken_says_so_in_one_line(cluster: Cluster) -> None:
    """A port held by a process that does not share it (no SO_REUSEPORT): the edge stops
    at start with one line naming `[server] http`, exit status 2."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = cluster_config(cluster.folder, cluster.name, cluster.nats_url,
                                cluster.store_url, "edge", {p: cluster.port() for p in PARTIES},
                                port)  # fmt: skip
        process = Process(config, cluster.folder / "busy.log")
        process.start()
        assert process.proc is not None
        assert await asyncio.to_thread(process.proc.wait, 60) == 2
    lines = [line for line in process.text().splitlines() if "[server] http" in line]
    assert len(lines) == 1 and str(port) in lines[0], process.text()[-2000:]
    assert "Traceback" not in process.text()
