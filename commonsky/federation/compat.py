"""Check our federation.proto against TAK Server's own fig.proto, outside this repository.

    python -m commonsky.federation.compat --tak-git /path/to/TAK-Product-Center/Server.git
    python -m commonsky.federation.compat --tak-protos DIR   # fig.proto + binarypayload.proto

TAK Server's .proto files are read from the given git directory (or folder), written to a
temporary directory and compiled there with grpcio-tools; nothing of theirs enters this
repository. Every message we use is filled with every field we use (`SAMPLES`, written as
proto3 JSON, whose names the two definitions share) and the two sets of generated classes
are compared both ways, in separate processes (both define `com.atakmap.*`):

1. ours -> bytes A; TAK's classes parse A with no unknown field, read back the same JSON,
   and serialise it again to exactly A;
2. TAK's classes -> bytes B from the same JSON; B == A, and ours parse B back to the same
   JSON and exactly B;
3. the service: same full name, same methods, same request/response types and streaming.

Exit status 0 when every check holds; each failure is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TAK_PROTO_PATH = "src/takserver-protobuf/src/main/proto"
TAK_FILES = ("fig.proto", "binarypayload.proto")

_PROV = [{"federationServerId": "hub-a", "federationServerName": "USA"}]
_HOPS = {"maxHops": "3", "currentHops": "1"}
_LIMITS = {
    "limits": [{"groupName": "g", "maxHops": "2", "currentHops": "1"}],
    "useFederateGroupHopLimits": True,
}
_GEO = {
    "sendTime": "1796050800000",
    "startTime": "1796050800001",
    "staleTime": "1796051100000",
    "lat": 35.5,
    "lon": 139.25,
    "hae": 12.5,
    "ce": 4.0,
    "le": 9999999.0,
    "uid": "USA::ANDROID-1",
    "type": "a-f-G-U-C",
    "coordSource": "m-g",
    "other": '<detail><contact callsign="RED 1"/><_csky_fed seq="7" part="1" to="JPN"/></detail>',
    "battery": 88,
    "ploc": "GPS",
    "palt": "DTED0",
    "screenName": "RED 1",
    "groupName": "Cyan",
    "groupRole": "Team Member",
    "phone": "555",
    "speed": 3.5,
    "course": 271.25,
    "binary": {"type": "IMAGE", "data": "AAEC", "filename": "a.jpg", "timestamp": "5"},
    "ptpUids": ["u1", "u2"],
    "ptpCallsigns": ["BLUE"],
    "feedUid": "feed-1",
    "missionNames": ["m"],
    "access": "Unclassified",
    "caveat": "FOUO",
    "releaseableTo": "USA JPN",
}
_IDENTITY = {
    "name": "KOR",
    "uid": "hub-k",
    "description": "CommonSky",
    "type": "FEDERATION_TAK_CLIENT",
    "serverId": "hub-k",
}
SAMPLES: list[tuple[str, dict[str, Any]]] = [
    (
        "FederatedEvent",
        {
            "event": _GEO,
            "federateGroups": ["g1"],
            "federateProvenance": _PROV,
            "federateHops": _HOPS,
            "federateGroupHopLimits": _LIMITS,
        },
    ),
    (
        "FederatedEvent",
        {
            "contact": {
                "operation": "DELETE",
                "uid": "USA::track-7",
                "callsign": "a-h-A",
                "phone": "1",
                "sip": "s",
                "directConnect": "d",
            },
            "federateProvenance": _PROV,
        },
    ),
    (
        "Subscription",
        {
            "identity": _IDENTITY,
            "filter": "group=a",
            "version": {"major": "5", "minor": "7", "patch": "14", "branch": "b", "variant": "v"},
        },
    ),
    ("Identity", _IDENTITY),
    ("ClientHealth", {"status": "SERVING"}),
    ("ServerHealth", {"status": "NOT_CONNECTED"}),
    (
        "ROL",
        {
            "program": "create package",
            "payload": [{"type": "OTHER", "data": "AQ=="}],
            "federateGroups": ["g"],
            "federateProvenance": _PROV,
            "federateHops": _HOPS,
            "federateGroupHopLimits": _LIMITS,
        },
    ),
    (
        "FederateGroups",
        {
            "streamUpdate": {"status": "SERVING"},
            "federateGroups": ["JPN", "KOR"],
            "federateProvenance": _PROV,
            "federateHops": _HOPS,
            "nestedGroups": [{"federateGroups": ["x"]}],
            "federateGroupHopLimits": _LIMITS,
        },
    ),
    ("FederateTokenResponse", {"token": "t"}),
    ("Empty", {}),
]

# Run in a child process with only one set of classes on its path.
_CHILD = r"""
import json, sys
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet
import importlib
mod = importlib.import_module(sys.argv[1])
job = json.load(sys.stdin)
out = {"encoded": [], "reencoded": [], "json": [], "unknown": [], "service": None}
for (name, sample), hexed in zip(job["samples"], job["bytes"] or [None] * len(job["samples"])):
    cls = getattr(mod, name)
    made = json_format.ParseDict(sample, cls())
    out["encoded"].append(made.SerializeToString(deterministic=True).hex())
    if hexed is not None:
        got = cls.FromString(bytes.fromhex(hexed))
        out["unknown"].append(len(UnknownFieldSet(got)))
        out["reencoded"].append(got.SerializeToString(deterministic=True).hex())
        out["json"].append(json_format.MessageToDict(got))
