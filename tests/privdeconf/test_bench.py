"""`commonsky bench private-deconflict` runs end to end (figures are the benchmark's business)
and refuses nonsense with one line; without openmined-psi it says how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_packaging import without


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commonsky", *args], capture_output=True, text=True, timeout=120
    )


def test_the_benchmark_runs_small_and_both_ways_find_the_shared_cells() -> None:
    result = run_cli("bench", "private-deconflict", "--cells", "60", "--overlap", "0.5")
    assert result.returncode == 0, result.stderr
    assert "60 cells each side: private round" in result.stdout
    assert "each learns 30 / 30 shared" in result.stdout
    assert "plain exchange of the same cells" in result.stdout and "30 / 30 shared" in result.stdout
    assert "load average" in result.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--cells", "0"], "--cells must be counts > 0"),
        (["--cells", "a,b"], "is not a comma"),
        (["--overlap", "2"], "--overlap between 0 and 1"),
    ],
)
def test_the_benchmark_refuses_nonsense_with_one_line(args: list[str], said: str) -> None:
    result = run_cli("bench", "private-deconflict", *args)
    assert result.returncode == 2 and said in result.stderr
    assert "Traceback" not in result.stderr


def test_without_openmined_psi_the_benchmark_says_how_to_install_it() -> None:
    result = without(("private_set_intersection",), "bench", "private-deconflict", "--cells", "5")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "pip install --no-deps openmined-psi==2.0.6" in result.stderr
