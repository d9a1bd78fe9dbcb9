"""Two CommonSky hubs linked over TAK Federation v2 on loopback (real TLS, real TAK clients).

USA's hub holds USA and RUS; JPN's hub holds JPN. USA shares tracks and markers with JPN in
full; RUS shares nothing with JPN. Barriers, not sleeps: absence is checked by sending an
entitled item after the one that must not arrive and waiting for that one.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from commonsky.errors import UsageError
from commonsky.federation.listen import same_named_cas
from commonsky.pki import init_ca

from .hubs import cot, hub, hub_config

SHARE = [
    {"name": "US-JP", "from": "USA", "to": ["JPN"], "categories": ["track", "marker"]},
]


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (polling state in a test)
            await asyncio.sleep(0.02)


def configs(tmp_path: Path, jpn_port: int | None = None, server=None):  # type: ignore[no-untyped-def]
    jpn = hub_config(
        tmp_path,
        "jpn",
        ["JPN"],
        [{"name": "usa", "parties": ["USA", "RUS"], "peer": "usa"}],
        [],
        server,
    )
    usa = hub_config(
        tmp_path,
        "usa",
        ["USA", "RUS"],
        [
            {
                "name": "jpn",
                "parties": ["JPN"],
                "peer": "jpn",
                "connect": f"127.0.0.1:{jpn_port}" if jpn_port else None,
            }
        ],
        SHARE,
        server,
    )
    return usa, jpn


async def test_items_cross_only_under_agreements_and_deletes_follow(tmp_path: Path) -> None:
    _, jpn_config = configs(tmp_path)
    async with hub(jpn_config) as jpn:
        usa_config, _ = configs(tmp_path, jpn.server.port("federation"))
        async with hub(usa_config) as usa:
            link = usa.server.federation.links["jpn"]  # type: ignore[union-attr]
            await _until(lambda: link.up)
            j = await jpn.connect("JPN")
            u = await usa.connect("USA")
            r = await usa.connect("RUS")
            r.send(cot("rus-1"))  # RUS has no agreement with JPN: never crosses
            u.send(cot("usa-1"))
            got = await j.wait_for(lambda e: e["uid"] == "USA::usa-1", 10)
            assert got["callsign"] == "EAGLE" and got["lat"] == 36.0
            assert "track" in got["detail"] and "200.5" in got["detail"]
            assert not [e for e in j.items() if "rus" in str(e["uid"])]
            # the map and the API say which hub it came from
            import httpx

            from ..conftest import OPERATOR_TOKEN, token_of

            headers = {"Authorization": f"Bearer {token_of('JPN')}"}
            async with httpx.AsyncClient(base_url=jpn.http, headers=headers) as api:
                items = (await api.get("/api/items", params={"category": "track"})).json()
            assert [(i["uid"], i["via"]) for i in items] == [("USA::usa-1", "usa")]
            op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            async with httpx.AsyncClient(base_url=usa.http, headers=op) as api:
                metrics = (await api.get("/metrics")).text
            assert 'commonsky_federation_link_up{link="jpn"} 1.0' in metrics
            assert 'commonsky_federation_items_out_total{link="jpn"}' in metrics
            # durable marker, then its delete
            u.send(cot("m-1", "b-m-p-s-m", detail='<contact callsign="SPOT"/><remarks>x</remarks>'))
            await j.wait_for(lambda e: e["uid"] == "USA::m-1", 10)
            u.send(
                cot("del-1", "t-x-d-d", detail='<link uid="m-1" type="b-m-p-s-m" relation="p-p"/>')
            )
            gone = await j.wait_for(lambda e: e["type"] == "t-x-d-d", 10)
            assert 'uid="USA::m-1"' in gone["detail"]
            assert ("USA", "m-1") not in jpn.hub.durable


async def test_a_link_speaks_only_for_its_parties(tmp_path: Path) -> None:
    """JPN's hub claims USA's party in what it sends: USA's hub refuses and logs it."""
    _, jpn_config = configs(tmp_path)
    async with hub(jpn_config) as jpn:
        usa_config, _ = configs(tmp_path, jpn.server.port("federation"))
        async with hub(usa_config) as usa:
            fed_usa = usa.server.federation
            fed_jpn = jpn.server.federation
            assert fed_usa is not None and fed_jpn is not None
            await _until(lambda: fed_jpn.links["usa"].up and fed_usa.links["jpn"].up)
            from commonsky.federation.mapping import Envelope, federated
            from commonsky.protocol.cot import parse_event

            spoof = federated(parse_event(cot("fake")), Envelope(party="USA", to=("USA",)))
            fed_jpn.links["usa"].send(spoof)
            honest = federated(parse_event(cot("real")), Envelope(party="JPN", to=("USA",)))
            fed_jpn.links["usa"].send(honest)
            await _until(lambda: ("JPN", "real") in usa.hub.live)
            assert fed_usa.refused.get(("jpn", "federate_party")) == 1
            assert ("USA", "fake") not in usa.hub.live


