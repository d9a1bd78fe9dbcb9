"""The hub's TOML configuration: parsed once, checked completely, errors on one line.

Each table is decoded into a msgspec Struct (`PartyTable`, `ListenerTable`,
`AgreementTable`): types, required and unknown keys are checked by msgspec, what depends on
other tables (a declared party, a closed ring) by the code below. Every error names the
file, the table (with its position and name when it has one), the key and the offending
value, and ends with the value's path in the document (`$.agreement[1].to[0]`), so an
operator can fix it without reading code.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from commonsky import times
from commonsky.cluster.config import ClusterSettings, Role, check_cluster, without_secrets
from commonsky.errors import UsageError, check_finite
from commonsky.federation.peers import FederateConfig, normalize_fingerprint
from commonsky.model import Category, Disclosure
from commonsky.namespace import party_id_problem
from commonsky.policy import Agreement, Party
from commonsky.settings import Settings, env_name, flag_name
from commonsky.settings import parse_hostport as parse_hostport  # (its old home)

LISTENER_KINDS = ("tak-tcp", "tak-tls", "enroll", "marti", "federation")
#: TLS listeners: each needs `ca = DIR` (its CA and, unless cert/key are given, server.pem).
TLS_KINDS = ("tak-tls", "enroll", "marti", "federation")
AGREEMENT_OPTIONS = ("rpz_m", "hpz_m", "lookahead_s", "ack_deadline_s")

Positive = Annotated[float, Meta(gt=0)]


class PartyTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One `[[party]]`."""

    id: str
    name: str = ""
    token: str = ""  # bearer token for the API and the page; at least 16 characters
    country: str = ""  # ISO 3166-1 alpha-2: the country whose warnings this party issues
    federate: str = ""  # the [[federate]] (peer hub) it is behind; "" for the hub's own


class ListenerTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One `[[listener]]`: `kind` is one of LISTENER_KINDS, `bind` is HOST:PORT."""

    kind: str
    bind: str
    party: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure_remote: bool = False
    advertise: str | None = None


class AgreementTable(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename={"provider": "from"}
):
    """One `[[agreement]]` (`from` is a Python keyword, hence `provider`)."""

    name: str
    provider: str
    to: list[str]
    categories: list[Category]
    disclosure: Disclosure = Disclosure.FULL
    area: list[tuple[float, float]] | None = None  # closed ring of [lon, lat]
    valid_from: datetime | None = None  # RFC 3339; without an offset: UTC
    valid_until: datetime | None = None
    rpz_m: Positive | None = None
    hpz_m: Positive | None = None
    lookahead_s: Positive | None = None
    ack_deadline_s: Positive | None = None


class FederateTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One `[[federate]]`: a peer hub. Its private-deconfliction terms (the keys of
    `privdeconf.terms.KEYS`) are taken off before it is decoded and read by `from_federate`."""

    name: str
    parties: list[str]  # the parties this link may speak for
    connect: str | None = None  # HOST:PORT to dial; omitted: only accept
    relay: list[str] = []  # parties of hubs beyond the peer, which it relays for
    ca: str | None = None  # the peer's CA certificate (PEM file)
    fingerprint: str | None = None  # "sha256:" and 64 hex digits


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
    cluster: ClusterSettings | None = None  # [cluster]: edge / core processes (commonsky/cluster)

    @property
    def data_dir(self) -> Path:
        return Path(str(self.settings.data_dir))


T = TypeVar("T")
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)
_KEY = re.compile(r"`(?P<key>[^`]+)`")
#: Choices named in the error when a value is not one of them.
_CHOICES = {
    "disclosure": ", ".join(d.value for d in Disclosure),
    "categories": ", ".join(c.value for c in Category),
    "role": ", ".join(typing.get_args(Role)),  # ([cluster] role)
}


