"""The federated demo's hub processes (commonsky/demo/hubproc.py): the configuration file
an operator would write, and one clear line when a hub does not start."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commonsky.config import config_from_dict, load_config
from commonsky.demo.hubproc import HubProcess, to_toml
from commonsky.errors import UsageError

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
scalar = st.one_of(
    text, st.integers(-(2**62), 2**62), st.floats(allow_nan=False, allow_infinity=False)
)
times = st.datetimes(timezones=st.just(UTC))


@given(
    server=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), scalar, max_size=5),
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "name": text,
                "to": st.lists(text, max_size=3),
                "at": times,
                "ring": st.lists(
                    st.lists(st.floats(-180, 180), min_size=2, max_size=2), max_size=4
                ),
            }
        ),
        max_size=3,
    ),
)
def test_toml_reads_back_as_written(
    server: dict[str, object], rows: list[dict[str, object]]
) -> None:
    data = {"server": server, "agreement": rows}
    back = tomllib.loads(to_toml(data))
    assert back.get("server", {}) == server
    assert back.get("agreement", []) == rows


def test_a_demo_hub_file_loads_as_the_hub_would_read_it(tmp_path: Path) -> None:
    data = {
        "server": {"data_dir": str(tmp_path / "d"), "http": "127.0.0.1:0", "clock_rate": 20.0},
        "party": [{"id": "JPN", "name": "Japan"}],
        "agreement": [
            {
                "name": "a",
                "from": "JPN",
                "to": ["JPN"],
                "categories": ["track"],
                "valid_from": datetime(2030, 1, 1, tzinfo=UTC),
            }
        ],
    }
    path = tmp_path / "hub.toml"
    path.write_text(to_toml(data))
    assert load_config(path, {}) == config_from_dict(data, str(path))


def test_a_hub_that_does_not_start_is_one_line_with_its_log_tail(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    port = held_port()
    config = {
        "server": {"data_dir": str(tmp_path / "d"), "http": f"127.0.0.1:{port}"},
        "listener": [{"kind": "tak-tcp", "bind": "127.0.0.1:0", "party": "NOPE"}],
    }
    hub = HubProcess("jpn", config, tmp_path / "hubs", port)

    async def start() -> None:
        await hub.start()
        try:
            await hub.ready(timeout=60)
        finally:
            await hub.stop()

    with pytest.raises(UsageError) as caught:
        asyncio.run(start())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("hub jpn did not start (exit status 2;")
    assert "NOPE" in message  # the hub's own one-line error, from the tail of its log
    assert hub.proc is not None and hub.proc.returncode == 2


def test_a_hub_is_stopped_in_order_and_killed_when_it_does_not_stop(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    import os
    import signal

    async def run(frozen: bool) -> int | None:
        port = held_port()
        folder = tmp_path / ("frozen" if frozen else "ok")
        config = {"server": {"data_dir": str(folder / "d"), "http": f"127.0.0.1:{port}"}}
        hub = HubProcess("usa", config, folder, port)
        await hub.start()
        try:
            await hub.ready()
            assert hub.pid is not None
            if frozen:
                os.kill(hub.pid, signal.SIGSTOP)  # (it cannot act on SIGTERM now)
            await hub.stop(timeout=1.0)
        finally:
            hub.kill_now()
        assert hub.proc is not None
        return hub.proc.returncode

    assert asyncio.run(run(frozen=False)) == 0  # SIGTERM: its own ordered shutdown
    assert asyncio.run(run(frozen=True)) == -signal.SIGKILL


def test_a_hub_killed_during_the_run_ends_it_in_one_line(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    """kill -9 of a hub while the demo plays: the play is cancelled and one line names the
    hub and the signal (the demo then stops the others); a play that ends is left alone."""
    import os
    import signal

    from commonsky.demo.hubproc import watching

    async def run() -> tuple[str, bool]:
        port = held_port()
        config = {"server": {"data_dir": str(tmp_path / "d"), "http": f"127.0.0.1:{port}"}}
        hub = HubProcess("kor", config, tmp_path / "hubs", port)
        await hub.start()
        cancelled = False
        try:
            await hub.ready()
            await watching([hub], asyncio.sleep(0))  # (ends first: nothing raised)

            async def play() -> None:
                nonlocal cancelled
                assert hub.pid is not None
                os.kill(hub.pid, signal.SIGKILL)
                try:
                    await asyncio.Event().wait()  # (a play that would never end by itself)
                except asyncio.CancelledError:
                    cancelled = True
                    raise

            with pytest.raises(UsageError) as caught:
                await watching([hub], play())
        finally:
            await hub.stop()
        return str(caught.value), cancelled

    message, cancelled = asyncio.run(run())
    assert cancelled and "\n" not in message
    assert message.startswith("hub kor (pid ") and "killed by SIGKILL" in message