async def test_hubs_whose_cas_were_made_as_the_readme_says_link(tmp_path: Path) -> None:
    """`commonsky ca init` on each hub, no name given: the two CAs shared one name, and TLS,
    which looks an issuer up by name, checked each hub's certificate against the other
    hub's own CA (BAD_SIGNATURE) on every attempt — the link never came up."""
    for name in ("usa", "jpn"):
        init_ca(tmp_path / f"{name}-ca")  # (hubs.ca_dir keeps a CA that is there)
    _, jpn_config = configs(tmp_path)
    async with hub(jpn_config) as jpn:
        usa_config, _ = configs(tmp_path, jpn.server.port("federation"))
        async with hub(usa_config) as usa:
            fed_usa, fed_jpn = usa.server.federation, jpn.server.federation
            assert fed_usa is not None and fed_jpn is not None
            await _until(lambda: fed_jpn.links["usa"].up and fed_usa.links["jpn"].up)


def test_cas_of_one_name_are_told(tmp_path: Path) -> None:
    """CAs made before each had a name of its own: the listener says which two collide."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    def old_ca() -> bytes:  # as `ca init` named every CA
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CommonSky"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "CommonSky hub CA")])  # fmt: skip
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(datetime.datetime(2026, 1, 1))
            .not_valid_after(datetime.datetime(2036, 1, 1))
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return cert.public_bytes(Encoding.PEM)

    ours, theirs = old_ca(), old_ca()
    (problem,) = same_named_cas([("ours", ours), ("peer a", ours), ("peer b", theirs)])
    assert problem.startswith("peer b: its CA is named 'CN=CommonSky hub CA,O=CommonSky' like")
    assert "of ours, with another key" in problem and "`commonsky ca init`" in problem
    made = []
    for name in ("a", "b"):
        init_ca(tmp_path / name)
        made.append((name, (tmp_path / name / "ca.pem").read_bytes()))
    assert same_named_cas(made) == []  # each CA `ca init` makes now has a name of its own


async def test_durable_items_resume_after_the_receiver_restarts(tmp_path: Path) -> None:
    """Markers sent while JPN's hub is down arrive once it is back, each exactly once."""
    _, jpn_config = configs(tmp_path)
    async with hub(jpn_config) as jpn:
        port = jpn.server.port("federation")
        usa_config, _ = configs(tmp_path, port)
        async with hub(usa_config) as usa:
            link = usa.server.federation.links["jpn"]  # type: ignore[union-attr]
            await _until(lambda: link.up)
            u = await usa.connect("USA")
            u.send(cot("m-0", "b-m-p-s-m", detail="<remarks>before</remarks>"))
            j = await jpn.connect("JPN")
            await j.wait_for(lambda e: e["uid"] == "USA::m-0", 10)
    # (USA's hub went down with it; now USA's hub alone, then JPN's again on the same port)
    jpn_config2 = hub_config(
        tmp_path,
        "jpn",
        ["JPN"],
        [{"name": "usa", "parties": ["USA", "RUS"], "peer": "usa"}],
        [],
    )
    usa_config, _ = configs(tmp_path, port)
    async with hub(usa_config) as usa:
        u = await usa.connect("USA")
        for i in range(1, 6):
            u.send(cot(f"m-{i}", "b-m-p-s-m", detail=f"<remarks>during {i}</remarks>"))
        await _until(lambda: len([k for k in usa.hub.durable if k[0] == "USA"]) == 6)
        jpn_config2 = _with_port(jpn_config2, port)
        async with hub(jpn_config2) as jpn:
            j = await jpn.connect("JPN")
            for i in range(1, 6):
                await j.wait_for(lambda e, i=i: e["uid"] == f"USA::m-{i}", 15)
            stored = [i for i in jpn.hub.store.since(0) if i.party == "USA"]
            uids = [i.uid for i in stored]
            assert sorted(uids) == [f"m-{i}" for i in range(6)]  # each exactly once


