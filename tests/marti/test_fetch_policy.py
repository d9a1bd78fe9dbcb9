"""Who may fetch a file, as a property: exactly the holder and the parties every one of whose
categories an agreement in force grants in full (read here from the agreements as data)."""

from __future__ import annotations

import math
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.marti.files import StoredFile
from commonsky.marti.ingest import fetchers
from commonsky.model import Category, Disclosure
from commonsky.policy import Agreement, Party, Policy

PARTIES = ["USA", "JPN", "KOR", "RUS"]
LEVELS = [Disclosure.FULL, Disclosure.GENERALIZED, Disclosure.CONFLICTS_ONLY]
NOW = 1_000_000.0

grant = st.tuples(
    st.sampled_from(PARTIES[1:]),
    st.sampled_from([Category.FILE, Category.IMAGERY]),
    st.sampled_from(LEVELS),
    st.booleans(),  # in force now, or ended
)


@settings(max_examples=200, deadline=None)
@given(
    grants=st.lists(grant, max_size=8),
    categories=st.sampled_from([("file",), ("imagery",), ("file", "imagery")]),
    located=st.booleans(),
)
def test_fetchers_are_the_holder_and_full_grantees_of_every_category(
    grants: list[tuple[str, Category, Disclosure, bool]],
    categories: tuple[str, ...],
    located: bool,
) -> None:
    agreements = [
        Agreement(
            f"a{i}",
            "USA",
            (to,),
            frozenset({category}),
            level,
            valid_until=None if current else NOW - 1,
        )
        for i, (to, category, level, current) in enumerate(grants)
    ]
    policy = Policy([Party(p) for p in PARTIES], agreements)
    port = SimpleNamespace(entitled=lambda item: policy.entitled(item, NOW))
    row = StoredFile(
        "a" * 64,
        "USA",
        "u",
        "",
        "f",
        "application/zip",
        1,
        "package",
        categories,
        35.0 if located else math.nan,
        40.0 if located else math.nan,
        NOW,
    )
    expected = {"USA"}
    for party in PARTIES[1:]:
        if all(
            any(
                to == party and category.value == wanted and level is Disclosure.FULL and current
                for to, category, level, current in grants
            )
            for wanted in categories
        ):
            expected.add(party)
    assert fetchers(SimpleNamespace(port=port), row) == expected  # type: ignore[arg-type]
