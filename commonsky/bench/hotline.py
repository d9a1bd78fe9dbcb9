"""`commonsky bench hotline`: what a long hotline history costs a hub that restarts.

A hub is fed `--messages` GeoChats from USA to RUS (valid a year, as in the issue that
measured 60,000 of them), RUS acknowledges all but `--open`, and the hub stops. A fresh
process then starts on that data: the figures are its time to start, its peak memory, how
many messages the hotline desk holds, one deadline tick and one page of `GET /api/hotline`.
The per-party quota is lifted for the run (one sender here stands for many), so the picture
of still-valid items — not the hotline desk — is what memory the process needs beyond
Python; the figures say how many items it holds.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from commonsky.errors import UsageError

YEAR_S = 365 * 86400.0
T0 = 1_800_000_000.0


def _world(data_dir: Path) -> Any:
    from commonsky.config import config_from_dict
    from commonsky.hub.core import Hub
    from commonsky.policy import Policy
    from commonsky.services import Services
    from commonsky.store.sqlite import SQLiteStore

    config = config_from_dict(
        {
            "server": {"data_dir": str(data_dir), "limit_durable_items_per_party": 10**9},
            "party": [{"id": "USA"}, {"id": "RUS"}],
            "agreement": [
                {"name": "hotline", "from": p, "to": [q], "categories": ["hotline"]}
                for p, q in (("USA", "RUS"), ("RUS", "USA"))
            ],
        }
    )
    store = SQLiteStore(data_dir)
    policy = Policy(config.parties, config.agreements)
    hub = Hub(policy, store, config.settings, b"s" * 32, clock=lambda: T0)
    return Services.build(hub, data_dir)


def _fill(data_dir: Path, messages: int, still_open: int) -> None:
    from commonsky.desks.geochat import chat_event
    from commonsky.model import CotEvent, Point

    services = _world(data_dir)
    hub = services.hub
    for start in range(0, messages, 500):
        with hub.transaction():  # 500 messages a commit: the history is written quickly
            for i in range(start, min(start + 500, messages)):
                text = f"message {i} " + "x" * 60
                hub.accept(
                    "USA", "ops", chat_event(f"GeoChat.{i}", text, T0, ["RUS"], stale_s=YEAR_S)
                )
                if i >= still_open:
                    link = f'<link uid="USA::GeoChat.{i}" relation="p-p"/>'
                    ack = CotEvent(
                        f"r{i}", "b-t-f-r", T0, T0, T0 + 60, "h-g-i-g-o", Point(0, 0), link
                    )
                    hub.accept("RUS", "ops", ack)
    services.close()
    hub.store.close()


def _restart(data_dir: str) -> dict[str, float]:
    began = time.perf_counter()
    services = _world(Path(data_dir))
    started = time.perf_counter() - began
    desk = services.hotline
    began = time.perf_counter()
    desk.tick(T0 + 1.0)
    tick = time.perf_counter() - began
    page, _cursor = desk.history_page("RUS")
    figures = {
        "start_s": started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "held": float(len(desk.messages)),
        "tick_ms": tick * 1000,
        "page_kb": len(msgspec.json.encode(page)) / 1024,
        "picture": float(len(services.hub.durable)),
    }
    services.close()
    services.hub.store.close()
    return figures


def bench(
    messages: Annotated[int, typer.Option(help="Hotline messages in the history.")] = 60_000,
    still_open: Annotated[
        int, typer.Option("--open", help="Of them, not acknowledged (held in memory).")
    ] = 500,
) -> None:
    """Start time, peak memory, tick and history page of a hub with a long hotline history."""
    if messages <= 0 or not 0 <= still_open <= messages:
        raise UsageError("--messages must be > 0 and 0 <= --open <= --messages")
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        _fill(Path(tmp), messages, still_open)
        print(
            f"bench hotline: {messages} messages, {still_open} open, written in "
            f"{time.perf_counter() - began:.0f} s"
        )
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            f = pool.apply(_restart, (tmp,))
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.sqlite3*"))
    print(
        f"  restart: {f['start_s']:.2f} s to start, peak RSS {f['peak_rss_mb']:.0f} MB "
        f"(the process, Python included), {f['held']:.0f} messages held in memory; "
        f"a deadline tick {f['tick_ms']:.2f} ms; GET /api/hotline page {f['page_kb']:.0f} KiB; "
        f"data {size / 2**20:.0f} MiB"
    )
    print(
        f"  the hub's picture holds {f['picture']:.0f} durable items (messages, receipts and "
        "acknowledgements, all still valid): most of the memory; in a hub with the default "
        "limit_durable_items_per_party no party holds more than that many at once"
    )
