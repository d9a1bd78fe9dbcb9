"""`commonsky bench fuzz`: mutated messages against a real hub, restarted midway.

The hub runs as its own process (`commonsky serve`, its output in DIR/hub.log) with four
parties under a mesh of agreements (full, generalized, conflicts-only; tracks, hotline,
airspace, sites, launch, alerts), so what is accepted is also routed and rendered for others.
This process is the load, over real sockets:

- per party, one TAK connection sending mutated CoT XML and one sending mutated TAK
  protobuf (after negotiating it), both reading what they are sent;
- per party, receivers that only read (CoT XML, protobuf, and a WebSocket) and ping: they
  are entitled to stay connected, so any loss of theirs is a fault. Only what the hub did
  counts: a close it made (EOF, reset, a close frame it sent first, a refusal at connect,
  also while protobuf is negotiated), not a connect that failed or timed out here, nor a
  WebSocket this client closed itself (both reported apart). The WebSocket client keeps
  no keepalive of its own and reads without bound, so this process's starved event loop
  cannot end it; the hub's keepalive (`timeout_ws_ping_s`) judges it, with a reason;
- HTTP keep-alive connections sending mutated API requests (writes and reads).

The hub process and its HTTP client are `hubproc.py`. Inputs come from `fuzz_inputs.py`
(structure-aware and byte-level mutations of the corpus and of our own message kinds,
`fuzz_seeds.py`). The run is cut into phases; between phases the hub is stopped
(SIGTERM) and started again on its data. After the last phase the store and the ledger are
compared (`ledger/agreement.py`) and the hub is started once more on the fuzzed data.

Reported: inputs (per channel), crashes, tracebacks and ERROR lines in the hub's log, our
own errors and render failures (metrics), HTTP 5xx, connections the hub closed without a
counted reason, store/ledger disagreements, start-up after the run and its time, max RSS.
The run passes when the hub never crashed, logged no traceback, closed nothing without a
reason and no receiver at all, answered no 500, its store and ledger agree, and it starts
on the fuzzed data.
Settings differing from the defaults: `limit_refusals_before_close = 500` (a mutated
stream is mostly refusals; with the default 20 the run would measure reconnections) and
`limit_queue_durable = 100000` (conflict notices between mutated drawings pile up in the
pictures; past the limit each connect is closed as too slow, which a run would measure
instead of the input).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonsky.bench.fuzz_inputs import Mutator
from commonsky.bench.fuzz_seeds import PARTIES, ApiSeeds, corpus_seeds, own_seeds
from commonsky.bench.hubproc import (
    HubProcess,
    check_data,
    http_get,
    http_request,
    hub_config,
    parse_metrics,
    token,
)
from commonsky.bench.ports import HeldPorts
from commonsky.protocol.cot import control_event, encode_event
from commonsky.protocol.stream import TakStream, frame_proto
from commonsky.protocol.takv1 import event_to_proto

# (HubProcess is hubproc.py's; still importable from here.)
__all__ = ["HubProcess", "fuzz", "run_phase"]

_PROTO_ANSWER = b"t-x-takp-r"
API_SHARE = 0.05  # of all inputs, at least, go through the HTTP API


@dataclass
class Tally:
    inputs: Counter[str] = field(default_factory=Counter)
    closed_seen: int = 0  # connections of ours the hub closed (EOF or reset we did not cause)
    receivers_lost: int = 0
    receivers_lost_by_cause: Counter[str] = field(default_factory=Counter)
    # Not the hub's doing, so neither lost nor closes (shown, not judged): a receiver that
    # could not connect in time, or that closed its own WebSocket.
    receivers_not_connected: int = 0
    receivers_closed_by_us: Counter[str] = field(default_factory=Counter)
    http_status: Counter[int] = field(default_factory=Counter)
    http_lost: int = 0
    hub_closed: Counter[str] = field(default_factory=Counter)  # from /metrics, per reason
    refusals: Counter[str] = field(default_factory=Counter)
    accepted: float = 0.0
    internal_errors: float = 0.0
    render_failures: float = 0.0
    quarantined: float = 0.0
    starts_s: list[float] = field(default_factory=list)
    exits: list[int | None] = field(default_factory=list)
    crashes: int = 0
    max_rss_mb: float = 0.0
    agree: list[str] = field(default_factory=list)  # store/ledger disagreements
    unreadable: int = 0

    @property
    def total(self) -> int:
        return sum(self.inputs.values())


class HubClosed(ConnectionError):
    """The hub closed a connection of ours before it was ready (a close to count)."""


class Run:
    """One phase's clients against one hub process."""

    def __init__(self, mutator: Mutator, api: ApiSeeds, ports: dict[str, int], http: int,
                 tally: Tally, goal: int) -> None:  # fmt: skip
        self.mutator, self.api, self.ports, self.http = mutator, api, ports, http
        self.tally, self.goal = tally, goal
        self.stopping = False

    async def _connect(
        self, party: str, proto: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TAK connection of `party`, protobuf negotiated when `proto`. OSError when it
        cannot be opened (not the hub's doing: nothing to count); HubClosed when the hub
        closes it while negotiating (a close to count)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ports[party])
        if proto:
            try:
                writer.write(TakStream(role="client").request_protobuf(time.time()))
                seen = b""  # (the picture it is entitled to comes first: read past it)
                while _PROTO_ANSWER not in seen:
                    chunk = await asyncio.wait_for(reader.read(262144), 30)
                    if not chunk:
                        raise HubClosed("closed while negotiating")
                    seen = seen[-64:] + chunk
            except HubClosed:
                writer.close()
                raise
            except ConnectionError as exc:
                writer.close()
                raise HubClosed(f"closed while negotiating: {exc}") from exc
            except BaseException:
                writer.close()  # (left open, the hub would close it later, uncounted by us)
                raise
        return reader, writer

    def _lost(self, receiver: bool, cause: str) -> None:
        """The hub closed a connection of ours (counted only while the phase runs)."""
        if self.stopping:
            return
        self.tally.closed_seen += 1
        if receiver:
            self.tally.receivers_lost += 1
            self.tally.receivers_lost_by_cause[cause] += 1

    async def sender(self, party: str, proto: bool) -> None:
        make = self.mutator.proto if proto else self.mutator.xml
        channel = "proto" if proto else "xml"
        while not self.stopping and self.tally.total < self.goal:
            try:
                reader, writer = await self._connect(party, proto)
            except HubClosed:
                self._lost(False, "")
                continue
            except OSError:  # (TimeoutError included)
                await asyncio.sleep(0.1)
                continue
            drain = asyncio.create_task(_discard(reader))
            lost = False
            try:
                while not self.stopping and self.tally.total < self.goal:
                    if drain.done():  # the hub closed it (the reader saw the end)
                        lost = True
                        break
                    if self.tally.inputs["api"] < API_SHARE * self.tally.total:
                        await asyncio.sleep(0.02)  # HTTP is slower: give it its share
                        continue
                    batch = [make() for _ in range(20)]
                    writer.write(b"".join(batch))
                    self.tally.inputs[channel] += len(batch)
                    await writer.drain()
            except (ConnectionError, OSError):
                lost = True
            if lost:
                self._lost(False, "")
            drain.cancel()
            writer.close()

    async def receiver(self, party: str, proto: bool) -> None:
        kind = "proto" if proto else "xml"
        while not self.stopping:
            try:
                reader, writer = await self._connect(party, proto)
            except HubClosed:
                self._lost(True, f"{kind}: closed while negotiating")
                continue
            except OSError:  # (TimeoutError included): never connected, nothing lost
                if not self.stopping:
                    self.tally.receivers_not_connected += 1
                await asyncio.sleep(0.1)
                continue
            last_ping = time.monotonic()
            cause = f"{kind}: closed by the hub (EOF)"
            try:
                while not self.stopping:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            if not await reader.read(262144):
                                break
                    if time.monotonic() - last_ping > 20:  # not idle: a receiver may stay
                        writer.write(_ping(proto))
                        last_ping = time.monotonic()
            except (ConnectionError, OSError) as exc:
                cause = f"{kind}: {type(exc).__name__}"
            self._lost(True, cause)
            writer.close()

    async def websocket(self, party: str) -> None:
        import websockets  # a dev dependency: only the fuzz needs it

        url = f"ws://127.0.0.1:{self.http}/api/ws?token={token(party)}"
        while not self.stopping:
            try:
                # Only the hub's closes are judged: no keepalive of our own (our ping timing
                # out while this loop is starved is no close of the hub's; the hub pings us,
                # `timeout_ws_ping_s`), and no bound on the frames waiting for recv(), so the
                # client keeps reading (and answering those pings) however slow this loop is.
                async with websockets.connect(
                    url, max_size=None, max_queue=None, ping_interval=None
                ) as ws:
                    while not self.stopping:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(ws.recv(), 1.0)
            except websockets.ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd_then_sent is not False:
                    self._lost(True, f"ws: closed by the hub ({exc.rcvd.code})")
                elif exc.sent is None:
                    self._lost(True, "ws: dropped without a close frame")
                elif not self.stopping:  # we closed first (this client's own doing)
                    self.tally.receivers_closed_by_us[f"ws: {exc.sent.code}"] += 1
            except websockets.InvalidStatus as exc:  # refused at the handshake (a hub limit)
                self._lost(True, f"ws: refused ({exc.response.status_code})")
            except (OSError, websockets.WebSocketException):  # (TimeoutError included)
                if not self.stopping:
                    self.tally.receivers_not_connected += 1
            if not self.stopping:
                await asyncio.sleep(0.1)

    async def api_client(self) -> None:
        rng = self.mutator.rng
        while not self.stopping and self.tally.total < self.goal:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.http)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            try:
                while not self.stopping and self.tally.total < self.goal:
                    method, path, party, body = self.mutator.api_request(self.api)
                    auth = token(party) if rng.random() > 0.02 else "not-a-token-0123456789"
                    self.tally.inputs["api"] += 1
                    status, _ = await asyncio.wait_for(
                        http_request(reader, writer, method, path, auth, body), 60
                    )
                    self.tally.http_status[status] += 1
            except (
                ConnectionError,
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                ValueError,
            ):
                if not self.stopping:
                    self.tally.http_lost += 1
            writer.close()


