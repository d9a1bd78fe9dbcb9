"""Federation links against a TAK-Server-shaped peer (takpeer.py), both directions, real
mutual TLS on loopback: connect, health checks, events both ways with details intact, a
contact delete, a ROL message ignored without dropping the link, reconnect."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from commonsky.federation import federation_pb2 as pb
from commonsky.federation.dial import Dialer
from commonsky.federation.link import FederateConfig, HubIdentity, Link
from commonsky.federation.listen import Listener
from commonsky.federation.mapping import federated, receive
from commonsky.federation.peers import fingerprint
from commonsky.pki import init_ca
from commonsky.protocol.cot import detail_tree, parse_event

from .takpeer import TakClient, TakServer

T = "2026-11-30T15:00:00.000Z"
STALE = "2099-11-30T15:05:00.000Z"
DETAIL = (
    '<contact callsign="VIPER 1"/><__group name="Cyan" role="Team Lead"/>'
    '<track speed="120.5" course="45.25"/><remarks source="x">over the ridge</remarks>'
)


def event(
    uid: str = "TAK-1", cot_type: str = "a-f-A-M-F", detail: str = DETAIL
) -> pb.FederatedEvent:
    data = (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-g" time="{T}" start="{T}"'
        f' stale="{STALE}"><point lat="37.5" lon="127.0" hae="900.0" ce="10.0" le="10.0"/>'
        f"<detail>{detail}</detail></event>"
    ).encode()
    return federated(parse_event(data))


def same_detail(a: str, b: str) -> bool:
    def canon(d: str) -> list[bytes]:
        from lxml import etree

        return sorted(etree.tostring(c, method="c14n") for c in detail_tree(d))

    return canon(a) == canon(b)


@dataclass
class Recorder:
    """A stand-in for the hub side: records what arrives, counts sessions."""

    got: asyncio.Queue[pb.FederatedEvent] = field(default_factory=asyncio.Queue)
    opened_count: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def opened_(self, link: Link) -> None:
        self.opened_count += 1
        self.opened.set()

    def received(self, link: Link, message: pb.FederatedEvent) -> None:
        self.got.put_nowait(message)


class _Endpoint:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def opened(self, link: Link) -> None:
        self.rec.opened_(link)

    def refill(self, link: Link) -> list[pb.FederatedEvent]:
        return []

    def received(self, link: Link, message: pb.FederatedEvent) -> None:
        self.rec.received(link, message)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    dirs = {"hub": tmp_path / "hub-ca", "tak": tmp_path / "tak-ca"}
    for name, folder in dirs.items():
        init_ca(folder, name=f"{name} CA")
    return dirs


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (polling our own state in a test)
            await asyncio.sleep(0.02)


async def test_tak_client_dials_our_listener(pki: dict[str, Path]) -> None:
    rec = Recorder()
    link = Link(FederateConfig("tak", ("TAK",), ca=pki["tak"] / "ca.pem"), _Endpoint(rec))
    identity = HubIdentity.from_ca_dir(pki["hub"], "hub-1", "CommonSky KOR")
    listener = Listener(identity, {"tak": link}, "127.0.0.1", 0)
    port = await listener.start()
    client = TakClient(f"127.0.0.1:{port}", pki["tak"], (pki["hub"] / "ca.pem").read_bytes())
    try:
        await client.connect()
        await asyncio.wait_for(rec.opened.wait(), 10)
        await asyncio.wait_for(client.rol_open.wait(), 10)
        assert pb.ServerHealth.SERVING in client.health
        assert not link.peer_is_commonsky  # a TAK Server's identity says nothing of ours

        # TAK -> us, details intact
        client.send(event())
        got = receive(await asyncio.wait_for(rec.got.get(), 10)).event
        sent = receive(event()).event
        assert got is not None and sent is not None
        assert (got.uid, got.type, got.callsign, got.speed) == (
            "TAK-1",
            "a-f-A-M-F",
            "VIPER 1",
            120.5,
        )
        assert same_detail(got.detail, sent.detail)

        # us -> TAK
        assert link.send(event("CS-9", detail='<remarks>from us</remarks><status battery="77"/>'))
        down = await client.next_event()
        assert down.event.uid == "CS-9" and down.event.battery == 77
        assert "from us" in down.event.other

        # a contact delete, then a ROL message: ignored, the link stays (barrier: an event
        # sent after the ROL arrives)
        client.send(event("TAK-1", "t-x-d-d", '<link uid="TAK-1" type="a-f-A-M-F"/>'))
        deleted = receive(await asyncio.wait_for(rec.got.get(), 10))
        assert deleted.delete is not None and deleted.delete.uid == "TAK-1"
        client.send_rol("create package foo")
        client.send(event("TAK-2"))
        after = receive(await asyncio.wait_for(rec.got.get(), 10)).event
        assert after is not None and after.uid == "TAK-2"
        await _until(lambda: link.rol_ignored == 1)
        assert link.up

        # reconnect
        await client.close()
        await _until(lambda: not link.up)
        await client.connect()
        await _until(lambda: link.up)
        assert rec.opened_count == 2
        client.send(event("TAK-3"))
        again = receive(await asyncio.wait_for(rec.got.get(), 10)).event
        assert again is not None and again.uid == "TAK-3"
    finally:
        await client.close()
        await listener.stop()


async def test_a_stranger_is_refused(pki: dict[str, Path], tmp_path: Path) -> None:
    init_ca(tmp_path / "other", name="stranger")
    rec = Recorder()
    link = Link(FederateConfig("tak", ("TAK",), ca=pki["tak"] / "ca.pem"), _Endpoint(rec))
    identity = HubIdentity.from_ca_dir(pki["hub"], "hub-1", "KOR")
    listener = Listener(identity, {"tak": link}, "127.0.0.1", 0)
    port = await listener.start()
    # signed by our own CA (trusted by TLS) but configured for no federate
    client = TakClient(f"127.0.0.1:{port}", pki["hub"], (pki["hub"] / "ca.pem").read_bytes())
    try:
        await client.connect()
        client.send(event())
        await _until(lambda: all(t.done() for t in client.tasks[:2]))
        assert rec.got.empty() and not link.up
    finally:
        await client.close()
        await listener.stop()


async def test_a_stranger_calling_again_and_again_is_a_few_lines(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Each refused call was a WARNING line: a certificate our CA signed (any TAK user's)
    calling HealthCheck in a loop filled the operator's log, line by line."""
    import grpc

    from commonsky.federation import federation_pb2_grpc as rpc

    caplog.set_level(logging.WARNING, logger="commonsky.federation")
    link = Link(FederateConfig("tak", ("TAK",), ca=pki["tak"] / "ca.pem"), _Endpoint(Recorder()))
    identity = HubIdentity.from_ca_dir(pki["hub"], "hub-1", "KOR")
    listener = Listener(identity, {"tak": link}, "127.0.0.1", 0)
    port = await listener.start()
    creds = grpc.ssl_channel_credentials(
        (pki["hub"] / "ca.pem").read_bytes(),
        (pki["hub"] / "server-key.pem").read_bytes(),
        (pki["hub"] / "server.pem").read_bytes(),
    )
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            stub = rpc.FederatedChannelStub(channel)  # type: ignore[no-untyped-call]
            for _ in range(30):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.HealthCheck(pb.ClientHealth(), timeout=5)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await listener.stop()
    lines = [r.getMessage() for r in caplog.records if "matches no [[federate]]" in r.getMessage()]
    assert 1 <= len(lines) <= 5, lines
    assert "CN=hub" in lines[0]


