"""A hub of the federated demo as its own OS process: `commonsky serve --config FILE`.

The demo writes each hub's configuration file (TOML, as an operator would), starts
`python -m commonsky serve` on it, waits until the hub answers `/healthz`, and stops it in
order: SIGTERM (the hub's own ordered shutdown), then SIGKILL past a deadline. A hub that
exits or stays silent while starting is reported in one line with the tail of its log; on
Linux a hub also gets SIGTERM if the demo itself dies (PR_SET_PDEATHSIG), so no hub
outlives the run that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import math
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from commonsky.errors import UsageError
from commonsky.hub.datadir import private_dir, write_private

log = logging.getLogger("commonsky.demo")
START_TIMEOUT_S = 60.0  # importing the hub's libraries on a busy 2-core machine takes seconds
STOP_TIMEOUT_S = 15.0  # the hub's own shutdown is bounded by timeout_shutdown_s (5 s)
TAIL_LINES = 4


def toml_value(value: Any) -> str:
    """One TOML value of what a hub configuration holds: text, numbers, booleans, times
    (RFC 3339 with an offset) and lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no TOML form here")
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML basic string escapes; TOML also wants DEL escaped, and
        # characters past U+FFFF written as themselves (not as surrogate pairs).
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r}: a configuration time needs its offset")
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def to_toml(data: dict[str, Any]) -> str:
    """A configuration document: tables (`[server]`) and arrays of tables (`[[party]]`)."""
    out: list[str] = []
    for name, section in data.items():
        rows = section if isinstance(section, list) else [section]
        header = f"[[{name}]]" if isinstance(section, list) else f"[{name}]"
        for row in rows:
            out.append(header)
            out.extend(f"{key} = {toml_value(v)}" for key, v in row.items() if v is not None)
            out.append("")
    return "\n".join(out)


def _die_with_parent() -> None:  # pragma: no cover (runs in the child, between fork and exec)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class HubProcess:
    """One hub: its configuration file and log under `folder`, its process, its HTTP port.

    `start` raises UsageError (one line naming the hub, its exit status and the tail of its
    log) when the hub exits or does not answer within `START_TIMEOUT_S`; `stop` always
    leaves no process behind."""

    def __init__(self, name: str, config: dict[str, Any], folder: Path, http_port: int) -> None:
        self.name = name
        self.http_port = http_port
        private_dir(folder)
        self.config_path = folder / f"{name}.toml"
        self.log_path = folder / f"{name}.log"
        # (0600: it holds the parties' API tokens and the hub's operator token)
        write_private(self.config_path, to_toml(config).encode())
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self) -> None:
        """Start the process (returns at once; `ready` waits for it to serve)."""
        command = [sys.executable, "-m", "commonsky", "serve", "--config", str(self.config_path)]
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                "--log-level",
                "warning",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                # Its own session: a Ctrl-C at the terminal reaches the demo, which stops
                # the hubs in order, not the hubs behind its back.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    async def ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the hub answers /healthz; raise UsageError if it exits or stays silent."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while True:
                if self.proc.returncode is not None:
                    raise self._failed(f"exit status {self.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    await self.stop()
                    raise self._failed(f"no answer on {self.url}/healthz within {timeout:g} s")
                with contextlib.suppress(TimeoutError):  # (wakes at once if it exits)
                    await asyncio.wait_for(asyncio.shield(self.proc.wait()), 0.1)

    def _failed(self, why: str) -> UsageError:
        tail = self.tail()
        return UsageError(
            f"hub {self.name} did not start ({why}; {self.log_path}): "
            + (" | ".join(tail) if tail else "no output")
        )

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line.strip() for line in text.splitlines() if line.strip()][-lines:]

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; waits for the exit."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except (TimeoutError, asyncio.CancelledError):
            log.warning("hub %s did not stop within %g s: killed", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
        if proc.returncode not in (0, -signal.SIGTERM):
            log.warning("hub %s exited with status %s: %s", self.name, proc.returncode, self.tail())

    def kill_now(self) -> None:
        """Last resort (the event loop is going away): SIGKILL without waiting."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)


async def metric_values(client: httpx.AsyncClient, token: str, name: str) -> list[float]:
    """The samples of one metric family on a hub's /metrics (with its operator token)."""
    text = (await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})).text
    values = []
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            values.append(float(line.rsplit(" ", 1)[1]))
    return values
