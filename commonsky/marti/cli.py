"""`commonsky enroll`, `commonsky cert revoke`, the packages of `cert issue --package`, and
`commonsky evidence verify`."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import quote

import typer

from commonsky.errors import UsageError

evidence_app = typer.Typer(help="Imagery evidence: C2PA provenance.", no_args_is_help=True)

ENROLL_PORT = 8446  # TAK's: ATAK, iTAK and pytak enroll on it whatever the link says
STREAM_PORT = 8089


def enroll(
    config: Annotated[Path, typer.Option("--config", help="The hub's configuration file.")],
    party: Annotated[str, typer.Option("--party", help="Party the certificate will name (O).")],
    user: Annotated[
        str | None,
        typer.Option("--user", help="User name: the certificate's CN (default: PARTY-xxxxxx)."),
    ] = None,
    ttl: Annotated[
        float | None,
        typer.Option(
            "--ttl", help="Seconds the token stays usable (default timeout_enroll_token_s)."
        ),
    ] = None,
    qr: Annotated[
        Path | None, typer.Option("--qr", help="Also write the enrollment link as a QR code PNG.")
    ] = None,
) -> None:
    """Make a one-time enrollment token for a TAK device of PARTY.

    Prints one line `token=… url=tak://com.atakmap.app/enroll?host=…&username=…&token=…`
    (scan it with ATAK, iTAK or WinTAK, or type user and token), then the link as a QR code
    on the terminal (on stderr when stdout is not a terminal, so the line stays alone)."""
    import secrets

    import segno

    from commonsky.config import load_config
    from commonsky.marti.net import advertised
    from commonsky.marti.stores import config_tokens
    from commonsky.marti.tokens import check_issue

    hub = load_config(config)
    if party not in {p.id for p in hub.parties}:
        raise UsageError(f"--party {party!r}: not a [[party]] of {config}")
    listener = next((lc for lc in hub.listeners if lc.kind == "enroll"), None)
    if listener is None:
        raise UsageError(f'{config}: no [[listener]] kind = "enroll"; devices could not enroll')
    user = user or f"{party}-{secrets.token_hex(3)}"
    ttl_s = ttl if ttl is not None else hub.settings.timeout_enroll_token_s
    check_issue(user, ttl_s)
    png = _qr_file(qr) if qr is not None else None  # (before the token: a failure issues none)
    try:
        store = config_tokens(hub)  # (a cluster's: in its database, for every core)
        try:
            token = store.issue(party, user, ttl_s, time.time())
        finally:
            store.close()
    except BaseException:
        if png is not None:
            _discard(png)
        raise
    host = advertised(listener, listener.port).rsplit(":", 1)[0]
    stream = next((lc for lc in hub.listeners if lc.kind == "tak-tls"), None)
    if stream is not None and stream.port != STREAM_PORT:
        host = f"{host}:{stream.port}"  # (pytak reads an explicit port as the stream's)
    url = (
        f"tak://com.atakmap.app/enroll?host={quote(host, safe=':[]')}"
        f"&username={quote(user, safe='')}&token={quote(token, safe='')}"
    )
    print(f"token={token} url={url}", flush=True)
    code = segno.make(url, error="m")
    code.terminal(out=sys.stdout if sys.stdout.isatty() else sys.stderr, compact=True)
    if qr is not None and png is not None:
        _save_qr(code, png, qr)
        print(f"QR code written to {qr}", file=sys.stderr)
    if listener.port != ENROLL_PORT:
        print(
            f"note: this hub's enroll listener is on port {listener.port}; TAK clients enroll "
            f"on {ENROLL_PORT}",
            file=sys.stderr,
        )
    print(f"token for {party}/{user} valid {ttl_s:g} s, once", file=sys.stderr)


def _qr_file(qr: Path) -> IO[bytes]:
    """A new file beside `qr` for its PNG, opened before the token is issued: a `--qr`
    that cannot be written (a folder, a missing folder, a path under a file, no
    permission) is refused with nothing issued. UsageError otherwise."""
    if qr.is_dir():
        raise UsageError(f"--qr {qr}: cannot write (it is a folder)")
    try:
        return tempfile.NamedTemporaryFile(  # (kept open past this function)
            dir=qr.parent, prefix=f".{qr.name}.", suffix=".part", delete=False
        )
    except OSError as exc:
        raise UsageError(f"--qr {qr}: cannot write ({exc.strerror})") from None


def _save_qr(code: Any, png: IO[bytes], qr: Path) -> None:
    """The QR code written into `png`, which then becomes `qr` (whole or not at all)."""
    try:
        with png:
            code.save(png, kind="png", scale=8, border=4)  # (whatever the name ends in)
        os.replace(png.name, qr)
    except OSError as exc:
        _discard(png)
        raise UsageError(f"--qr {qr}: cannot write ({exc.strerror})") from None


def _discard(png: IO[bytes]) -> None:
    png.close()
    Path(png.name).unlink(missing_ok=True)


def revoke(
    ca: Annotated[Path, typer.Option("--ca", help="CA folder made by `ca init`.")],
    name: Annotated[str, typer.Option("--name", help="User or device (the certificate's CN).")],
    party: Annotated[
        str | None, typer.Option("--party", help="Only that party's certificates of NAME.")
    ] = None,
) -> None:
    """Revoke every unexpired client certificate of NAME: the CA's CRL (CA/crl.pem) gains
    them, and the hub's tak-tls and marti listeners refuse them from then on (no restart;
    open TAK connections of them are closed within a second)."""
    from commonsky.revocation import revoke as do_revoke

    for item in do_revoke(ca, name, party):
        print(f"revoked {item.party}/{item.name} serial {item.serial:x}")
    print(f"CRL written to {ca / 'crl.pem'}")


def default_host(ca: Path) -> str:
    """The first name of the hub's server certificate that is not loopback, else localhost."""
    from cryptography import x509

    from commonsky.pki import SERVER_CERT

    try:
        cert = x509.load_pem_x509_certificate((ca / SERVER_CERT).read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return "localhost"
    for value in [
        *names.get_values_for_type(x509.DNSName),
        *map(str, names.get_values_for_type(x509.IPAddress)),
    ]:
        if value not in ("localhost", "127.0.0.1", "::1"):
            return value
    return "localhost"


def write_packages(
    ca: Path, out: Path, name: str, password: str, host: str | None, port: int
) -> list[Path]:
    """`OUT/NAME.zip` (connect with the issued certificate) and `OUT/NAME-enroll.zip`
    (the truststore only: the device enrolls for its own)."""
    from commonsky.marti.packages import connection_package

    host = host or default_host(ca)
    connect = f"{host}:{port}:ssl"
    truststore = (out / "truststore.p12").read_bytes()
    client = (out / f"{name}.p12").read_bytes()
    written = []
    for path, data in (
        (
            out / f"{name}.zip",
            connection_package(
                str(uuid.uuid4()), name, connect, truststore, password, client, name
            ),
        ),
        (
            out / f"{name}-enroll.zip",
            connection_package(
                str(uuid.uuid4()), f"{name}-enroll", connect, truststore, password, None
            ),
        ),
    ):
        path.write_bytes(data)
        path.chmod(0o600)
        written.append(path)
    return written


@evidence_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="The image (JPEG, PNG, TIFF) to check.")],
    ledger: Annotated[
        Path | None, typer.Option("--ledger", help="A `ledger export` to find it in.")
    ] = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="The hub CA certificate (ca.pem) to trust.")
    ] = None,
    hub_key: Annotated[
        Path | None, typer.Option("--hub-key", help="The hub's public key to check the export.")
    ] = None,
) -> None:
    """Check an image's provenance offline: who published it, when, and that no pixel
    changed (exit 0), or name what fails (exit 1)."""
    from commonsky.evidence.verify import verify_evidence
    from commonsky.ledger.cli import _pinned

    for given in (file, ledger, ca):
        if given is not None and not given.is_file():
            raise UsageError(f"{given}: {'not a file' if given.exists() else 'no such file'}")
    try:
        verdict = verify_evidence(file, ledger, ca, _pinned(hub_key))
    except OSError as exc:
        raise UsageError(f"{exc.filename}: cannot read ({exc.strerror})") from None
    for line in verdict.lines:
        print(f"{file.name}: {line}")
    if not verdict.ok:
        raise typer.Exit(1)
    print(f"{file.name}: evidence holds")
