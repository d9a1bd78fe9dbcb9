"""Which asyncio event loop a hub process runs on (the `loop` setting).

`uvloop` (libuv under a Cython drop-in for asyncio's loop) when it is installed on this
platform — it is a dependency wherever it builds (CPython on Linux and macOS) — else the
standard library's. The hub's code is the same on both: only asyncio's own work (the
selector, transports, callbacks) changes, which is a third of the hub's time under relay
load (docs/performance.md, "Relay near the machine's limit").
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


def resolve(choice: str) -> Literal["asyncio", "uvloop"]:
    """The loop `choice` ("auto", "asyncio" or "uvloop") means here: "auto" is uvloop when it
    is installed. Raises UsageError for another name, or for "uvloop" where it is not
    installed (said, not silently replaced: a benchmark would measure the wrong loop)."""
    if choice not in LOOPS:
        raise UsageError(f"loop = {choice!r}: choose one of {', '.join(LOOPS)}")
    if choice == "auto":
        return "uvloop" if uvloop_available() else "asyncio"
    if choice == "uvloop" and not uvloop_available():
        raise UsageError(
            "loop = 'uvloop': uvloop is not installed on this platform (pip install uvloop); "
            "use loop = 'auto' or 'asyncio'"
        )
    return choice


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A maker of new event loops of `choice` (see `resolve`)."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on a new loop of `choice` (see `resolve`)."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """The loop running now, "uvloop" or "asyncio" (for the start-up log line)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
