# Export and offline verification, driven through the real CLI: every class of tampering must
# exit 1 naming the first bad line, and a party's export must hide what it may not see.
from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from commonsky.cli import main
from commonsky.ledger import export, keys
from commonsky.ledger.entry import EntryFields
from commonsky.ledger.log import Ledger

from ._helpers import fields


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hub"
    party_key = keys.load_private_key(keys.make_party_key(tmp_path / "jpn", "JPN")[0])
    with Ledger.open(d) as led:
        batch = [fields(i, ("JPN", "USA") if i % 3 else ("RUS", "USA")) for i in range(9)]
        led.append_many(batch)
        payload = {"text": "acknowledged", "of_seq": 4}
        sig = keys.sign_payload(party_key, "JPN", payload)
        led.append(EntryFields("ack", 2, "JPN", ["JPN", "USA"], payload, sig))
    return d


@pytest.fixture
def exported(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "all.jsonl"
    code, text = run(["ledger", "export", "--data-dir", str(data_dir), "--out", str(out)], capsys)
    assert code == 0, text
    return out


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_export_verifies(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["ledger", "verify", str(exported)], capsys)
    assert code == 0, text
    assert "intact: 10 entries" in text
    assert "1 originator signatures" in text
    last = json.loads(lines_of(exported)[-1])
    assert set(last) >= {"size", "root", "signature", "time_us", "hub_key"}
    assert last["size"] == 10


def tamper_leaf_byte(lines: list[str]) -> list[str]:
    obj = json.loads(lines[3])
    leaf = bytearray(base64.b64decode(obj["leaf"]))
    leaf[leaf.index(b"payload-3")] ^= 1
    obj["leaf"] = base64.b64encode(bytes(leaf)).decode()
    lines[3] = json.dumps(obj, separators=(",", ":")) + "\n"
    return lines


def tamper_leaf_and_copy(lines: list[str]) -> list[str]:
    # Both the leaf and its readable copy rewritten consistently: only the root can tell.
    return tamper_leaf_and_copy_at(lines, 3, "payload-3", "payload-X")


def tamper_seq(lines: list[str]) -> list[str]:
    lines[2] = lines[2].replace('{"seq":2,', '{"seq":7,', 1)
    return lines


def tamper_swap(lines: list[str]) -> list[str]:
    lines[4], lines[5] = lines[5], lines[4]
    return lines


def tamper_truncate(lines: list[str]) -> list[str]:
    text = "".join(lines)
    return [text[: len(text) - 40]]


def tamper_truncate_at_line(lines: list[str]) -> list[str]:
    return lines[:-1]


def tamper_remove(lines: list[str]) -> list[str]:
    del lines[6]
    return lines


def tamper_root(lines: list[str]) -> list[str]:
    cp = json.loads(lines[-1])
    cp["root"] = ("0" if cp["root"][0] != "0" else "1") + cp["root"][1:]
    lines[-1] = json.dumps(cp) + "\n"
    return lines


def tamper_checkpoint_signature(lines: list[str]) -> list[str]:
    cp = json.loads(lines[-1])
    sig = bytearray(base64.b64decode(cp["signature"]))
    sig[10] ^= 0x40
    cp["signature"] = base64.b64encode(bytes(sig)).decode()
    lines[-1] = json.dumps(cp) + "\n"
    return lines


def tamper_entry_signature(lines: list[str]) -> list[str]:
    # Re-sign nothing: change the signed payload and fix up leaf + copy; the entry's own
    # signature check must catch it on its line, before the root does.
    return tamper_leaf_and_copy_at(lines, 9, "acknowledged", "acknowledgeD")


def tamper_leaf_and_copy_at(lines: list[str], i: int, old: str, new: str) -> list[str]:
    line = lines[i].replace(old, new)
    start = line.index('"entry":') + len('"entry":')
    raw = line[start:-2]
    b64 = base64.b64encode(raw.encode()).decode()
    lines[i] = f'{{"seq":{i},"leaf":"{b64}","entry":{raw}}}\n'
    return lines


def tamper_append_line(lines: list[str]) -> list[str]:
    return [*lines, lines[0]]


CASES = [
    (tamper_leaf_byte, 4, "differ from the leaf"),
    (tamper_leaf_and_copy, 11, "recomputed root"),
    (tamper_seq, 3, "seq 7 where seq 2"),
    (tamper_swap, 5, "seq 5 where seq 4"),
    (tamper_truncate, 11, "not a valid export line"),
    (tamper_truncate_at_line, 10, "no checkpoint"),
    (tamper_remove, 7, "seq 7 where seq 6"),
    (tamper_root, 11, "recomputed root"),
    (tamper_checkpoint_signature, 11, "checkpoint signature"),
    (tamper_entry_signature, 10, "signature by JPN"),
    (tamper_append_line, 12, "after the checkpoint"),
]


@pytest.mark.parametrize(("tamper", "line", "why"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_is_caught(
    exported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: object,
    line: int,
    why: str,
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(tamper(lines_of(exported))))  # type: ignore[operator]
    code, text = run(["ledger", "verify", str(bad)], capsys)
    assert code == 1
    assert len(text.strip().splitlines()) == 1
    assert f"line {line}" in text
    assert why in text


def test_pinned_hub_key(
    exported: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_pem = data_dir / "keys" / "hub-ed25519.pem"
    code, text = run(["ledger", "verify", str(exported), "--hub-key", str(hub_pem)], capsys)
    assert code == 0, text
    _, other = keys.make_party_key(tmp_path / "other", "XXX")
    code, text = run(["ledger", "verify", str(exported), "--hub-key", str(other)], capsys)
    assert code == 1
    assert "pinned hub key" in text


def test_party_export_hides_entries_outside_audience(
    data_dir: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rus.jsonl"
    argv = ["ledger", "export", "--data-dir", str(data_dir), "--party", "RUS", "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    text = out.read_text()
    full = lines_of(exported)
    with Ledger.open(data_dir) as led:
        for seq, entry in enumerate(led.entries()):
            line = json.loads(text.splitlines()[seq])
            if "RUS" in entry.audience:
                assert line["entry"]["payload"] == entry.payload
            else:
                assert set(line) == {"leaf_hash"}
                assert f"payload-{seq}" not in text
                assert json.loads(full[seq])["entry"]["payload"] == entry.payload
    code, msg = run(["ledger", "verify", str(out)], capsys)
    assert code == 0, msg
    result = export.verify(out)
    assert result.redacted == 7
    assert result.checkpoint is not None
    assert result.checkpoint.root_hex == json.loads(full[-1])["root"]


def test_proofs_through_cli(
    data_dir: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = tmp_path / "proof.json"
    argv = ["ledger", "prove", "--data-dir", str(data_dir), "--seq", "4", "--out", str(proof)]
    assert run(argv, capsys)[0] == 0
    code, text = run(["ledger", "verify-proof", str(proof)], capsys)
    assert code == 0, text
    obj = json.loads(proof.read_text())
    obj["seq"] = 5
    proof.write_text(json.dumps(obj))
    assert run(["ledger", "verify-proof", str(proof)], capsys)[0] == 1

    with Ledger.open(data_dir) as led:
        led.append_many([fields(i) for i in range(10, 15)])
    cons = tmp_path / "cons.json"
    argv = ["ledger", "consistency", "--data-dir", str(data_dir), "--old", "10", "--out"]
    assert run([*argv, str(cons)], capsys)[0] == 0
    code, text = run(["ledger", "verify-consistency", str(cons)], capsys)
    assert code == 0, text

    newer = tmp_path / "newer.jsonl"
    argv = ["ledger", "export", "--data-dir", str(data_dir), "--party", "JPN", "--out"]
    assert run([*argv, str(newer)], capsys)[0] == 0
    code, text = run(["ledger", "check-consistency", str(exported), str(newer)], capsys)
    assert code == 0, text
    forked = tmp_path / "forked.jsonl"
    forked.write_text(
        "".join(tamper_leaf_and_copy_at(lines_of(newer), 4, "payload-4", "payload-X"))
    )
    code, text = run(["ledger", "check-consistency", str(exported), str(forked)], capsys)
    assert code == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["ledger", "verify", "/nonexistent/file.jsonl"],
        ["ledger", "export", "--data-dir", "/nonexistent", "--out", "x.jsonl"],
        ["ledger", "verify-proof", "/nonexistent.json"],
        ["ledger", "prove", "--data-dir", "/nonexistent", "--seq", "0"],
        ["ledger", "export", "--data-dir", ".", "--party", "../etc", "--out", "x"],
        ["ledger", "prove", "--data-dir", ".", "--seq", "-1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(argv, capsys)
    assert code == 2
    assert "Traceback" not in text


def test_bad_json_proof_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    code, text = run(["ledger", "verify-proof", str(bad)], capsys)
    assert code == 2
    assert "not JSON" in text


def test_bench_runs_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["bench", "ledger", "--entries", "300", "--proofs", "20"], capsys)
    assert code == 0, text
    assert "appends/s" in text


def test_export_of_a_damaged_ledger_names_the_file(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A page of ledger.sqlite3 overwritten (opening the file does not see it): one line
    naming the file, exit 2, no traceback."""
    database = data_dir / "ledger.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with database.open("r+b") as raw:
        raw.seek(size)  # page 2
        raw.write(b"\xff" * size)
    out = tmp_path / "damaged.jsonl"
    code, text = run(["ledger", "export", "--data-dir", str(data_dir), "--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in text, text
    assert f"{database}: damaged" in text and "restore it from a backup" in text


def test_an_unknown_party_is_refused_naming_the_known_ones(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--party RUSS` (a typo) wrote a file of nothing but leaf hashes and said it went well."""
    out = tmp_path / "russ.jsonl"
    argv = ["ledger", "export", "--data-dir", str(data_dir), "--party", "RUSS", "--out", str(out)]
    code, text = run(argv, capsys)
    assert code == 2 and text.count("\n") == 1 and "Traceback" not in text, text
    assert "--party 'RUSS': not in any entry of the ledger (known: JPN, RUS, USA)" in text
    assert not out.exists()


def test_a_declared_party_with_no_entries_yet_is_exported(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --config the declared parties are known too: KOR sees nothing yet, and says so
    by an export of leaf hashes; a typo of it is refused, naming declared and present."""
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[server]\ndata_dir = "{data_dir}"\n[[party]]\nid = "USA"\n[[party]]\nid = "KOR"\n'
    )
    out = tmp_path / "kor.jsonl"
    argv = ["ledger", "export", "--config", str(config), "--out", str(out), "--party"]
    code, text = run([*argv, "KOR"], capsys)
    assert code == 0, text
    assert export.verify(out).redacted == 10
    code, text = run([*argv, "KOREA"], capsys)
    assert code == 2 and text.count("\n") == 1, text
    assert (
        f"--party 'KOREA': not a [[party]] of {config} nor in any entry of the ledger "
        "(known: JPN, KOR, RUS, USA)"
    ) in text
