"""`/Marti/sync/content?hash=` read one way wherever it is answered (marti/api.py
`hash_param`; a cluster edge's `held_answer`, cluster/edge_long.py): any case, spaces
around it ignored; two hashes that differ are a 400, not whichever came last."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from starlette.requests import Request

from commonsky.cluster.edge_long import held_answer
from commonsky.hub import held as held_module
from commonsky.hub.held import LongMessages
from commonsky.marti.api import hash_param
from commonsky.marti.ingest import Refused
from tests.hub.test_held import NOW, item_of


def request(*hashes: str, method: str = "GET") -> Request:
    query = "&".join(f"hash={quote(h)}" for h in hashes)
    return Request(
        {
            "type": "http", "method": method, "path": "/Marti/sync/content",
            "query_string": query.encode(), "headers": [], "scheme": "https",
            "server": ("hub.example", 8443),
        }
    )  # fmt: skip


def test_two_hashes_that_differ_are_refused_one_given_twice_is_one() -> None:
    a, b = "a" * 64, "b" * 64
    with pytest.raises(Refused) as refused:
        hash_param(request(a, b))
    assert refused.value.status == 400 and "more than one hash" in str(refused.value)
    assert hash_param(request(a, f" {a.upper()} ")) == a


def test_the_edge_answers_what_it_holds_for_the_hash_as_the_core_reads_it() -> None:
    store = LongMessages(lambda: NOW)
    store.serve(lambda: "https://hub.example:8443", held_module.Path("."))
    rendered = item_of("route-1", 70_000)
    held = store.announce(rendered, "full", "xml", rendered.wire("full", "xml"))
    assert held is not None
    store.grant("JPN", [held])
    sha = held.sha256
    for given in ([f" {sha.upper()} "], [sha, sha.upper()]):
        answer = held_answer(store, request(*given), "JPN")
        assert answer is not None and answer.body == held.xml, given
    # Another party, or a hash not the one held, or two that differ: not the edge's (the core
    # answers 404 or 400).
    assert held_answer(store, request(sha), "KOR") is None
    assert held_answer(store, request("c" * 64, sha), "JPN") is None
