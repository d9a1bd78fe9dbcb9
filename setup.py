"""Builds the live map into the wheel (`web/build.py`); everything else is in pyproject.toml."""

import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithMap(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install serves the map from web/ in the checkout
        build = runpy.run_path(str(ROOT / "web" / "build.py"))["build"]
        why = build(Path(self.build_lib) / "commonsky" / "web" / "static", ROOT / "web")
        if why is not None:
            print(f"WARNING: the live map is left out of this build: {why}", file=sys.stderr)


setup(cmdclass={"build_py": BuildWithMap})
