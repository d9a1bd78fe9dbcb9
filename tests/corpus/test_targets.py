"""The conformance play's hubs (`commonsky/conformance/targets.py`): the cluster's
configuration text, the reading of its processes' logs, and where its API is asked."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commonsky.config import config_from_dict, load_config
from commonsky.conformance.targets import ProcessLogs, check_api, hub_config, to_toml
from commonsky.errors import UsageError

TOKENS = {"ALPHA": "a" * 32, "BRAVO": "b" * 32}
PORTS = {"ALPHA": 18001, "BRAVO": 18002}


def test_the_cluster_reads_the_configuration_the_single_process_is_given(tmp_path: Path) -> None:
    config = hub_config(tmp_path / "data", 8099, PORTS, TOKENS, "o" * 32)
    path = tmp_path / "hub.toml"
    path.write_text(to_toml(config, 'store_url = "postgresql://x/y"\n'))
    assert tomllib.loads(path.read_text())["server"]["store_url"] == "postgresql://x/y"
    from_file, from_dict = load_config(path), config_from_dict(config, "conformance hub")
    assert from_file.parties == from_dict.parties
    assert from_file.agreements == from_dict.agreements
    assert [(lc.party, lc.port) for lc in from_file.listeners] == [
        ("ALPHA", 18001),
        ("BRAVO", 18002),
    ]


scalars = st.one_of(
    st.text(), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.floats(allow_nan=False)
)
tables = st.dictionaries(
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True), scalars | st.lists(st.text())
)


@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), tables | st.lists(tables)))
def test_to_toml_writes_what_tomllib_reads_back(config: dict[str, object]) -> None:
    # Any text (quotes, backslashes, control characters, DEL, characters beyond the BMP —
    # which JSON would escape as a surrogate pair TOML refuses) survives.
    assert tomllib.loads(to_toml(config)) == {k: v for k, v in config.items() if v != []}


def test_to_toml_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError):
        to_toml({"server": {"when": object()}})


def test_process_logs_are_read_as_they_grow(tmp_path: Path) -> None:
    edge, core = tmp_path / "edge-1.log", tmp_path / "core-2.log"
    edge.write_text(
        "2026-11-30 20:30:57,123 INFO commonsky.hub: tak-tcp 127.0.0.1:1 ALPHA/u refused "
        "(too_big): 70000 bytes\n"
        "2026-11-30 20:30:57,124 WARNING commonsky.cluster: edge: ALPHA/u refused by the core "
        "(no_agreement): x\n"
        "Traceback (most recent call last):\n"  # (a record's continuation: not a record)
        "2026-11-30 20:30:57,125 ERROR commonsky.hub: half a li"  # (still being written)
    )
    core.write_bytes(b"2026-11-30 20:30:58,000 INFO commonsky.cluster: core: bad \xff byte\n")
    logs = ProcessLogs([edge, core, tmp_path / "not-yet.log"])
    assert logs.read() == [
        (logging.INFO, "tak-tcp 127.0.0.1:1 ALPHA/u refused (too_big): 70000 bytes"),
        (logging.WARNING, "edge: ALPHA/u refused by the core (no_agreement): x"),
        (logging.INFO, "core: bad \ufffd byte"),
    ]
    with edge.open("a") as f:
        f.write("ne\n")
    assert logs.read()[-1] == (logging.ERROR, "half a line")


@pytest.mark.parametrize("api", ["core", "edge:0", "edge:1"])
def test_the_api_is_asked_at_the_core_or_an_edge(api: str) -> None:
    check_api(api, 2)


@pytest.mark.parametrize(
    "api", ["edge:2", "edge", "edge:-1", "Core", "edge:1 ", "edge:" + "9" * 50]
)
def test_an_api_place_the_cluster_does_not_have_is_one_clear_error(api: str) -> None:
    with pytest.raises(UsageError, match="neither 'core' nor 'edge:N'"):
        check_api(api, 2)
