"""Which asyncio event loop a hub process runs on (the `loop` setting).

`uvloop` (libuv under a Cython drop-in for asyncio's loop) when it is installed on this
platform — it is a dependency wherever it builds (CPython on Linux and macOS) — and the hub
has no `tak-tls` listener (see `resolve`), else the standard library's. The hub's code is
the same on both: only asyncio's own work (the selector, transports, callbacks) changes
(figures: docs/performance.md, "Relay near the machine's limit").
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from commonsky.errors import UsageError

Loop = Literal["auto", "asyncio", "uvloop"]
LOOPS: tuple[Loop, ...] = ("auto", "asyncio", "uvloop")
T = TypeVar("T")


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str, tak_tls: bool = False) -> Literal["asyncio", "uvloop"]:
    """The loop `choice` ("auto", "asyncio" or "uvloop") means here: "auto" is uvloop when it
    is installed and the hub has no `tak-tls` listener (`tak_tls`), else asyncio's own.
    Raises UsageError for another name, for "uvloop" where it is not installed (said, not
    silently replaced: a benchmark would measure the wrong loop), and for "uvloop" with a
    `tak-tls` listener: the listener starts TLS on each connection after accepting it (to
    log a refused handshake with its reason), and uvloop reads a client's first bytes before
    that, so the handshake hangs (seen with pytak's client in tests/integration/test_tls.py)."""
    if choice not in LOOPS:
        raise UsageError(f"loop = {choice!r}: choose one of {', '.join(LOOPS)}")
    if choice == "auto":
        return "uvloop" if uvloop_available() and not tak_tls else "asyncio"
    if choice == "uvloop" and not uvloop_available():
        raise UsageError(
            "loop = 'uvloop': uvloop is not installed on this platform (pip install uvloop); "
            "use loop = 'auto' or 'asyncio'"
        )
    if choice == "uvloop" and tak_tls:
        raise UsageError(
            "loop = 'uvloop' cannot serve a tak-tls listener (its per-connection TLS start "
            "misses what uvloop read first, and handshakes hang); use loop = 'auto' or 'asyncio'"
        )
    return choice


def loop_factory(choice: str, tak_tls: bool = False) -> Callable[[], asyncio.AbstractEventLoop]:
    """A maker of new event loops of `choice` (see `resolve`)."""
    if resolve(choice, tak_tls) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str = "auto", tak_tls: bool = False) -> T:
    """`asyncio.run(main)` on a new loop of `choice` (see `resolve`)."""
    with asyncio.Runner(loop_factory=loop_factory(choice, tak_tls)) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """The loop running now, "uvloop" or "asyncio" (for the start-up log line)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