async def test_get_identity_answers_only_a_federate(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """getIdentity answered any caller TLS let in (any certificate our CA signed, any TAK
    user's): it is refused like every other call, in the same rate-limited line, and still
    answers the federate."""
    import grpc

    from commonsky.federation import federation_pb2_grpc as rpc

    caplog.set_level(logging.WARNING, logger="commonsky.federation")
    link = Link(FederateConfig("tak", ("TAK",), ca=pki["tak"] / "ca.pem"), _Endpoint(Recorder()))
    identity = HubIdentity.from_ca_dir(pki["hub"], "hub-1", "KOR")
    listener = Listener(identity, {"tak": link}, "127.0.0.1", 0)
    port = await listener.start()

    def creds(ca_dir: Path) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            (pki["hub"] / "ca.pem").read_bytes(),
            (ca_dir / "server-key.pem").read_bytes(),
            (ca_dir / "server.pem").read_bytes(),
        )

    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds(pki["hub"])) as channel:
            stub = rpc.FederatedChannelStub(channel)  # type: ignore[no-untyped-call]
            for _ in range(30):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.getIdentity(pb.Empty(), timeout=5)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert refused.value.details() == "not a configured federate"
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds(pki["tak"])) as channel:
            stub = rpc.FederatedChannelStub(channel)  # type: ignore[no-untyped-call]
            answer = await stub.getIdentity(pb.Empty(), timeout=5)
            assert answer.uid == "hub-1" and answer.name == "KOR"
    finally:
        await listener.stop()
    lines = [r.getMessage() for r in caplog.records if "matches no [[federate]]" in r.getMessage()]
    assert 1 <= len(lines) <= 5, lines


