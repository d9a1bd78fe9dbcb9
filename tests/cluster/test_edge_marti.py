"""TAK's HTTP side on a cluster's edges (cluster/edge_marti.py, forward.py, core_http.py,
parts.py): edges and cores as their own `commonsky serve` processes on the machine's NATS and
a fresh PostgreSQL database. A TAK client calls the edge it streams to for data packages and
certificates; the core answers with the single process's apps; role "core" binds no marti or
enroll port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commonsky.bench.cluster import Client, Cluster, marker, until, until_async
from commonsky.bench.hubproc import OPERATOR, parse_metrics
from commonsky.revocation import revoke
from tests.cluster.edge_tak import HOST, client, refused_connection, tak_cluster
from tests.cluster.marti_core import basic, counts, issue_token
from tests.marti.helpers import client_cert, make_ca
from tests.marti.uploads import HEADERS, multipart, package, sha

UPLOAD = "/Marti/sync/missionupload"


def big_package(name: str, megabytes: float) -> bytes:
    """A data package of about `megabytes` MB (random bytes: they do not compress)."""
    return package(name, {"blob.bin": os.urandom(int(megabytes * 1_000_000))})


async def refusals(port: int, core: bool = False) -> dict[str, float]:
    """`commonsky_refusals_total` by reason, of the edge on `port` (or of the core behind it)."""
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as web:
        text = (await web.get("/core/metrics" if core else "/metrics",
                              headers={"Authorization": f"Bearer {OPERATOR}"})).text  # fmt: skip
    found = parse_metrics(text).get("commonsky_refusals_total", {})
    return {labels.split('"')[1]: value for labels, value in found.items() if '"' in labels}


async def test_a_package_through_edge_a_comes_byte_for_byte_through_edge_b(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    rus = client_cert(ca, "RUS", "rus-ops", tmp_path / "rus")
    ports = tak_cluster(cluster, ca)
    a, _ = await cluster.edge()
    b, _ = await cluster.edge()
    core = await cluster.core()
    at_a, at_b = ports.by_http[a.http], ports.by_http[b.http]
    data = big_package("MP-EDGE", 8)  # (8 MB: the body and the answer in several parts)
    async with client(at_a, ca, "marti", usa) as marti:
        up = await marti.post(f"{UPLOAD}?hash={sha(data)}&filename=edge.zip",
                              content=multipart(data, "edge.zip"), headers=HEADERS)  # fmt: skip
        assert up.status_code == 200, up.text
        # The content URL names where clients reach Marti (the edges' port), not the core.
        assert up.text == f"https://{ports.advertise}/Marti/sync/content?hash={sha(data)}"
    async with client(at_b, ca, "marti", usa) as marti:
        got = await marti.get(f"/Marti/sync/content?hash={sha(data)}")
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-length"] == str(len(data))
        head = await marti.head(f"/Marti/sync/content?hash={sha(data)}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        assert (await marti.get(f"/Marti/sync/missionquery?hash={sha(data)}")).status_code == 200
        version = await marti.get("/Marti/api/version")
        assert version.status_code == 200 and version.text.startswith("CommonSky ")
        # ATAK's server list, from the core's database through another edge.
        listed = (await marti.get("/Marti/sync/search?keywords=missionpackage")).json()
        assert [r["Hash"] for r in listed["results"]] == [sha(data)]
        groups = (await marti.get("/Marti/api/groups/all?useCache=true")).json()
        assert {g["name"] for g in groups["data"]} == {"USA"}
    async with client(at_b, ca, "marti", rus) as marti:  # (no agreement shares it with RUS)
        assert (await marti.get(f"/Marti/sync/content?hash={sha(data)}")).status_code == 404
        listed = (await marti.get("/Marti/sync/search")).json()
        assert listed == {"resultCount": 0, "results": []}
    # Role "core" binds none of its marti, enroll or tak-tls ports.
    for port in ports.by_http[core.http].values():
        assert await refused_connection(port), port


def _csr(party: str, user: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    names = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user),
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, party)])  # fmt: skip
    request = x509.CertificateSigningRequestBuilder().subject_name(names).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM), key


def _pem(body: str) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n" + body.encode() + b"\n-----END CERTIFICATE-----\n"


async def test_a_certificate_enrolled_through_an_edge_streams_on_it(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    ports = tak_cluster(cluster, ca)
    a, _ = await cluster.edge()
    b, tcp_b = await cluster.edge()
    core = await cluster.core()
    token = issue_token(core.config, "USA", "usa-new")
    request, key = _csr("USA", "usa-new")
    sign = "/Marti/api/tls/signClient/v2"
    async with client(ports.by_http[a.http], ca, "enroll") as enroll:
        made = await enroll.post(sign, content=request, headers=basic("usa-new", token))
        assert made.status_code == 200, made.text
    async with client(ports.by_http[b.http], ca, "enroll") as enroll:  # (spent: any edge)
        again = await enroll.post(sign, content=_csr("USA", "usa-new")[0],
                                  headers=basic("usa-new", token))  # fmt: skip
        assert again.status_code == 401 and "already used" in again.text
    folder = tmp_path / "enrolled"
    folder.mkdir()
    (folder / "cert.pem").write_bytes(_pem(made.json()["signedCert"]))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    watcher = await Client("USA", tcp_b["USA"]).connect()  # (USA's own clients see it)
    _, writer = await asyncio.open_connection(HOST, ports.by_http[a.http]["tak-tls"],
                                              ssl=context, server_hostname=HOST)  # fmt: skip
    writer.write(marker("enrolled-1", time.time()))
    await writer.drain()
    await until(lambda: watcher.got('uid="enrolled-1"') == 1, "the enrolled client's marker")
    writer.close()
    await watcher.close()


async def test_a_revoked_certificate_is_refused_at_the_edge(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    lost = client_cert(ca, "USA", "usa-lost", tmp_path / "lost")
    ports = tak_cluster(cluster, ca)
    a, _ = await cluster.edge()
    await cluster.core()
    at_a = ports.by_http[a.http]
    async with client(at_a, ca, "marti", lost) as marti:
        assert (await marti.get("/Marti/api/version")).status_code == 200
    revoke(ca, "usa-lost")
    async with client(at_a, ca, "marti", lost) as marti:
        r = await marti.get("/Marti/api/version")
        assert r.status_code == 403 and "revoked" in r.text
    assert (await refusals(a.http)).get("marti_certificate_revoked") == 1.0
    # The core never heard of it: the edge refused it.
    assert "marti_certificate_revoked" not in await refusals(a.http, core=True)


async def test_without_a_core_marti_and_enroll_answer_503_with_retry_after(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    ports = tak_cluster(cluster, ca)
    a, _ = await cluster.edge()
    at_a = ports.by_http[a.http]
    started = time.monotonic()
    async with client(at_a, ca, "marti", usa) as marti:
        r = await marti.get("/Marti/api/version")
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
        data = package("MP-NOCORE")
        r = await marti.post(f"{UPLOAD}?filename=n.zip", content=multipart(data, "n.zip"),
                             headers=HEADERS)  # fmt: skip
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
    async with client(at_a, ca, "enroll") as enroll:
        r = await enroll.get("/Marti/api/tls/config", headers=basic("u", "t"))
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
    assert time.monotonic() - started < 10.0  # (at once: NATS says no core listens)


async def test_an_oversize_body_is_413_at_the_edge_and_nothing_is_stored(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    ports = tak_cluster(cluster, ca, server="limit_file_bytes = 3000000\n")
    a, _ = await cluster.edge()
    await cluster.core()
    big = multipart(big_package("MP-BIG", 4), "big.zip")

    async def chunked() -> AsyncIterator[bytes]:
        for at in range(0, len(big), 65536):
            yield big[at : at + 65536]

    async with client(ports.by_http[a.http], ca, "marti", usa) as marti:
        r = await marti.post(f"{UPLOAD}?filename=big.zip", content=big, headers=HEADERS)
        assert r.status_code == 413 and "limit_file_bytes=3000000" in r.text, r.text
        # No Content-Length (chunked): refused once past the limit, the core told to drop it.
        r = await marti.post(f"{UPLOAD}?filename=big.zip", content=chunked(), headers=HEADERS)
        assert r.status_code == 413, r.text
        await until_async(lambda: _refused(a.http, "upload_aborted"), "the core drops the body")
        small = package("MP-SMALL")
        r = await marti.post(f"{UPLOAD}?filename=s.zip", content=multipart(small, "s.zip"),
                             headers=HEADERS)  # fmt: skip
        assert r.status_code == 200, r.text
    assert counts(cluster.store_url)["commonsky_file"] == 1  # (the small one only)
    assert counts(cluster.store_url)["commonsky_file_blob"] == 1


async def _refused(http: int, reason: str) -> bool:
    return (await refusals(http, core=True)).get(reason, 0.0) >= 1.0


def _request(path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {length}\r\n"
            f"Content-Type: {HEADERS['Content-Type']}\r\n{extra}\r\n").encode()  # fmt: skip


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _tls(port: int, ca: Path, cert: tuple[Path, Path]) -> Stream:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    context.load_cert_chain(*cert)
    return await asyncio.open_connection(HOST, port, ssl=context, server_hostname=HOST)


async def test_a_core_killed_mid_upload_leaves_no_half_file_and_the_standby_serves(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    ports = tak_cluster(cluster, ca)
    a, _ = await cluster.edge()
    b, _ = await cluster.edge()
    first = await cluster.core()
    second = await cluster.core(wait=False)
    data = big_package("MP-KILL", 6)
    body = multipart(data, "kill.zip")
    spool = tmp_path / f"data-core-{first.http}" / "tmp"
    reader, writer = await _tls(ports.by_http[a.http]["marti"], ca, usa)
    writer.write(_request(f"{UPLOAD}?hash={sha(data)}&filename=kill.zip", len(body)))
    writer.write(body[:3_000_000])
    await writer.drain()

    def spooled() -> bool:  # (the core holds part of the body in its temporary file)
        return any(p.stat().st_size >= 1_000_000 for p in spool.glob("*")) if spool.exists() \
            else False  # fmt: skip

    await until(spooled, "the first core has taken part of the body")
    first.kill()  # kill -9 mid-upload
    writer.write(body[3_000_000:])
    with contextlib.suppress(ConnectionError):  # (the edge may answer before taking it all)
        await writer.drain()
    answer = await reader.read(4096)
    assert answer.startswith(b"HTTP/1.1 503") and b"retry-after" in answer.lower(), answer[:300]
    writer.close()
    await second.wait_log(r"cluster core \S+ serving")
    assert counts(cluster.store_url)["commonsky_file"] == 0
    async with client(ports.by_http[b.http], ca, "marti", usa) as marti:
        assert (await marti.get(f"/Marti/sync/missionquery?hash={sha(data)}")).status_code == 404
        r = await marti.post(f"{UPLOAD}?hash={sha(data)}&filename=kill.zip", content=body,
                             headers=HEADERS)  # fmt: skip
        assert r.status_code == 200, r.text
    async with client(ports.by_http[a.http], ca, "marti", usa) as marti:
        got = await marti.get(f"/Marti/sync/content?hash={sha(data)}")
        assert got.status_code == 200 and got.content == data


async def test_hostile_input_gets_a_clear_4xx_and_harms_nothing_stored(
    tmp_path: Path, cluster: Cluster
) -> None:
    ca = make_ca(tmp_path, HOST)
    usa = client_cert(ca, "USA", "usa-ops", tmp_path / "usa")
    ports = tak_cluster(cluster, ca)
    a, _ = await cluster.edge()
    await cluster.core()
    at_a = ports.by_http[a.http]
    good = big_package("MP-GOOD", 2)
    async with client(at_a, ca, "marti", usa) as marti:
        r = await marti.post(f"{UPLOAD}?filename=g.zip", content=multipart(good, "g.zip"),
                             headers=HEADERS)  # fmt: skip
        assert r.status_code == 200, r.text
        before = counts(cluster.store_url)
        other = big_package("MP-BAD", 2)
        cases = [
            ({"Content-Type": "multipart/form-data; boundary=NOTTHEONE"},
             multipart(other, "x.zip"), 400),  # (no part under that boundary)
            (HEADERS, multipart(other, "x.zip", close=False), 400),  # truncated
            ({"Content-Type": "multipart/form-data"}, multipart(other, "x.zip"), 400),
            ({"Content-Type": "application/zip"}, other, 415),
            (HEADERS, multipart(other, "x.zip"), 400),  # (hash= below is another's)
        ]  # fmt: skip
        for n, (headers, body, status) in enumerate(cases):
            query = f"hash={sha(good)}&" if n == len(cases) - 1 else ""
            r = await marti.post(f"{UPLOAD}?{query}filename=x.zip", content=body, headers=headers)
            assert r.status_code == status and r.text.strip(), (n, r.status_code, r.text)
    # A body cut off by its client (Content-Length says more): the core is told, keeps nothing.
    reader, writer = await _tls(at_a["marti"], ca, usa)
    body = multipart(other, "cut.zip")
    writer.write(_request(f"{UPLOAD}?filename=cut.zip", len(body) + 500_000) + body)
    await writer.drain()
    writer.close()
    await until_async(lambda: _refused(a.http, "upload_aborted"), "the core drops the cut body")
    # Bad headers: a Content-Length that is no number (the edge's HTTP parser), bad Basic.
    reader, writer = await _tls(at_a["marti"], ca, usa)
    writer.write(_request(UPLOAD, 10).replace(b"Content-Length: 10", b"Content-Length: x1"))
    await writer.drain()
    assert (await reader.read(4096)).startswith(b"HTTP/1.1 400")
    writer.close()
    async with client(at_a, ca, "enroll") as enroll:
        r = await enroll.get("/Marti/api/tls/config", headers={"Authorization": "Basic !!!"})
        assert r.status_code == 401 and "base64" in r.text
        r = await enroll.get("/Marti/api/tls/config")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert counts(cluster.store_url) == before
    async with client(at_a, ca, "marti", usa) as marti:
        got = await marti.get(f"/Marti/sync/content?hash={sha(good)}")
        assert got.status_code == 200 and got.content == good