def decode_table(kind: type[T], raw: Any, where: str, path: str) -> T:
    """`raw` (one TOML table) as the Struct `kind`, or UsageError: `where` is how the
    operator finds the table ("hub.toml: [[agreement]] #2 'US-JP'"), `path` its place in the
    document ("$.agreement[1]"), to which msgspec's own path inside the table is added."""
    try:
        return msgspec.convert(raw, kind, strict=True)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        assert match is not None  # the pattern matches any text
        reason, inner = match["reason"], (match["path"] or "$")[1:]
        at = path + inner
        named = _KEY.search(reason)
        if reason.startswith("Object contains unknown field") and named:
            raise UsageError(f"{where}: unknown key {named['key']!r} ({at})") from None
        if reason.startswith("Object missing required field") and named:
            raise UsageError(f"{where}: missing key {named['key']!r} ({at})") from None
        if not inner:  # the table itself is the wrong type
            raise UsageError(f"{where} is not a table ({at})") from None
        key = inner.lstrip(".")
        value = _lookup(raw, inner)
        field = re.split(r"[.\[]", key)[0]
        if reason.startswith("Invalid enum value") and field in _CHOICES:
            reason = f"use {_CHOICES[field]}"
        else:
            reason = reason.replace("`", "")
            reason = reason[:1].lower() + reason[1:]
        raise UsageError(f"{where}: {key} = {value!r}: {reason} ({at})") from None