SERVICE = pb.DESCRIPTOR.services_by_name["FederatedChannel"]
NOT_IMPLEMENTED = {"BinaryMessageStream", "SendOneBlob", "GetAuthTokenByX509", "Getx509Identity"}


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
async def test_every_call_refuses_a_stranger_alike(pki: dict[str, Path], method: str) -> None:
    """Every method of the service, those not implemented too: a caller TLS lets in whose
    certificate is no federate's gets one refusal, PERMISSION_DENIED (getIdentity told it
    who we are; the unimplemented ones told it what we serve); a federate gets the answer,
    or UNIMPLEMENTED."""
    import grpc
    from google.protobuf import symbol_database

    m = SERVICE.methods_by_name[method]
    request = symbol_database.Default().GetSymbol(m.input_type.full_name)()
    response = symbol_database.Default().GetSymbol(m.output_type.full_name)
    path = f"/{SERVICE.full_name}/{method}"
    link = Link(FederateConfig("tak", ("TAK",), ca=pki["tak"] / "ca.pem"), _Endpoint(Recorder()))
    identity = HubIdentity.from_ca_dir(pki["hub"], "hub-1", "KOR")
    listener = Listener(identity, {"tak": link}, "127.0.0.1", 0)
    port = await listener.start()

    async def call(ca_dir: Path) -> tuple[grpc.StatusCode, str]:
        creds = grpc.ssl_channel_credentials(
            (pki["hub"] / "ca.pem").read_bytes(),
            (ca_dir / "server-key.pem").read_bytes(),
            (ca_dir / "server.pem").read_bytes(),
        )
        kinds = {
            (False, False): "unary_unary",
            (False, True): "unary_stream",
            (True, False): "stream_unary",
            (True, True): "stream_stream",
        }
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            make = getattr(channel, kinds[(m.client_streaming, m.server_streaming)])
            stub = make(path, request_serializer=type(request).SerializeToString,
                        response_deserializer=response.FromString)  # fmt: skip

            async def nothing():  # type: ignore[no-untyped-def]
                return
                yield

            try:
                if m.client_streaming:
                    await stub(nothing(), timeout=1)
                elif m.server_streaming:
                    async for _ in stub(request, timeout=1):
                        break
                else:
                    await stub(request, timeout=1)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
            return grpc.StatusCode.OK, ""

    try:
        refused = (grpc.StatusCode.PERMISSION_DENIED, "not a configured federate")
        assert await call(pki["hub"]) == refused
        answered, _ = await call(pki["tak"])
        assert answered != grpc.StatusCode.PERMISSION_DENIED
        if method in NOT_IMPLEMENTED:
            assert answered == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await listener.stop()


async def test_we_dial_a_tak_server(pki: dict[str, Path]) -> None:
    server = TakServer(pki["tak"], (pki["hub"] / "ca.pem").read_bytes())
    port = await server.start()
    rec = Recorder()
    config = FederateConfig(
        "tak",
        ("TAK",),
        connect=("127.0.0.1", port),
        ca=pki["tak"] / "ca.pem",
        fingerprint=fingerprint((pki["tak"] / "server.pem").read_bytes()),
    )
    link = Link(config, _Endpoint(rec))
    identity = HubIdentity.from_ca_dir(pki["hub"], "hub-1", "CommonSky KOR")
    dialer = Dialer(identity, link, health_s=0.2, retry_s=0.1)
    dialer.start()
    try:
        await asyncio.wait_for(server.connected.wait(), 10)
        await _until(
            lambda: "ClientROLStream" in server.calls and "ServerROLStream" in server.calls
        )
        # TAK Server's order as we make the calls: groups, subscribe, send stream, health,
        # then (after SERVING) the ROL streams; the server saw every one of them
        assert dialer.calls[:4] == [
            "getIdentity",
            "ClientFederateGroupsStream",
            "ClientEventStream",
            "ServerEventStream",
        ]
        assert dialer.calls.index("HealthCheck") < dialer.calls.index("ClientROLStream")
        assert set(dialer.calls) - {"getIdentity"} <= set(server.calls)
        assert server.calls.index("HealthCheck") < server.calls.index("ClientROLStream")
        assert server.subscriptions[0].identity.description == "CommonSky"

        server.send(event())
        got = receive(await asyncio.wait_for(rec.got.get(), 10)).event
        assert got is not None and got.callsign == "VIPER 1"
        assert same_detail(got.detail, receive(event()).event.detail)  # type: ignore[union-attr]

        assert link.send(event("CS-1"))
        up = await server.next_event()
        assert up.event.uid == "CS-1" and up.event.speed == 120.5

        # a ROL message down ClientROLStream: ignored, link kept
        server.rol_out.put_nowait(pb.ROL(program="assign mission"))
        await _until(lambda: link.rol_ignored == 1)
        server.send(event("TAK-2"))
        after = receive(await asyncio.wait_for(rec.got.get(), 10)).event
        assert after is not None and after.uid == "TAK-2" and link.up

        # the server goes away and comes back on the same port: we redial
        await server.stop()
        await _until(lambda: not link.up)
        server2 = TakServer(pki["tak"], (pki["hub"] / "ca.pem").read_bytes(), port)
        await server2.start()
        try:
            await asyncio.wait_for(server2.connected.wait(), 15)
            await _until(lambda: link.up)
            assert link.send(event("CS-2"))
            assert (await server2.next_event()).event.uid == "CS-2"
        finally:
            await server2.stop()
    finally:
        await dialer.stop()
        await server.stop()


