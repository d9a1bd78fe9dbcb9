# `commonsky ledger ...`: export, verify and prove from the command line (`commonsky bench
# ledger` is commonsky/bench/ledger.py).
#
# Rule: these commands are thin.  Every check lives in export.py / log.py so that tests and
# other tools get the same answers; this file only turns files and flags into calls, an
# operator's mistake into one-line `UsageError`s (exit 2), and a failed check into exit 1.
from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from commonsky.errors import UsageError
from commonsky.ledger import export as ledger_export
from commonsky.ledger import keys
from commonsky.ledger.entry import EntryError, check_party
from commonsky.ledger.log import DB_NAME, Ledger, LedgerError
from commonsky.ledger.proofs import Receipt

app = typer.Typer(
    help="The hub's signed record: export, verify, inclusion and consistency proofs.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="hub data directory (ledger.sqlite3; a cluster core's: hub.json names its database)",
    ),
]
Config = Annotated[
    Path | None,
    typer.Option("--config", help="the hub's config file, instead of --data-dir (a cluster's)"),
]
HubKey = Annotated[
    Path | None,
    typer.Option("--hub-key", help="pin the hub's public key (PEM file, public or private)"),
]


@contextlib.contextmanager
def _open(data_dir: Path | None, config: Path | None = None) -> Iterator[Ledger]:
    """The ledger of a data folder or of a config's hub (`_ledger`), open for the block; a
    damaged SQLite file met in it is one line naming the file (UsageError)."""
    folder, ledger = _ledger(data_dir, config)
    try:
        with ledger:
            yield ledger
    except sqlite3.Error as exc:
        from commonsky.hub.datadir import damaged

        raise damaged(folder, exc, [DB_NAME]) from None


def _ledger(data_dir: Path | None, config: Path | None = None) -> tuple[Path, Ledger]:
    """The data folder and its ledger: the SQLite file, or (a cluster) the PostgreSQL
    database the folder's manifest or the config names. Raises UsageError."""
    if (data_dir is None) == (config is None):
        raise UsageError("give --data-dir DIR or --config FILE (one of them)")
    url = ""
    if config is not None:
        from commonsky.config import load_config

        hub = load_config(config)
        data_dir = hub.data_dir
        url = str(hub.settings.store_url) if hub.cluster is not None else ""
    assert data_dir is not None
    manifest = _manifest(data_dir)
    kept = str(manifest.get("ledger", ""))
    if not url and kept.startswith(("postgresql://", "postgres://")):
        if "***" in kept:
            raise UsageError(
                f"{data_dir}: this hub's ledger is in PostgreSQL ({kept}), whose password "
                "hub.json does not keep; give --config FILE instead"
            )
        url = kept
    if url:
        from commonsky.hub.shared import open_ledger

        hub_id = manifest.get("hub_id")
        return data_dir, open_ledger(url, hub_id if isinstance(hub_id, str) else None)
    db = data_dir / DB_NAME
    if not db.is_file():
        raise UsageError(f"{data_dir}: no ledger here ({DB_NAME} is missing)")
    if not (keys.keys_dir(data_dir) / keys.HUB_KEY_NAME).is_file():
        raise UsageError(f"{data_dir}: hub key keys/{keys.HUB_KEY_NAME} is missing")
    try:
        return data_dir, Ledger.open(data_dir)
    except (LedgerError, keys.KeyFileError) as exc:
        raise UsageError(str(exc)) from None
    except sqlite3.Error as exc:
        from commonsky.hub.datadir import damaged

        raise damaged(data_dir, exc, [DB_NAME]) from None


def _manifest(data_dir: Path) -> dict[str, Any]:
    from commonsky.hub.datadir import read_manifest

    data = read_manifest(data_dir)
    return data if isinstance(data, dict) else {}


