"""The yardstick for `bench relay`: a minimal, policy-free asyncio CoT relay.

No parsing, no policy, no store: it cuts the byte stream at `</event>` and writes each frame
to every connection of the parties listed for the sender's port. What the hub adds on top of
this (parsing, limits, policy, namespacing, metrics) is what the benchmark prices. It runs on
the event loop the spec names ("loop": asyncio or uvloop), the same as the hub's in the run.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict


async def relay(ports: dict[str, int], targets: dict[str, list[str]]) -> None:
    members: dict[str, set[asyncio.StreamWriter]] = defaultdict(set)

    def handler_for(party: str):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            members[party].add(writer)
            buffer = b""
            try:
                while data := await reader.read(65536):
                    buffer += data
                    end = buffer.rfind(b"</event>")
                    if end < 0:
                        continue
                    chunk, buffer = buffer[: end + 8], buffer[end + 8 :]
                    for target in targets[party]:
                        for other in members[target]:
                            if other is not writer:
                                other.write(chunk)
            except ConnectionError:
                pass
            finally:
                members[party].discard(writer)
                writer.close()

        return handle

    servers = [
        await asyncio.start_server(handler_for(p), "127.0.0.1", port) for p, port in ports.items()
    ]
    # The ports it bound (the spec's, or the kernel's for 0): bench/relay.py's `start_system`.
    bound = {p: s.sockets[0].getsockname()[1] for p, s in zip(ports, servers, strict=True)}
    print(f"ready {json.dumps(bound)}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    from commonsky.eventloop import run

    spec = json.loads(sys.argv[1])
    # The hub's loop in the same run (`bench relay --loop`), so the ratio compares code.
    run(relay(spec["ports"], spec["targets"]), spec.get("loop", "asyncio"))
