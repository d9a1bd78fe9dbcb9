"""Every command's `--help` reads like the rest: no Python type (`<list[str]>`, `str | None`,
`Optional[...]`) leaks into it from an annotation Typer turned into a metavar."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from commonsky import cli

LEAKS = re.compile(
    r"\b(list|dict|tuple|set|frozenset|Sequence|Mapping)\[|\bOptional\b|\bUnion\b|\| None\b|"
    r"\bNoneType\b|\btyping\.|<class |\bPath\b(?!s)|\bpathlib\b"
)


def commands() -> list[tuple[str, ...]]:
    """Every command and group, by its words after `commonsky` (the lazy groups built)."""
    cli._register_benches()
    root = typer.main.get_command(cli.app)
    found: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found.append(path)
        if hasattr(command, "list_commands"):  # (a group, of Typer's own copy of Click)
            ctx = command.context_class(command, info_name=path[-1] if path else "commonsky")
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, (path, name)
                walk(sub, (*path, name))

    walk(root, ())
    return found


def help_text(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> str:
    status: object = 0
    try:
        cli.main([*path, "--help"])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    assert not status, (path, status, err)
    return out + err


def test_there_are_commands_to_look_at() -> None:
    found = commands()
    assert ("ca", "init") in found and ("ledger", "export") in found and ("serve",) in found
    assert len(found) > 30


def test_no_python_type_shows_in_any_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # (one option a line: nothing split by wrapping)
    leaks = [
        f"commonsky {' '.join(path)}: {line.strip()}"
        for path in commands()
        for line in help_text(capsys, path).splitlines()
        if LEAKS.search(line)
    ]
    assert not leaks, "\n".join(leaks)


def test_server_name_reads_like_the_other_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert "--server-name <name>" in help_text(capsys, ("ca", "init"))


def float_options() -> set[tuple[str, ...]]:
    """(command words…, --flag) of every float option of every command."""
    cli._register_benches()
    root = typer.main.get_command(cli.app)
    found = set()
    for path in commands():
        command: Any = root
        for word in path:
            command = command.get_command(command.context_class(command, info_name=word), word)
        for param in getattr(command, "params", []):
            descriptor = getattr(param, "type_descriptor", None)
            if getattr(descriptor, "annotation", None) is float:
                found.add((*path, param.opts[0]))
    return found


BENCH_FLOATS = [
    ("bench", "relay", "--duration"),
    ("bench", "cluster-capacity", "--duration"),
    ("bench", "api", "--rate"),
    ("bench", "api", "--duration"),
    ("bench", "map", "--duration"),
    ("bench", "warnings", "--rate"),
    ("bench", "federation", "--rate"),
    ("bench", "marti", "--megabytes"),
    ("bench", "private-deconflict", "--overlap"),
]


def test_every_bench_float_option_is_in_the_list_below() -> None:
    assert {o for o in float_options() if o[0] == "bench"} == set(BENCH_FLOATS)


@pytest.mark.parametrize("option", BENCH_FLOATS, ids=" ".join)
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_bench_refuses_inf_and_nan_before_it_starts(option: tuple[str, ...], bad: str) -> None:
    """Every `<= 0` check let nan through, and inf passed them all: the bench then ran for
    ever, or at a rate of nothing. A bench that starts is stopped here (its own group)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "commonsky", *option, bad],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(option)} {bad}: the bench started")
    assert proc.returncode == 2, err
    assert err == f"commonsky: error: {option[-1]} {float(bad)!r}: must be a finite number\n"


def test_every_group_says_what_it_is_for(capsys: pytest.CaptureFixture[str]) -> None:
    """`commonsky --help` listed three groups as "ledger commands", "alerts commands"…:
    words that answer nothing. Each group's line says what it does, and the same in the
    listing as in the group's own --help."""
    listing = help_text(capsys, ())
    for path in commands():
        if len(path) != 1 or path == ("bench",):
            continue
        own = help_text(capsys, path)
        if "Commands:" not in own:
            continue  # (a command, not a group)
        about = own.split("\n\n")[1].strip()
        assert about != f"{path[0]} commands", about
        assert " ".join(about.split())[:40] in " ".join(listing.split()), (path, about)
