"""How settings are given and checked: `Settings` (the fields of
`commonsky.settings_fields`), its rows (`SETTINGS`), flag and variable names.

The fields (type, bounds, default, meaning) are the one settings table, in
`settings_fields.py`. Here they are resolved: defaults < config file < environment <
command-line flags. Values are checked by msgspec against the field's type, one source at a
time, so an error names where the bad value came from; checks of a value's form (store_url,
http) and across settings (the clock) follow, each one line.
"""

from __future__ import annotations

import os
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from msgspec import Meta

from commonsky.errors import UsageError, check_finite
from commonsky.settings_fields import CLOCK_RATE_MAX, EPOCH_MAX, SettingsFields

__all__ = [
    "CLOCK_RATE_MAX",
    "ENV_PREFIX",
    "EPOCH_MAX",
    "SETTINGS",
    "Setting",
    "Settings",
    "coerce",
    "defaults",
    "env_name",
    "flag_name",
    "markdown_table",
    "parse_hostport",
]


class Settings(SettingsFields, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Resolved values: defaults < config file < environment < command-line flags."""

    @property
    def values(self) -> dict[str, int | float | str | bool]:
        """Every setting by name (for tables and logs; code reads the typed fields)."""
        return {name: getattr(self, name) for name in self.__struct_fields__}

    @classmethod
    def resolve(
        cls,
        file_values: Mapping[str, Any] | None = None,
        file_name: str = "config",
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Defaults, then the file's `[server]` table, then `COMMONSKY_*` variables, then
        flags (None in `overrides` means "not given"). Raises UsageError naming the source,
        the setting and the value."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        where: dict[str, tuple[str, str]] = {}  # (origin, $.path) of each value given
        for key, raw in (file_values or {}).items():
            where[key] = (f"{file_name}: [server]", f"$.server.{key}")
            values[key] = coerce(key, raw, *where[key])
        for s in SETTINGS:
            if env_name(s.name) in environ:
                values[s.name] = coerce(s.name, environ[env_name(s.name)], env_name(s.name))
                where[s.name] = (env_name(s.name), "")
        for key, raw in (overrides or {}).items():
            if raw is not None:
                values[key] = coerce(key, raw, flag_name(key))
                where[key] = (flag_name(key), "")
        settings = cls(**values)
        _check_clock(settings, *where.get("clock_until", (env_name("clock_until"), "")))
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (each checked like a file's)."""
        checked = {k: coerce(k, v, "settings") for k, v in changes.items()}
        return msgspec.structs.replace(self, **checked)

    def get_int(self, name: str) -> int:
        value = getattr(self, name)
        assert isinstance(value, int)
        return value

    def get_float(self, name: str) -> float:
        value = getattr(self, name)
        assert isinstance(value, float | int)
        return float(value)


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the table, read off a `Settings` field."""

    name: str
    type: Any  # the field's annotation without its bounds: int, float, str or a Literal
    default: int | float | str | bool
    help: str

    @property
    def type_name(self) -> str:
        """INT, FLOAT, TEXT or the choices (`Actual|Exercise`), as `--help` shows it."""
        if typing.get_origin(self.type) is Literal:
            return "|".join(str(v) for v in typing.get_args(self.type))
        return {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}[self.type]


def _table() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings, include_extras=True)
    rows = []
    for name, default in zip(Settings.__struct_fields__, Settings.__struct_defaults__, strict=True):
        base, *metas = typing.get_args(hints[name])
        help_text = next(m.description for m in metas if isinstance(m, Meta) and m.description)
        rows.append(Setting(name, base, default, help_text))
    return tuple(rows)


SETTINGS: tuple[Setting, ...] = _table()
_TYPES: dict[str, Any] = typing.get_type_hints(Settings, include_extras=True)
ENV_PREFIX = "COMMONSKY_"


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def coerce(name: str, raw: Any, where: str, at: str = "") -> Any:
    """Check one value against its field; `where` names its origin for the error line.
    Text (a variable, a flag) is read as the field's type; a file's value must already be
    of it (an int is taken for a float); `at` is its path in a config document, added to
    the error. Raises UsageError (one line)."""
    suffix = f" ({at})" if at else ""
    kind = _TYPES.get(name)
    if kind is None:
        raise UsageError(f"{where}: unknown setting {name!r}{suffix}")
    if typing.get_args(kind)[0] is float:
        check_finite(name, raw, where, at)
    try:
        value = msgspec.convert(raw, kind, strict=not isinstance(raw, str))
    except msgspec.ValidationError as exc:
        reason = str(exc).replace("`", "")
        base = typing.get_args(kind)[0]
        if typing.get_origin(base) is Literal:
            reason = f"must be {' or '.join(map(str, typing.get_args(base)))}"
        reason = reason[:1].lower() + reason[1:]
        raise UsageError(f"{where}: {name} = {raw!r}: {reason}{suffix}") from None
    if name == "store_url" and value and not value.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"{where}: store_url must be empty or a postgresql:// URL{suffix}")
    if name == "http":
        parse_hostport(value, f"{where}: http", at)
    return value


def parse_hostport(text: str, where: str, at: str = "") -> tuple[str, int]:
    """HOST:PORT as (host, port), brackets taken off an IPv6 host; UsageError naming `where`
    (and `at`, the value's path in a config document) otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        suffix = f" ({at})" if at else ""
        raise UsageError(f"{where} = {text!r} is not HOST:PORT{suffix}")
    return host.strip("[]"), int(port_text)


def _check_clock(settings: Settings, where: str, at: str) -> None:
    """`clock_until` (when set) must come after the compressed span starts: `clock_origin`,
    or now when that is 0 — otherwise `clock_rate` would silently never apply."""
    until, origin = settings.clock_until, settings.clock_origin
    start = origin or time.time()
    if until and settings.clock_rate != 1.0 and until <= start:
        what = f"clock_origin = {origin!r}" if origin else "now"
        suffix = f" ({at})" if at else ""
        raise UsageError(
            f"{where}: clock_until = {until!r} is not after {what}: the clock would never "
            f"run at clock_rate{suffix}"
        )


def defaults() -> Settings:
    return Settings()


def markdown_table() -> str:
    """The README's settings section is this text (tests compare them)."""
    lines = ["| setting | default | env | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = '""' if s.default == "" else s.default  # as TOML writes it
        lines.append(f"| `{s.name}` | `{default}` | `{env_name(s.name)}` | {s.help} |")
    return "\n".join(lines)
