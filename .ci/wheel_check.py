"""The product as an operator installs it: build the wheel, install it in a fresh virtual
environment WITHOUT extras, and run it from there.

    python .ci/wheel_check.py            (from the repository; `.ci/run` does this)

Checks, each failing loudly with what was seen:
- the wheel carries the live map (page, its sources and the pinned npm files);
- `commonsky --help` and `commonsky demo --help` work without the dev or optional extras;
- `commonsky serve --config examples/hub.toml` (copied elsewhere, started from another folder)
  serves `/`, `/app/main.js`, `/vendor/leaflet.js`, a 404 for a missing asset, and the roster
  behind its token; its data folder is made beside the config, private;
- a second hub on the same data folder, and a hub on a busy port, each stop with one line and
  exit status 2;
- a bounded `commonsky demo` stops early with "stopped early", exit 0, and a private
  tokens.json.
Stdlib only: it runs before (and apart from) the project's own environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("playwright", "psycopg", "pytest", "pytak", "hypothesis")


def step(text: str) -> None:
    print(f"wheel-check: {text}", flush=True)


def fail(text: str) -> None:
    print(f"wheel-check: FAILED: {text}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def one_line_exit_2(result: subprocess.CompletedProcess[str], what: str, expect: str) -> None:
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("commonsky: error:")]
    if result.returncode != 2 or len(errors) != 1 or "Traceback" in result.stderr:
        fail(f"{what}: exit {result.returncode}, stderr:\n{result.stderr}")
    if expect not in errors[0]:
        fail(f"{what}: {errors[0]!r} does not say {expect!r}")
    step(f"{what}: {errors[0]}")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="commonsky-wheel-"))
    try:
        check(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step("all good")


def check(work: Path) -> None:
    step("building the wheel")
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), "."],
        cwd=ROOT,
    )
    if built.returncode != 0:
        fail(f"pip wheel: {built.stderr}")
    (wheel,) = (work / "dist").glob("commonsky-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "commonsky/web/static/index.html",
        "commonsky/web/static/app/main.js",
        "commonsky/web/static/vendor/leaflet.js",
        "commonsky/web/static/vendor/countries-50m.json",
    ):
        if needed not in names:
            fail(f"{wheel.name} lacks {needed} (was npm available when it was built?)")

    step("installing it in a fresh venv, no extras")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    installed = run([str(bin_dir / "pip"), "install", "-q", str(wheel)])
    if installed.returncode != 0:
        fail(f"pip install: {installed.stderr}")
    for module in OPTIONAL:
        if run([str(bin_dir / "python"), "-c", f"import {module}"]).returncode == 0:
            fail(f"{module} is installed without being asked for (an extra leaked into core)")
    commonsky = str(bin_dir / "commonsky")
    for args in (["--help"], ["demo", "--help"], ["serve", "--help"]):
        result = run([commonsky, *args])
        if result.returncode != 0:
            fail(f"commonsky {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    step("--help works")

    serve(work, commonsky)
    demo(work, commonsky)


def serve(work: Path, commonsky: str) -> None:
    conf_dir = work / "site"
    conf_dir.mkdir()
    shutil.copy(ROOT / "examples" / "hub.toml", conf_dir / "hub.toml")
    port = free_port()
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    args = [commonsky, "serve", "--config", str(conf_dir / "hub.toml"), "--http"]
    hub = subprocess.Popen(
        [*args, f"127.0.0.1:{port}"], cwd=elsewhere, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
            if hub.poll() is not None:
                fail(f"serve exited {hub.returncode}:\n{hub.communicate()[1]}")
        else:
            fail("serve did not answer /healthz within 20 s")
        for path, status in (
            ("/", 200),
            ("/app/main.js", 200),
            ("/vendor/leaflet.js", 200),
            ("/vendor/images/layers.png", 200),
            ("/app/nope.js", 404),
            ("/vendor/nope.js", 404),
        ):
            got = get(base + path)[0]
            if got != status:
                fail(f"GET {path}: {got}, expected {status}")
        status, body = get(base + "/api/parties", "usa-example-token-change-me")
        if status != 200 or [p["id"] for p in json.loads(body)] != ["USA", "JPN"]:
            fail(f"/api/parties: {status} {body!r}")
        if get(base + "/api/parties")[0] != 401:
            fail("/api/parties answers without a token")
        step("serve: the page, its assets, 404s and the roster")
        data = conf_dir / "var" / "hub"
        if not (data / "hub.json").is_file() or (elsewhere / "var").exists():
            fail("the data folder is not beside the config (relative paths)")
        if stat.S_IMODE(data.stat().st_mode) != 0o700:
            fail(f"{data} is not private")
        one_line_exit_2(
            run([*args, f"127.0.0.1:{free_port()}"], cwd=elsewhere),
            "a second hub on the same data_dir",
            "in use by another hub",
        )
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            _, log = hub.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            hub.kill()
            fail("serve did not stop on SIGTERM")
    if hub.returncode != 0:
        fail(f"serve exit {hub.returncode}:\n{log}")
    if str(conf_dir / "var" / "hub") not in log:
        fail("serve did not log its absolute data folder")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        one_line_exit_2(
            run([*args, f"127.0.0.1:{taken}"], cwd=elsewhere),
            "a busy HTTP port",
            f"port {taken} is already in use",
        )


def demo(work: Path, commonsky: str) -> None:
    folder = work / "demo"
    result = run(
        [
            commonsky,
            "demo",
            "--duration",
            "12",
            "--speed",
            "20",
            "--http",
            f"127.0.0.1:{free_port()}",
            "--data-dir",
            str(folder),
        ],
        env={**os.environ, "COLUMNS": "80"},
    )
    if result.returncode != 0 or "stopped early" not in result.stdout:
        fail(f"demo: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if "#token=" not in result.stdout or "tcp 127.0.0.1:PORT" not in result.stdout:
        fail("demo did not print its sign-in links and TAK ports")
    tokens = folder / "tokens.json"
    if stat.S_IMODE(tokens.stat().st_mode) != 0o600:
        fail(f"{tokens} is not private")
    step("a bounded demo: stopped early, exit 0, links, ports, private tokens.json")


if __name__ == "__main__":
    main()
