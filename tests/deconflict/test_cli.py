# Rule: the `deconflict tracks` command as an operator sees it: CSV in, CSV out, and every bad
# input refused with one line naming file, line, column and value (exit status 2).

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli_args import run as _run

HEADER = "id,lat,lon,alt_m,gs_mps,trk_deg,vs_mps\n"


def test_tracks_prints_sorted_conflicting_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "t.csv"
    f.write_text(
        HEADER
        + "zulu,50.0,5.0,10000,250,90,0\n"
        + "alpha,50.0,5.70,10000,250,270,0\n"  # head-on with zulu, ~50 km apart
        + "mike,50.0,5.0,10500,250,90,0\n"  # 500 m above zulu: no conflict
        + "bravo,10.0,10.0,3000,0,0,0\n"
        + "charlie,10.0,10.01,3100,0,0,0\n"  # parked 1.1 km from bravo
    )
    code, out, err = _run(capsys, "deconflict", "tracks", str(f))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "id1,id2,tcpa_s,dcpa_m"
    pairs = [tuple(line.split(",")[:2]) for line in lines[1:]]
    assert pairs == [("alpha", "zulu"), ("bravo", "charlie")]
    assert float(lines[1].split(",")[2]) == pytest.approx(100.0, abs=0.5)
    code, out, _ = _run(capsys, "deconflict", "tracks", str(f), "--rpz-m", "1000")
    assert [line.split(",")[:2] for line in out.splitlines()[1:]] == [["alpha", "zulu"]]
    code, out, _ = _run(capsys, "deconflict", "tracks", str(f), "--hpz-m", "600")
    assert len(out.splitlines()) == 5  # mike, 500 m up, now conflicts with alpha and zulu


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("a,1,2,3,4,5,6\n", None),
        ("a,1,2,3,x,5,6\n", ":2: column 'gs_mps': 'x' is not a number"),
        ("a,1,2,3,4,5,6\nb,nan,2,3,4,5,6\n", ":3: column 'lat': 'nan' is not finite"),
        ("a,91,2,3,4,5,6\n", ":2: column 'lat': '91' is outside [-90, 90]"),
        ("a,1,2,3,-4,5,6\n", ":2: column 'gs_mps': '-4' is outside"),
        ("a,1,200,3,4,5,6\n", ":2: column 'lon': '200' is outside"),
        ("a,1,2,3,4,5,inf\n", "column 'vs_mps': 'inf' is not finite"),
        ("a,1,2,3,4,5,6\na,1,2,3,4,5,6\n", ":3: column 'id': 'a' repeats line 2"),
        ("a,1,2\n", ":2: 3 fields"),
    ],
)
def test_tracks_refuses_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, needle: str | None
) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(HEADER + body)
    code, out, err = _run(capsys, "deconflict", "tracks", str(f))
    if needle is None:
        assert code == 0
        return
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert str(f) in err
    assert needle in err


def test_tracks_refuses_missing_file_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "deconflict", "tracks", str(tmp_path / "nope.csv"))
    assert code == 2
    assert "nope.csv: no such file" in err
    f = tmp_path / "cols.csv"
    f.write_text("id,lat,lon,alt_m,gs_mps,trk_deg\na,1,2,3,4,5\n")
    code, _, err = _run(capsys, "deconflict", "tracks", str(f))
    assert code == 2
    assert "missing column 'vs_mps'" in err
    code, _, err = _run(capsys, "deconflict", "tracks", str(f), "--rpz-m", "-1")
    assert code == 2
    assert "--rpz-m" in err
