"""The one settings table: every tunable of the hub, as a field of `SettingsFields`.

Each field gives its type (with its bounds), its default and why it exists (the field's
description). `commonsky.settings.Settings` is this struct with how its values are given and
checked (defaults < config file < environment < command-line flags); everything else
derives from these fields: the typed object the hub reads (`settings.limit_queue_tracks` is
an `int` to mypy), the `[server]` section of the config file, the `commonsky serve` flags
(`--limit-message-bytes`, generated into `--help`), the environment variables
(`COMMONSKY_LIMIT_MESSAGE_BYTES`) and the settings section of the README (a test checks
they agree). Prefixes say what a setting is: `limit_*` bounds memory or work, `timeout_*`
bounds time, `tls_*` is about certificates.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

CLOCK_RATE_MAX = 1e6  # a demo's compression; past it the clock means nothing a person can follow
EPOCH_MAX = 1e10  # epoch seconds (year 2286): a clock setting past it is a mistake


class SettingsFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The settings and their defaults; `Settings` adds how they are resolved and checked."""

    data_dir: Annotated[
        str,
        Meta(
            description=(
                "Folder for the SQLite database, ledger and keys (relative to the config "
                "file; one hub at a time)."
            ),
        ),
    ] = "var/hub"
    store_url: Annotated[
        str,
        Meta(
            description=(
                "Where durable items are kept: empty for SQLite in data_dir, or a "
                "postgresql:// URL (one hub per database; the ledger, keys, enrollment "
                "tokens and Marti files stay in data_dir, except for a [cluster], whose cores "
                "share them in the database)."
            ),
        ),
    ] = ""
    http: Annotated[
        str,
        Meta(
            description=("HOST:PORT of the web page, REST API, WebSocket, /metrics and /healthz."),
        ),
    ] = "127.0.0.1:8080"
    loop: Annotated[
        Literal["auto", "asyncio", "uvloop"],
        Meta(
            description=(
                "Event loop of `commonsky serve`: auto (uvloop when installed on this "
                "platform and no tak-tls listener is configured, else asyncio's own), "
                "asyncio or uvloop (refused with a tak-tls listener)."
            ),
        ),
    ] = "auto"
    limit_message_bytes: Annotated[
        int,
        Meta(
            ge=1,  # (0: every TAK connection failed as it opened, its reader's limit 0)
            description=(
                "Largest CoT event or TAK protobuf message accepted; a larger one is refused "
                "and skipped (the connection goes on). ATAK writes a 1,000-point route in "
                "168 kB and a 30-stroke telestration in 148 kB; a partial message is held "
                "per connection, so this bounds its memory (docs/architecture.md, "
                "Message size)."
            ),
        ),
    ] = 262_144
    limit_xml_depth: Annotated[
        int,
        Meta(
            ge=0,
            description=("Deepest element nesting accepted in a CoT event."),
        ),
    ] = 32
    limit_attribute_bytes: Annotated[
        int,
        Meta(
            ge=0,
            description=("Longest attribute value accepted in CoT XML."),
        ),
    ] = 4096
    limit_queue_tracks: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Live updates queued per connection in one burst; while the client's socket "
                "pushes back (or past this many) a newer update of a pending uid replaces it "
                "in place, and past this many pending uids the oldest uid's update is "
                "dropped."
            ),
        ),
    ] = 10000
    limit_queue_durable: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Pending durable items per connection; past it the connection is closed as "
                "too slow and the items are replayed when it comes back (never dropped)."
            ),
        ),
    ] = 5000
    limit_refusals_before_close: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Bad messages tolerated from one connection before it is closed (input that is"
                " not a valid message; the hub's refusals of valid ones, such as a delete of"
                " another party's item or a quota, never close it)."
            ),
        ),
    ] = 20
    limit_connections: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Open TAK and WebSocket connections accepted by the hub, all parties together."
            ),
        ),
    ] = 2000
    limit_connections_per_party: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Open connections of one party: one party's idle sockets cannot take the "
                "whole hub-wide limit and lock the others out."
            ),
        ),
    ] = 500
    limit_handshakes: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "TLS connections still in their handshake (not yet known as any party), all "
                "together."
            ),
        ),
    ] = 256
    limit_handshakes_per_address: Annotated[
        int,
        Meta(
            ge=0,
            description=("TLS connections still in their handshake from one IP address."),
        ),
    ] = 16
    limit_durable_items_per_party: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Durable items (hotline, airspace, launch…) one party may hold in the picture"
                " at once; past it a new one is refused (reason `quota`) until some expire or"
                " are withdrawn, so no party can fill the picture every other party is "
                "replayed."
            ),
        ),
    ] = 10000
    timeout_idle_s: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "Close a TAK connection when nothing moved either way for this long: it sent "
                "nothing (not even a ping) and nothing written to it drained (a client being "
                "sent traffic is alive)."
            ),
        ),
    ] = 120.0
    timeout_partial_event_s: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "Close a connection that leaves one event unfinished for this long (slow "
                "sender); whitespace and XML declarations between events do not count."
            ),
        ),
    ] = 30.0
    timeout_ws_ping_s: Annotated[
        float,
        Meta(
            ge=0,
            description=(
                "Ping each WebSocket client (the map's live feed) this often; one that has not "
                "answered within as long again is closed (reason `ping_timeout`). 0: no pings."
            ),
        ),
    ] = 20.0
    timeout_shutdown_s: Annotated[
        float,
        Meta(
            ge=0,
            description=("Time given to flush connections on shutdown."),
        ),
    ] = 5.0
    timeout_hotline_ack_s: Annotated[
        float,
        Meta(
            ge=0,
            description=("Default deadline for acknowledging a hotline message before escalation."),
        ),
    ] = 300.0
    tls_handshake_timeout_s: Annotated[
        float,
        Meta(
            gt=0,
            description=("Time allowed for a TLS handshake."),
        ),
    ] = 10.0
    limit_http_body_bytes: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Largest HTTP request body (GeoJSON, reports, messages); larger ones get 413."
            ),
        ),
    ] = 1_048_576
    limit_airspace_features: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Airspace features (GeoJSON features, KML placemarks) in one API request; "
                "more get 413. Each is screened against every stored item on the event loop "
                "that relays."
            ),
        ),
    ] = 100
    limit_queue_federation: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Messages pending on one federation link; past it the link is dropped and "
                "durable items resume from its cursor when it returns (live positions are "
                "re-sent as they are)."
            ),
        ),
    ] = 20_000
    timeout_federation_health_s: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "How often a dialing federation link checks its peer's health (TAK's "
                "HealthCheck); a peer not answering SERVING within it is redialed."
            ),
        ),
    ] = 5.0
    timeout_federation_retry_s: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "First wait before redialing a federation peer; doubles while it fails, up to"
                " 20 times this."
            ),
        ),
    ] = 1.0
    timeout_checkpoint_s: Annotated[
        float,
        Meta(
            ge=0,
            description=("How often the hub signs a ledger checkpoint (and on demand)."),
        ),
    ] = 60.0
    timeout_track_screen_s: Annotated[
        float,
        Meta(
            ge=0,
            description=("How often live tracks (latest state each) are screened for conflicts."),
        ),
    ] = 10.0
    operator_token: Annotated[
        str,
        Meta(
            description=(
                "Bearer token of the hub's operator: all of /metrics (Prometheus scrapes with"
                " it) and fresh ledger checkpoints on demand. Empty: no operator access over "
                "HTTP (a party's own token shows only its own figures; no token, only "
                "`commonsky_up` and `commonsky_build_info`)."
            ),
        ),
    ] = ""
    generalize_grid_deg: Annotated[
        float,
        Meta(
            gt=0,
            description=("Cell size in degrees to which `generalized` disclosure snaps positions."),
        ),
    ] = 0.1
    alert_status: Annotated[
        Literal["Actual", "Exercise"],
        Meta(
            description=("CAP <status> of published warnings: Actual or Exercise."),
        ),
    ] = "Exercise"
    tls_enroll_cert_days: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Lifetime of a client certificate issued by enrollment (TAK Server's example "
                "uses 30 days; a device re-enrolls with a new token when it runs out)."
            ),
        ),
    ] = 90
    timeout_enroll_token_s: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "Default lifetime of a one-time enrollment token (`commonsky enroll --ttl` "
                "overrides)."
            ),
        ),
    ] = 86400.0
    limit_file_bytes: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Largest file or data package accepted by the Marti API (TAK Server's "
                "enterpriseSyncSizeLimitMB); a larger upload gets 413 and nothing is kept."
            ),
        ),
    ] = 104_857_600
    limit_files_per_party: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Files one party may keep on the hub at once; past it an upload gets 507 "
                "until the operator removes some (files are evidence: never dropped by the "
                "hub itself)."
            ),
        ),
    ] = 2000
    limit_file_store_bytes: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Bytes all files together may take in data_dir/files; past it an upload gets 507."
            ),
        ),
    ] = 10_737_418_240
    limit_package_entries: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Entries a data package (zip) may hold; more and it is refused as hostile."
            ),
        ),
    ] = 2000
    limit_package_unpacked_bytes: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Total uncompressed size a data package may declare, and the ratio cap "
                "(uncompressed/compressed 200 per entry) stops zip bombs before anything is "
                "read."
            ),
        ),
    ] = 1_073_741_824
    limit_image_pixels: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Largest image (width x height) read for evidence; a larger one is kept as a "
                "file but not decoded (decompression bombs)."
            ),
        ),
    ] = 100_000_000
    limit_http_connections: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Open connections each enroll or marti listener serves at once; past it new "
                "ones get 503 (uvicorn's limit_concurrency)."
            ),
        ),
    ] = 256
    timeout_upload_s: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "An upload whose body has not arrived whole within this long is aborted; "
                "nothing of it is kept."
            ),
        ),
    ] = 300.0
    regions_file: Annotated[
        str,
        Meta(
            description=(
                "GeoJSON file of the regions warnings are issued for (id, name, kind, country"
                " per feature); empty for the built-in set (Japan, Korea, Ukraine)."
            ),
        ),
    ] = ""
    clock_rate: Annotated[
        float,
        Meta(
            gt=0,
            le=CLOCK_RATE_MAX,
            description=(
                "Demos and tests only: the hub's clock runs this many times faster than real "
                "time from clock_origin to clock_until (1: real time)."
            ),
        ),
    ] = 1.0
    clock_origin: Annotated[
        float,
        Meta(
            ge=0,
            le=EPOCH_MAX,
            description=(
                "Epoch seconds at which a clock_rate other than 1 starts (0: when the hub "
                "starts); hubs given the same three clock settings read the same time."
            ),
        ),
    ] = 0.0
    clock_until: Annotated[
        float,
        Meta(
            ge=0,
            le=EPOCH_MAX,
            description=(
                "Epoch seconds, on the hub's clock, from which it runs at real speed again "
                "(0: never)."
            ),
        ),
    ] = 0.0
    # TAK's HTTP side (issue 16) is in the same table: enrollment, the Marti API's files,
    # imagery evidence (tls_enroll_cert_days … timeout_upload_s above).
