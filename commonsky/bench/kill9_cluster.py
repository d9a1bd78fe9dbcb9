"""`commonsky bench kill9 --cluster`: kill -9 the cluster's core under load, again and again.

Two edges and cores (`commonsky serve` with `[cluster]`, bench/cluster.py) on this machine's
NATS and a fresh PostgreSQL database. Clients on both edges send hotline messages to each
other (the hub's receipt, `b-t-f-d` naming the message, acknowledges one), launch reports
and tracks; each run kills the core that holds the lease with SIGKILL while a standby waits,
and times how long until the standby serves. After the last run the load stops, the stream
is applied to its end, and PostgreSQL is read: every durable item a client sent must be
stored exactly once (lost: 0, applied twice: 0) and every acknowledged one among them; no
client may have lost its connection to its edge. Each core has its own data folder: the
ledger, the hub's key and secret are in PostgreSQL (hub/shared.py), so the ledger written by
every core in turn is exported (`commonsky ledger export --data-dir` of the last core) and
verified as one chain against the hub key the first core's folder names (`ledger verify
--hub-key`), and a JPN client's generalized handles of USA's tracks are the same after each
takeover as before the first (one hub secret).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from commonsky.alerts.simulate import Ballistic, radar_report
from commonsky.bench.cluster import (
    Client,
    Cluster,
    Process,
    chat,
    forget,
    track,
    until,
    until_async,
)
from commonsky.cluster.config import nats_options
from commonsky.desks.launch import report_event
from commonsky.protocol.cot import encode_event

_HANDLE = re.compile(rb'uid="(USA::g-[0-9a-f]{16})"')
_RECEIPT = re.compile(rb'type="b-t-f-d".*?<link uid="([^"]+)" relation="p-p"/>', re.S)
# Hotline routes of the fuzz agreements (sender, recipient); launch reports go JPN -> KOR.
ROUTES = (("USA", "JPN"), ("JPN", "USA"), ("RUS", "KOR"), ("KOR", "RUS"))


@dataclass
class Load:
    sent: set[str] = field(default_factory=set)  # uids of the durable items sent
    acknowledged: set[str] = field(default_factory=set)
    stop: bool = False

    def receipts(self, client: Client, last: int = 0) -> None:
        for event in client.events[-last:]:
            if m := _RECEIPT.search(event):
                self.acknowledged.add(m.group(1).decode())


async def chats(load: Load, client: Client, to: str) -> None:
    n = 0
    while not load.stop:
        n += 1
        uid = f"k9-{client.party}-{n}"
        await client.send(chat(uid, to, time.time()))
        load.sent.add(uid)
        load.receipts(client, 50)
        await asyncio.sleep(0.02)


async def launches(load: Load, client: Client) -> None:
    rng = np.random.default_rng(7)
    now = time.time()
    truth = Ballistic(39.9, 127.5, datetime.fromtimestamp(now - 600, UTC), 84.0, 1.1e6, 4.2e5)
    n = 0
    while not load.stop:
        n += 1
        report = radar_report(truth, client.party, f"k9-lr-{n}", 20, 60, 10, 400, 300, rng)
        await client.send(encode_event(report_event(report, time.time())))
        load.sent.add(f"launch-report-k9-lr-{n}")
        await asyncio.sleep(0.05)


async def tracks(load: Load, client: Client) -> None:
    k = 0
    while not load.stop:
        now = time.time()
        batch = [track(f"k9-trk-{k % 50 + i}", now, 30 + k % 7) for i in range(10)]
        await client.send(b"".join(batch))
        k += 10
        await asyncio.sleep(0.02)


async def receipts_flow(load: Load, what: str, more: int = 20) -> None:
    before = len(load.acknowledged)
    await until(lambda: len(load.acknowledged) >= before + more, what)


def serving(cores: list[Process]) -> Process:
    """The core holding the lease now (the one alive that said it serves)."""
    alive = [c for c in cores if c.proc is not None and c.proc.poll() is None]
    holders = [c for c in alive if "serving" in c.text()]
    assert len(holders) == 1, [c.log.name for c in holders]
    return holders[0]


def data_dir(process: Process) -> Path:
    """A process's own data folder (bench/cluster.py `cluster_config`)."""
    return process.config.parent / f"data-{process.config.stem}"


