"""Federated hubs for tests: real HubServers on loopback, linked over mutual TLS."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from commonsky.config import HubConfig, config_from_dict
from commonsky.pki import init_ca
from commonsky.times import format_time

from ..conftest import OPERATOR_TOKEN, RunningHub, running_hub, token_of


def ca_dir(root: Path, hub: str) -> Path:
    folder = root / f"{hub}-ca"
    if not (folder / "ca.pem").exists():
        init_ca(folder, name=f"{hub} hub CA")
    return folder


def hub_config(
    root: Path,
    hub: str,
    own: list[str],
    links: list[dict[str, Any]],
    agreements: list[dict[str, Any]],
    server: dict[str, Any] | None = None,
) -> HubConfig:
    """`hub`'s config: a tak-tcp listener per own party, a federation listener, and each
    link as {name, parties, peer (the peer hub's name), connect?, relay?}."""
    listeners: list[dict[str, Any]] = [
        {"kind": "tak-tcp", "bind": "127.0.0.1:0", "party": p} for p in own
    ]
    listeners.append({"kind": "federation", "bind": "127.0.0.1:0", "ca": str(ca_dir(root, hub))})
    parties: list[dict[str, Any]] = [{"id": p, "token": token_of(p)} for p in own]
    federates = []
    for link in links:
        for p in [*link["parties"], *link.get("relay", [])]:
            parties.append({"id": p, "federate": link["name"]})
        table: dict[str, Any] = {
            "name": link["name"],
            "parties": link["parties"],
            "ca": str(ca_dir(root, link["peer"]) / "ca.pem"),
        }
        if link.get("relay"):
            table["relay"] = link["relay"]
        if link.get("connect"):
            table["connect"] = link["connect"]
        table.update(link.get("terms", {}))  # e.g. deconflict = "private" and its terms
        federates.append(table)
    data = {
        "server": {
            "data_dir": str(root / f"{hub}-data"),
            "http": "127.0.0.1:0",
            "operator_token": OPERATOR_TOKEN,
            "timeout_federation_health_s": 0.5,
            "timeout_federation_retry_s": 0.1,
            **(server or {}),
        },
        "listener": listeners,
        "party": parties,
        "agreement": agreements,
        "federate": federates,
    }
    return config_from_dict(data, f"{hub}.toml")


@contextlib.asynccontextmanager
async def hub(config: HubConfig) -> AsyncIterator[RunningHub]:
    async with running_hub(config) as running:
        yield running


def cot(
    uid: str,
    cot_type: str = "a-f-A-M-F",
    lat: float = 36.0,
    lon: float = 128.0,
    detail: str = '<contact callsign="EAGLE"/><track speed="200.5" course="90.25"/>',
    stale_s: float = 600.0,
) -> bytes:
    now = time.time()
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-g" time="{format_time(now)}"'
        f' start="{format_time(now)}" stale="{format_time(now + stale_s)}">'
        f'<point lat="{lat}" lon="{lon}" hae="1000.0" ce="10.0" le="10.0"/>'
        f"<detail>{detail}</detail></event>"
    ).encode()
