"""`commonsky evidence verify FILE [--ledger EXPORT] [--ca CA.pem] [--hub-key PEM]`: offline.

Checks, in order, and says which one fails:

1. The image carries a C2PA manifest and every check c2pa makes holds — above all its data
   hash, which covers every byte outside the manifest: **one changed pixel fails it**.
2. The manifest carries CommonSky's assertion: who published the image (the party, also the
   signing certificate's O), which user, when, when it was taken, where (footprint or
   position), the upload's hash.
3. With `--ca`: the signing certificate chains to that hub CA (otherwise c2pa reports it
   "untrusted", and the command says the signer was not checked against a CA).
4. With `--ledger`: the export verifies (`ledger verify`; against `--hub-key` when given),
   and an `evidence` entry names this very file's SHA-256, published by the same party at the
   same time by the same signing certificate. A file whose bytes differ from every entry is
   named as changed since publication.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonsky.evidence.sign import read_manifest
from commonsky.marti.packages import sniff_image

# What c2pa reports when no trust anchors are given: not a failure of the file.
_UNCHECKED = "signingCredential.untrusted"


@dataclass
class Verdict:
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def fail(self, text: str) -> Verdict:
        self.ok = False
        self.lines.append(f"FAIL: {text}")
        return self

    def say(self, text: str) -> None:
        self.lines.append(text)


def _when(text: Any) -> str:
    return str(text) if text else "unknown"


def verify_evidence(
    path: Path, ledger: Path | None = None, ca: Path | None = None, hub_key: bytes | None = None
) -> Verdict:
    """Check one image as the module header says. Raises OSError when a file cannot be read."""
    data = path.read_bytes()
    verdict = Verdict()
    mime = sniff_image(data[:16])
    if mime is None:
        return verdict.fail(f"{path.name}: not a JPEG, PNG or TIFF image")
    trust = ca.read_text() if ca is not None else None
    report = read_manifest(data, mime, trust)
    if report is None:
        return verdict.fail(f"{path.name}: carries no C2PA manifest")
    failures = [code for code in report.failures if not (trust is None and code == _UNCHECKED)]
    if failures:
        changed = any("dataHash" in code or "hashedURI" in code for code in failures)
        if changed:
            verdict.fail("the image's bytes changed after it was signed (C2PA data hash)")
        return verdict.fail(f"C2PA validation: {', '.join(failures)}")
    verdict.say("C2PA manifest valid: no byte of the image changed since it was signed")
    claim = report.assertion
    if claim is None:
        return verdict.fail("no CommonSky evidence assertion in the manifest")
    party = str(claim.get("party", ""))
    if party != report.issuer:
        return verdict.fail(f"assertion names party {party!r}, certificate O {report.issuer!r}")
    verdict.say(
        f"published by {party} (user {claim.get('user', '?')}) at "
        f"{_when(claim.get('published'))}; signed with {report.signer!r}"
    )
    verdict.say(f"taken {_when(claim.get('captured'))} ({claim.get('captured_from') or 'no EXIF'})")
    footprint = claim.get("footprint")
    position = claim.get("position")
    if footprint:
        ring = footprint["coordinates"][0]
        verdict.say(f"footprint ({claim.get('located_from')}): {len(ring) - 1} corners {ring[0]}…")
    elif position:
        verdict.say(f"position ({claim.get('located_from')}): {position['lat']}, {position['lon']}")
    else:
        verdict.say("location: none in the image")
    prior = claim.get("prior_manifest")
    if prior:
        verdict.say(f"the upload already carried a manifest: {prior.get('state')}")
    if trust is not None:
        verdict.say(f"signing certificate chains to the CA in {ca}")
    else:
        verdict.say("signing certificate NOT checked against a CA (give --ca CA.pem)")
    if ledger is not None:
        _check_ledger(verdict, ledger, hub_key, hashlib.sha256(data).hexdigest(), claim, data)
    return verdict


def _signer_serial(data: bytes, mime: str) -> int | None:
    """Serial number of the manifest's signing certificate (the ledger names it)."""
    import io

    import c2pa

    from commonsky.evidence.sign import context

    with c2pa.Reader(mime, io.BytesIO(data), context=context()) as reader:
        active = reader.get_active_manifest() or {}
    serial = (active.get("signature_info") or {}).get("cert_serial_number")
    try:
        return int(str(serial))
    except ValueError:
        return None


def _check_ledger(
    verdict: Verdict,
    ledger: Path,
    hub_key: bytes | None,
    sha256: str,
    claim: dict[str, Any],
    data: bytes,
) -> None:
    from commonsky.ledger.export import verify as verify_export

    result = verify_export(ledger, hub_key)
    if not result.ok:
        verdict.fail(f"ledger export {ledger.name}: {result.describe()}")
        return
    key_note = "against the given hub key" if hub_key else "against the key inside it"
    verdict.say(f"ledger export verifies ({result.describe()}; {key_note})")
    entries = list(_evidence_entries(ledger))
    match = next((e for e in entries if e["payload"].get("sha256") == sha256), None)
    if match is None:
        source = claim.get("source_sha256")
        if any(e["payload"].get("source_sha256") == source for e in entries):
            verdict.fail("the ledger records this photograph with other bytes: the file changed")
        else:
            verdict.fail(f"no evidence entry for this file (sha256 {sha256[:16]}…) in {ledger}")
        return
    payload = match["payload"]
    if match["originator"] != claim.get("party"):
        verdict.fail(
            f"ledger says {match['originator']} published it, the manifest {claim['party']}"
        )
        return
    published = dt.datetime.fromtimestamp(payload["published_us"] / 1e6, dt.UTC)
    stamp = published.isoformat(timespec="seconds").replace("+00:00", "Z")
    if stamp != claim.get("published"):
        verdict.fail(f"ledger time {stamp} differs from the manifest's {claim.get('published')}")
        return
    mime = sniff_image(data[:16]) or ""
    signer = str(payload.get("signer_serial", ""))
    if signer and int(signer, 16) != _signer_serial(data, mime):
        verdict.fail("the manifest was signed with another certificate than the ledger names")
        return
    verdict.say(
        f"ledger entry #{match['seq']}: {payload.get('name')} published by "
        f"{match['originator']} at {stamp}, same bytes, same signer"
    )


def _evidence_entries(ledger: Path) -> Any:
    with ledger.open("rb") as fh:
        for raw in fh:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            entry = line.get("entry") if isinstance(line, dict) else None
            if isinstance(entry, dict) and entry.get("kind") == "evidence":
                yield {
                    "seq": line.get("seq"),
                    "originator": entry.get("originator"),
                    "payload": entry.get("payload") or {},
                }