def _with_port(config, port: int):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    listeners = tuple(
        replace(lc, port=port) if lc.kind == "federation" else lc for lc in config.listeners
    )
    return replace(config, listeners=listeners)


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    from commonsky.config import config_from_dict

    base = {
        "server": {"data_dir": str(tmp_path / "d")},
        "party": [{"id": "USA"}, {"id": "JPN", "federate": "jpn"}],
        "federate": [{"name": "jpn", "parties": ["JPN"]}],
    }
    with pytest.raises(UsageError, match=r"needs ca = .* and/or fingerprint"):
        config_from_dict(base, "t.toml")
    base["federate"] = [{"name": "jpn", "parties": ["XXX"], "fingerprint": "sha256:" + "a" * 64}]
    with pytest.raises(UsageError, match="parties contains 'XXX', not a declared"):
        config_from_dict(base, "t.toml")
    base["federate"] = [{"name": "jpn", "parties": ["JPN"], "ca": "nope.pem"}]
    with pytest.raises(UsageError, match=r"ca = 'nope\.pem': no such file"):
        config_from_dict(base, "t.toml")
    base["federate"] = [{"name": "jpn", "parties": ["JPN"], "fingerprint": "sha256:12"}]
    with pytest.raises(UsageError, match="is not sha256: and 64 hex digits"):
        config_from_dict(base, "t.toml")
    base["federate"] = [{"name": "jpn", "parties": ["JPN"], "fingerprint": "sha256:" + "a" * 64}]
    with pytest.raises(UsageError, match='needs a \\[\\[listener\\]\\] kind = "federation"'):
        config_from_dict(base, "t.toml")
    base["party"] = [{"id": "USA"}, {"id": "JPN"}]
    with pytest.raises(UsageError, match="declare that \\[\\[party\\]\\] with federate"):
        config_from_dict(base, "t.toml")
    pin = "sha256:" + "a" * 64
    base["party"] = [{"id": "USA"}, {"id": "JPN", "federate": "jpn"}, {"id": "KOR"}]
    base["federate"] = [{"name": "jpn", "parties": ["JPN"], "relay": ["XXX"], "fingerprint": pin}]
    with pytest.raises(UsageError, match=r"relay contains 'XXX', not a declared .*relay\[0\]"):
        config_from_dict(base, "t.toml")
    base["federate"] = [{"name": "jpn", "parties": ["JPN"], "relay": ["JPN"], "fingerprint": pin}]
    with pytest.raises(UsageError, match="'JPN' is already spoken for"):
        config_from_dict(base, "t.toml")
    base["federate"] = [{"name": "jpn", "parties": ["JPN"], "relay": ["KOR"], "fingerprint": pin}]
    with pytest.raises(UsageError, match="speaks for 'KOR', so declare that"):
        config_from_dict(base, "t.toml")