async def test_a_wrong_pin_never_links(pki: dict[str, Path]) -> None:
    server = TakServer(pki["tak"], (pki["hub"] / "ca.pem").read_bytes())
    port = await server.start()
    config = FederateConfig(
        "tak",
        ("TAK",),
        connect=("127.0.0.1", port),
        ca=pki["tak"] / "ca.pem",
        fingerprint="sha256:" + "0" * 64,
    )
    link = Link(config, _Endpoint(Recorder()))
    dialer = Dialer(HubIdentity.from_ca_dir(pki["hub"], "h", "K"), link, 0.2, 0.05)
    dialer.start()
    try:
        await _until(lambda: dialer.failures >= 3)  # each refused before any gRPC call
        assert server.calls == [] and not link.up
    finally:
        await dialer.stop()
        await server.stop()


def _expired(ca_dir: Path, out: Path) -> Path:
    """A hub certificate `ca_dir`'s CA issued, expired yesterday (with that CA's ca.pem)."""
    import datetime as dt
    import shutil

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from commonsky.pki import load_ca

    ca, ca_key = load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "old hub")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir()
    (out / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pkcs8, none = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    (out / "server-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, none))
    shutil.copy(ca_dir / "ca.pem", out / "ca.pem")
    return out


REFUSED = {
    # case: (our certificate's CA dir, the roots we check the peer with, what the line says)
    "we do not trust the peer's CA": ("tak", "stranger", "its certificate does not verify"),
    "the peer does not trust our CA": ("stranger", "hub", "the peer does not accept our"),
    "our certificate expired": ("expired", "hub", "EXPIRED"),
    "the peer is not the pinned one": ("tak", "hub", "is not the pinned sha256:000"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_refused_handshake_is_one_clear_line(
    pki: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """A refused TLS handshake was gRPC's line only ("UNAVAILABLE … Socket closed" when the
    peer refused us): now one line names the link, the peer's address and which side refused
    what."""
    caplog.set_level(logging.WARNING, logger="commonsky.federation")
    init_ca(tmp_path / "stranger", name="stranger")
    dirs = {**pki, "stranger": tmp_path / "stranger"}
    dirs["expired"] = _expired(pki["tak"], tmp_path / "expired")
    ours, roots, says = REFUSED[case]
    listener_link = Link(
        FederateConfig("tak", ("TAK",), ca=pki["tak"] / "ca.pem"), _Endpoint(Recorder())
    )
    identity = HubIdentity.from_ca_dir(pki["hub"], "hub-1", "KOR")
    listener = Listener(identity, {"tak": listener_link}, "127.0.0.1", 0)
    port = await listener.start()
    pin = "sha256:" + "0" * 64 if "pinned" in case else None
    config = FederateConfig(
        "kor", ("KOR",), connect=("127.0.0.1", port), ca=dirs[roots] / "ca.pem", fingerprint=pin
    )
    link = Link(config, _Endpoint(Recorder()))
    dialer = Dialer(HubIdentity.from_ca_dir(dirs[ours], "tak-1", "TAK"), link, 1.0, 0.05)
    dialer.start()
    try:
        await _until(lambda: dialer.failures >= 1)
    finally:
        await dialer.stop()
        await listener.stop()
    lines = [r.getMessage() for r in caplog.records if "redialing" in r.getMessage()]
    assert lines[0].startswith(
        f"federation link kor: TLS handshake with 127.0.0.1:{port} refused: "
    )
    assert says in lines[0], lines[0]
