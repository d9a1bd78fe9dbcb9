"""Config files and the command line: good files load; bad ones give one line and exit 2."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest

from commonsky.config import config_from_dict, load_config
from commonsky.errors import UsageError
from commonsky.model import Category, Disclosure

GOOD = """
[server]
data_dir = "var/hub"
http = "127.0.0.1:8080"

[[listener]]
kind = "tak-tcp"
bind = "127.0.0.1:18087"
party = "USA"

[[listener]]
kind = "tak-tls"
bind = "127.0.0.1:8089"
ca = "var/ca"

[[party]]
id = "USA"
name = "United States"

[[party]]
id = "JPN"

[[agreement]]
name = "US-JP missile warning"
from = "USA"
to = ["JPN"]
categories = ["track", "launch"]
disclosure = "full"
area = [[120, 20], [150, 20], [150, 50], [120, 50], [120, 20]]
valid_from = 2024-01-01T00:00:00Z
valid_until = "2030-01-01T00:00:00Z"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_contract_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    (agreement,) = config.agreements
    assert agreement.categories == {Category.TRACK, Category.LAUNCH}
    assert agreement.disclosure is Disclosure.FULL
    assert agreement.valid_from is not None and agreement.valid_until is not None
    assert [lc.kind for lc in config.listeners] == ["tak-tcp", "tak-tls"]
    assert config.settings.limit_message_bytes == 262_144


BAD = [
    ('disclosure = "full"', 'disclosure = "everything"', "disclosure = 'everything'"),
    ('to = ["JPN"]', 'to = ["XXX"]', "'XXX'"),
    ('categories = ["track", "launch"]', 'categories = ["tracks"]', "'tracks'"),
    ('bind = "127.0.0.1:18087"', 'bind = "0.0.0.0:18087"', "insecure_remote"),
    ('bind = "127.0.0.1:18087"', 'bind = "nowhere"', "bind = 'nowhere'"),
    ('kind = "tak-tcp"', 'kind = "udp"', "kind = 'udp'"),
    (
        'http = "127.0.0.1:8080"',
        'http = "127.0.0.1:8080"\nlimit_message_bytes = "big"',
        "limit_message_bytes",
    ),
    ('http = "127.0.0.1:8080"', 'http = "127.0.0.1:8080"\nlimit_bogus = 1', "limit_bogus"),
    ('name = "United States"', 'name = "United States"\ncolour = "blue"', "colour"),
    ('valid_until = "2030-01-01T00:00:00Z"', 'valid_until = "2020-01-01T00:00:00Z"', "valid_until"),
    ("[120, 50], [120, 20]]", "[120, 50]]", "closed ring"),
    ('name = "United States"', 'name = "United States"\ncountry = "usa"', "two capital letters"),
    (
        'id = "JPN"',
        'id = "JPN"\ncountry = "JP"\n[[party]]\nid = "J2"\ncountry = "JP"',
        "warned by JPN",
    ),
    ('http = "127.0.0.1:8080"', 'http = "127.0.0.1:8080"\nstore_url = "sqlite:///x"', "store_url"),
    ("[150, 50], [120, 50]", "[120, 50], [150, 50]", "self-intersecting"),
    ('id = "JPN"', 'id = "USA"', "declared twice"),
    ('[[party]]\nid = "JPN"', '[[party]]\nid = "JPN"\n[oops', "invalid TOML"),
]


@pytest.mark.parametrize(("old", "new", "named"), BAD)
def test_bad_config_names_the_problem(tmp_path: Path, old: str, new: str, named: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(UsageError) as info:
        load_config(path)
    message = str(info.value)
    assert named in message and str(path) in message and "\n" not in message


def test_a_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    """What Notepad saves as UTF-8: it was "invalid TOML: Invalid statement (at line 1,
    column 1)", a first line that looks right to the operator."""
    path = tmp_path / "hub.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_config(path).agreements == load_config(write(tmp_path, GOOD)).agreements


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commonsky", *args], capture_output=True, text=True, timeout=60
    )


def test_serve_with_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('disclosure = "full"', 'disclosure = "all"'))
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "disclosure = 'all'" in result.stderr


def test_serve_with_binary_garbage_config(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["serve"],
        ["serve", "--config"],
        ["deconflict", "tracks"],
        [
            "cert",
            "issue",
            "--ca",
            "/nonexistent",
            "--party",
            "USA",
            "--name",
            "x",
            "--out",
            "/tmp/x",
        ],
        ["demo", "--duration", "soon"],
    ],
)
def test_bad_arguments_exit_2_without_traceback(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["demo"],
        ["ca", "init"],
        ["cert", "issue"],
        ["deconflict", "tracks"],
        ["ledger", "export"],
        ["ledger", "verify"],
        ["bench", "relay"],
        ["bench", "store"],
        ["bench", "cluster-capacity"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["bench", "warnings", "--rate", "0"], "--rate and --reports must be > 0"),
        (["bench", "map", "--tracks", "0"], "--tracks and --duration must be > 0"),
        (["bench", "api", "--rate", "-1"], "--rate and --duration > 0"),
        (["bench", "store", "--rounds", "0"], "--rounds must be > 0"),
        (["bench", "store", "--store-url", "mysql://x"], "store_url must be empty or a postgresql"),
        (["bench", "cluster-capacity", "--core-cpu", "99"], "--core-cpu/--edge-cpu in 0.."),
        (["bench", "cluster-capacity", "--messages", "0"], "--messages must be positive"),
        (["bench", "cluster-capacity", "--rates", "1000,x"], "--rates"),
    ],
)
def test_benchmarks_refuse_nonsense_with_one_line(command: list[str], message: str) -> None:
    result = run_cli(*command)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bench_warnings_runs_small() -> None:
    # Figures are the benchmark's business; this only checks that it runs end to end and
    # that every report reached every party (20 parties, fused events and reports).
    result = run_cli("bench", "warnings", "--rate", "1000", "--reports", "40")
    assert result.returncode == 0, result.stderr
    assert "the hub's work per report" in result.stdout
    queued = int(result.stdout.split("deliveries queued ")[1].split(",")[0])
    assert queued >= 40 * 20


