"""The listening half of TAK Federation v2 links (link.py's rule): one gRPC server over
mutual TLS serving `com.atakmap.FederatedChannel` for every `[[federate]]`, each caller
matched to its federate by its certificate."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from commonsky.ratelog import RateLimitedLog

from . import federation_pb2 as pb
from . import federation_pb2_grpc as rpc
from .link import PRODUCT, HubIdentity, Link, our_groups, our_identity
from .peers import fingerprint

log = logging.getLogger("commonsky.federation")


class Servicer(rpc.FederatedChannelServicer):
    """The listening side of every link."""

    def __init__(self, identity: HubIdentity, links: dict[str, Link]) -> None:
        self.identity = identity
        self.links = links
        self.refusals = RateLimitedLog()  # (a stranger's every call must not be a line)
        self._by_ca: list[tuple[x509.Certificate, Link]] = []
        for link in links.values():
            if link.config.ca is not None:
                for ca in x509.load_pem_x509_certificates(link.config.ca.read_bytes()):
                    self._by_ca.append((ca, link))

    def identify(self, context: grpc.aio.ServicerContext, name: str = "") -> Link | None:
        """The link of the peer's certificate: fingerprint first, then issuing CA (with the
        identity's name to tell apart federates under one CA). None: not a federate."""
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return None
        pem = pems[0]
        print_ = fingerprint(pem)
        candidates = [
            link
            for link in self.links.values()
            if link.config.fingerprint is not None and link.config.fingerprint == print_
        ]
        if not candidates:
            leaf = x509.load_pem_x509_certificate(pem)
            for ca, link in self._by_ca:
                if link.config.fingerprint is not None:
                    continue  # a pinned federate is only its certificate
                with contextlib.suppress(Exception):
                    leaf.verify_directly_issued_by(ca)
                    candidates.append(link)
        if len(candidates) > 1:
            candidates = [link for link in candidates if link.name == name] or candidates[:0]
        return candidates[0] if len(candidates) == 1 else None

    async def _refuse(self, context: grpc.aio.ServicerContext) -> None:
        cn = (context.auth_context().get("x509_common_name") or [b"?"])[0].decode(errors="replace")
        address = context.peer().rpartition(":")[0]  # (each call of a peer: another port)
        self.refusals.log(
            log,
            logging.WARNING,
            "federate_unknown",
            f"{address} {cn}",
            "federation: refused %s (certificate CN=%s matches no [[federate]])",
            context.peer(),
            cn,
        )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a configured federate")

    async def ClientEventStream(
        self, request: pb.Subscription, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FederatedEvent]:
        link = self.identify(context, request.identity.name)
        if link is None:
            await self._refuse(context)
            return
        session = link.attach(commonsky=request.identity.description == PRODUCT)
        try:
            async for message in session.messages():
                yield message
        finally:
            link.detach(session)

    async def ServerEventStream(
        self, request_iterator: AsyncIterator[pb.FederatedEvent], context: grpc.aio.ServicerContext
    ) -> pb.Subscription:
        link = self.identify(context)
        if link is None:
            await self._refuse(context)
            return pb.Subscription()
        async for message in request_iterator:
            link.receive(message)
        return pb.Subscription(
            identity=our_identity(self.identity, pb.Identity.FEDERATION_TAK_SERVER)
        )

    async def SendOneEvent(
        self, request: pb.FederatedEvent, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        link = self.identify(context)
        if link is None:
            await self._refuse(context)
            return pb.Empty()
        link.receive(request)
        return pb.Empty()

    async def HealthCheck(
        self, request: pb.ClientHealth, context: grpc.aio.ServicerContext
    ) -> pb.ServerHealth:
        if self.identify(context) is None:
            await self._refuse(context)
            return pb.ServerHealth()
        return pb.ServerHealth(status=pb.ServerHealth.SERVING)

    async def getIdentity(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.Identity:
        # Who we are is told to a federate only, like everything else here: TLS lets in
        # any certificate a trusted CA signed (our own CA's: any TAK user's).
        if self.identify(context) is None:
            await self._refuse(context)
            return pb.Identity()
        return our_identity(self.identity, pb.Identity.FEDERATION_TAK_SERVER)

    async def ClientROLStream(
        self, request: pb.Subscription, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ROL]:
        link = self.identify(context, request.identity.name)
        if link is None:
            await self._refuse(context)
            return
        # Kept open while the link is: we publish no mission changes.
        await link.wait_down()
        nothing: list[pb.ROL] = []
        for rol in nothing:
            yield rol

    async def ServerROLStream(
        self, request_iterator: AsyncIterator[pb.ROL], context: grpc.aio.ServicerContext
    ) -> pb.Subscription:
        link = self.identify(context)
        if link is None:
            await self._refuse(context)
            return pb.Subscription()
        async for _rol in request_iterator:
            link.rol_ignored += 1  # missions and data feeds are not federated here
        return pb.Subscription()

    async def ServerFederateGroupsStream(
        self, request: pb.Subscription, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FederateGroups]:
        link = self.identify(context, request.identity.name)
        if link is None:
            await self._refuse(context)
            return
        yield our_groups(link)
        await link.wait_down()

    async def ClientFederateGroupsStream(
        self, request_iterator: AsyncIterator[pb.FederateGroups], context: grpc.aio.ServicerContext
    ) -> pb.Subscription:
        link = self.identify(context)
        if link is None:
            await self._refuse(context)
            return pb.Subscription()
        async for groups in request_iterator:
            link.peer_groups = tuple(groups.federate_groups)
        return pb.Subscription()

    # Not implemented here (file and token federation): UNIMPLEMENTED to a federate, and to
    # anyone else the refusal every call gives — a stranger learns not even what we serve.

    async def _unimplemented(self, context: grpc.aio.ServicerContext) -> None:
        if self.identify(context) is None:
            await self._refuse(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented by CommonSky")

    async def BinaryMessageStream(
        self, request_iterator: AsyncIterator[pb.BinaryBlob], context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        await self._unimplemented(context)
        return pb.Empty()

    async def SendOneBlob(
        self, request: pb.BinaryBlob, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        await self._unimplemented(context)
        return pb.Empty()

    async def GetAuthTokenByX509(
        self, request: pb.BinaryBlob, context: grpc.aio.ServicerContext
    ) -> pb.FederateTokenResponse:
        await self._unimplemented(context)
        return pb.FederateTokenResponse()

    async def Getx509Identity(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.BinaryBlob:
        await self._unimplemented(context)
        return pb.BinaryBlob()


def same_named_cas(roots: list[tuple[str, bytes]]) -> list[str]:
    """What is wrong with these (where, PEM) roots: each CA named like one before it but
    with another key, as one line. TLS looks an issuer up by name; a peer certificate that
    does not name its CA's key (no authority key identifier: `commonsky ca init` made such
    ones, all under one CA name) is checked against the first CA of that name and refused —
    every attempt, with only TLS's own log line (BAD_SIGNATURE) to say so."""
    first: dict[x509.Name, tuple[bytes, str]] = {}
    problems = []
    for where, pem in roots:
        for ca in x509.load_pem_x509_certificates(pem):
            key = ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            seen = first.setdefault(ca.subject, (key, where))
            if seen[0] != key:
                problems.append(
                    f"{where}: its CA is named {ca.subject.rfc4514_string()!r} like the one "
                    f"of {seen[1]}, with another key: a peer certificate that does not name its "
                    "CA's key is refused (TLS: BAD_SIGNATURE); make one of them again with "
                    "`commonsky ca init` (it names each CA after its key)"
                )
    return problems


def server_credentials(identity: HubIdentity, links: list[Link]) -> grpc.ServerCredentials:
    """Mutual TLS: our chain; peers verified against every federate's CA and our own."""
    named = [("this hub (federation listener's ca)", identity.own_ca_pem)] + [
        (f"[[federate]] {link.name!r} ca = {str(link.config.ca)!r}", link.config.ca.read_bytes())
        for link in links
        if link.config.ca is not None
    ]
    for problem in same_named_cas(named):
        log.warning("federation: %s", problem)
    roots = [pem for _, pem in named]
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.chain_pem)],
        root_certificates=b"\n".join(r.rstrip(b"\n") for r in roots) + b"\n",
        require_client_auth=True,
    )


class Listener:
    """The `kind = "federation"` listener: one gRPC server for every link."""

    def __init__(self, identity: HubIdentity, links: dict[str, Link], host: str, port: int):
        self.identity = identity
        self.links = links
        self.host = host
        self.port = port
        self.server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (0 in the config: an ephemeral one)."""
        self.server = grpc.aio.server()
        rpc.add_FederatedChannelServicer_to_server(  # type: ignore[no-untyped-call]
            Servicer(self.identity, self.links), self.server
        )
        credentials = server_credentials(self.identity, list(self.links.values()))
        try:
            port: int = self.server.add_secure_port(f"{self.host}:{self.port}", credentials)
        except RuntimeError:  # (gRPC >= 1.60 raises where it returned 0)
            port = 0
        if port == 0:
            raise OSError(
                "cannot listen there (the port is in use, or no interface has the address)"
            )
        await self.server.start()
        self.port = port
        return port

    async def stop(self, grace: float = 1.0) -> None:
        for link in self.links.values():
            if link.session is not None:
                link.detach(link.session)
        if self.server is not None:
            await self.server.stop(grace)
