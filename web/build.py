"""Put the live map into the Python package: `python web/build.py OUT_DIR` (stdlib only).

The page's own files (`index.html`, `app/`) and the allow-listed front-end library files of
`vendor.json` — installed from the npm registry by `npm ci` against the pinned
`package-lock.json` — are copied into OUT_DIR (the wheel's `commonsky/web/static/`):

    OUT_DIR/index.html  OUT_DIR/app/…  OUT_DIR/vendor/<name>  OUT_DIR/vendor.json

This runs when a wheel is built (`setup.py`'s build step); nothing is ever fetched while the
hub runs. Without npm (and no `node_modules` already there) the package is built without the
map, says so here, and the hub says so at start and on `/`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent


def vendor_files(web: Path = WEB) -> dict[str, str]:
    """URL name under /vendor/ -> path under node_modules/ (the allow-list)."""
    data = json.loads((web / "vendor.json").read_text("utf-8"))
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def npm_install(web: Path = WEB) -> str | None:
    """`npm ci` when a vendor file is missing; None when done, else why it could not be."""
    files = vendor_files(web)
    if all((web / "node_modules" / rel).is_file() for rel in files.values()):
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm not found (install Node.js's npm to build the live map)"
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=web,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return f"npm ci failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}"
    return None


def build(out: Path, web: Path = WEB, install: bool = True) -> str | None:
    """Copy the map into `out`; None when complete, else why the map was left out."""
    problem = npm_install(web) if install else None
    files = vendor_files(web)
    missing = [rel for rel in files.values() if not (web / "node_modules" / rel).is_file()]
    if problem is None and missing:
        problem = f"not installed: {', '.join(missing)}"
    if out.exists():
        shutil.rmtree(out)
    if problem is not None:
        return problem
    (out / "vendor").mkdir(parents=True)
    shutil.copy2(web / "index.html", out / "index.html")
    shutil.copytree(web / "app", out / "app")
    for name, rel in files.items():
        target = out / "vendor" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(web / "node_modules" / rel, target)
    (out / "vendor.json").write_text(
        json.dumps({name: name for name in files}, indent=2) + "\n", "utf-8"
    )
    return None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python web/build.py OUT_DIR")
    why = build(Path(sys.argv[1]))
    if why is not None:
        print(f"the live map is left out of the package: {why}", file=sys.stderr)
        sys.exit(1)
