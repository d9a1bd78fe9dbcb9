"""Ctrl-C or SIGTERM while `commonsky serve` starts is a clean stop (commonsky/stopsignal.py):
never a traceback, never a kill in the middle of opening the data folder, never lost."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

#: `commonsky serve`, with the signal sent while the config is being read. For SIGINT, from a
#: finalizer: where Python's own handling turns it into "Exception ignored" and the start goes
#: on — which is how a Ctrl-C 0.3 s after the start was lost.
RUN = """
import os, signal, sys
import commonsky.config

SIG = signal.{sig}
load = commonsky.config.load_config


class Bell:
    def __del__(self):
        os.kill(os.getpid(), SIG)
        for _ in range(100_000):  # (the handler runs between bytecodes, in here)
            pass


def load_config(*args, **kwargs):
    Bell()
    return load(*args, **kwargs)


commonsky.config.load_config = load_config
from commonsky.cli import main

sys.argv = ["commonsky", "serve", "--config", sys.argv[1]]
main()
"""


CONFIG = """
[server]
data_dir = "hub"
http = "127.0.0.1:0"

[[listener]]
kind = "tak-tcp"
bind = "127.0.0.1:0"
party = "USA"

[[party]]
id = "USA"
token = "usa-token-0123456789abcdef"
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_start_stops_the_hub_cleanly(tmp_path: Path, sig: str) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(CONFIG)
    hub = subprocess.Popen(
        [sys.executable, "-c", RUN.format(sig=sig), str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
        # SIGINT as a terminal gives it: a background job of a script would inherit it ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _, err = hub.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        hub.kill()
        _, err = hub.communicate()
        pytest.fail(f"{sig} during the start was lost: the hub went on serving\n{err}")
    assert hub.returncode == 0, (hub.returncode, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "hub serving" not in err, err
    assert f"INFO commonsky.server: {sig} before the start: stopped" in err, err


def test_the_stop_is_logged_when_it_begins(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(CONFIG)
    hub = subprocess.Popen(
        [sys.executable, "-m", "commonsky", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert hub.stderr is not None
    lines: list[str] = []
    for line in hub.stderr:  # (until the hub serves)
        lines.append(line)
        if "hub serving" in line:
            break
    hub.send_signal(signal.SIGTERM)
    rest = hub.communicate(timeout=30)[1].splitlines()
    assert hub.returncode == 0, (lines, rest)
    assert "INFO commonsky.server: SIGTERM: stopping" in rest[0], rest


def test_a_sigint_the_hub_was_started_ignoring_stays_ignored(tmp_path: Path) -> None:
    """A shell script's background job (`commonsky serve ... &`) inherits SIGINT ignored,
    so a Ctrl-C meant for the script leaves it serving (POSIX shells' rule): the hub keeps
    it so. The SIGTERM sent after the SIGINT is what stops it — had the SIGINT been taken,
    the stop would be logged as SIGINT's (a stop begins once)."""
    config = tmp_path / "hub.toml"
    config.write_text(CONFIG)
    hub = subprocess.Popen(
        [sys.executable, "-m", "commonsky", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert hub.stderr is not None
    for line in hub.stderr:  # (until the hub serves)
        if "hub serving" in line:
            break
    hub.send_signal(signal.SIGINT)
    hub.send_signal(signal.SIGTERM)
    rest = hub.communicate(timeout=30)[1]
    assert hub.returncode == 0, rest
    assert "SIGTERM: stopping" in rest and "SIGINT" not in rest, rest
