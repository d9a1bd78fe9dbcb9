"""The one settings table and its documentation agree (datasette's test_docs habit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from commonsky.errors import UsageError
from commonsky.protocol.cot import XmlLimits
from commonsky.settings import SETTINGS, Settings, env_name, flag_name, markdown_table

README = Path(__file__).parent.parent / "README.md"


def test_readme_settings_section_is_the_table() -> None:
    assert markdown_table() in README.read_text()


def test_precedence_default_file_env_flag() -> None:
    resolved = Settings.resolve(
        {"limit_queue_tracks": 10},
        "f",
        {"limit_refusals_before_close": "3"},
        {"COMMONSKY_LIMIT_QUEUE_TRACKS": "20", "COMMONSKY_TIMEOUT_IDLE_S": "7.5"},
    )
    assert resolved.limit_queue_tracks == 20  # env beats file
    assert resolved.limit_refusals_before_close == 3  # flag
    assert resolved.timeout_idle_s == 7.5
    assert resolved.limit_message_bytes == 262_144  # default


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit_queue_tracks", "-1"),
        ("limit_message_bytes", "0"),
        ("timeout_idle_s", "soon"),
        ("alert_status", "Test"),
        ("nonexistent", "1"),
    ],
)
def test_bad_values_are_named(name: str, value: str) -> None:
    with pytest.raises(UsageError, match=name):
        Settings.resolve({name: value}, "f", environ={})


def test_every_setting_has_help_and_a_known_prefix_or_name() -> None:
    for setting in SETTINGS:
        assert setting.help.endswith(".")


def test_serve_help_shows_every_setting_as_a_flag_with_its_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "commonsky", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    flat = " ".join(result.stdout.split())  # help text wraps lines
    for setting in SETTINGS:
        assert f"{flag_name(setting.name)} {setting.type_name}" in flat, setting.name
        assert env_name(setting.name) in flat, setting.name


def test_serve_help_names_every_cluster_key() -> None:
    """An operator setting up a cluster from `serve --help` finds every `[cluster]` key
    (the NATS link's users, TLS files and edge name among them)."""
    from commonsky.cluster.config import ClusterSettings

    result = subprocess.run(
        [sys.executable, "-m", "commonsky", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    flat = " ".join(result.stdout.split())
    for key in ClusterSettings.__struct_fields__:
        if key != "lease_ttl_s":  # (rarely changed: README, "Configuration")
            assert key in flat, key
    assert "USER:PASSWORD@" in flat and "nats-permissions.conf" in flat


def test_settings_are_a_typed_struct_whose_defaults_pass_their_own_checks() -> None:
    defaults = Settings()
    assert msgspec.convert(msgspec.to_builtins(defaults), Settings) == defaults
    assert isinstance(defaults.limit_queue_tracks, int)
    assert isinstance(defaults.timeout_idle_s, float)
    assert [s.name for s in SETTINGS] == list(Settings.__struct_fields__)


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        (
            "--limit-queue-tracks",
            "-1",
            "--limit-queue-tracks: limit_queue_tracks = -1: expected int >= 0",
        ),
        ("--alert-status", "Test", "alert_status = 'Test': must be Actual or Exercise"),
        ("--limit-queue-tracks", "many", "--limit-queue-tracks"),
        ("--no-such-setting", "1", "--no-such-setting"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(tmp_path: Path, flag: str, value: str, says: str) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "hub"}"\nhttp = "127.0.0.1:0"\n')
    result = subprocess.run(
        [sys.executable, "-m", "commonsky", "serve", "--config", str(config), flag, value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


FINITE = "must be a finite number"
FLOATS = [s.name for s in SETTINGS if s.type is float]


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_no_float_setting_takes_inf_or_nan_from_a_file(name: str, bad: float) -> None:
    """TOML's `inf` and `nan` were taken by every `ge=0` setting (inf: a timeout that never
    fires, a token that never expires); nan was refused as `expected float >= 0.0`."""
    with pytest.raises(UsageError) as info:
        Settings.resolve({name: bad}, "hub.toml", environ={})
    assert str(info.value).startswith(f"hub.toml: [server]: {name} = {bad!r}: {FINITE}")


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("bad", ["inf", "-Infinity", "nan", "1e999"])
def test_no_float_setting_takes_inf_or_nan_from_a_variable_or_a_flag(name: str, bad: str) -> None:
    with pytest.raises(UsageError) as info:
        Settings.resolve(environ={env_name(name): bad})
    assert str(info.value).startswith(f"{env_name(name)}: {name} = {bad!r}: {FINITE}")
    with pytest.raises(UsageError) as info:
        Settings.resolve(overrides={name: bad}, environ={})
    assert str(info.value).startswith(f"{flag_name(name)}: {name} = {bad!r}: {FINITE}")


NO_ZERO = [
    "timeout_idle_s",  # every connection closed at its first check
    "timeout_partial_event_s",  # an event split over two reads closed the connection
    "tls_handshake_timeout_s",  # asyncio's ValueError at the first TLS client
    "timeout_federation_health_s",  # a health check with no time to answer
    "timeout_federation_retry_s",  # redials in a loop with no wait (0 doubled is 0)
    "generalize_grid_deg",  # ZeroDivisionError snapping the first generalized position
    "timeout_enroll_token_s",  # a token expired as it is issued
    "timeout_upload_s",  # every upload aborted
]


@pytest.mark.parametrize("name", NO_ZERO)
def test_settings_where_zero_means_nothing_refuse_it(name: str) -> None:
    with pytest.raises(UsageError, match=f"hub.toml: \\[server\\]: {name} = 0: expected float > 0"):
        Settings.resolve({name: 0}, "hub.toml", environ={})


@pytest.mark.parametrize("name", sorted(set(FLOATS) - set(NO_ZERO) - {"clock_rate"}))
def test_settings_where_zero_means_something_take_it(name: str) -> None:
    assert Settings.resolve({name: 0}, "hub.toml", environ={}).get_float(name) == 0


@pytest.mark.parametrize("bad", ["nonsense", ":8080", "127.0.0.1:99999", "[::1]"])
def test_http_is_host_port_however_the_settings_are_built(bad: str) -> None:
    """It was checked only by the config loader, so settings resolved without it (a test's,
    a tool's) took any text and the hub failed as it bound the web port."""
    with pytest.raises(UsageError) as info:
        Settings.resolve({"http": bad}, "hub.toml", environ={})
    assert str(info.value) == f"hub.toml: [server]: http = {bad!r} is not HOST:PORT ($.server.http)"
    with pytest.raises(UsageError) as info:
        Settings.resolve(environ={"COMMONSKY_HTTP": bad})
    assert str(info.value) == f"COMMONSKY_HTTP: http = {bad!r} is not HOST:PORT"
    with pytest.raises(UsageError) as info:
        Settings.resolve(overrides={"http": bad}, environ={})
    assert str(info.value) == f"--http: http = {bad!r} is not HOST:PORT"
    with pytest.raises(UsageError) as info:
        Settings().replace(http=bad)
    assert str(info.value) == f"settings: http = {bad!r} is not HOST:PORT"


def test_http_given_well_anywhere_is_taken() -> None:
    assert Settings.resolve({"http": "0.0.0.0:80"}, "f", environ={}).http == "0.0.0.0:80"
    assert Settings.resolve(environ={"COMMONSKY_HTTP": "[::1]:8080"}).http == "[::1]:8080"
    assert Settings.resolve(overrides={"http": "h:0"}, environ={}).http == "h:0"


def test_the_parser_limits_default_to_the_settings() -> None:
    """`XmlLimits()` is what federation and the HTTP API parse with when no settings are at
    hand: the same bounds, so a route a TAK client may send is not refused from a peer hub."""
    s = Settings()
    assert XmlLimits() == XmlLimits(
        s.limit_message_bytes, s.limit_xml_depth, s.limit_attribute_bytes
    )
    assert s.limit_message_bytes == 256 * 1024  # (docs/architecture.md, "Message size")
