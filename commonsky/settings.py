"""The one settings table.

Every tunable lives in SETTINGS: its default, its type and why it exists. The same table
feeds the `[server]` section of the config file, `commonsky serve` flags
(`--limit-message-bytes`), environment variables (`COMMONSKY_LIMIT_MESSAGE_BYTES`) and the
settings section of the README (a test checks they agree). Prefixes say what a setting is:
`limit_*` bounds memory or work, `timeout_*` bounds time, `tls_*` is about certificates.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from commonsky.errors import UsageError


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    type: type[int] | type[float] | type[str] | type[bool]
    default: int | float | str | bool
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        str,
        "var/hub",
        "Folder for the SQLite database, ledger and keys (relative to the config file; "
        "one hub at a time).",
    ),
    Setting(
        "store_url",
        str,
        "",
        "Where durable items are kept: empty for SQLite in data_dir, or a postgresql:// URL "
        "(one hub per database; the ledger and keys stay in data_dir).",
    ),
    Setting(
        "http",
        str,
        "127.0.0.1:8080",
        "HOST:PORT of the web page, REST API, WebSocket, /metrics and /healthz.",
    ),
    Setting(
        "limit_message_bytes",
        int,
        65536,
        "Largest CoT event or TAK protobuf message accepted; larger ones are refused.",
    ),
    Setting("limit_xml_depth", int, 32, "Deepest element nesting accepted in a CoT event."),
    Setting("limit_attribute_bytes", int, 4096, "Longest attribute value accepted in CoT XML."),
    Setting(
        "limit_queue_tracks",
        int,
        10000,
        "Live updates queued per connection in one burst; while the client's socket pushes "
        "back (or past this many) a newer update of a pending uid replaces it in place, and "
        "past this many pending uids the oldest uid's update is dropped.",
    ),
    Setting(
        "limit_queue_durable",
        int,
        5000,
        "Pending durable items per connection; past it the connection is closed as too "
        "slow and the items are replayed when it comes back (never dropped).",
    ),
    Setting(
        "limit_refusals_before_close",
        int,
        20,
        "Bad messages tolerated from one connection before it is closed.",
    ),
    Setting(
        "limit_connections",
        int,
        2000,
        "Open TAK and WebSocket connections accepted by the hub, all parties together.",
    ),
    Setting(
        "limit_connections_per_party",
        int,
        500,
        "Open connections of one party: one party's idle sockets cannot take the whole "
        "hub-wide limit and lock the others out.",
    ),
    Setting(
        "limit_handshakes",
        int,
        256,
        "TLS connections still in their handshake (not yet known as any party), all together.",
    ),
    Setting(
        "limit_handshakes_per_address",
        int,
        16,
        "TLS connections still in their handshake from one IP address.",
    ),
    Setting(
        "limit_durable_items_per_party",
        int,
        10000,
        "Durable items (hotline, airspace, launch…) one party may hold in the picture at "
        "once; past it a new one is refused (reason `quota`) until some expire or are "
        "withdrawn, so no party can fill the picture every other party is replayed.",
    ),
    Setting(
        "timeout_idle_s",
        float,
        120.0,
        "Close a TAK connection when nothing moved either way for this long: it sent nothing "
        "(not even a ping) and nothing written to it drained (a client being sent traffic "
        "is alive).",
    ),
    Setting(
        "timeout_partial_event_s",
        float,
        30.0,
        "Close a connection that leaves one event unfinished for this long (slow sender); "
        "whitespace and XML declarations between events do not count.",
    ),
    Setting("timeout_shutdown_s", float, 5.0, "Time given to flush connections on shutdown."),
    Setting(
        "timeout_hotline_ack_s",
        float,
        300.0,
        "Default deadline for acknowledging a hotline message before escalation.",
    ),
    Setting("tls_handshake_timeout_s", float, 10.0, "Time allowed for a TLS handshake."),
    Setting(
        "limit_http_body_bytes",
        int,
        1048576,
        "Largest HTTP request body (GeoJSON, reports, messages); larger ones get 413.",
    ),
    Setting(
        "limit_airspace_features",
        int,
        100,
        "Airspace features (GeoJSON features, KML placemarks) in one API request; more get "
        "413. Each is screened against every stored item on the event loop that relays.",
    ),
    Setting(
        "limit_queue_federation",
        int,
        20000,
        "Messages pending on one federation link; past it the link is dropped and durable "
        "items resume from its cursor when it returns (live positions are re-sent as they are).",
    ),
    Setting(
        "timeout_federation_health_s",
        float,
        5.0,
        "How often a dialing federation link checks its peer's health (TAK's HealthCheck); "
        "a peer not answering SERVING within it is redialed.",
    ),
    Setting(
        "timeout_federation_retry_s",
        float,
        1.0,
        "First wait before redialing a federation peer; doubles while it fails, up to 20 "
        "times this.",
    ),
    Setting(
        "timeout_checkpoint_s",
        float,
        60.0,
        "How often the hub signs a ledger checkpoint (and on demand).",
    ),
    Setting(
        "timeout_track_screen_s",
        float,
        10.0,
        "How often live tracks (latest state each) are screened for conflicts.",
    ),
    Setting(
        "operator_token",
        str,
        "",
        "Bearer token of the hub's operator: all of /metrics (Prometheus scrapes with it) and "
        "fresh ledger checkpoints on demand. Empty: no operator access over HTTP (a party's "
        "own token shows only its own figures).",
    ),
    Setting(
        "generalize_grid_deg",
        float,
        0.1,
        "Cell size in degrees to which `generalized` disclosure snaps positions.",
    ),
    Setting(
        "alert_status", str, "Exercise", "CAP <status> of published warnings: Actual or Exercise."
    ),
    # TAK's HTTP side (issue 16): enrollment, the Marti API's files, imagery evidence.
    Setting(
        "tls_enroll_cert_days",
        int,
        90,
        "Lifetime of a client certificate issued by enrollment (TAK Server's example uses "
        "30 days; a device re-enrolls with a new token when it runs out).",
    ),
    Setting(
        "timeout_enroll_token_s",
        float,
        86400.0,
        "Default lifetime of a one-time enrollment token (`commonsky enroll --ttl` overrides).",
    ),
    Setting(
        "limit_file_bytes",
        int,
        104857600,
        "Largest file or data package accepted by the Marti API (TAK Server's "
        "enterpriseSyncSizeLimitMB); a larger upload gets 413 and nothing is kept.",
    ),
    Setting(
        "limit_files_per_party",
        int,
        2000,
        "Files one party may keep on the hub at once; past it an upload gets 507 until the "
        "operator removes some (files are evidence: never dropped by the hub itself).",
    ),
    Setting(
        "limit_file_store_bytes",
        int,
        10737418240,
        "Bytes all files together may take in data_dir/files; past it an upload gets 507.",
    ),
    Setting(
        "limit_package_entries",
        int,
        2000,
        "Entries a data package (zip) may hold; more and it is refused as hostile.",
    ),
    Setting(
        "limit_package_unpacked_bytes",
        int,
        1073741824,
        "Total uncompressed size a data package may declare, and the ratio cap "
        "(uncompressed/compressed 200 per entry) stops zip bombs before anything is read.",
    ),
    Setting(
        "limit_image_pixels",
        int,
        100000000,
        "Largest image (width x height) read for evidence; a larger one is kept as a file "
        "but not decoded (decompression bombs).",
    ),
    Setting(
        "limit_http_connections",
        int,
        256,
        "Open connections each enroll or marti listener serves at once; past it new ones "
        "get 503 (uvicorn's limit_concurrency).",
    ),
    Setting(
        "timeout_upload_s",
        float,
        300.0,
        "An upload whose body has not arrived whole within this long is aborted; nothing "
        "of it is kept.",
    ),
    Setting(
        "regions_file",
        str,
        "",
        "GeoJSON file of the regions warnings are issued for (id, name, kind, country per "
        "feature); empty for the built-in set (Japan, Korea, Ukraine).",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}
ENV_PREFIX = "COMMONSKY_"


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def coerce(name: str, raw: Any, where: str) -> int | float | str | bool:
    """Check one value against the table; `where` names its origin for the error line."""
    setting = _BY_NAME.get(name)
    if setting is None:
        raise UsageError(f"{where}: unknown setting {name!r}")
    kind = setting.type
    if isinstance(raw, str) and kind is not str:
        text = raw.strip().lower()
        try:
            if kind is bool:
                if text not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(text)
                raw = text in ("1", "true", "yes")
            else:
                raw = kind(text)
        except ValueError:
            raise UsageError(f"{where}: {name} = {raw!r} is not a {kind.__name__}") from None
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    if not isinstance(raw, kind) or (kind is not bool and isinstance(raw, bool)):
        raise UsageError(f"{where}: {name} = {raw!r} is not a {kind.__name__}")
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw < 0:
        raise UsageError(f"{where}: {name} = {raw!r} must not be negative")
    if name == "store_url" and raw and not str(raw).startswith(("postgresql://", "postgres://")):
        raise UsageError(f"{where}: store_url must be empty or a postgresql:// URL")
    if name == "alert_status" and raw not in ("Actual", "Exercise"):
        raise UsageError(f"{where}: alert_status = {raw!r} must be Actual or Exercise")
    return raw


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved values: defaults < config file < environment < command-line flags."""

    values: Mapping[str, int | float | str | bool]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def resolve(
        cls,
        file_values: Mapping[str, Any] | None = None,
        file_name: str = "config",
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, int | float | str | bool] = {s.name: s.default for s in SETTINGS}
        for key, raw in (file_values or {}).items():
            values[key] = coerce(key, raw, f"{file_name}: [server]")
        for s in SETTINGS:
            if env_name(s.name) in environ:
                values[s.name] = coerce(s.name, environ[env_name(s.name)], env_name(s.name))
        for key, raw in (overrides or {}).items():
            if raw is not None:
                values[key] = coerce(key, raw, flag_name(key))
        return cls(values)

    def get_int(self, name: str) -> int:
        value = self.values[name]
        assert isinstance(value, int)
        return value

    def get_float(self, name: str) -> float:
        value = self.values[name]
        assert isinstance(value, float | int)
        return float(value)


def defaults() -> Settings:
    return Settings.resolve(environ={})


def markdown_table() -> str:
    """The README's settings section is this text (tests compare them)."""
    lines = ["| setting | default | env | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = '""' if s.default == "" else s.default  # as TOML writes it
        lines.append(f"| `{s.name}` | `{default}` | `{env_name(s.name)}` | {s.help} |")
    return "\n".join(lines)
