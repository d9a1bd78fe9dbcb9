"""Generate the Python modules for `federation.proto` (committed, not built at install time).

The generated code is committed so that a hub needs only `grpcio` and `protobuf` at run time;
`grpcio-tools` (pinned in the dev extra, its bundled protoc decides the output) is needed
only to regenerate. `python -m commonsky.federation.gen` rewrites the three files beside
the .proto; `tests/federation/test_gencode.py` regenerates into a temporary directory and
fails when the committed files differ.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent.parent  # the repository (or site-packages) root
PROTO = "commonsky/federation/federation.proto"
OUTPUTS = ("federation_pb2.py", "federation_pb2.pyi", "federation_pb2_grpc.py")


def generate(out: Path) -> dict[str, bytes]:
    """Run protoc (grpcio-tools) on federation.proto into `out`; returns name -> bytes.

    Raises RuntimeError when protoc fails, ImportError without grpcio-tools."""
    from grpc_tools import protoc  # (dev extra only)

    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    made = out / "commonsky" / "federation"
    return {name: (made / name).read_bytes() for name in OUTPUTS}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in generate(Path(tmp)).items():
            (PACKAGE / name).write_bytes(data)
            print(f"wrote {PACKAGE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
