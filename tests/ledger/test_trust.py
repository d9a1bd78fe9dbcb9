# `ledger verify` trusts only what the verifier already trusts (issue 13, class 9): a history
# rewritten and re-signed with a throwaway key is caught against a given or first-use-pinned
# hub key, verification without one says plainly that the file vouched for itself, and each
# signed statement must match the item or acknowledgement it backs — in every mode
# (line by line, one process, parallel chunks).
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commonsky.ledger import keys, merkle
from commonsky.ledger.entry import EntryFields, checkpoint_message
from commonsky.ledger.log import Ledger, SignedCheckpoint

from ._helpers import fields
from .test_export import run
from .test_verify import all_modes, rewrite

T = 1_700_000_000_000_000


def hotline_item(uid: str, text: str, to: str, i: int) -> EntryFields:
    detail = (
        f'<__chat chatroom="hotline" id="hotline" senderCallsign="JPN" messageId="{uid}"/>'
        f'<marti><dest party="{to}"/></marti><remarks>{text}</remarks>'
    )
    payload = {"category": "hotline", "uid": uid, "type": "b-t-f", "detail": detail}
    return EntryFields("item", T + i, "JPN", ["JPN", to], payload)


def statement(key: Ed25519PrivateKey, backed: EntryFields, payload: dict) -> EntryFields:
    sig = keys.sign_payload(key, "JPN", payload)
    return EntryFields("statement", backed.time_us, "JPN", list(backed.audience), payload, sig)


def forge(path: Path, out: Path) -> None:
    """Rewrite entry 2 of an export, rebuild the tree and sign it with a key of one's own."""
    lines = path.read_bytes().splitlines(keepends=True)
    body = lines[:-1]
    body[2] = rewrite(body[2], b'"uid":"u-', b'"uid":"FORGED-')
    frontier = merkle.Frontier()
    for line in body:
        frontier.append(merkle.leaf_hash(_leaf(line)))
    root = frontier.root()
    thief = Ed25519PrivateKey.generate()
    t_us = time.time_ns() // 1000
    cp = SignedCheckpoint(
        len(body),
        root.hex(),
        t_us,
        thief.sign(checkpoint_message(len(body), root, t_us)),
        keys.raw_public(thief),
    )
    out.write_bytes(b"".join(body) + json.dumps(cp.to_json()).encode() + b"\n")


def _leaf(line: bytes) -> bytes:
    start = line.index(b'"entry":') + len(b'"entry":')
    return line[start:].rstrip(b"\n")[:-1]


@pytest.fixture
def hub_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    data = tmp_path / "hub"
    with Ledger.open(data) as led:
        led.append_many([fields(i) for i in range(6)])
    out = tmp_path / "all.jsonl"
    assert run(["ledger", "export", "--data-dir", str(data), "--out", str(out)], capsys)[0] == 0
    return out, data / "keys" / keys.HUB_KEY_NAME


def test_a_re_signed_history_is_caught_against_a_trusted_key(
    hub_export: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    genuine, hub_pem = hub_export
    forged = tmp_path / "forged.jsonl"
    forge(genuine, forged)
    # Alone, the forged file agrees with itself — and the verifier says that is all it knows.
    code, text = run(["ledger", "verify", str(forged)], capsys)
    assert code == 0 and "NOT CHECKED AGAINST A TRUSTED HUB KEY" in text
    code, text = run(["ledger", "verify", str(forged), "--hub-key", str(hub_pem)], capsys)
    assert code == 1 and "pinned hub key" in text
    # Pinned at first use: the genuine export pins the hub's key, the forgery then fails.
    known = tmp_path / "known.json"
    pin = ["--hub", "EXERCISE-HUB", "--known-hubs", str(known)]
    code, text = run(["ledger", "verify", str(genuine), *pin], capsys)
    assert code == 0 and "pinned at first use" in text and "NOT CHECKED" not in text
    assert known.stat().st_mode & 0o077 == 0
    code, text = run(["ledger", "verify", str(forged), *pin], capsys)
    assert code == 1 and "EXERCISE-HUB" in text
    code, text = run(["ledger", "verify", str(genuine), *pin], capsys)
    assert code == 0 and "pinned at first use" not in text
    # The default place is the user's config directory.
    code, text = run(["ledger", "verify", str(genuine), "--hub", "H2"], capsys)
    assert code == 0 and str(tmp_path / "xdg" / "commonsky" / "known-hubs.json") in text


@pytest.fixture(autouse=True)
def _xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def _statement_ledger(tmp_path: Path, text_signed: str) -> Path:
    key = Ed25519PrivateKey.generate()
    batch: list[EntryFields] = []
    for i in range(40):
        if i % 9 == 4:
            item = hotline_item(f"GeoChat.{i}", f"hold {i}", "USA", i)
            signed = {"to": "USA", "text": f"hold {i}", "uid": f"GeoChat.{i}"}
            if i == 31:
                signed["text"] = text_signed
            batch += [item, statement(key, item, signed)]
        elif i % 9 == 7:
            ack = EntryFields("ack", T + i, "JPN", ["JPN", "USA"], {"of": f"USA::m{i}"})
            batch += [ack, statement(key, ack, {"ack": f"USA::m{i}"})]
        else:
            batch.append(fields(i))
    with Ledger.open(tmp_path / "hub") as led:
        led.append_many(batch)
        from commonsky.ledger import export

        out = tmp_path / "s.jsonl"
        export.export(led, out)
    return out


def test_each_statement_must_match_what_it_backs(tmp_path: Path) -> None:
    good = _statement_ledger(tmp_path / "a", "hold 31")
    assert all_modes(good).ok
    bad = _statement_ledger(tmp_path / "b", "hold 13")  # signed words differ from the record
    result = all_modes(bad)
    assert not result.ok and "not the text the sender signed" in result.reason
    assert result.line is not None and result.seq == result.line - 1
    lines = bad.read_text().splitlines()
    assert '"kind":"statement"' in lines[result.line - 1]


def test_statement_shapes_and_mismatches() -> None:
    from commonsky.ledger.entry import make_entry
    from commonsky.ledger.statements import statement_problem

    key = Ed25519PrivateKey.generate()
    item = hotline_item("GeoChat.1", "hold", "USA", 1)
    ack = EntryFields("ack", T + 1, "JPN", ["JPN", "USA"], {"of": "USA::m1"})

    def check(backed: EntryFields | None, payload: dict) -> str | None:
        base = backed or item
        signed = make_entry(1, statement(key, base, payload))
        return statement_problem(signed, make_entry(0, backed) if backed else None)

    assert check(item, {"to": "USA", "text": "hold", "uid": "GeoChat.1"}) is None
    assert check(ack, {"ack": "USA::m1"}) is None
    assert "addressee" in str(check(item, {"to": "RUS", "text": "hold", "uid": "GeoChat.1"}))
    assert "backs item" in str(check(item, {"to": "USA", "text": "hold", "uid": "GeoChat.2"}))
    assert "another entry" in str(check(ack, {"ack": "USA::m2"}))
    assert "no hotline item" in str(check(ack, {"to": "USA", "text": "x", "uid": "m1"}))
    assert "no known shape" in str(check(item, {"text": "hold"}))
    assert "does not follow" in str(check(None, {"ack": "USA::m1"}))
    by_usa = EntryFields("ack", T + 1, "USA", ["JPN", "USA"], {"of": "USA::m1"})
    assert "backs an entry by USA" in str(check(by_usa, {"ack": "USA::m1"}))
