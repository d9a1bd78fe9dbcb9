"""The enrollment listener (TAK's port 8446): certificates for one-time tokens.

The paths and answers are the ones ATAK, iTAK, WinTAK and pytak call (TAK Server's
`CertManagerApi` and `ProfileAPI`; RESEARCH-TAK.md §3):

- `GET /Marti/api/tls/config` — the subject template: one `nameEntry` O = the token's party.
- `POST /Marti/api/tls/signClient` — body a PKCS#10 CSR; answer a PKCS#12 holding only
  certificates, aliases `signedCert` and `ca0`, under ATAK's fixed password `atakatak`
  (it holds no key, so the password protects nothing; the compatible form of pki.py).
- `POST /Marti/api/tls/signClient/v2` — the same as JSON `{"signedCert", "ca0"}` (base64
  DER without PEM armour, as TAK Server writes them) for `Accept` absent, `*/*`, JSON or
  text (iTAK reads JSON served as text: it gets `text/plain`), XML `<enrollment>` for
  `application/xml` or `text/xml`, 406 for anything else.
- `GET /Marti/api/tls/profile/enrollment`, `GET /Marti/api/device/profile/connection` —
  this hub keeps no device profiles: 204 No Content, TAK Server's "none".

Every request authenticates with HTTP Basic: the user name and the one-time token
(`tokens.py`). Each refusal — no or bad credentials (401), a spent or expired token (401), a
malformed CSR (400), a CSR naming another party or user (403) — is logged (rate-limited),
counted as `commonsky_refusals{reason="enroll_…"}`, and issues nothing; the token is spent
only once the CSR has passed every check.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from commonsky import errors
from commonsky.config import ListenerConfig
from commonsky.errors import UsageError
from commonsky.marti.state import MartiState
from commonsky.marti.tokens import Refusal, Token
from commonsky.pki import (
    ATAK_DEFAULT_PASSWORD,
    CSR_MAX_BYTES,
    CsrRefused,
    P12Form,
    check_csr_subject,
    load_ca,
    p12_encryption,
    parse_csr,
    sign_csr,
)

log = logging.getLogger("commonsky.enroll")
CONFIG_NS = "com.bbn.marti.config"  # the namespace TAK Server's certificateConfig root uses


class _Refused(errors.Refused):
    """An enrollment request refused (errors.Refused: its status, reason label and message)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status, message, reason)


def _basic(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise _Refused(401, "no_credentials", "HTTP Basic credentials (user, token) required")
    try:
        user, sep, token = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _Refused(401, "bad_credentials", "Authorization: Basic value is not base64") from None
    if not sep or not user or not token:
        raise _Refused(401, "bad_credentials", "Basic credentials need a user and a token")
    return user, token


def _pem_body(cert: x509.Certificate) -> str:
    """Base64 DER in 64-column lines, no armour — TAK Server's v2 form (pytak and ATAK add the
    armour themselves)."""
    b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    return "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))


def config_xml(party: str) -> str:
    from xml.sax.saxutils import quoteattr

    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<ns2:certificateConfig xmlns:ns2="{CONFIG_NS}"><nameEntries>'
        f'<nameEntry name="O" value={quoteattr(party)}/>'
        "</nameEntries></ns2:certificateConfig>"
    )


