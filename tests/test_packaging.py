"""Install anywhere: the product imports nothing that is dev-only or optional, optional
pieces say which extra they need, and the map ships inside the package (a missing asset is a
404, never a 500). The wheel itself, installed in a fresh venv, is run by `.ci/wheel_check.py`
(`make wheel-check`, part of `.ci/run`)."""

from __future__ import annotations

import importlib
import json
import runpy
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from starlette.applications import Starlette

from commonsky.cli import LAZY_GROUPS
from commonsky.web import CSP, NOT_INSTALLED, WebAssets, find_assets, web_routes

ROOT = Path(__file__).resolve().parents[1]


def _closure(root: str) -> set[str]:
    """Distributions `root` needs, its own dependencies' dependencies included (extras not)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _not_core() -> tuple[str, ...]:
    """Every importable top-level name of this environment that no core dependency brings:
    the dev and optional extras and all they pulled in (pytest, hypothesis, aiohttp, yarl,
    psycopg, playwright, mypy…), and openmined-psi, installed by hand. Worked out from the
    installed metadata, so a new dev dependency is blocked without editing this test."""
    core = _closure("commonsky")
    names = {
        module
        for module, dists in metadata.packages_distributions().items()
        if module.isidentifier() and not any(canonicalize_name(d) in core for d in dists)
    }
    return tuple(sorted(names))


#: Installed for development only, or by an extra: the product must start without them.
NOT_CORE = _not_core()


def test_the_blocked_set_holds_the_dev_extras() -> None:
    for name in ("pytest", "hypothesis", "pytak", "aiohttp", "playwright"):
        assert name in NOT_CORE
    assert "httpx" not in NOT_CORE and "msgspec" not in NOT_CORE  # core, for the demo and all
    assert "websockets" not in NOT_CORE  # core: uvicorn's WebSocket protocol for /api/ws


def without(modules: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """`commonsky ARGS` in a fresh interpreter where importing any of `modules` fails, as in
    an environment without the extras."""
    code = textwrap.dedent(
        f"""
        import sys
        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {modules!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, Absent())
        sys.argv = ["commonsky", *{list(args)!r}]
        from commonsky.cli import main
        main()
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["demo", "--help"],
        ["ledger", "--help"],
        ["bench", "--help"],
    ],
)
def test_the_cli_needs_nothing_beyond_the_core(args: list[str]) -> None:
    # Not even httpx (a core dependency, for the demo's participants): help loads no demo.
    result = without((*NOT_CORE, "httpx"), *args)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_benchmarks_without_their_extra_say_which_to_install() -> None:
    result = without(NOT_CORE, "bench", "map", "--tracks", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "pip install 'commonsky[bench]'" in result.stderr


def test_postgresql_without_its_extra_says_which_to_install(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        '[server]\nstore_url = "postgresql://nobody@127.0.0.1:1/none"\nhttp = "127.0.0.1:0"\n'
    )
    result = without(NOT_CORE, "serve", "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "pip install 'commonsky[postgres]'" in result.stderr


def test_the_product_does_not_import_benchmark_modules() -> None:
    code = (
        "import sys, commonsky.cli, commonsky.server, commonsky.demo.main\n"
        "print(sorted(m for m in sys.modules if m.startswith(('commonsky.bench', "
        "'commonsky.web.bench', 'commonsky.web.shots', 'playwright', 'psycopg'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# ---- the map inside the package ---------------------------------------------------------


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The map as a wheel carries it: web/build.py run from npm's files in the checkout."""
    out = tmp_path_factory.mktemp("wheel") / "static"
    build = runpy.run_path(str(ROOT / "web" / "build.py"))["build"]
    assert build(out, ROOT / "web", install=False) is None
    return out


def client(assets: WebAssets) -> httpx.AsyncClient:
    services: Any = None  # the routes only serve files
    app = Starlette(routes=web_routes(services, assets))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub")


async def test_the_packaged_map_serves_its_page_and_every_asset(packaged: Path) -> None:
    assets = find_assets(packaged=packaged, checkout=packaged / "nowhere")
    assert assets.root == packaged and assets.missing() == []
    vendor = json.loads((ROOT / "web" / "vendor.json").read_text())
    async with client(assets) as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
        for name in vendor:
            assert (await http.get(f"/vendor/{name}")).status_code == 200, name
        for source in (packaged / "app").iterdir():
            response = await http.get(f"/app/{source.name}")
            assert response.status_code == 200 and response.content == source.read_bytes()
        assert "javascript" in (await http.get("/app/main.js")).headers["content-type"]


@pytest.mark.parametrize(
    "path",
    [
        "/app/nope.js",
        "/app/.hidden",
        "/app/%2e%2e/index.html",
        "/app/..%2fvendor.json",
        "/vendor/nope.js",
        "/vendor/leaflet/dist/leaflet.js",  # installed, but not on the allow-list
        "/vendor/../index.html",
    ],
)
async def test_anything_else_is_a_404(packaged: Path, path: str) -> None:
    async with client(find_assets(packaged=packaged)) as http:
        assert (await http.get(path)).status_code == 404


async def test_without_the_map_the_page_says_so_and_assets_are_404(tmp_path: Path) -> None:
    assets = find_assets(packaged=tmp_path / "static", checkout=tmp_path / "web")
    assert assets.missing()
    async with client(assets) as http:
        page = await http.get("/")
        assert page.status_code == 503 and page.text == NOT_INSTALLED
        assert (await http.get("/app/main.js")).status_code == 404
        assert (await http.get("/vendor/leaflet.js")).status_code == 404


def test_a_checkout_serves_its_sources_directly() -> None:
    assets = find_assets(packaged=ROOT / "nowhere", checkout=ROOT / "web")
    assert assets.root == ROOT / "web" and assets.missing() == []
    assert assets.vendor_file("leaflet.js") == ROOT / "web/node_modules/leaflet/dist/leaflet.js"


def test_the_command_line_loads_a_command_group_only_when_it_runs() -> None:
    code = (
        "import sys\nfrom commonsky.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('numpy', 'pyproj', "
        "'commonsky.alerts', 'commonsky.ledger', 'commonsky.deconflict'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert all(name in result.stdout for name in LAZY_GROUPS)  # listed all the same


@pytest.mark.parametrize("name", sorted(LAZY_GROUPS))
def test_a_lazy_group_is_listed_with_its_own_help(name: str) -> None:
    module, attribute, help_text = LAZY_GROUPS[name]
    assert getattr(importlib.import_module(module), attribute).info.help == help_text
