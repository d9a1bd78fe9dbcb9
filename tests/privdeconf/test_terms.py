"""The `[[federate]]` terms: read once, every error names the key and the value; cell terms
must be equal on both sides, reveal and geometry take the stricter side."""

from __future__ import annotations

import pytest

from commonsky.errors import UsageError
from commonsky.privdeconf import Terms, from_federate
from commonsky.privdeconf.terms import Agreed, agree


def test_a_federate_without_deconflict_has_no_terms_and_defaults_fill_the_rest() -> None:
    assert from_federate({"name": "rus-hub", "connect": "h:9001"}) is None
    t = from_federate(
        {
            "deconflict": "private",
            "grid_level": 7,
            "time_slot_s": 600,
            "altitude_band_m": 500,
            "reveal": "count",
        }
    )
    assert t == Terms(grid_level=7, time_slot_s=600, altitude_band_m=500, reveal="count")
    assert t is not None and t.rpz_m == 9260.0 and t.hpz_m == 304.8


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"deconflict": "public"}, "deconflict = 'public': the only mode is \"private\""),
        ({"deconflict": "private", "grid_level": 16}, "grid_level: 16 is not an H3 resolution"),
        ({"deconflict": "private", "grid_level": "six"}, "grid_level"),
        ({"deconflict": "private", "time_slot_s": 0}, "time_slot_s: 0.0 is not a positive"),
        ({"deconflict": "private", "altitude_band_m": float("inf")}, "altitude_band_m"),
        ({"deconflict": "private", "reveal": "all"}, "reveal"),
        ({"deconflict": "private", "max_cells": 0}, "max_cells"),
        ({"deconflict": "private", "rpz_m": -1.0}, "rpz_m"),
    ],
)
def test_bad_terms_are_one_line_naming_the_table_and_key(table: dict, said: str) -> None:
    with pytest.raises(UsageError, match=r"^hub\.toml: \[\[federate\]\] #2") as err:
        from_federate(table, "hub.toml: [[federate]] #2")
    assert said in str(err.value) and "\n" not in str(err.value)


def test_reveal_and_geometry_take_the_stricter_side_and_cells_must_be_equal() -> None:
    ours = Terms()
    assert agree(ours, ours.grid(), "cells", True) == Agreed("cells", True)
    assert agree(ours, ours.grid(), "count", True) == Agreed("count", False)
    assert agree(ours, ours.grid(), "cells", False) == Agreed("cells", False)
    assert agree(Terms(reveal="count"), ours.grid(), "cells", True) == Agreed("count", False)
    other = Terms(altitude_band_m=300).grid()
    assert agree(ours, other, "cells", True) == (
        "altitude_band_m differs: ours 1000.0, the peer's 300.0"
    )
    assert "grid has 2 terms" in str(agree(ours, (6, 900.0), "cells", True))