def ledger_size(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute("SELECT count(*) FROM commonsky_ledger_entry").fetchone()
    return int(row[0]) if row else 0


def handles(events: list[bytes]) -> set[bytes]:
    """The generalized handles of USA's tracks among `events` (us-jp is "generalized"; the
    load's tracks are 60 uids sent again and again, its hotline messages ever new ones)."""
    return {
        m.group(1) for event in events if b' type="a-' in event for m in _HANDLE.finditer(event)
    }


def ledger_figures(cores: list[Process], out_dir: Path) -> dict[str, Any]:
    """Export the whole ledger through the last core's data folder and verify it against
    the hub key the first core's folder holds (the CLI, as an operator runs it)."""
    export = out_dir / "kill9-cluster-ledger.jsonl"
    last = next(c for c in reversed(cores) if (data_dir(c) / "hub.json").exists())
    key = data_dir(cores[0]) / "hub-ed25519.pub.pem"
    cli = [sys.executable, "-m", "commonsky", "ledger"]
    made = subprocess.run([*cli, "export", "--data-dir", str(data_dir(last)), "--out",
                           str(export)], capture_output=True, text=True)  # fmt: skip
    checked = subprocess.run([*cli, "verify", str(export), "--hub-key", str(key)],
                             capture_output=True, text=True)  # fmt: skip
    keys = {(data_dir(c) / "hub-ed25519.pub.pem").read_bytes()
            for c in cores if (data_dir(c) / "hub-ed25519.pub.pem").exists()}  # fmt: skip
    ids = {json.loads((data_dir(c) / "hub.json").read_text())["hub_id"]
           for c in cores if (data_dir(c) / "hub.json").exists()}  # fmt: skip
    return {
        "ledger_export": (made.stdout + made.stderr).strip()[-300:],
        "ledger_verify": (checked.stdout + checked.stderr).strip()[-300:],
        "ledger_verified": made.returncode == 0 and checked.returncode == 0,
        "core_data_dirs": sum(1 for c in cores if (data_dir(c) / "hub.json").exists()),
        "hub_keys_seen": len(keys),
        "hub_ids_seen": len(ids),
    }


def stored(url: str) -> dict[str, int]:
    """Stored items of the load (uid -> how many times)."""
    import psycopg

    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT convert_from(uid, 'UTF8'), count(*) FROM commonsky_items "
            "WHERE convert_from(uid, 'UTF8') LIKE '%k9-%' GROUP BY 1"
        ).fetchall()
    return {str(uid): int(n) for uid, n in rows}


# Draining the stream after the load: a minute, and time for a stuck core to be found
# (`[cluster] stall_s`, 60 s by default) and replaced.
_SETTLE_S = 150.0


def last_lines(process: Process, count: int = 12) -> list[str]:
    """A process's last log lines but the per-message "applied already" ones (a core
    that took over logs one for each message redelivered to it)."""
    lines = [line for line in process.text().splitlines() if "applied already" not in line]
    return [line[:300] for line in lines[-count:]]


async def settle(cluster: Cluster, cores: list[Process]) -> int:
    """Wait until the stream is applied to its end. A core that lost its lease, or found
    itself stuck (cluster/stall.py), stops by itself (exit 75, fail-stop): counted (returned,
    those stopped by the end), and one more core is started if none is left to apply the
    rest of the stream. (Time enough for a stuck core to be found and replaced.)"""
    import nats

    if not any(c.proc is not None and c.proc.poll() is None for c in cores):
        cores.append(await cluster.core())
    nc = await nats.connect(**nats_options(cluster.nats_url))
    try:
        js = nc.jetstream()

        async def drained() -> bool:
            return (await js.stream_info(f"{cluster.name}_IN")).state.messages == 0

        try:
            await until_async(drained, "the stream applied to its end", _SETTLE_S)
        except AssertionError as exc:  # (what the stream and its consumer hold, to look at)
            stream = await js.stream_info(f"{cluster.name}_IN")
            consumers = [
                f"{c.name}: pending {c.num_pending}, awaiting ack {c.num_ack_pending}, "
                f"redelivered {c.num_redelivered}, delivered {c.delivered}, acked {c.ack_floor}"
                for c in await js.consumers_info(f"{cluster.name}_IN")
            ]
            alive = [c for c in cores if c.proc is not None and c.proc.poll() is None]
            raise AssertionError(
                f"{exc}; stream {stream.state}; consumers {consumers}; cores running "
                f"{[c.log.name for c in alive]}; their last lines: "
                f"{ {c.log.name: last_lines(c) for c in alive} }"
            ) from None
    finally:
        await nc.close()
    return sum(1 for c in cores if c.proc is not None and c.proc.poll() == 75)


async def kill_runs(cluster: Cluster, runs: int, rng: random.Random) -> dict[str, Any]:
    """`runs` kills of the serving core under load; the figures (module header)."""
    cores = [await cluster.core(), await cluster.core(wait=False)]
    _, a = await cluster.edge()
    _, b = await cluster.edge()
    senders = {
        "USA": await Client("USA", a["USA"]).connect(),
        "RUS": await Client("RUS", a["RUS"]).connect(),
        "JPN": await Client("JPN", b["JPN"]).connect(),
        "KOR": await Client("KOR", b["KOR"]).connect(),
    }
    others = [await Client("JPN", b["JPN"]).connect(), await Client("USA", b["USA"]).connect()]
    try:
        return await _loaded_runs(cluster, cores, senders, others, runs, rng)
    finally:  # (failed too: no client's socket is left to a later test's garbage collection)
        for client in [*senders.values(), *others]:
            await client.close()