service = mod.DESCRIPTOR.services_by_name["FederatedChannel"]
out["service"] = [service.full_name] + sorted(
    [m.name, m.input_type.full_name, m.output_type.full_name, m.client_streaming,
     m.server_streaming] for m in service.methods)
json.dump(out, sys.stdout)
"""


def _child(path: Path, module: str, samples: Any, encoded: list[str] | None) -> dict[str, Any]:
    job = json.dumps({"samples": samples, "bytes": encoded})
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, module],
        input=job,
        capture_output=True,
        text=True,
        cwd=path,
        env={"PYTHONPATH": str(path)},
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"child for {module} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _tak_protos(args: argparse.Namespace, into: Path) -> None:
    for name in TAK_FILES:
        if args.tak_git:
            text = subprocess.run(
                ["git", f"--git-dir={args.tak_git}", "show", f"HEAD:{TAK_PROTO_PATH}/{name}"],
                capture_output=True,
                check=True,
            ).stdout
        else:
            text = (Path(args.tak_protos) / name).read_bytes()
        (into / name).write_bytes(text)


def check(args: argparse.Namespace) -> list[str]:
    """Run every comparison; the list of failures (empty: compatible)."""
    from grpc_tools import protoc

    from . import gen

    problems: list[str] = []
    samples = [list(s) for s in SAMPLES]
    with tempfile.TemporaryDirectory(prefix="fig-compat-") as tmp:
        tak_src, tak_out, ours_out = Path(tmp, "src"), Path(tmp, "tak"), Path(tmp, "ours")
        for folder in (tak_src, tak_out, ours_out):
            folder.mkdir()
        _tak_protos(args, tak_src)
        if protoc.main(
            [
                "protoc",
                f"-I{tak_src}",
                f"--python_out={tak_out}",
                str(tak_src / "fig.proto"),
                str(tak_src / "binarypayload.proto"),
            ]
        ):
            return ["protoc failed on TAK Server's fig.proto"]
        gen.generate(ours_out)  # ours, freshly generated, in the same temporary tree
        (ours_out / "commonsky" / "__init__.py").write_text("")
        (ours_out / "commonsky" / "federation" / "__init__.py").write_text("")
        mine = _child(ours_out, "commonsky.federation.federation_pb2", samples, None)
        theirs = _child(tak_out, "fig_pb2", samples, mine["encoded"])
        back = _child(ours_out, "commonsky.federation.federation_pb2", samples, theirs["encoded"])
    for i, (name, sample) in enumerate(SAMPLES):
        label = f"#{i} {name}"
        if theirs["encoded"][i] != mine["encoded"][i]:
            problems.append(f"{label}: TAK's classes encode the same content differently")
        if theirs["unknown"][i]:
            problems.append(f"{label}: TAK's classes see {theirs['unknown'][i]} unknown fields")
        if theirs["reencoded"][i] != mine["encoded"][i]:
            problems.append(f"{label}: ours -> TAK -> bytes is not byte-identical")
        if theirs["json"][i] != sample:
            problems.append(f"{label}: TAK reads ours as {theirs['json'][i]}")
        if back["unknown"][i] or back["reencoded"][i] != theirs["encoded"][i]:
            problems.append(f"{label}: TAK -> ours -> bytes is not byte-identical")
        if back["json"][i] != sample:
            problems.append(f"{label}: ours read TAK's as {back['json'][i]}")
    if mine["service"] != theirs["service"]:
        problems.append(f"service differs: ours {mine['service']} TAK {theirs['service']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tak-git", help="a git directory of TAK-Product-Center/Server")
    source.add_argument("--tak-protos", help="a folder holding fig.proto, binarypayload.proto")
    problems = check(parser.parse_args())
    for problem in problems:
        print("FAIL", problem)
    if not problems:
        print(f"compatible: {len(SAMPLES)} messages, both ways, byte-identical; service equal")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
