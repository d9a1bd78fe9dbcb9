"""What the enroll and marti listeners of one hub share: the hub port, tokens, files, CAs.

Tokens and files are in the data folder for one process, in the database of `store_url`
for a cluster's core (`shared`): stores.py chooses, and the listeners see only their calls
(tokens.Tokens, files.Files)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography import x509

from commonsky.config import ListenerConfig
from commonsky.marti.net import advertised
from commonsky.marti.port import HubPort
from commonsky.marti.stores import open_files, open_tokens
from commonsky.marti.tokens import Tokens
from commonsky.pki import PeerCertificates
from commonsky.revocation import Revocations

if TYPE_CHECKING:
    from commonsky.evidence.sign import EvidenceSigner
    from commonsky.marti.files import Files
    from commonsky.services import Services
    from commonsky.store.postgres import PostgresStore

log = logging.getLogger("commonsky.marti")


class Bound(Protocol):
    """What the state reads of a listener (http.HttpListener): its config and bound port."""

    config: ListenerConfig
    port: int


@dataclass
class MartiState:
    port: HubPort
    data_dir: Path
    tokens: Tokens
    files: Files
    signer: EvidenceSigner | None
    revocations: dict[Path, Revocations] = field(default_factory=dict)
    http: dict[str, Bound] = field(default_factory=dict)  # kind -> listener (links)
    stream: tuple[str, int] | None = None  # the tak-tls listener (host, port), for profiles
    _peers: PeerCertificates = field(default_factory=PeerCertificates)

    @classmethod
    def open(
        cls,
        services: Services,
        listeners: tuple[ListenerConfig, ...],
        shared: PostgresStore | None = None,
    ) -> MartiState:
        """`shared`: a cluster core's store, whose database keeps tokens and files."""
        from commonsky.evidence.sign import EvidenceSigner

        hub = services.hub
        data_dir = Path(str(hub.settings.data_dir))
        revocations: dict[Path, Revocations] = {}
        for lc in listeners:
            if lc.kind in ("marti", "tak-tls") and lc.ca is not None:
                revocations.setdefault(Path(lc.ca), Revocations(Path(lc.ca)))
        marti_ca = next((lc.ca for lc in listeners if lc.kind == "marti"), None)
        signer = EvidenceSigner(data_dir, Path(marti_ca)) if marti_ca is not None else None
        tokens = open_tokens(data_dir, shared.url if shared is not None else None)
        try:
            files = open_files(data_dir, hub.settings, shared)
        except BaseException:
            tokens.close()
            raise
        stream = next(((lc.host, lc.port) for lc in listeners if lc.kind == "tak-tls"), None)
        return cls(HubPort(services), data_dir, tokens, files, signer, revocations, stream=stream)

    def close(self) -> None:
        self.tokens.close()
        self.files.close()

    def base_url(self) -> str:
        """https://HOST:PORT of the marti listener, as clients reach it."""
        listener = self.http["marti"]
        return f"https://{advertised(listener.config, listener.port)}"

    def peer(self, der: bytes) -> x509.Certificate:
        return self._peers.get(der)
