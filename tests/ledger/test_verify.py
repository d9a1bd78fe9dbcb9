# The fast and parallel verifier must give exactly the verdict of the plain line-by-line loop:
# same first bad line, seq, reason and counts, whatever the chunking.
from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from commonsky.ledger import export, keys, merkle, verify
from commonsky.ledger.entry import EntryFields
from commonsky.ledger.log import Ledger

from ._helpers import fields

N = 120


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    tmp = tmp_path_factory.mktemp("verify")
    party_key = keys.load_private_key(keys.make_party_key(tmp / "jpn", "JPN")[0])
    with Ledger.open(tmp / "hub") as led:
        batch: list[EntryFields] = []
        for i in range(N):
            if i % 7 == 3:
                payload = {"text": f"ack {i}", "of_seq": i - 1}
                sig = keys.sign_payload(party_key, "JPN", payload)
                batch.append(EntryFields("ack", 5, "JPN", ["JPN", "USA"], payload, sig))
            else:
                batch.append(fields(i, ("JPN", "USA") if i % 3 else ("RUS", "USA")))
        led.append_many(batch)
        full, rus = tmp / "all.jsonl", tmp / "rus.jsonl"
        cp = export.export(led, full)
        export.export(led, rus, party="RUS", checkpoint=cp)
    return full, rus, keys.raw_public(party_key)


def reference(path: Path, pinned: dict[str, bytes] | None = None) -> verify.VerifyResult:
    """The original algorithm: the general per-line loop over every line."""
    with path.open("rb") as fh:
        return verify._verify_tail(fh, verify._Tally(), None, pinned)


def all_modes(path: Path, pinned: dict[str, bytes] | None = None) -> verify.VerifyResult:
    expected = reference(path, pinned)
    with path.open("rb") as fh:
        assert verify.verify_lines(fh, None, pinned) == expected
    assert verify.verify(path, None, pinned, workers=1) == expected
    for chunk in (1, 700, 5000):
        assert verify.verify(path, None, pinned, workers=2, chunk_bytes=chunk) == expected
    return expected


def test_intact_files_agree(files: tuple[Path, Path, bytes]) -> None:
    full, rus, jpn_key = files
    result = all_modes(full)
    assert result.ok
    assert result.entries == N
    assert result.signed == len([i for i in range(N) if i % 7 == 3])
    redacted = all_modes(rus)
    assert redacted.ok
    assert redacted.redacted == len([i for i in range(N) if i % 3 or i % 7 == 3])
    pinned = all_modes(full, {"JPN": jpn_key})
    assert pinned.ok
    wrong = all_modes(full, {"JPN": b"\x01" * 32})
    assert not wrong.ok
    assert wrong.line == 4
    assert wrong.seq == 3


def rewrite(line: bytes, old: bytes, new: bytes) -> bytes:
    """Change the inlined entry and re-encode `leaf` to match (a self-consistent edit)."""
    obj = json.loads(line)
    start = line.index(b'"entry":') + len(b'"entry":')
    raw = line[start:].rstrip(b"\n")[:-1].replace(old, new, 1)
    return b'{"seq":%d,"leaf":"%s","entry":%s}\n' % (
        obj["seq"],
        base64.b64encode(raw).decode().encode(),
        raw,
    )


Tamper = Callable[[list[bytes], int], list[bytes]]


def t_copy_byte(lines: list[bytes], i: int) -> list[bytes]:
    lines[i] = lines[i].replace(b'"time_us":', b'"time_us": ', 1)
    return lines


def t_rewrite_payload(lines: list[bytes], i: int) -> list[bytes]:
    lines[i] = rewrite(lines[i], b'"uid":"u-', b'"uid":"v-')
    return lines


def t_bad_nonce(lines: list[bytes], i: int) -> list[bytes]:
    obj = json.loads(lines[i])
    nonce = obj["entry"]["nonce"].encode()
    lines[i] = rewrite(lines[i], nonce, nonce[:21] + b"B==")  # non-canonical padding bits
    return lines


def t_key_order(lines: list[bytes], i: int) -> list[bytes]:
    lines[i] = rewrite(lines[i], b'{"audience":', b'{"v":1,"audience":')
    return lines


def t_big_int(lines: list[bytes], i: int) -> list[bytes]:
    lines[i] = rewrite(lines[i], b'"secret":', b'"big":99999999999999999999,"secret":')
    return lines


def t_long_int_in_range(lines: list[bytes], i: int) -> list[bytes]:
    # 19 digits but inside 64 bits: a valid leaf (caught only by the root).
    lines[i] = rewrite(lines[i], b'"secret":', b'"big":1000000000000000000,"secret":')
    return lines


def t_bad_party(lines: list[bytes], i: int) -> list[bytes]:
    lines[i] = rewrite(lines[i], b'"originator":"', b'"originator":"-')
    return lines


def t_seq_inside(lines: list[bytes], i: int) -> list[bytes]:
    lines[i] = rewrite(lines[i], b'"seq":%d,' % i, b'"seq":%d,' % (i + 1))
    return lines


def t_seq_zero_padded(lines: list[bytes], i: int) -> list[bytes]:
    lines[i] = lines[i].replace(b'{"seq":%d,' % i, b'{"seq":0%d,' % i, 1)
    return lines


