"""`commonsky bench federation`: two hubs on loopback against one hub, in the same run.

Every hub is its own process (`commonsky serve`). USA's client sends tracks at a fixed rate;
JPN's client receives them, under an agreement USA -> JPN (tracks and markers, full):
- **one hub**: USA and JPN on the same hub (client -> hub -> client);
- **two hubs**: USA on hub A, JPN on hub B, A dials B over TAK Federation v2 (mutual TLS)
  (client -> hub A -> link -> hub B -> client).
Reported for each: items/s delivered and end-to-end latency p50/p99 (send to receipt, one
clock: both clients are in this process).

**Resume**: durable markers are sent to hub A while hub B is killed with SIGKILL and
started again, then hub A is killed and started again while more are sent. Reported: the
time from B answering /healthz again to JPN's client holding every marker sent while it was
down, and, from the stores read afterwards, the markers A stored that B does not hold
(lost: must be 0) and those B holds twice (must be 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonsky.bench.fuzz import HubProcess
from commonsky.bench.ports import HeldPorts
from commonsky.pki import init_ca
from commonsky.times import format_time

_UID = re.compile(rb'uid="USA::(b\d+-\d+|m\d+-\d+)"')
SHARE = (
    '[[agreement]]\nname = "us-jp"\nfrom = "USA"\nto = ["JPN"]\n'
    'categories = ["track", "marker"]\ndisclosure = "full"\n'
)


def _track(uid: str, now: float) -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-A-M-F" how="m-g" time="{format_time(now)}"'
        f' start="{format_time(now)}" stale="{format_time(now + 120)}">'
        '<point lat="36.5" lon="128.5" hae="9000" ce="10" le="10"/><detail>'
        '<contact callsign="B"/><track speed="200.5" course="90.25"/></detail></event>'
    ).encode()


def _marker(uid: str, now: float) -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="b-m-p-s-m" how="h-e" time="{format_time(now)}"'
        f' start="{format_time(now)}" stale="{format_time(now + 3600)}">'
        '<point lat="36.5" lon="128.5" hae="0" ce="10" le="10"/><detail>'
        f"<remarks>{uid}</remarks></detail></event>"
    ).encode()


@dataclass
class Receiver:
    """JPN's TAK client: the first arrival time of every uid it is sent."""

    seen: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    async def run(self, port: int) -> None:
        while True:
            with contextlib.suppress(OSError, ConnectionError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    await self._read(reader)
                finally:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            await asyncio.sleep(0.1)  # its hub was killed: reconnect

    async def _read(self, reader: asyncio.StreamReader) -> None:
        data = b""
        while chunk := await reader.read(262144):
            now = time.perf_counter()
            data += chunk
            cut = data.rfind(b"</event>")
            if cut < 0:
                continue
            for match in _UID.finditer(data, 0, cut):
                self.seen.setdefault(match.group(1).decode(), now)
            data = data[cut + 8 :]

    def start(self, port: int) -> None:
        self.task = asyncio.create_task(self.run(port))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def _config(
    name: str, root: Path, http: int, tak: dict[str, int], remote: list[str],
    fed_port: int, connect: int | None, peer_ca: Path | None,
) -> Path:  # fmt: skip
    ca = root / f"{name}-ca"
    if not (ca / "ca.pem").exists():
        init_ca(ca, name=f"{name} CA")
    text = [
        f'[server]\ndata_dir = "{root / (name + "-data")}"\nhttp = "127.0.0.1:{http}"\n'
        'operator_token = "bench-operator-token-0123456789"\n'
        "limit_durable_items_per_party = 1000000\nlimit_queue_durable = 1000000\n"
        "timeout_federation_health_s = 1.0\ntimeout_federation_retry_s = 0.1\n"
    ]
    for party, port in tak.items():
        text.append(
            f'[[listener]]\nkind = "tak-tcp"\nbind = "127.0.0.1:{port}"\nparty = "{party}"\n'
        )
        text.append(f'[[party]]\nid = "{party}"\n')
    if peer_ca is not None:
        text.append(
            f'[[listener]]\nkind = "federation"\nbind = "127.0.0.1:{fed_port}"\nca = "{ca}"\n'
        )
        link = f'[[federate]]\nname = "peer"\nca = "{peer_ca}"\nparties = {remote!r}\n'
        if connect is not None:
            link += f'connect = "127.0.0.1:{connect}"\n'
        text.append(link.replace("'", '"'))
        for party in remote:
            text.append(f'[[party]]\nid = "{party}"\nfederate = "peer"\n')
    text.append(SHARE)
    path = root / f"{name}.toml"
    path.write_text("\n".join(text))
    return path


async def _send(port: int, make: Any, prefix: str, count: int, rate: float) -> dict[str, float]:
    """Send `count` events at `rate` a second; the send time of each uid."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    sent: dict[str, float] = {}
    began = time.perf_counter()
    batch = max(1, int(rate / 100))
    try:
        for i in range(0, count, batch):
            now = time.time()
            chunk = []
            for k in range(i, min(count, i + batch)):
                uid = f"{prefix}-{k}"
                chunk.append(make(uid, now))
                sent[uid] = time.perf_counter()
            writer.write(b"".join(chunk))
            await writer.drain()
            ahead = began + (i + batch) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return sent


async def _until(predicate: Any, timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


def _figures(sent: dict[str, float], seen: dict[str, float]) -> dict[str, Any]:
    got = [seen[u] - t for u, t in sent.items() if u in seen]
    if not got:
        return {"delivered": 0, "items_per_s": 0.0, "p50_ms": None, "p99_ms": None}
    span = max(seen[u] for u in sent if u in seen) - min(sent.values())
    got.sort()
    return {
        "delivered": len(got),
        "of": len(sent),
        "items_per_s": round(len(got) / span, 1) if span > 0 else None,
        "p50_ms": round(statistics.median(got) * 1000, 2),
        "p99_ms": round(got[min(len(got) - 1, int(len(got) * 0.99))] * 1000, 2),
    }


async def _load(
    send_port: int, receiver: Receiver, prefix: str, count: int, rate: float
) -> dict[str, Any]:
    sent = await _send(send_port, _track, prefix, count, rate)
    await _until(lambda: all(u in receiver.seen for u in sent), 30)
    return _figures(sent, receiver.seen)


def _stored(data_dir: Path, prefix: str) -> list[str]:
    from commonsky.store.sqlite import SQLiteStore

    store = SQLiteStore(data_dir)
    try:
        return [i.uid for i in store.since(0) if i.party == "USA" and i.uid.startswith(prefix)]
    finally:
        store.close()


async def run(out: Path, count: int, rate: float, markers: int) -> dict[str, Any]:
    """The figures of one hub, then two federated hubs killed and restarted under load."""
    # Held for the whole run: configurations are written first, and hubs restart on them.
    with HeldPorts() as held:
        return await _run(out, count, rate, markers, held.port)


async def _run(out: Path, count: int, rate: float, markers: int,
               port: Callable[[], int]) -> dict[str, Any]:  # fmt: skip
    figures: dict[str, Any] = {"count": count, "rate": rate, "markers": markers}
    # one hub
    single_tak = {"USA": port(), "JPN": port()}
    single = HubProcess(_config("single", out, port(), single_tak, [], 0, None, None),
                        out / "single.log", 0, "warning")  # fmt: skip
    single.http = int(re.search(rb"127.0.0.1:(\d+)", single.config.read_bytes()).group(1))  # type: ignore[union-attr]
    await single.start()
    receiver = Receiver()
    receiver.start(single_tak["JPN"])
    await asyncio.sleep(0.3)
    try:
        figures["one_hub"] = await _load(single_tak["USA"], receiver, "b1", count, rate)
    finally:
        await receiver.stop()
        single.stop()
    # two hubs
    a_tak, b_tak = {"USA": port()}, {"JPN": port()}
    a_http, b_http, a_fed, b_fed = port(), port(), port(), port()
    for name in ("a", "b"):
        init_ca(out / f"{name}-ca", name=f"{name} CA")
    b_conf = _config("b", out, b_http, b_tak, ["USA"], b_fed, None, out / "a-ca" / "ca.pem")
    a_conf = _config("a", out, a_http, a_tak, ["JPN"], a_fed, b_fed, out / "b-ca" / "ca.pem")
    hub_a = HubProcess(a_conf, out / "a.log", a_http, "warning")
    hub_b = HubProcess(b_conf, out / "b.log", b_http, "warning")
    await hub_b.start()
    await hub_a.start()
    receiver = Receiver()
    receiver.start(b_tak["JPN"])
    try:
        # the link is up once a probe crosses
        probe = await _send(a_tak["USA"], _track, "b0", 1, 10)
        await _until(lambda: all(u in receiver.seen for u in probe), 30)
        figures["two_hubs"] = await _load(a_tak["USA"], receiver, "b2", count, rate)
        # resume: B killed and back, then A killed and back, markers sent meanwhile
        assert hub_b.proc is not None
        hub_b.proc.send_signal(signal.SIGKILL)
        hub_b.proc.wait()
        down = await _send(a_tak["USA"], _marker, "m1", markers, max(rate / 5, 50))
        restarted = time.perf_counter()
        await hub_b.start()
        back = time.perf_counter()
        complete = await _until(lambda: all(u in receiver.seen for u in down), 60)
        figures["resume_after_receiver_kill_s"] = (
            round(max(receiver.seen[u] for u in down) - back, 3) if complete else None
        )
        figures["receiver_restart_s"] = round(back - restarted, 2)
        more = asyncio.create_task(_send(a_tak["USA"], _marker, "m2", markers, max(rate / 5, 50)))
        await asyncio.sleep(markers / max(rate / 5, 50) / 2)
        assert hub_a.proc is not None
        hub_a.proc.send_signal(signal.SIGKILL)
        hub_a.proc.wait()
        with contextlib.suppress(OSError, ConnectionError):
            await more
        await hub_a.start()
        stored_a = set(_stored(out / "a-data", "m"))
        await _until(lambda: all(u in receiver.seen for u in stored_a), 60)
    finally:
        await receiver.stop()
        hub_a.stop()
        hub_b.stop()
    held_b = _stored(out / "b-data", "m")
    figures["durable_stored_by_sender"] = len(stored_a)
    figures["durable_lost"] = len(stored_a - set(held_b))
    figures["durable_applied_twice"] = len(held_b) - len(set(held_b))
    figures["passed"] = (
        figures["durable_lost"] == 0
        and figures["durable_applied_twice"] == 0
        and figures["resume_after_receiver_kill_s"] is not None
    )
    return figures


def federation(
    out: Path, count: int = 5000, rate: float = 500.0, markers: int = 300
) -> dict[str, Any]:
    """Run the benchmark (see the module rule); the figures, also written to OUT/federation.json."""
    import json
    import os

    from commonsky.bench.machine import steal

    out.mkdir(parents=True, exist_ok=True)
    with steal() as stolen:
        figures = asyncio.run(run(out, count, rate, markers))
    figures["machine"] = {"cpus": os.cpu_count(), "steal_percent": round(stolen.percent or 0, 1)}
    (out / "federation.json").write_text(json.dumps(figures, indent=2))
    return figures