def test_paths_in_a_config_are_relative_to_its_folder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    text = GOOD.replace('data_dir = "var/hub"', 'data_dir = "var/hub"\nregions_file = "r.json"')
    text = text.replace('ca = "var/ca"', 'ca = "var/ca"\ncert = "certs/hub.pem"\nkey = "/k.pem"')
    config = load_config(write(site, text))
    assert config.data_dir == site / "var" / "hub"
    assert config.settings.regions_file == str(site / "r.json")
    tls = config.listeners[1]
    assert (tls.ca, tls.cert, tls.key) == (site / "var/ca", site / "certs/hub.pem", Path("/k.pem"))
    assert tls.where == f"{site / 'hub.toml'}: [[listener]] #2"


TWO = {
    "party": [{"id": "USA"}, {"id": "JPN"}],
    "agreement": [
        {"name": "a", "from": "USA", "to": ["JPN"], "categories": ["track"]},
        {"name": "b", "from": "USA", "to": ["JPN"], "categories": ["track"]},
    ],
}


@pytest.mark.parametrize(
    ("table", "index", "change", "says"),
    [
        (
            "agreement",
            1,
            {"to": ["XXX"]},
            "to contains 'XXX', not a declared [[party]] ($.agreement[1].to[0])",
        ),
        (
            "agreement",
            0,
            {"to": ["JPN", 3]},
            "#1 'a': to[1] = 3: expected str, got int ($.agreement[0].to[1])",
        ),
        (
            "agreement",
            1,
            {"disclosure": "all"},
            "disclosure = 'all': use full, generalized, conflicts-only ($.agreement[1].disclosure)",
        ),
        (
            "agreement",
            0,
            {"area": [[1, 2], [3]]},
            "area[1] = [3]: expected array of length 2, got 1 ($.agreement[0].area[1])",
        ),
        ("agreement", 0, {"rpz_m": -1}, "rpz_m = -1: expected float > 0.0 ($.agreement[0].rpz_m)"),
        ("agreement", 0, {"valid_from": "soon"}, "valid_from = 'soon': invalid RFC3339"),
        ("agreement", 0, {"colour": "red"}, "unknown key 'colour' ($.agreement[0])"),
        (
            "party",
            1,
            {"country": "jp"},
            "[[party]] #2: country = 'jp' must be two capital letters ($.party[1].country)",
        ),
        (
            "party",
            0,
            {"token": 12345678901234567},
            "token = 12345678901234567: expected str, got int ($.party[0].token)",
        ),
    ],
)
def test_errors_carry_the_path_of_the_bad_value(
    table: str, index: int, change: dict[str, object], says: str
) -> None:
    data = copy.deepcopy(TWO)
    data[table][index].update(change)
    with pytest.raises(UsageError) as info:
        config_from_dict(data, "hub.toml")
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_missing_key_and_a_table_of_the_wrong_type_are_named() -> None:
    data = copy.deepcopy(TWO)
    del data["agreement"][0]["from"]
    with pytest.raises(UsageError, match=re.escape("#1 'a': missing key 'from' ($.agreement[0])")):
        config_from_dict(data, "hub.toml")
    with pytest.raises(UsageError, match=re.escape("[[party]] #1 is not a table ($.party[0])")):
        config_from_dict({"party": [5]}, "hub.toml")


@pytest.mark.parametrize("key", ["rpz_m", "hpz_m", "lookahead_s", "ack_deadline_s"])
@pytest.mark.parametrize("bad", ["inf", "nan"])
def test_an_agreement_option_is_finite(tmp_path: Path, key: str, bad: str) -> None:
    """`rpz_m = inf` was taken (every pair a conflict); nan was 'expected float > 0.0'."""
    path = write(
        tmp_path, GOOD.replace('disclosure = "full"', f'disclosure = "full"\n{key} = {bad}')
    )
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: [[agreement]] #1 'US-JP missile warning': {key} = {float(bad)!r}: must be a "
        f"finite number ($.agreement[0].{key})"
    )


@pytest.mark.parametrize("bad", ["inf", "nan"])
def test_a_server_float_from_the_file_is_finite(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, GOOD.replace("[server]\n", f"[server]\ntimeout_upload_s = {bad}\n"))
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: [server]: timeout_upload_s = {float(bad)!r}: must be a finite number "
        "($.server.timeout_upload_s)"
    )
