from __future__ import annotations

from pathlib import Path

import pytest
from alerts_scenarios import T0

from commonsky.alerts.cap import CapAlert, CapArea, CapInfo, cap_xml
from commonsky.cli import main


def test_regions_lists_the_builtin_set(capsys: pytest.CaptureFixture[str]) -> None:
    main(["alerts", "regions"])
    out = capsys.readouterr().out
    assert "JP-02\tprefecture\tAomori" in out
    assert "UA-30\tcity\tKyiv" in out


def test_cap_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = CapInfo(
        ("Safety",),
        "Drone",
        "Immediate",
        "Severe",
        "Possible",
        areas=(CapArea("Kyiv", geocodes=(("ISO3166-2", "UA-30"),)),),
    )
    good = tmp_path / "good.xml"
    good.write_bytes(cap_xml(CapAlert("a.1", "ua@example.org", T0, "Test", "Alert", info=(info,))))
    main(["alerts", "cap-check", str(good)])
    assert "valid CAP 1.2 Alert a.1" in capsys.readouterr().out
    bad = tmp_path / "bad.xml"
    bad.write_bytes(good.read_bytes().replace(b"<status>Test", b"<status>Maybe"))
    for path in (bad, tmp_path / "missing.xml"):
        with pytest.raises(SystemExit) as exc:
            main(["alerts", "cap-check", str(path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert str(path) in err