def t_swap(lines: list[bytes], i: int) -> list[bytes]:
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return lines


def t_drop(lines: list[bytes], i: int) -> list[bytes]:
    del lines[i]
    return lines


def t_blank_line(lines: list[bytes], i: int) -> list[bytes]:
    lines.insert(i, b"\n")
    return lines


def t_checkpoint_early(lines: list[bytes], i: int) -> list[bytes]:
    lines.insert(i, lines[-1])
    return lines


def t_spaced_layout(lines: list[bytes], i: int) -> list[bytes]:
    # Still valid JSON with the same fields: only the general path takes it; both accept.
    lines[i] = lines[i].replace(b'{"seq":', b'{ "seq" : ', 1)
    return lines


def t_redacted_upper(lines: list[bytes], i: int) -> list[bytes]:
    for k in range(i, len(lines)):
        if lines[k].startswith(b'{"leaf_hash":'):
            lines[k] = lines[k].upper().replace(b"LEAF_HASH", b"leaf_hash")
            break
    return lines


def t_no_newline_at_end(lines: list[bytes], i: int) -> list[bytes]:
    lines[-1] = lines[-1].rstrip(b"\n")
    return lines


TAMPERS: list[Tamper] = [
    t_copy_byte,
    t_rewrite_payload,
    t_bad_nonce,
    t_key_order,
    t_big_int,
    t_long_int_in_range,
    t_bad_party,
    t_seq_inside,
    t_seq_zero_padded,
    t_swap,
    t_drop,
    t_blank_line,
    t_checkpoint_early,
    t_spaced_layout,
    t_redacted_upper,
    t_no_newline_at_end,
]


def _applies(tamper: Tamper, which: str) -> bool:
    """A party's export has redacted lines, so only line-level tampers apply everywhere."""
    if which == "rus":
        return tamper in {t_swap, t_drop, t_blank_line, t_redacted_upper}
    return tamper is not t_redacted_upper  # a full export has no redacted line


CASES = [(t, which) for which in ("full", "rus") for t in TAMPERS if _applies(t, which)]


@pytest.fixture
def chunks_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked scan with its chunks in threads instead of processes. What these cases
    check — how chunks are cut and merged, and which line is the first bad one — does not
    depend on where a chunk runs, and a pool of processes for each of several hundred
    verifications was most of this module's time; the intact and random cases above and
    below still run in real processes (pickling, worker start-up)."""
    monkeypatch.setattr(verify, "ProcessPoolExecutor", ThreadPoolExecutor)


@pytest.mark.usefixtures("chunks_in_threads")
@pytest.mark.parametrize(("tamper", "which"), CASES, ids=[f"{t.__name__}-{w}" for t, w in CASES])
@pytest.mark.parametrize("where", [0, 1, 57, N - 2])
def test_tampered_files_agree(
    files: tuple[Path, Path, bytes], tmp_path: Path, tamper: Tamper, where: int, which: str
) -> None:
    src = files[0] if which == "full" else files[1]
    lines = src.read_bytes().splitlines(keepends=True)
    if which == "full" and where % 7 == 3:
        where += 1
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(tamper(lines, where)))
    result = all_modes(bad)
    if tamper not in {t_spaced_layout, t_no_newline_at_end}:
        assert not result.ok, result.describe()


@pytest.mark.slow
def test_many_random_tampers_agree(files: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    rng = random.Random(7)
    data = files[0].read_bytes()
    for _ in range(12):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(len(buf) - 300)] = rng.choice(b'0123456789abcdefAQ=",:{}\n ')
        bad = tmp_path / "rand.jsonl"
        bad.write_bytes(bytes(buf))
        all_modes(bad)


def test_leaf_hash_pinned_in_tree(files: tuple[Path, Path, bytes]) -> None:
    # The root the verifier rebuilds is the log's: a file's checkpoint root matches.
    result = verify.verify(files[0], workers=2, chunk_bytes=512)
    assert result.ok
    assert result.checkpoint is not None
    hashes, cp = export.read_leaf_hashes(files[0])
    assert merkle.reference_root(hashes) == cp.root == result.checkpoint.root


@pytest.mark.parametrize("tampered", [False, True])
def test_parallel_scan_leaves_no_pool_running(
    files: tuple[Path, Path, bytes], tmp_path: Path, tampered: bool
) -> None:
    # A scan that stops early (at the checkpoint of an intact file, or at a bad line) must
    # not return while the pool's manager thread still runs: at interpreter exit CPython
    # 3.11's `_python_exit` wakes it through a pipe that thread may be closing, and printed
    # "OSError: [Errno 9] Bad file descriptor" after 1 in 6 `commonsky ledger verify` runs.
    path = files[0]
    if tampered:
        lines = path.read_bytes().splitlines(keepends=True)
        lines[5] = lines[5].replace(b'"seq":', b'"seq": ')
        path = tmp_path / "tampered.jsonl"
        path.write_bytes(b"".join(lines))
    result = verify.verify(path, workers=2, chunk_bytes=700)
    assert result.ok is not tampered
    running = [
        t for t in threading.enumerate() if type(t).__module__ == "concurrent.futures.process"
    ]
    assert running == []
