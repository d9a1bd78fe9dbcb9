"""`[cluster]` (../CONTRACT.md, "Cluster"): a good table loads with its defaults; each bad one
gives one line naming the key and its place in the document."""

from __future__ import annotations

from typing import Any

import pytest

from commonsky.config import config_from_dict
from commonsky.errors import UsageError

PG = "postgresql://postgres@127.0.0.1:5432/commonsky"


def config(cluster: Any, store_url: str = PG) -> dict[str, Any]:
    return {
        "server": {"store_url": store_url},
        "party": [{"id": "USA"}, {"id": "JPN"}],
        "cluster": cluster,
    }


def test_no_cluster_table_is_the_embedded_hub() -> None:
    data = config({})
    del data["cluster"]
    assert config_from_dict(data).cluster is None


def test_contract_keys_and_defaults() -> None:
    cluster = config_from_dict(config({"nats_url": "nats://127.0.0.1:4222"})).cluster
    assert cluster is not None
    assert (cluster.role, cluster.name, cluster.lease_ttl_s) == ("all", "commonsky", 5.0)
    assert cluster.runs_edge and cluster.runs_core
    edge = config_from_dict(config({"nats_url": "nats://a:4222, tls://b", "role": "edge"}))
    assert edge.cluster is not None
    assert edge.cluster.servers == ["nats://a:4222", "tls://b"]
    assert edge.cluster.runs_edge and not edge.cluster.runs_core


@pytest.mark.parametrize(
    ("cluster", "store_url", "named"),
    [
        ({"role": "edge"}, PG, "missing key 'nats_url' ($.cluster)"),
        ({"nats_url": "nats://h:4222", "role": "leader"}, PG, "role = 'leader'"),
        ({"nats_url": "nats://h:4222", "role": "egde"}, PG, "'egde': use edge, core, all"),
        ({"nats_url": "http://h:4222"}, PG, "is not nats://HOST:PORT ($.cluster.nats_url)"),
        ({"nats_url": "nats://h:99999"}, PG, "is not nats://HOST:PORT"),
        ({"nats_url": " , "}, PG, "nats_url is empty"),
        ({"nats_url": 4222}, PG, "nats_url = 4222"),
        ({"nats_url": "nats://h", "name": "a.b"}, PG, "name = 'a.b' must be"),
        ({"nats_url": "nats://h", "lease_ttl_s": 0.1}, PG, "lease_ttl_s = 0.1"),
        ({"nats_url": "nats://h", "nodes": 3}, PG, "unknown key 'nodes'"),
        ({"nats_url": "nats://h"}, "", 'store_url = "postgresql://'),
        ("edge", PG, "[cluster] is not a table"),
    ],
)
def test_a_bad_cluster_table_is_one_line(cluster: Any, store_url: str, named: str) -> None:
    with pytest.raises(UsageError) as caught:
        config_from_dict(config(cluster, store_url), "hub.toml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("hub.toml: [cluster]"), message
    assert named in message, message


def test_an_edge_needs_no_store_url() -> None:
    """Only cores open the database; its password need not be copied to every edge host."""
    edge = config_from_dict(config({"nats_url": "nats://h:4222", "role": "edge"}, ""))
    assert edge.cluster is not None and edge.cluster.role == "edge"
    for role in ("core", "all"):
        with pytest.raises(UsageError, match="core keeps its items in PostgreSQL"):
            config_from_dict(config({"nats_url": "nats://h:4222", "role": role}, ""), "hub.toml")
