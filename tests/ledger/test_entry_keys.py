# Canonical entry bytes and key files: the format another implementation must reproduce.
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from commonsky.ledger import keys
from commonsky.ledger.entry import (
    EntryError,
    EntryFields,
    canonical_json,
    decode_entry,
    make_entry,
    parse_canonical,
)


def test_canonical_json_rules() -> None:
    value = {"b": [1, True, None], "a": {"é": "x\n\u0001/"}, "A": -5}
    assert canonical_json(value) == b'{"A":-5,"a":{"\xc3\xa9":"x\\n\\u0001/"},"b":[1,true,null]}'
    assert parse_canonical(canonical_json(value)) == value
    for bad in [{"x": 1.5}, {"x": 2**63}, {1: 2}, {"x": b"raw"}]:
        with pytest.raises(EntryError):
            canonical_json(bad)
    for text in [b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b'{"a":-0}', b'{"a":"\\u0041"}']:
        with pytest.raises(EntryError):
            parse_canonical(text)


def test_entry_round_trip_and_strictness() -> None:
    fields = EntryFields("conflict", 7, "USA", ["USA", "RUS", "USA"], {"overlap": [1, 2]})
    entry = make_entry(3, fields, nonce=bytes(16))
    assert entry.audience == ("RUS", "USA")
    leaf = entry.encode()
    assert leaf.startswith(
        b'{"audience":["RUS","USA"],"kind":"conflict","nonce":"AAAAAAAAAAAAAAAAAAAAAA=="'
    )
    assert decode_entry(leaf) == entry
    for old, new in [
        (b'"seq":3', b'"seq":3.0'),
        (b'"v":1', b'"v":2'),
        (b'["RUS","USA"]', b'["USA","RUS"]'),
        (b'"originator":"USA"', b'"originator":"../x"'),
        (b'"overlap":[1,2]', b'"overlap":[1,99999999999999999999]'),
        (b'"kind":"conflict"', b'"kind":"Conflict"'),
    ]:
        with pytest.raises(EntryError):
            decode_entry(leaf.replace(old, new))
    with pytest.raises(EntryError):
        make_entry(0, EntryFields("item", 1, "US A", ["USA"], {}))


def test_key_files(tmp_path: Path) -> None:
    hub = keys.load_or_create_hub_key(tmp_path)
    path = tmp_path / "keys" / "hub-ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.raw_public(keys.load_or_create_hub_key(tmp_path)) == keys.raw_public(hub)
    private_path, public_path = keys.make_party_key(tmp_path / "out", "KOR")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    with pytest.raises(keys.KeyFileError):
        keys.make_party_key(tmp_path / "out", "KOR")
    registry = keys.PartyKeys(tmp_path)
    assert registry.raw("KOR") is None
    registry.add("KOR", public_path.read_bytes())
    assert registry.raw("KOR") == keys.raw_public(keys.load_public_key(private_path))
    assert registry.parties() == ["KOR"]
    with pytest.raises(keys.KeyFileError):
        registry.path("../../etc/passwd")
    sig = keys.sign(hub, b"message")
    assert keys.verify(keys.raw_public(hub), b"message", sig)
    assert not keys.verify(keys.raw_public(hub), b"massage", sig)