async def _loaded_runs(
    cluster: Cluster, cores: list[Process], senders: dict[str, Client], others: list[Client],
    runs: int, rng: random.Random,
) -> dict[str, Any]:  # fmt: skip
    load = Load()
    tasks = [asyncio.create_task(chats(load, senders[p], to)) for p, to in ROUTES]
    tasks += [asyncio.create_task(launches(load, others[0]))]
    tasks += [asyncio.create_task(tracks(load, others[1]))]
    per_run: list[dict[str, Any]] = []
    sizes: list[int] = []  # ledger entries when each core was killed
    marks: list[int] = []  # events the JPN client had when each standby served
    seen_before: set[bytes] = set()
    try:
        for run in range(1, runs + 1):
            await receipts_flow(load, f"receipts flow before kill {run}")
            await asyncio.sleep(rng.uniform(0.0, 2.0))  # (a random moment of the load)
            victim = serving(cores)
            acknowledged = len(load.acknowledged)
            if run == 1:
                seen_before = handles(others[0].events)
            victim.kill()
            killed = time.monotonic()
            sizes.append(ledger_size(cluster.store_url))  # (the dead core's last commit in)
            standby = next(c for c in cores if c is not victim and c.proc and c.proc.poll() is None)
            await standby.wait_log(r"cluster core \S+ serving")
            marks.append(len(others[0].events))
            per_run.append({"run": run, "acknowledged_before": acknowledged,
                            "takeover_s": round(time.monotonic() - killed, 2),
                            "ledger_size_at_kill": sizes[-1]})  # fmt: skip
            print(json.dumps(per_run[-1]), flush=True)
            cores.append(await cluster.core(wait=False))  # the next kill's standby
        await receipts_flow(load, "receipts after the last kill")
    finally:
        load.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    clients = [*senders.values(), *others]
    disconnected = sum(c.closed.is_set() for c in clients)
    stopped = await settle(cluster, cores)
    for client in senders.values():  # (the receipts still on their way)
        load.receipts(client)
    counts = stored(cluster.store_url)
    sizes.append(ledger_size(cluster.store_url))
    after = handles(others[0].events[marks[0] :]) if marks else set()
    ledger = ledger_figures(cores, cluster.folder)
    lost = sorted(uid for uid in load.sent if uid not in counts)
    twice = sorted(uid for uid, n in counts.items() if n > 1 and "trk" not in uid)
    unacknowledged_kept = len(load.acknowledged - set(counts))
    return {
        "runs": runs,
        "sent_durable": len(load.sent),
        "acknowledged": len(load.acknowledged),
        "lost": len(lost),
        "lost_examples": lost[:5],
        "applied_twice": len(twice),
        "applied_twice_examples": twice[:5],
        "acknowledged_not_stored": unacknowledged_kept,
        "clients_disconnected": disconnected,
        "cores_stopped_by_themselves": stopped,
        "takeover_s_max": max((r["takeover_s"] for r in per_run), default=None),
        # Entries each core (epoch) wrote: the first until its kill, each next until its own.
        "ledger_entries_per_epoch": [b - a for a, b in zip([0, *sizes], sizes, strict=False)],
        **ledger,
        "handles_before": len(seen_before),
        "handles_after_takeover": len(after),
        "handles_new_after_takeover": len(after - seen_before),
        "per_run": per_run,
    }


def kill9_cluster(runs: int, out_dir: Path, seed: int, nats_url: str,
                  postgres_admin: str) -> dict[str, Any]:  # fmt: skip
    """`runs` kills on a fresh cluster (its own name and database, dropped afterwards); the
    figures, also in out_dir/kill9-cluster.json."""
    import psycopg

    # Absolute: the processes' configs name their data folders under it, and a relative path
    # in a config is taken from the config's own folder (`--out` defaults to var/kill9/…).
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"k9{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(postgres_admin, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    cluster = Cluster(out_dir, name, nats_url, f"{postgres_admin.rsplit('/', 1)[0]}/{name}")
    try:
        figures = asyncio.run(kill_runs(cluster, runs, random.Random(seed)))
    finally:
        cluster.stop()
        asyncio.run(forget(nats_url, name))
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()
    figures["passed"] = (
        figures["lost"] == 0
        and figures["applied_twice"] == 0
        and figures["acknowledged_not_stored"] == 0
        and figures["clients_disconnected"] == 0
        and figures["ledger_verified"]
        and min(figures["ledger_entries_per_epoch"]) > 0
        and figures["hub_keys_seen"] == figures["hub_ids_seen"] == 1
        and figures["handles_after_takeover"] > 0
        and figures["handles_new_after_takeover"] == 0
    )
    (out_dir / "kill9-cluster.json").write_text(json.dumps(figures, indent=2))
    return figures