def _ping(proto: bool) -> bytes:
    """A TAK ping, framed as the connection now speaks."""
    event = control_event("fuzz-ping", "t-x-c-t", time.time())
    return frame_proto(event_to_proto(event)) if proto else encode_event(event)


async def _discard(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(262144):
            pass


def _seeds(corpus: Path | None, now: float) -> list[bytes]:
    seeds = own_seeds(now)
    if corpus is not None:
        seeds += corpus_seeds(corpus, now)
    return seeds


async def run_phase(
    hub: HubProcess, run: Run, tally: Tally, refresh: Callable[[], Awaitable[None]]
) -> None:
    """Clients on until the phase's goal; then the hub's own counts, then a clean stop."""
    tasks = [
        asyncio.create_task(run.receiver(p, proto)) for p in PARTIES for proto in (False, True)
    ]
    tasks += [asyncio.create_task(run.websocket(p)) for p in PARTIES]
    await asyncio.sleep(1.0)
    senders = [
        asyncio.create_task(run.sender(p, proto)) for p in PARTIES for proto in (False, True)
    ]
    senders += [asyncio.create_task(run.api_client()) for _ in range(3)]
    last_refresh = time.monotonic()
    while not all(t.done() for t in senders):
        await asyncio.sleep(1.0)
        tally.max_rss_mb = max(tally.max_rss_mb, hub.rss_mb())
        if hub.proc is not None and hub.proc.poll() is not None:
            tally.crashes += 1
            break
        if time.monotonic() - last_refresh > 600:  # launch reports must be dated near now
            await refresh()
            last_refresh = time.monotonic()
        print(f"\r  {tally.total:,} inputs, RSS {tally.max_rss_mb:.0f} MB", end="", flush=True)
    print()
    await asyncio.sleep(3.0)  # let readers see any close the hub made at the very end
    run.stopping = True  # closes from here on (the stop) are not counted on either side
    with contextlib.suppress(OSError, ValueError):
        _, body = await http_get(run.http, "/metrics")
        metrics = parse_metrics(body.decode())
        for labels, value in metrics.get("commonsky_connections_closed_total", {}).items():
            tally.hub_closed[labels] += int(value)
        for labels, value in metrics.get("commonsky_refusals_total", {}).items():
            tally.refusals[labels] += int(value)
        tally.accepted += sum(metrics.get("commonsky_items_in_total", {}).values())
        tally.internal_errors += sum(metrics.get("commonsky_internal_errors_total", {}).values())
        tally.render_failures += sum(metrics.get("commonsky_render_failures_total", {}).values())
    for task in tasks + senders:
        task.cancel()
    await asyncio.gather(*tasks, *senders, return_exceptions=True)


def report(tally: Tally, seconds: float, final_start: float | None, log: Path) -> dict[str, Any]:
    """The figures of a run, and whether it passed."""
    text = log.read_bytes().decode("utf-8", "replace") if log.exists() else ""
    reasoned = sum(v for k, v in tally.hub_closed.items() if 'reason="shutdown"' not in k)
    agree = tally.agree
    figures: dict[str, Any] = {
        "inputs": tally.total,
        "inputs_by_channel": dict(tally.inputs),
        "seconds": round(seconds, 1),
        "inputs_per_s": round(tally.total / max(seconds, 1e-9)),
        "accepted": int(tally.accepted),
        "refusals_by_reason": dict(tally.refusals.most_common(20)),
        # A crash leaves a non-zero exit (as does a hub that would not stop: -9).
        "crashes": sum(1 for code in tally.exits if code not in (0, None)),
        "hub_exit_codes": tally.exits,
        "tracebacks_in_log": text.count("Traceback (most recent call last)"),
        "error_lines_in_log": sum(1 for line in text.splitlines() if " ERROR " in line),
        "internal_errors": int(tally.internal_errors),
        "render_failures": int(tally.render_failures),
        "quarantined_at_final_start": int(tally.quarantined),
        "http_status": {str(k): v for k, v in sorted(tally.http_status.items())},
        "http_5xx": sum(v for k, v in tally.http_status.items() if k >= 500),
        "http_connections_lost": tally.http_lost,
        "connections_closed_by_hub_seen": tally.closed_seen,
        "connections_closed_with_a_reason": reasoned,
        "connections_lost_without_a_reason": max(0, tally.closed_seen - reasoned),
        "receivers_lost": tally.receivers_lost,
        "receivers_lost_by_cause": dict(tally.receivers_lost_by_cause),
        "receivers_not_connected": tally.receivers_not_connected,
        "receivers_closed_by_us": dict(tally.receivers_closed_by_us),
        "closes_by_reason": dict(tally.hub_closed),
        "store_ledger_disagreements": len(agree),
        "store_ledger_examples": agree[:5],
        "store_rows_unreadable": tally.unreadable,
        "starts_s": [round(s, 2) for s in tally.starts_s],
        "started_after_run": final_start is not None,
        "start_after_run_s": None if final_start is None else round(final_start, 2),
        "max_rss_mb": round(tally.max_rss_mb, 1),
    }
    figures["passed"] = (
        figures["crashes"] == 0
        and figures["tracebacks_in_log"] == 0
        and figures["internal_errors"] == 0
        and figures["http_5xx"] == 0
        and figures["connections_lost_without_a_reason"] == 0
        and figures["receivers_lost"] == 0
        and not agree
        and final_start is not None
    )
    return figures


def fuzz(inputs: int, restarts: int, seed: int, corpus: Path | None, out_dir: Path,
         log_level: str) -> dict[str, Any]:  # fmt: skip
    """Run the fuzz (see the module comment) in `out_dir`; returns the figures, which are also
    written to `out_dir/fuzz-report.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Held for the whole run: the hub is restarted on the same ports.
    held = HeldPorts()
    ports = {p: held.port() for p in PARTIES}
    http = held.port()
    config = out_dir / "fuzz.toml"
    config.write_text(hub_config(out_dir / "hub", http, ports))
    hub = HubProcess(config, out_dir / "hub.log", http, log_level)
    tally = Tally()
    began = time.perf_counter()
    try:
        final = asyncio.run(_phases(hub, tally, inputs, restarts, seed, corpus, ports, http))
    finally:
        tally.exits.append(hub.stop())
        held.close()
    figures = report(tally, time.perf_counter() - began, final, out_dir / "hub.log")
    figures["command"] = "commonsky " + " ".join(sys.argv[1:])
    figures["data"] = str(out_dir)
    (out_dir / "fuzz-report.json").write_text(json.dumps(figures, indent=2))
    return figures


async def _phases(
    hub: HubProcess,
    tally: Tally,
    inputs: int,
    restarts: int,
    seed: int,
    corpus: Path | None,
    ports: dict[str, int],
    http: int,
) -> float | None:
    rng = random.Random(seed)
    mutator, api = Mutator(rng, _seeds(corpus, time.time())), ApiSeeds.make(time.time())
    phases = restarts + 1
    for phase in range(phases):
        print(f"phase {phase + 1}/{phases}: starting the hub")
        tally.starts_s.append(await hub.start())
        run = Run(mutator, api, ports, http, tally, inputs * (phase + 1) // phases)

        async def renew(run: Run = run) -> None:  # seeds dated now (launch reports must be)
            # Built in a thread: seconds of parsing here (half a minute and more on a loaded
            # machine) would stall every client of this loop, and the hub rightly closes a
            # WebSocket that answers no ping for `timeout_ws_ping_s`: receivers lost to
            # the harness, not to the hub (the 1,000,000-input run lost 28 that way, at the
            # ten-minute refreshes).
            now = time.time()
            seeds, run.api = await asyncio.to_thread(
                lambda: (_seeds(corpus, now), ApiSeeds.make(now))
            )
            run.mutator = Mutator(rng, seeds)

        await run_phase(hub, run, tally, renew)
        mutator, api = run.mutator, run.api
        tally.exits.append(hub.stop())
        if tally.crashes:
            break
    tally.agree, tally.unreadable = check_data(hub.config.parent / "hub")
    try:
        final = await hub.start()
    except RuntimeError as exc:
        print(f"the hub did not start on the fuzzed data: {exc}")
        return None
    with contextlib.suppress(OSError, ValueError):
        _, body = await http_get(http, "/metrics")
        quarantined = parse_metrics(body.decode()).get("commonsky_quarantined_items_total", {})
        tally.quarantined = sum(quarantined.values())
    tally.max_rss_mb = max(tally.max_rss_mb, hub.rss_mb())
    return final
