"""`commonsky bench kill9`: kill -9 the hub under load, again and again; count what it lost.

Each run starts the hub (`commonsky serve`, as its own process) on the same data, puts it
under load — parties sending hotline messages through the API and over TAK, airspace through
the API, and a stream of live tracks — and kills it with SIGKILL at a random moment. A
durable item is *acknowledged* when the hub said so: a 201 from the API, or the hub's own
receipt (`b-t-f-d`, naming the message) on the sender's TAK connection. After each kill the
store is read as the next start will read it: every acknowledged item must be there.

Reported per run and in all: acknowledged, lost (must be 0), whether the hub started again
and in how long, and the store/ledger disagreements the kill left (the store and the ledger
are two commits until they become one; a kill between them shows here as a ledger entry
for an item never stored — never acknowledged, never relayed). The per-party quota of
durable items is raised for the check: ten runs of durable load would otherwise reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonsky.bench.fuzz_seeds import PARTIES
from commonsky.bench.hubproc import HubProcess, check_data, http_request, hub_config, token
from commonsky.bench.ports import HeldPorts
from commonsky.times import format_time

_RECEIPT = re.compile(rb'type="b-t-f-d".*?<link uid="([^"]+)" relation="p-p"/>', re.S)
# Who may send hotline messages to whom under the fuzz agreements (see fuzz.hub_config).
ROUTES = (("USA", "JPN"), ("JPN", "USA"), ("RUS", "KOR"), ("KOR", "RUS"))


@dataclass
class Load:
    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    sent: int = 0
    stop: bool = False


def chat(uid: str, to: str, now: float, note: str = "kill9") -> bytes:
    """A hotline message (durable; its receipt acknowledges it) to party `to`."""
    return (
        f'<event version="2.0" uid="{uid}" type="b-t-f" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 3600)}" how="h-g-i-g-o">'
        '<point lat="0" lon="0" hae="0" ce="9999999" le="9999999"/><detail>'
        f'<__chat chatroom="hotline" senderCallsign="K9"/><marti><dest party="{to}"/></marti>'
        f"<remarks>{note} {uid}</remarks></detail></event>"
    ).encode()


def _track(uid: str, now: float, k: int) -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-A-M-F" time="{format_time(now)}" '
        f'start="{format_time(now)}" stale="{format_time(now + 60)}" how="m-g">'
        f'<point lat="{30 + k % 50 * 0.01}" lon="31" hae="9000" ce="10" le="10"/><detail>'
        '<track speed="200" course="90"/></detail></event>'
    ).encode()


async def api_writer(load: Load, http: int, run: int, index: int) -> None:
    """Hotline messages and airspace through the API; a 201 acknowledges."""
    party, to = ROUTES[index % len(ROUTES)]
    with contextlib.suppress(OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
        reader, writer = await asyncio.open_connection("127.0.0.1", http)
        n = 0
        while not load.stop:
            n += 1
            uid = f"k9-r{run}-a{index}-{n}"
            body: dict[str, Any]
            if n % 5:
                path, body = "/api/hotline/send", {"to": to, "text": uid, "uid": uid}
            else:
                lon = 30 + (n % 100) * 0.01
                ring = [[lon, 30], [lon + 0.01, 30], [lon + 0.01, 30.01], [lon, 30.01], [lon, 30]]
                path = "/api/airspace"
                body = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                        "properties": {"uid": uid, "floor_m": 0, "ceiling_m": 100}}  # fmt: skip
            load.sent += 1
            status, _ = await http_request(
                reader, writer, "POST", path, token(party), json.dumps(body).encode()
            )
            if status == 201:
                load.acknowledged.add((party, uid))


async def tak_writer(load: Load, port: int, party: str, to: str, run: int) -> None:
    """GeoChat over TAK; the hub's receipt on this connection acknowledges."""
    with contextlib.suppress(OSError, ConnectionError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def receipts() -> None:
            data = b""
            while chunk := await reader.read(65536):
                data += chunk
                for match in _RECEIPT.finditer(data):
                    uid = match.group(1).decode()
                    if uid.startswith(f"k9-r{run}-"):  # (earlier runs' receipts are replayed)
                        load.acknowledged.add((party, uid))
                data = data[data.rfind(b"</event>") + 8 :] if b"</event>" in data else data

        task = asyncio.create_task(receipts())
        n = 0
        try:
            while not load.stop and not task.done():
                n += 1
                writer.write(chat(f"k9-r{run}-t{party}-{n}", to, time.time()))
                load.sent += 1
                await writer.drain()
                await asyncio.sleep(0.01)
        finally:
            task.cancel()


async def track_writer(load: Load, port: int) -> None:
    """Live tracks, about 1,000 a second: the load the durable items share the hub with."""
    with contextlib.suppress(OSError, ConnectionError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        k = 0
        while not load.stop:
            now = time.time()
            writer.write(b"".join(_track(f"k9-trk-{k % 200 + i}", now, k + i) for i in range(10)))
            k += 10
            await writer.drain()
            await asyncio.sleep(0.01)


def lost_items(data_dir: Path, acknowledged: set[tuple[str, str]]) -> list[tuple[str, str]]:
    from commonsky.store.sqlite import SQLiteStore

    store = SQLiteStore(data_dir)
    try:
        kept = {(item.party, item.uid) for item in store.since(0)}
    finally:
        store.close()
    return sorted(acknowledged - kept)


async def one_run(hub: HubProcess, ports: dict[str, int], run: int, rng: random.Random,
                  data_dir: Path) -> dict[str, Any]:  # fmt: skip
    started = await hub.start()
    load = Load()
    tasks = [asyncio.create_task(api_writer(load, hub.http, run, i)) for i in range(4)]
    tasks += [asyncio.create_task(tak_writer(load, ports[p], p, to, run)) for p, to in ROUTES[:2]]
    tasks += [asyncio.create_task(track_writer(load, ports["JPN"]))]
    await asyncio.sleep(rng.uniform(2.0, 6.0))
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait()
    load.stop = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lost = lost_items(data_dir, load.acknowledged)
    agree, _ = check_data(data_dir)
    return {
        "run": run,
        "start_s": round(started, 2),
        "sent": load.sent,
        "acknowledged": len(load.acknowledged),
        "lost": len(lost),
        "lost_examples": lost[:5],
        "store_ledger_disagreements": len(agree),
        "store_ledger_examples": agree[:3],
    }


def kill9(runs: int, out_dir: Path, seed: int) -> dict[str, Any]:
    """`runs` kills under load on one hub's data; the figures (also in out_dir/kill9.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Held for the whole run: the hub is restarted on the same ports after every kill.
    held = HeldPorts()
    ports = {p: held.port() for p in PARTIES}
    http = held.port()
    config = out_dir / "kill9.toml"
    # Ten runs of durable load outgrow the per-party quota (a refusal is not an
    # acknowledgement, so the figure would only shrink): raised for this check.
    config.write_text(
        hub_config(out_dir / "hub", http, ports, "limit_durable_items_per_party = 1000000\n")
    )
    hub = HubProcess(config, out_dir / "hub.log", http, "warning")
    rng = random.Random(seed)

    async def main() -> tuple[list[dict[str, Any]], float | None]:
        results = []
        for run in range(1, runs + 1):
            results.append(await one_run(hub, ports, run, rng, out_dir / "hub"))
            print(json.dumps(results[-1]))
        try:
            final: float | None = await hub.start()
        except RuntimeError:
            final = None
        finally:
            hub.stop()
        return results, final

    try:
        results, final = asyncio.run(main())
    finally:
        held.close()  # (the hub is stopped by then)
    figures: dict[str, Any] = {
        "runs": runs,
        "acknowledged": sum(r["acknowledged"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "store_ledger_disagreements_after_kills": results[-1]["store_ledger_disagreements"]
        if results
        else 0,
        "started_after_last_kill": final is not None,
        "start_after_last_kill_s": None if final is None else round(final, 2),
        "per_run": results,
    }
    figures["passed"] = figures["lost"] == 0 and final is not None
    (out_dir / "kill9.json").write_text(json.dumps(figures, indent=2))
    return figures