def _lookup(data: Any, inner: str) -> Any:
    """The value at a msgspec path inside `data` (".to[0]", ".area[1][0]")."""
    for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", inner):
        try:
            data = data[name] if name else data[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_time(value: datetime, where: str) -> float:
    """A TOML or RFC 3339 time as POSIX seconds; one without an offset is taken as UTC."""
    del where  # the type was checked when the table was decoded
    return times.epoch_of(value)


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
        data = tomllib.loads(text.decode("utf-8-sig"))  # (a BOM, as Windows editors save)
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
    known = {"server", "listener", "party", "agreement", "federate", "cluster"}
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
    for index, raw in enumerate(_array(data, "party", source)):
        where, at = f"{source}: [[party]] #{index + 1}", f"$.party[{index}]"
        table = decode_table(PartyTable, raw, where, at)
        pid = table.id
        if (problem := party_id_problem(pid)) is not None:
            raise UsageError(f"{where}: id = {pid!r} {problem} ({at}.id)")
        if pid in seen:
            raise UsageError(f"{where}: id = {pid!r} is declared twice ({at}.id)")
        seen.add(pid)
        if table.token and len(table.token) < 16:
            raise UsageError(f"{where}: token must be at least 16 characters ({at}.token)")
        country = table.country
        if country:
            if not (len(country) == 2 and country.isascii() and country.isupper()):
                raise UsageError(
                    f"{where}: country = {country!r} must be two capital letters ({at}.country)"
                )
            if country in warned:
                raise UsageError(
                    f"{where}: country = {country!r} is warned by {warned[country]} ({at}.country)"
                )
            warned[country] = pid
        parties.append(Party(pid, table.name or pid, table.token, country, table.federate))

    listeners = [
        _listener(raw, index, source, seen, base)
        for index, raw in enumerate(_array(data, "listener", source))
    ]
    agreements = [
        _agreement(raw, index, source, seen)
        for index, raw in enumerate(_array(data, "agreement", source))
    ]
    federates = _federates(data, source, parties, listeners, base)
    cluster = None
    if "cluster" in data:
        where = f"{source}: [cluster]"
        try:
            cluster_table = decode_table(ClusterSettings, data["cluster"], where, "$.cluster")
        except UsageError as exc:  # (a nats_url of the wrong type is echoed: no password)
            raise UsageError(without_secrets(str(exc))) from None
        cluster = check_cluster(cluster_table, str(settings.store_url), where, base)
    return HubConfig(
        settings,
        tuple(listeners),
        tuple(parties),
        tuple(agreements),
        source,
        tuple(federates),
        cluster,
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
    declared = {p.id for p in parties}
    federates: list[FederateConfig] = []
    names: set[str] = set()
    claimed: dict[str, str] = {}  # party -> the federate speaking for it
    for index, raw in enumerate(tables):
        federates.append(_federate(raw, index, source, base, declared, names, claimed))
    _check_federated_parties(source, parties, names, claimed)
    kinds = [lc for lc in listeners if lc.kind == "federation"]
    if len(kinds) > 1:
        raise UsageError(f"{kinds[1].where}: only one federation listener per hub")
    if federates and not kinds:
        raise UsageError(
            f'{source}: [[federate]] needs a [[listener]] kind = "federation" (its ca '
            "directory holds the hub's certificate, used on every link)"
        )
    return federates


def _federate(
    raw: Any,
    index: int,
    source: str,
    base: Path,
    declared: set[str],
    names: set[str],
    claimed: dict[str, str],
) -> FederateConfig:
    """One `[[federate]]` table (`index`), checked against the declared parties and the
    federates before it; adds its name to `names` and its parties to `claimed`."""
    from commonsky.privdeconf.terms import KEYS as DECONFLICT_KEYS
    from commonsky.privdeconf.terms import from_federate

    label = raw.get("name", "") if isinstance(raw, Mapping) else ""
    where, at = f"{source}: [[federate]] #{index + 1} {label!r}", f"$.federate[{index}]"
    link = (
        {k: v for k, v in raw.items() if k not in DECONFLICT_KEYS}
        if isinstance(raw, Mapping)
        else raw
    )
    table = decode_table(FederateTable, link, where, at)
    name = table.name
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"{where}: name = {name!r} must be letters, digits, - or _ ({at}.name)")
    if name in names:
        raise UsageError(f"{where}: name = {name!r} is declared twice ({at}.name)")
    names.add(name)
    target = parse_hostport(table.connect, f"{where}: connect") if table.connect else None
    ca = base / table.ca if table.ca else None
    if ca is not None and not ca.is_file():
        raise UsageError(f"{where}: ca = {table.ca!r}: no such file (the peer's CA, PEM) ({at}.ca)")
    pin = normalize_fingerprint(table.fingerprint) if table.fingerprint is not None else None
    if table.fingerprint is not None and pin is None:
        raise UsageError(
            f"{where}: fingerprint = {table.fingerprint!r} is not sha256: and 64 hex "
            f"digits ({at}.fingerprint)"
        )
    if ca is None and pin is None:
        raise UsageError(f'{where}: needs ca = "FILE" and/or fingerprint = "sha256:…" ({at})')
    if not table.parties:
        raise UsageError(
            f"{where}: parties is empty; name the parties it may speak for ({at}.parties)"
        )
    for key, listed in (("parties", table.parties), ("relay", table.relay)):
        for i, spoken in enumerate(listed):
            if spoken not in declared:
                raise UsageError(
                    f"{where}: {key} contains {spoken!r}, not a declared [[party]] "
                    f"({at}.{key}[{i}])"
                )
            if spoken in claimed:
                raise UsageError(
                    f"{where}: party {spoken!r} is already spoken for by [[federate]] "
                    f"{claimed[spoken]!r} ({at}.{key}[{i}])"
                )
            claimed[spoken] = name
    terms = from_federate(raw, where)
    return FederateConfig(
        name, tuple(table.parties), target, ca, pin, where, terms, tuple(table.relay)
    )


def _check_federated_parties(
    source: str, parties: list[Party], names: set[str], claimed: dict[str, str]
) -> None:
    """Each `[[party]] federate = NAME` names a federate that speaks for it, and each party a
    federate speaks for says so (UsageError otherwise)."""
    for party in parties:
        if party.federate and party.federate not in names:
            raise UsageError(
                f"{source}: [[party]] {party.id!r}: federate = {party.federate!r} is not a "
                "declared [[federate]]"
            )
        if party.federate and claimed.get(party.id) != party.federate:
            raise UsageError(
                f"{source}: [[party]] {party.id!r}: federate = {party.federate!r}, but that "
                f"[[federate]]'s parties (and relay) do not include {party.id!r}"
            )
    for pid, name in claimed.items():
        owner = next(p for p in parties if p.id == pid)
        if owner.federate != name:
            raise UsageError(
                f"{source}: [[federate]] {name!r} speaks for {pid!r}, so declare that "
                f'[[party]] with federate = "{name}" (it is not one of this hub\'s own)'
            )


def _array(data: Mapping[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise UsageError(f"{source}: {key!r} must be an array of tables ([[{key}]])")
    return value


def _given_outside(name: str, overrides: Mapping[str, Any] | None) -> str | None:
    """The flag or variable that gave setting `name` (they win over the file, in this
    order: Settings.resolve), or None when the file or the default did."""
    if (overrides or {}).get(name) is not None:
        return flag_name(name)
    return env_name(name) if env_name(name) in os.environ else None


def _absolute_paths(
    settings: Settings, base: Path, overrides: Mapping[str, Any] | None
) -> Settings:
    changes = {}
    for name in PATH_SETTINGS:
        value = str(getattr(settings, name))
        if not value:
            continue  # "" means "none" (regions_file: the built-in set)
        given_here = _given_outside(name, overrides) is not None
        changes[name] = str((Path.cwd() if given_here else base) / Path(value).expanduser())
    return settings.replace(**changes)


def _listener(raw: Any, index: int, source: str, parties: set[str], base: Path) -> ListenerConfig:
    where, at = f"{source}: [[listener]] #{index + 1}", f"$.listener[{index}]"
    table = decode_table(ListenerTable, raw, where, at)
    kind, party = table.kind, table.party
    if kind not in LISTENER_KINDS:
        raise UsageError(
            f"{where}: kind = {kind!r} must be one of {', '.join(LISTENER_KINDS)} ({at}.kind)"
        )
    host, port = parse_hostport(table.bind, f"{where}: bind")
    if table.advertise is not None:
        if kind not in ("enroll", "marti"):
            raise UsageError(
                f"{where}: advertise is only for enroll and marti listeners ({at}.advertise)"
            )
        parse_hostport(table.advertise, f"{where}: advertise")
    if kind == "tak-tcp":
        if party is None:
            raise UsageError(f'{where}: a tak-tcp listener needs party = "…" ({at})')
        if party not in parties:
            raise UsageError(f"{where}: party = {party!r} is not a declared [[party]] ({at}.party)")
        if not is_loopback(host) and not table.insecure_remote:
            raise UsageError(
                f"{where}: bind = {host!r} is not loopback; plain TCP trusts every "
                f"connection as the party, so set insecure_remote = true to allow it ({at}.bind)"
            )
    else:
        if table.ca is None:
            raise UsageError(f'{where}: a {kind} listener needs ca = "DIR" ({at})')
        if party is not None:
            raise UsageError(
                f"{where}: party comes from the client certificate (or the enrollment "
                f"token) on {kind} ({at}.party)"
            )
    return ListenerConfig(
        kind,
        host,
        port,
        party,
        base / table.ca if table.ca else None,
        base / table.cert if table.cert else None,
        base / table.key if table.key else None,
        table.insecure_remote,
        where,
        table.advertise,
    )


def _agreement(raw: Any, index: int, source: str, parties: set[str]) -> Agreement:
    name = raw.get("name", "") if isinstance(raw, Mapping) else ""
    where, at = f"{source}: [[agreement]] #{index + 1} {name!r}", f"$.agreement[{index}]"
    for key in AGREEMENT_OPTIONS:  # (finite first, as a [server] float: then its type)
        if isinstance(raw, Mapping) and key in raw:
            check_finite(key, raw[key], where, f"{at}.{key}")
    table = decode_table(AgreementTable, raw, where, at)
    if table.provider not in parties:
        raise UsageError(
            f"{where}: from = {table.provider!r} is not a declared [[party]] ({at}.from)"
        )
    for i, recipient in enumerate(table.to):
        if recipient not in parties:
            raise UsageError(
                f"{where}: to contains {recipient!r}, not a declared [[party]] ({at}.to[{i}])"
            )
    area = _area(table.area, where, f"{at}.area")
    start = parse_time(table.valid_from, where) if table.valid_from else None
    end = parse_time(table.valid_until, where) if table.valid_until else None
    if start is not None and end is not None and end <= start:
        raise UsageError(
            f"{where}: valid_until = {_lookup(raw, '.valid_until')!r} is not after "
            f"valid_from ({at}.valid_until)"
        )
    options = {}
    for key in AGREEMENT_OPTIONS:
        value = getattr(table, key)
        if value is not None:
            options[key] = float(value)
    return Agreement(
        table.name,
        table.provider,
        tuple(table.to),
        frozenset(table.categories),
        table.disclosure,
        area,
        start,
        end,
        options,
    )


def _area(
    ring_in: list[tuple[float, float]] | None, where: str, at: str
) -> tuple[tuple[float, float], ...] | None:
    if ring_in is None:
        return None
    import shapely
    from shapely.geometry import Polygon

    ring: list[tuple[float, float]] = []
    for i, (lon, lat) in enumerate(ring_in):
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise UsageError(f"{where}: area point [{lon}, {lat}] is out of range ({at}[{i}])")
        ring.append((float(lon), float(lat)))
    if len(ring) < 4 or ring[0] != ring[-1]:
        raise UsageError(
            f"{where}: area must be a closed ring of at least 4 points (first = last) ({at})"
        )
    if not shapely.is_valid(Polygon(ring)):
        raise UsageError(f"{where}: area ring is self-intersecting or degenerate ({at})")
    return tuple(ring)
