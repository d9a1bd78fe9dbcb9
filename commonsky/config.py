"""The hub's TOML configuration: parsed once, checked completely, errors on one line.

Every error names the file, the table (with its position and name when it has one), the key
and the offending value, so an operator can fix it without reading code.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from commonsky import times
from commonsky.errors import UsageError
from commonsky.federation.peers import FederateConfig, normalize_fingerprint
from commonsky.model import Category, Disclosure
from commonsky.policy import Agreement, Party
from commonsky.settings import Settings, env_name

LISTENER_KINDS = ("tak-tcp", "tak-tls", "enroll", "marti", "federation")
#: TLS listeners: each needs `ca = DIR` (its CA and, unless cert/key are given, server.pem).
TLS_KINDS = ("tak-tls", "enroll", "marti", "federation")
AGREEMENT_OPTIONS = ("rpz_m", "hpz_m", "lookahead_s", "ack_deadline_s")


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    kind: str
    host: str
    port: int
    party: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure_remote: bool = False
    where: str = "[[listener]]"  # "FILE: [[listener]] #N", for every error about it
    # enroll / marti: the HOST:PORT clients reach it at (links the hub hands out); default bind
    advertise: str | None = None


@dataclass(frozen=True)
class HubConfig:
    settings: Settings
    listeners: tuple[ListenerConfig, ...]
    parties: tuple[Party, ...]
    agreements: tuple[Agreement, ...]
    source: str = "<built-in>"
    federates: tuple[FederateConfig, ...] = ()  # peer hubs (commonsky/federation)

    @property
    def data_dir(self) -> Path:
        return Path(str(self.settings.data_dir))


def parse_hostport(text: str, where: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"{where} = {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_time(value: Any, where: str) -> float:
    if isinstance(value, datetime):
        return times.epoch_of(value)
    if isinstance(value, str):
        try:
            return times.parse_time(value)
        except ValueError:
            pass
    raise UsageError(f"{where} = {value!r} is not an RFC 3339 time")


class _Table:
    """Typed access to one TOML table that names itself in every error."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise UsageError(f"{where} is not a table")
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def get(self, key: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise UsageError(f"{self.where}: missing key {key!r}")
            return None
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise UsageError(f"{self.where}: {key} = {value!r} has the wrong type")
        return value

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise UsageError(f"{self.where}: unknown key {extra[0]!r}")


#: Settings that name files: relative ones are taken from the config file's folder (or, given
#: as a flag or variable, from the current folder), so a hub started from anywhere finds them.
PATH_SETTINGS = ("data_dir", "regions_file")


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> HubConfig:
    """Read and check a hub configuration file; relative paths in it (and the default
    `data_dir`) are relative to the file's folder. Raises UsageError (one line)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(data, str(path), overrides, base=path.absolute().parent)


def config_from_dict(
    data: Mapping[str, Any],
    source: str = "<config>",
    overrides: Mapping[str, Any] | None = None,
    base: Path | None = None,
) -> HubConfig:
    """Check a configuration given as data. Relative paths in it are taken from `base` (the
    config file's folder; the current folder when None) and come out absolute."""
    base = Path.cwd() if base is None else base
    known = {"server", "listener", "party", "agreement", "federate"}
    for key in data:
        if key not in known:
            raise UsageError(f"{source}: unknown table or key {key!r}")
    server = data.get("server", {})
    if not isinstance(server, Mapping):
        raise UsageError(f"{source}: [server] is not a table")
    settings = _absolute_paths(Settings.resolve(server, source, overrides), base, overrides)

    parties = []
    seen: set[str] = set()
    warned: dict[str, str] = {}  # country -> the party that issues its warnings
    for index, raw in enumerate(_array(data, "party", source), 1):
        table = _Table(raw, f"{source}: [[party]] #{index}")
        pid = table.get("id", str, required=True)
        if not pid or not pid.replace("-", "").replace("_", "").isalnum() or "::" in pid:
            raise UsageError(f"{table.where}: id = {pid!r} must be letters, digits, - or _")
        if pid == "HUB":
            raise UsageError(f"{table.where}: id = 'HUB' is reserved for the hub itself")
        if pid in seen:
            raise UsageError(f"{table.where}: id = {pid!r} is declared twice")
        seen.add(pid)
        token = table.get("token", str) or ""
        if token and len(token) < 16:
            raise UsageError(f"{table.where}: token must be at least 16 characters")
        country = table.get("country", str) or ""
        if country:
            if not (len(country) == 2 and country.isascii() and country.isupper()):
                raise UsageError(
                    f"{table.where}: country = {country!r} must be two capital letters"
                )
            if country in warned:
                raise UsageError(
                    f"{table.where}: country = {country!r} is warned by {warned[country]}"
                )
            warned[country] = pid
        federate = table.get("federate", str) or ""
        parties.append(Party(pid, table.get("name", str) or pid, token, country, federate))
        table.finish()

    listeners = [
        _listener(raw, index, source, seen, base)
        for index, raw in enumerate(_array(data, "listener", source), 1)
    ]
    agreements = [
        _agreement(raw, index, source, seen)
        for index, raw in enumerate(_array(data, "agreement", source), 1)
    ]
    federates = _federates(data, source, parties, listeners, base)
    return HubConfig(
        settings, tuple(listeners), tuple(parties), tuple(agreements), source, tuple(federates)
    )


def _federates(
    data: Mapping[str, Any],
    source: str,
    parties: list[Party],
    listeners: list[ListenerConfig],
    base: Path,
) -> list[FederateConfig]:
    """`[[federate]]` tables, and `[[party]] federate = NAME` naming one of them."""
    tables = _array(data, "federate", source)
    if not tables:
        for party in parties:
            if party.federate:
                raise UsageError(
                    f"{source}: [[party]] {party.id!r}: federate = {party.federate!r} is not "
                    "a declared [[federate]]"
                )
        return []
    from commonsky.privdeconf.terms import KEYS as DECONFLICT_KEYS
    from commonsky.privdeconf.terms import from_federate

    declared = {p.id for p in parties}
    federates: list[FederateConfig] = []
    names: set[str] = set()
    claimed: dict[str, str] = {}  # party -> the federate speaking for it
    for index, raw in enumerate(tables, 1):
        label = raw.get("name", "") if isinstance(raw, Mapping) else ""
        table = _Table(raw, f"{source}: [[federate]] #{index} {label!r}")
        name = table.get("name", str, required=True)
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"{table.where}: name = {name!r} must be letters, digits, - or _")
        if name in names:
            raise UsageError(f"{table.where}: name = {name!r} is declared twice")
        names.add(name)
        connect = table.get("connect", str)
        target = parse_hostport(connect, f"{table.where}: connect") if connect else None
        ca_text = table.get("ca", str)
        ca = base / ca_text if ca_text else None
        if ca is not None and not ca.is_file():
            raise UsageError(f"{table.where}: ca = {ca_text!r}: no such file (the peer's CA, PEM)")
        pin_text = table.get("fingerprint", str)
        pin = normalize_fingerprint(pin_text) if pin_text is not None else None
        if pin_text is not None and pin is None:
            raise UsageError(
                f"{table.where}: fingerprint = {pin_text!r} is not sha256: and 64 hex digits"
            )
        if ca is None and pin is None:
            raise UsageError(f'{table.where}: needs ca = "FILE" and/or fingerprint = "sha256:…"')
        spoken = table.get("parties", list, required=True)
        if not spoken:
            raise UsageError(f"{table.where}: parties is empty; name the parties it may speak for")
        for party in spoken:
            if not isinstance(party, str) or party not in declared:
                raise UsageError(
                    f"{table.where}: parties contains {party!r}, not a declared [[party]]"
                )
            if party in claimed:
                raise UsageError(
                    f"{table.where}: party {party!r} is already spoken for by [[federate]] "
                    f"{claimed[party]!r}"
                )
            claimed[party] = name
        for key in DECONFLICT_KEYS:
            table.get(key, (str, int, float, bool))
        terms = from_federate(table.data, table.where)
        table.finish()
        federates.append(FederateConfig(name, tuple(spoken), target, ca, pin, table.where, terms))
    for party in parties:
        if party.federate and party.federate not in names:
            raise UsageError(
                f"{source}: [[party]] {party.id!r}: federate = {party.federate!r} is not a "
                "declared [[federate]]"
            )
        if party.federate and claimed.get(party.id) != party.federate:
            raise UsageError(
                f"{source}: [[party]] {party.id!r}: federate = {party.federate!r}, but that "
                f"[[federate]]'s parties do not include {party.id!r}"
            )
    for pid, name in claimed.items():
        owner = next(p for p in parties if p.id == pid)
        if owner.federate != name:
            raise UsageError(
                f"{source}: [[federate]] {name!r} speaks for {pid!r}, so declare that "
                f'[[party]] with federate = "{name}" (it is not one of this hub\'s own)'
            )
    kinds = [lc for lc in listeners if lc.kind == "federation"]
    if len(kinds) > 1:
        raise UsageError(f"{kinds[1].where}: only one federation listener per hub")
    if federates and not kinds:
        raise UsageError(
            f'{source}: [[federate]] needs a [[listener]] kind = "federation" (its ca '
            "directory holds the hub's certificate, used on every link)"
        )
    return federates


def _array(data: Mapping[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise UsageError(f"{source}: {key!r} must be an array of tables ([[{key}]])")
    return value


def _absolute_paths(
    settings: Settings, base: Path, overrides: Mapping[str, Any] | None
) -> Settings:
    values = dict(settings.values)
    for name in PATH_SETTINGS:
        value = str(values[name])
        if not value:
            continue  # "" means "none" (regions_file: the built-in set)
        given_here = (overrides or {}).get(name) is not None or env_name(name) in os.environ
        values[name] = str((Path.cwd() if given_here else base) / Path(value).expanduser())
    return Settings(values)


def _listener(raw: Any, index: int, source: str, parties: set[str], base: Path) -> ListenerConfig:
    table = _Table(raw, f"{source}: [[listener]] #{index}")
    kind = table.get("kind", str, required=True)
    if kind not in LISTENER_KINDS:
        raise UsageError(
            f"{table.where}: kind = {kind!r} must be one of {', '.join(LISTENER_KINDS)}"
        )
    host, port = parse_hostport(table.get("bind", str, required=True), f"{table.where}: bind")
    insecure = bool(table.get("insecure_remote", bool))
    party = table.get("party", str)
    ca = table.get("ca", str)
    cert = table.get("cert", str)
    key = table.get("key", str)
    advertise = table.get("advertise", str)
    if advertise is not None:
        if kind not in ("enroll", "marti"):
            raise UsageError(f"{table.where}: advertise is only for enroll and marti listeners")
        parse_hostport(advertise, f"{table.where}: advertise")
    if kind == "tak-tcp":
        if party is None:
            raise UsageError(f'{table.where}: a tak-tcp listener needs party = "…"')
        if party not in parties:
            raise UsageError(f"{table.where}: party = {party!r} is not a declared [[party]]")
        if not is_loopback(host) and not insecure:
            raise UsageError(
                f"{table.where}: bind = {host!r} is not loopback; plain TCP trusts every "
                "connection as the party, so set insecure_remote = true to allow it"
            )
    else:
        if ca is None:
            raise UsageError(f'{table.where}: a {kind} listener needs ca = "DIR"')
        if party is not None:
            raise UsageError(
                f"{table.where}: party comes from the client certificate (or the enrollment "
                f"token) on {kind}"
            )
    table.finish()
    return ListenerConfig(
        kind,
        host,
        port,
        party,
        base / ca if ca else None,
        base / cert if cert else None,
        base / key if key else None,
        insecure,
        table.where,
        advertise,
    )


def _agreement(raw: Any, index: int, source: str, parties: set[str]) -> Agreement:
    name = raw.get("name", "") if isinstance(raw, Mapping) else ""
    table = _Table(raw, f"{source}: [[agreement]] #{index} {name!r}")
    name = table.get("name", str, required=True)
    provider = table.get("from", str, required=True)
    if provider not in parties:
        raise UsageError(f"{table.where}: from = {provider!r} is not a declared [[party]]")
    recipients = table.get("to", list, required=True)
    for recipient in recipients:
        if recipient not in parties:
            raise UsageError(f"{table.where}: to contains {recipient!r}, not a declared [[party]]")
    categories = set()
    for value in table.get("categories", list, required=True):
        try:
            categories.add(Category(value))
        except ValueError:
            names = ", ".join(c.value for c in Category)
            raise UsageError(f"{table.where}: categories contains {value!r}; use {names}") from None
    level = table.get("disclosure", str) or "full"
    try:
        disclosure = Disclosure(level)
    except ValueError:
        raise UsageError(
            f"{table.where}: disclosure = {level!r} must be full, generalized or conflicts-only"
        ) from None
    area = _area(table.get("area", list), table.where)
    valid_from = table.get("valid_from", (str, datetime))
    valid_until = table.get("valid_until", (str, datetime))
    start = parse_time(valid_from, f"{table.where}: valid_from") if valid_from else None
    end = parse_time(valid_until, f"{table.where}: valid_until") if valid_until else None
    if start is not None and end is not None and end <= start:
        raise UsageError(f"{table.where}: valid_until = {valid_until!r} is not after valid_from")
    options = {}
    for key in AGREEMENT_OPTIONS:
        value = table.get(key, (int, float))
        if value is not None:
            if value <= 0:
                raise UsageError(f"{table.where}: {key} = {value!r} must be positive")
            options[key] = float(value)
    table.finish()
    return Agreement(
        name,
        provider,
        tuple(recipients),
        frozenset(categories),
        disclosure,
        area,
        start,
        end,
        options,
    )


def _area(raw: list[Any] | None, where: str) -> tuple[tuple[float, float], ...] | None:
    if raw is None:
        return None
    import shapely
    from shapely.geometry import Polygon

    ring: list[tuple[float, float]] = []
    for pair in raw:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
        ):
            raise UsageError(f"{where}: area entry {pair!r} is not [lon, lat]")
        lon, lat = float(pair[0]), float(pair[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise UsageError(f"{where}: area point [{lon}, {lat}] is out of range")
        ring.append((lon, lat))
    if len(ring) < 4 or ring[0] != ring[-1]:
        raise UsageError(f"{where}: area must be a closed ring of at least 4 points (first = last)")
    if not shapely.is_valid(Polygon(ring)):
        raise UsageError(f"{where}: area ring is self-intersecting or degenerate")
    return tuple(ring)