async def test_signed_receipts_prove_across_ledgers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """JPN's hub answers each durable item with a receipt it signs; both ledgers record it;
    the two exports alone prove what USA's hub sent and JPN's acknowledged — and a receiver
    export that was rewritten afterwards does not."""
    from commonsky.federation.receipts import KIND_ACK, KIND_RECEIPT, cross_check
    from commonsky.ledger import export as ledger_export

    from ..ledger.test_export import run as cli

    _, jpn_config = configs(tmp_path)
    async with hub(jpn_config) as jpn:
        usa_config, _ = configs(tmp_path, jpn.server.port("federation"))
        async with hub(usa_config) as usa:
            fed = usa.server.federation
            assert fed is not None
            await _until(lambda: fed.links["jpn"].up)
            u = await usa.connect("USA")
            for i in range(5):
                u.send(cot(f"r-{i}", "b-m-p-s-m", detail=f"<remarks>{i}</remarks>"))
            usa_ledger = usa.server.services.recorder.ledger  # type: ignore[union-attr]
            jpn_ledger = jpn.server.services.recorder.ledger  # type: ignore[union-attr]

            def receipted() -> int:
                entries = usa_ledger.entries()
                return sum(len(e.payload["entries"]) for e in entries if e.kind == KIND_RECEIPT)

            await _until(lambda: receipted() == 5)
            assert any(e.kind == KIND_ACK for e in jpn_ledger.entries())
            a, b = tmp_path / "usa.jsonl", tmp_path / "jpn.jsonl"
            ledger_export.export(usa_ledger, a)
            ledger_export.export(jpn_ledger, b)
    proven, problems = cross_check(a, b)
    assert problems == []
    assert sorted(p.uid for p in proven) == [f"r-{i}" for i in range(5)]
    code, text = cli(["ledger", "verify", str(a), "--peer", str(b)], capsys)
    assert code == 0 and "5 durable items sent by the first hub and acknowledged" in text
    # JPN's hub later rewrites what it received (a different remark for r-0) and re-signs:
    # its own export still verifies by itself, but no longer matches what it signed then.
    forged = tmp_path / "jpn-forged.jsonl"
    _rewrite_receiver(b, forged, jpn_config.data_dir)
    code, text = cli(["ledger", "verify", str(a), "--peer", str(forged)], capsys)
    assert code == 1 and "not the one it signed" in text


def _rewrite_receiver(src: Path, out: Path, data_dir: Path) -> None:
    """Rebuild the receiver's ledger with one item entry changed, signed by its own key."""
    import json

    from commonsky.ledger.entry import EntryFields, decode_entry
    from commonsky.ledger.export import base64_leaf, export
    from commonsky.ledger.log import Ledger

    fresh = out.parent / "forged-ledger"
    (fresh / "keys").mkdir(parents=True)
    key = data_dir / "keys" / "hub-ed25519.pem"
    (fresh / "keys" / key.name).write_bytes(key.read_bytes())  # the receiver's own key
    with Ledger.open(fresh) as ledger:
        for raw in src.read_bytes().splitlines():
            line = json.loads(raw)
            if "leaf" not in line:
                continue
            entry = decode_entry(base64_leaf(line["leaf"]))
            payload = dict(entry.payload)
            if entry.kind == "item" and payload.get("uid") == "r-0":
                payload["detail"] = "<remarks>something else</remarks>"
            ledger.append(
                EntryFields(
                    kind=entry.kind,
                    time_us=entry.time_us,
                    originator=entry.originator,
                    audience=list(entry.audience),
                    payload=payload,
                    signature=entry.signature,
                )
            )
        export(ledger, out)


async def test_signed_heads_are_exchanged_periodically(tmp_path: Path) -> None:
    """With nothing durable flowing, each hub still gives its peer its signed head every
    `timeout_checkpoint_s` (with a consistency proof from the last): both ledgers record the
    other's heads, which check against the other's export."""
    from commonsky.federation.receipts import KIND_RECEIPT, cross_check
    from commonsky.ledger import export as ledger_export

    fast = {"timeout_checkpoint_s": 0.3}
    _, jpn_config = configs(tmp_path, server=fast)
    async with hub(jpn_config) as jpn:
        usa_config, _ = configs(tmp_path, jpn.server.port("federation"), fast)
        async with hub(usa_config) as usa:
            ledgers = {
                "usa": usa.server.services.recorder.ledger,  # type: ignore[union-attr]
                "jpn": jpn.server.services.recorder.ledger,  # type: ignore[union-attr]
            }

            def heads(name: str) -> int:
                return sum(1 for e in ledgers[name].entries() if e.kind == KIND_RECEIPT)

            await _until(lambda: heads("usa") >= 3 and heads("jpn") >= 3)
            fed = usa.server.federation
            assert fed is not None and fed.acks.forks == {}
            paths = {name: tmp_path / f"{name}.jsonl" for name in ledgers}
            for name, ledger in ledgers.items():
                ledger_export.export(ledger, paths[name])
    for a, b in (("usa", "jpn"), ("jpn", "usa")):
        proven, problems = cross_check(paths[a], paths[b])
        assert problems == [] and proven == []  # heads only: nothing durable was sent