class Enrollment:
    """What every enrollment route shares: the listener's state and config, the token
    check (HTTP Basic: user and enrollment token), and how a refusal is answered."""

    def __init__(self, state: MartiState, config: ListenerConfig) -> None:
        assert config.ca is not None
        self.state = state
        self.config = config
        self.ca_dir = config.ca
        self.port = state.port

    def authenticate(self, request: Request, spend: bool) -> Token:
        """The request's enrollment token (spent when `spend`); `_Refused` 401 otherwise."""
        user, token = _basic(request)
        found = self.state.tokens.check(user, token, self.port.clock(), spend)
        if isinstance(found, Refusal):
            status_text = {
                Refusal.UNKNOWN: "unknown user or token",
                Refusal.WRONG_USER: "unknown user or token",
                Refusal.EXPIRED: "enrollment token expired; ask for a new one",
                Refusal.SPENT: "enrollment token already used; ask for a new one",
            }[found]
            raise _Refused(401, found.value, status_text)
        if not self.port.is_party(found.party):
            raise _Refused(401, "unknown_party", f"token's party {found.party!r} is not declared")
        return found

    def refused(self, request: Request, exc: _Refused) -> Response:
        self.port.refuse(f"enroll_{exc.reason}")
        peer = request.client.host if request.client else "?"
        self.port.log_limited(
            log,
            f"enroll_{exc.reason}",
            peer,
            "%s: %s %s from %s refused (%d): %s",
            self.config.kind,
            request.method,
            request.url.path,
            peer,
            exc.status,
            exc,
        )
        headers = {"WWW-Authenticate": 'Basic realm="CommonSky enrollment"'}
        return PlainTextResponse(
            f"{exc}\n", status_code=exc.status, headers=headers if exc.status == 401 else None
        )

    def guarded(
        self, handler: Callable[[Enrollment, Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint for `handler(enrollment, request)`, refusals answered as text."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(self, request)
            except _Refused as exc:
                return self.refused(request, exc)
            except errors.StoreUnavailable as exc:  # (a cluster's database away)
                log.warning("%s: %s %s: %s", self.config.kind, request.method,
                            request.url.path, exc)  # fmt: skip
                return PlainTextResponse("the hub cannot reach its store; try again\n",
                                         status_code=503, headers={"Retry-After": "5"})  # fmt: skip

        return endpoint


def enroll_app(state: MartiState, config: ListenerConfig) -> Starlette:
    """The enrollment listener's application: TAK's `/Marti/api/tls/*` certificate signing."""
    guarded = Enrollment(state, config).guarded
    routes = [
        Route("/Marti/api/tls/config", guarded(tls_config), methods=["GET"]),
        Route("/Marti/api/tls/signClient", guarded(sign_client), methods=["POST"]),
        Route("/Marti/api/tls/signClient/v2", guarded(sign_client_v2), methods=["POST"]),
        Route("/Marti/api/tls/profile/enrollment", guarded(no_profile), methods=["GET"]),
        Route("/Marti/api/device/profile/connection", guarded(no_profile), methods=["GET"]),
    ]
    return Starlette(routes=routes)


async def tls_config(enroll: Enrollment, request: Request) -> Response:
    token = enroll.authenticate(request, spend=False)
    return Response(config_xml(token.party), media_type="application/xml")


async def sign(
    enroll: Enrollment, request: Request
) -> tuple[x509.Certificate, x509.Certificate, Token]:
    """Spend the token and sign the CSR in the body: (certificate, CA certificate, token)."""
    state, port, config = enroll.state, enroll.port, enroll.config
    token = enroll.authenticate(request, spend=True)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > CSR_MAX_BYTES:
            raise _Refused(413, "csr_too_big", f"CSR over {CSR_MAX_BYTES} bytes")
    try:
        csr = parse_csr(bytes(body))
        check_csr_subject(csr, token.party, token.user)
    except CsrRefused as exc:
        reason = "malformed_csr" if exc.status == 400 else "csr_other_party"
        raise _Refused(exc.status, reason, str(exc)) from None
    now = port.clock()
    if not state.tokens.redeem(token, now):  # another request spent it meanwhile
        raise _Refused(401, Refusal.SPENT.value, "enrollment token already used")
    days = port.settings.tls_enroll_cert_days
    try:
        cert = sign_csr(enroll.ca_dir, csr, token.party, token.user, days)
        ca_cert = load_ca(enroll.ca_dir)[0]
    except UsageError as exc:  # the CA folder went missing under us: the operator's
        log.error("%s: cannot sign for %s/%s: %s", config.where, token.party, token.user, exc)
        raise _Refused(500, "ca_unavailable", "the hub cannot sign now") from None
    state.tokens.note_serial(token, cert.serial_number)
    log.info(
        "%s: enrolled %s/%s (serial %x, until %s, clientUid %s)",
        config.kind,
        token.party,
        token.user,
        cert.serial_number,
        cert.not_valid_after_utc.isoformat(timespec="seconds"),
        request.query_params.get("clientUid", "")[:64] or "-",
    )
    return cert, ca_cert, token


async def sign_client(enroll: Enrollment, request: Request) -> Response:
    cert, ca_cert, _ = await sign(enroll, request)
    bundle = pkcs12.serialize_java_truststore(
        [
            pkcs12.PKCS12Certificate(cert, b"signedCert"),
            pkcs12.PKCS12Certificate(ca_cert, b"ca0"),
        ],
        p12_encryption(ATAK_DEFAULT_PASSWORD, P12Form.COMPATIBLE),
    )
    return Response(bundle, media_type="application/x-pkcs12")


async def sign_client_v2(enroll: Enrollment, request: Request) -> Response:
    accept = request.headers.get("accept", "").lower()
    xml = "application/xml" in accept or "text/xml" in accept
    plain = not xml and "text/" in accept and "json" not in accept
    if (
        not xml and accept and not any(kind in accept for kind in ("*/*", "json", "text/"))
    ):  # (checked before the token is spent)
        raise _Refused(406, "not_acceptable", f"cannot answer Accept: {accept[:80]}")
    cert, ca_cert, _ = await sign(enroll, request)
    if xml:
        text = (
            '<?xml version="1.0" encoding="UTF-8"?><enrollment>'
            f"<signedCert>{_pem_body(cert)}</signedCert><ca>{_pem_body(ca_cert)}</ca>"
            "</enrollment>"
        )
        return Response(text, media_type="application/xml")
    answer = {"signedCert": _pem_body(cert), "ca0": _pem_body(ca_cert)}
    if plain:
        import json

        return PlainTextResponse(json.dumps(answer, indent=2))
    return JSONResponse(answer)


async def no_profile(enroll: Enrollment, request: Request) -> Response:
    enroll.authenticate(request, spend=False)
    return Response(status_code=204)
