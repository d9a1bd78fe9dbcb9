"""`[cluster]` (../CONTRACT.md, "Cluster"): a good table loads with its defaults; each bad one
gives one line naming the key and its place in the document."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from commonsky.cluster.config import shown
from commonsky.cluster.run import unadvertised
from commonsky.config import config_from_dict
from commonsky.errors import UsageError
from commonsky.pki import init_ca

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


@pytest.mark.parametrize(
    ("cluster", "named"),
    [
        ({"edge": "a.b"}, "edge = 'a.b' must be 1-32 letters, digits, - or _ ($.cluster.edge)"),
        ({"nats_ca": "missing.pem"}, "nats_ca = 'missing.pem': no such file ($.cluster.nats_ca)"),
        ({"nats_ca": "not.pem"}, "not a readable PEM CA certificate"),
        (
            {"nats_cert": "not.pem"},
            "nats_cert and nats_key go together: set nats_key too ($.cluster.nats_key)",
        ),
        ({"nats_key": "not.pem"}, "set nats_cert too ($.cluster.nats_cert)"),
        ({"nats_cert": "not.pem", "nats_key": "not.pem"}, "not a PEM certificate and its key"),
        ({"nats_url": "http://u:Secret-1@h"}, "'http://u:***@h' is not nats://HOST:PORT"),
        ({"nats_url": ["nats://u:Secret-1@h"]}, "nats_url = ['nats://u:***@h']: expected str"),
    ],
)
def test_bad_nats_link_keys_are_one_line_without_the_password(
    cluster: dict[str, Any], named: str, tmp_path: Path
) -> None:
    (tmp_path / "not.pem").write_text("not a certificate\n")
    table = {"nats_url": "tls://u:Secret-1@h:4222", "role": "edge", **cluster}
    with pytest.raises(UsageError) as caught:
        config_from_dict(config(table), "hub.toml", base=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("hub.toml: [cluster]"), message
    assert named in message, message
    assert "Secret-1" not in message


def test_tls_files_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    table = {"nats_url": "tls://h:4222", "role": "edge", "edge": "east-1", "nats_ca": "ca/ca.pem"}
    cluster = config_from_dict(config(table), "hub.toml", base=tmp_path).cluster
    assert cluster is not None and cluster.nats_ca == str(tmp_path / "ca" / "ca.pem")
    assert cluster.tls() is not None and cluster.edge_name == "east-1"


def test_the_tls_context_is_built_once_for_the_check_and_every_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config check builds the context (its files' errors are one line at load); each
    NATS connection of the process (an edge's, a core's, the lease keeper's) reuses it."""
    init_ca(tmp_path / "ca")
    built: list[ssl.SSLContext] = []

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(make(*args, **kwargs))
        return built[-1]

    make = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", counted)
    table = {"nats_url": "tls://h:4222", "role": "edge", "edge": "east-1", "nats_ca": "ca/ca.pem"}
    cluster = config_from_dict(config(table), "hub.toml", base=tmp_path).cluster
    assert cluster is not None and len(built) == 1
    assert cluster.tls() is cluster.tls() is built[0] and len(built) == 1


def test_the_url_is_shown_without_its_secret() -> None:
    assert shown("nats://edge-a:p@ss/w:rd@h:4222") == "nats://edge-a:***@h:4222"
    assert shown("tls://s3cret-token@h") == "tls://***@h"
    assert shown("nats://h:4222") == "nats://h:4222"


@pytest.mark.parametrize(
    ("role", "advertise", "lines"),
    [("core", None, 1), ("core", "tak.example.org:8443", 0), ("all", None, 0), ("edge", None, 0)],
)
def test_a_core_warns_of_a_marti_listener_it_cannot_advertise(
    tmp_path: Path, role: str, advertise: str | None, lines: int
) -> None:
    """A role-"core" process binds no Marti port: without `advertise`, the file URLs it writes
    (b-f-t-r offers, upload answers) would name its own host. One line per such listener."""
    init_ca(tmp_path / "ca")
    marti: dict[str, Any] = {"kind": "marti", "bind": "0.0.0.0:8443", "ca": "ca"}
    if advertise:
        marti["advertise"] = advertise
    data = config({"nats_url": "nats://h:4222", "role": role})
    data["listener"] = [{"kind": "tak-tcp", "bind": "127.0.0.1:8087", "party": "USA"}, marti]
    found = unadvertised(config_from_dict(data, "hub.toml", base=tmp_path))
    assert len(found) == lines
    if lines:
        assert found[0].startswith("[[listener]] #2 (marti, port 8443) has no advertise")
        assert found[0].endswith("($.listener[1].advertise)") and "\n" not in found[0]
