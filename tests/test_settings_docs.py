"""The one settings table and its documentation agree (datasette's test_docs habit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonsky.errors import UsageError
from commonsky.settings import SETTINGS, Settings, markdown_table

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
    assert resolved.limit_message_bytes == 65536  # default


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit_queue_tracks", "-1"),
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