def _pinned(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return keys.raw_public(keys.load_public_key(path))
    except keys.KeyFileError as exc:
        raise UsageError(str(exc)) from None


def fingerprint(raw_key: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw_key).hexdigest()


class KnownHubs:
    """Hub keys pinned at first use: a JSON file {"NAME": {"key": B64, "pinned": ISO}}."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def default_path() -> Path:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "commonsky" / "known-hubs.json"

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        data = _read_json(self.path)
        if not isinstance(data, dict):
            raise UsageError(f"{self.path}: not a known-hubs file (a JSON object)")
        return data

    def get(self, name: str) -> bytes | None:
        entry = self._load().get(name)
        if entry is None:
            return None
        try:
            key = base64.b64decode(entry["key"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise UsageError(f"{self.path}: entry {name!r} holds no valid key") from None
        if len(key) != 32:
            raise UsageError(f"{self.path}: entry {name!r} holds no valid key")
        return key

    def add(self, name: str, key: bytes) -> None:
        data = self._load()
        data[name] = {
            "key": base64.b64encode(key).decode(),
            "pinned": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot write ({exc.strerror})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None


def _write_json(obj: Any, out: Path | None) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True)
    if out is None:
        typer.echo(text)
        return
    try:
        out.write_text(text + "\n")
    except OSError as exc:
        raise UsageError(f"{out}: cannot write ({exc.strerror})") from None


def _fail(message: str) -> NoReturn:
    typer.echo(message)
    # SystemExit, not typer.Exit: with standalone_mode=False (as commonsky.cli.main runs the
    # app) click turns typer.Exit into a return value and the status would be lost.
    sys.exit(1)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSON Lines file to write")],
    data_dir: DataDir = None,
    party: Annotated[
        str | None, typer.Option("--party", help="only this party's entries in full")
    ] = None,
    config: Config = None,
) -> None:
    """Export the ledger as JSON Lines ending in a freshly signed checkpoint."""
    if party is not None:
        try:
            check_party(party)
        except EntryError as exc:
            raise UsageError(f"--party: {exc}") from None
    with _open(data_dir, config) as ledger:
        if party is not None:
            _check_known_party(ledger, party, config)
        try:
            cp = ledger_export.export(ledger, out, party=party)
        except OSError as exc:
            raise UsageError(f"{out}: cannot write ({exc.strerror})") from None
    typer.echo(f"{out}: {cp.size} entries, root {cp.root_hex}")


def _check_known_party(ledger: Ledger, party: str, config: Path | None) -> None:
    """UsageError unless `party` is a declared [[party]] of `config` or in the audience of
    some entry of the ledger: a typo exported a file of nothing but leaf hashes."""
    declared: set[str] = set()
    if config is not None:
        from commonsky.config import load_config

        declared = {p.id for p in load_config(config).parties}
    if party in declared or ledger.visible_seqs(party):
        return
    present = {
        name
        for *_, audience in ledger.export_rows(ledger.size)
        for name in audience.strip(",").split(",")
        if name
    }
    known = ", ".join(sorted(declared | present)) or "none"
    where = f"a [[party]] of {config} nor " if config is not None else ""
    raise UsageError(f"--party {party!r}: not {where}in any entry of the ledger (known: {known})")


@app.command("verify")
def verify_cmd(
    file: Annotated[Path, typer.Argument(help="export to check")],
    hub_key: HubKey = None,
    hub: Annotated[
        str | None,
        typer.Option(
            "--hub",
            help="name of the hub the export comes from: its key is pinned the first time "
            "and required from then on (kept in --known-hubs)",
        ),
    ] = None,
    known_hubs: Annotated[
        Path | None,
        typer.Option(
            "--known-hubs",
            help="file of pinned hub keys (default: $XDG_CONFIG_HOME/commonsky/known-hubs.json)",
        ),
    ] = None,
    party_keys: Annotated[
        Path | None,
        typer.Option("--party-keys", help="directory of <PARTY>.pub.pem to pin signers"),
    ] = None,
    peer: Annotated[
        Path | None,
        typer.Option(
            "--peer",
            help="a federated peer hub's export: prove each durable item FILE's hub sent and "
            "the peer acknowledged (its signed receipts, docs/federation.md)",
        ),
    ] = None,
) -> None:
    """Check an export offline: exit 0 when intact, 1 naming the first bad entry.

    The checkpoint is checked against a hub key you already trust: given (--hub-key) or
    pinned the first time a hub is verified (--hub NAME). With neither, the file can only
    vouch for itself — anyone can rewrite a history and sign it with a key of their own —
    and the command says so."""
    pinned_parties = _pinned_parties(party_keys)
    pinned = _pinned(hub_key)
    store: KnownHubs | None = None
    if hub is not None:
        store, pinned = _known_hub(hub, known_hubs, pinned)
    first_use = store is not None and pinned is None
    try:
        result = ledger_export.verify(file, pinned, pinned_parties)
    except OSError as exc:
        raise UsageError(f"{file}: cannot read ({exc.strerror})") from None
    if not result.ok:
        where = f" (pinned for hub {hub} in {store.path})" if store and not first_use else ""
        _fail(f"{file}: {result.describe()}{where}")
    assert result.checkpoint is not None
    if store is not None and hub is not None and first_use:
        store.add(hub, result.checkpoint.hub_key)
        typer.echo(
            f"hub {hub}: key {fingerprint(result.checkpoint.hub_key)} pinned at first use "
            f"in {store.path}"
        )
    typer.echo(f"{file}: {result.describe()}")
    if pinned is None and not first_use:
        typer.echo(
            f"{file}: NOT CHECKED AGAINST A TRUSTED HUB KEY: the checkpoint is signed by the "
            f"key inside the file ({fingerprint(result.checkpoint.hub_key)}), which anyone "
            "can make; give --hub-key PEM or --hub NAME"
        )
    if result.signed and pinned_parties is None:
        typer.echo(
            f"{file}: the {result.signed} originator signatures were checked against the keys "
            "inside the file; give --party-keys DIR to pin them"
        )
    if peer is not None:
        _cross_check(file, peer)


def _pinned_parties(party_keys: Path | None) -> dict[str, bytes] | None:
    """The originators' keys pinned by --party-keys DIR (None without it); UsageError."""
    if party_keys is None:
        return None
    if not party_keys.is_dir():
        raise UsageError(f"--party-keys {party_keys}: not a directory")
    registry = keys.PartyKeys(party_keys.parent)
    registry.directory = party_keys
    try:
        return registry.as_mapping()
    except keys.KeyFileError as exc:
        raise UsageError(str(exc)) from None


def _known_hub(
    hub: str, known_hubs: Path | None, pinned: bytes | None
) -> tuple[KnownHubs, bytes | None]:
    """The known-hubs file and the key to check hub `hub` against: --hub-key's, else the one
    pinned earlier (None at first use). UsageError when the two disagree."""
    try:
        check_party(hub, "--hub")
    except EntryError as exc:
        raise UsageError(str(exc)) from None
    store = KnownHubs(known_hubs or KnownHubs.default_path())
    known = store.get(hub)
    if pinned is not None and known is not None and known != pinned:
        raise UsageError(f"--hub-key differs from the key pinned for hub {hub} in {store.path}")
    return store, pinned or known


def _cross_check(sender: Path, receiver: Path) -> None:
    from commonsky.federation.receipts import cross_check

    try:
        peer_result = ledger_export.verify(receiver)
    except OSError as exc:
        raise UsageError(f"{receiver}: cannot read ({exc.strerror})") from None
    if not peer_result.ok:
        _fail(f"{receiver}: {peer_result.describe()}")
    assert peer_result.checkpoint is not None
    try:
        proven, problems = cross_check(sender, receiver)
    except ValueError as exc:
        _fail(str(exc))
    if problems:
        _fail(f"{sender} vs {receiver}: {problems[0]} ({len(problems)} problems)")
    last = max((p.acknowledged_us for p in proven), default=0)
    typer.echo(
        f"{sender} -> {receiver}: {len(proven)} durable items sent by the first hub and "
        f"acknowledged by the second (key {fingerprint(peer_result.checkpoint.hub_key)}), "
        f"the last acknowledgement signed at {last} us since the epoch"
    )


@app.command("prove")
def prove_cmd(
    seq: Annotated[int, typer.Option("--seq", min=0, help="entry to prove")],
    data_dir: DataDir = None,
    out: Annotated[Path | None, typer.Option("--out", help="write here, not stdout")] = None,
    config: Config = None,
) -> None:
    """An inclusion proof for one entry against a freshly signed checkpoint."""
    with _open(data_dir, config) as ledger:
        if seq >= ledger.size:
            raise UsageError(f"--seq {seq}: the ledger holds {ledger.size} entries")
        cp = ledger.checkpoint()
        receipt = Receipt(seq, ledger.leaf(seq), ledger.inclusion_proof(seq, cp.size), cp)
    _write_json(receipt.to_json(), out)


@app.command("verify-proof")
def verify_proof_cmd(
    file: Annotated[Path, typer.Argument(help="proof written by `prove`")],
    hub_key: HubKey = None,
) -> None:
    """Check an inclusion proof offline: exit 0 when it holds, 1 otherwise."""
    try:
        receipt = Receipt.from_json(_read_json(file))
    except EntryError as exc:
        raise UsageError(f"{file}: {exc}") from None
    problem = receipt.verify(_pinned(hub_key))
    if problem is not None:
        _fail(f"{file}: seq {receipt.seq}: {problem}")
    typer.echo(
        f"{file}: entry {receipt.seq} is in the log of size {receipt.checkpoint.size}, "
        f"root {receipt.checkpoint.root_hex}"
    )


@app.command("consistency")
def consistency_cmd(
    old: Annotated[int, typer.Option("--old", min=0, help="older tree size")],
    data_dir: DataDir = None,
    new: Annotated[int | None, typer.Option("--new", min=0, help="newer size (now)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write here, not stdout")] = None,
    config: Config = None,
) -> None:
    """Signed checkpoints at two sizes and the RFC 6962 consistency proof between them."""
    with _open(data_dir, config) as ledger:
        top = ledger.size if new is None else new
        if top > ledger.size or old > top:
            raise UsageError(f"need --old <= --new <= {ledger.size}; got {old} and {top}")
        obj = ledger_export.consistency_json(ledger, old, top)
    _write_json(obj, out)


@app.command("verify-consistency")
def verify_consistency_cmd(
    file: Annotated[Path, typer.Argument(help="file written by `consistency`")],
    hub_key: HubKey = None,
) -> None:
    """Check a consistency proof offline: exit 0 when the newer log extends the older."""
    obj = _read_json(file)
    try:
        problem = ledger_export.verify_consistency_json(obj, _pinned(hub_key))
    except EntryError as exc:
        raise UsageError(f"{file}: {exc}") from None
    if problem is not None:
        _fail(f"{file}: {problem}")
    typer.echo(f"{file}: size {obj['new']['size']} extends size {obj['old']['size']}")


@app.command("check-consistency")
def check_consistency_cmd(
    old: Annotated[Path, typer.Argument(help="older export")],
    new: Annotated[Path, typer.Argument(help="newer export of the same hub")],
) -> None:
    """Are two exports' checkpoints consistent (is the older log a prefix of the newer)?"""
    for path in (old, new):
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    try:
        problem = ledger_export.check_consistent(old, new)
    except ValueError as exc:
        _fail(str(exc))
    if problem is not None:
        _fail(f"{new}: {problem}")
    typer.echo(f"{new} extends {old}")
