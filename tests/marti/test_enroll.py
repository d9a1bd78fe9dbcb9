"""The enrollment listener: the answers TAK clients parse, and every refusal with its status."""

from __future__ import annotations

import base64
import json
import logging
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from commonsky.marti.tokens import TokenStore
from commonsky.revocation import issued
from tests.conftest import RunningHub
from tests.marti.helpers import https, marti_hub


def csr(org: str | None, cn: str | None, key: object = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    names = []
    if cn is not None:
        names.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if org is not None:
        names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def token(root: Path, party: str, user: str, ttl: float = 600, now: float | None = None) -> str:
    store = TokenStore(root / "hub")
    try:
        return store.issue(party, user, ttl, time.time() if now is None else now)
    finally:
        store.close()


def refusals(hub: RunningHub, reason: str) -> float:
    value = hub.hub.metrics.registry.get_sample_value(
        "commonsky_refusals_total", {"reason": reason}
    )
    return value or 0.0


async def test_config_names_the_token_party(tmp_path: Path) -> None:
    async with marti_hub(tmp_path) as (hub, host, ca):
        secret = token(tmp_path, "KOR", "kor-1")
        async with https(hub, host, ca, "enroll") as client:
            answer = await client.get("/Marti/api/tls/config", auth=("kor-1", secret))
        assert answer.status_code == 200
        entries = [
            e.attrib for e in ET.fromstring(answer.text).iter() if e.tag.endswith("nameEntry")
        ]
        assert entries == [{"name": "O", "value": "KOR"}]


async def test_v2_json_xml_text_and_v1_pkcs12(tmp_path: Path) -> None:
    async with marti_hub(tmp_path) as (hub, host, ca):
        ca_cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
        async with https(hub, host, ca, "enroll") as client:
            answers = {}
            for accept in ("application/json", "application/xml", "text/plain", None):
                user = f"usa-{len(answers)}"
                secret = token(tmp_path, "USA", user)
                headers = {"Accept": accept} if accept else {}
                answers[accept] = await client.post(
                    "/Marti/api/tls/signClient/v2?clientUid=ANDROID-1&version=4.10",
                    content=csr("USA", user),
                    auth=(user, secret),
                    headers=headers,
                )
            secret = token(tmp_path, "USA", "usa-v1")
            v1 = await client.post(
                "/Marti/api/tls/signClient", content=csr("USA", "usa-v1"), auth=("usa-v1", secret)
            )
        for accept in ("application/json", None):
            assert answers[accept].headers["content-type"].startswith("application/json")
            body = answers[accept].json()
            assert set(body) == {"signedCert", "ca0"}
            assert not body["signedCert"].startswith("-----")  # TAK Server's armourless form
            der = base64.b64decode("".join(body["signedCert"].split()))
            cert = x509.load_der_x509_certificate(der)
            assert cert.issuer == ca_cert.subject
        text = answers["text/plain"]
        assert text.headers["content-type"].startswith("text/plain")  # iTAK reads it as JSON
        assert set(json.loads(text.text)) == {"signedCert", "ca0"}
        xml = ET.fromstring(answers["application/xml"].text)
        assert xml.tag == "enrollment" and xml.find("signedCert") is not None
        assert xml.find("ca") is not None
        # v1: a PKCS#12 of certificates only, aliases ATAK looks for, password atakatak.
        assert v1.status_code == 200
        bundle = pkcs12.load_pkcs12(v1.content, b"atakatak")
        assert bundle.key is None
        names = {c.friendly_name for c in bundle.additional_certs}
        assert names == {b"signedCert", b"ca0"}
        signed = next(c for c in bundle.additional_certs if c.friendly_name == b"signedCert")
        subject = signed.certificate.subject
        assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "USA"
        assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "usa-v1"


async def test_certificate_subject_is_the_tokens_whatever_the_csr_omits(tmp_path: Path) -> None:
    async with marti_hub(tmp_path) as (hub, host, ca):
        secret = token(tmp_path, "JPN", "jpn-7")
        async with https(hub, host, ca, "enroll") as client:
            answer = await client.post(
                "/Marti/api/tls/signClient/v2", content=csr(None, None), auth=("jpn-7", secret)
            )
        assert answer.status_code == 200
        der = base64.b64decode("".join(answer.json()["signedCert"].split()))
        cert = x509.load_der_x509_certificate(der)
        assert cert.subject.rfc4514_string() in ("CN=jpn-7,O=JPN", "O=JPN,CN=jpn-7")
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert days == 90  # tls_enroll_cert_days (and the 5 minutes of clock skew)


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("no_credentials", 401, "enroll_no_credentials"),
        ("unknown_token", 401, "enroll_unknown_token"),
        ("wrong_user", 401, "enroll_wrong_user"),
        ("expired", 401, "enroll_expired_token"),
        ("reused", 401, "enroll_spent_token"),
        ("malformed_csr", 400, "enroll_malformed_csr"),
        ("weak_key", 400, "enroll_malformed_csr"),
        ("other_party", 403, "enroll_csr_other_party"),
        ("other_user", 403, "enroll_csr_other_party"),
    ],
)
async def test_refusals_issue_nothing_and_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, status: int, reason: str
) -> None:
    caplog.set_level(logging.WARNING, "commonsky.enroll")
    async with marti_hub(tmp_path) as (hub, host, ca):
        user, secret = "usa-9", token(tmp_path, "USA", "usa-9")
        body = csr("USA", user)
        auth: tuple[str, str] | None = (user, secret)
        async with https(hub, host, ca, "enroll") as client:
            if case == "no_credentials":
                auth = None
            elif case == "unknown_token":
                auth = (user, secret + "x")
            elif case == "wrong_user":
                auth = ("usa-8", secret)
            elif case == "expired":
                auth = (user, token(tmp_path, "USA", user, ttl=10, now=time.time() - 60))
            elif case == "reused":
                first = await client.post("/Marti/api/tls/signClient/v2", content=body, auth=auth)
                assert first.status_code == 200
            elif case == "malformed_csr":
                body = b"-----BEGIN CERTIFICATE REQUEST-----\nnot a csr\n"
            elif case == "weak_key":
                body = csr("USA", user, rsa.generate_private_key(65537, 1024))
            elif case == "other_party":
                body = csr("RUS", user)
            elif case == "other_user":
                body = csr("USA", "someone-else")
            before = len(issued(ca))
            answer = await client.post(
                "/Marti/api/tls/signClient/v2",
                content=body,
                auth=auth,  # type: ignore[arg-type]
            )
            assert answer.status_code == status, answer.text
            assert answer.text.strip()  # says why
            if status == 401:
                assert answer.headers["www-authenticate"].startswith("Basic")
            assert len(issued(ca)) == before  # nothing issued
            assert refusals(hub, reason) >= 1
            assert any(
                reason.removeprefix("enroll_") in r.getMessage() or str(status) in r.getMessage()
                for r in caplog.records
            )
            if case in ("malformed_csr", "weak_key", "other_party", "other_user"):
                # A refused CSR does not spend the token: the device may try again.
                retry = await client.post(
                    "/Marti/api/tls/signClient/v2",
                    content=csr("USA", user),
                    auth=auth,  # type: ignore[arg-type]
                )
                assert retry.status_code == 200


async def test_profiles_are_empty_and_a_spent_token_still_reads_them(tmp_path: Path) -> None:
    async with marti_hub(tmp_path) as (hub, host, ca):
        secret = token(tmp_path, "USA", "usa-p")
        async with https(hub, host, ca, "enroll") as client:
            signed = await client.post(
                "/Marti/api/tls/signClient/v2", content=csr("USA", "usa-p"), auth=("usa-p", secret)
            )
            assert signed.status_code == 200
            for path in (
                "/Marti/api/tls/profile/enrollment?clientUid=ANDROID-1",
                "/Marti/api/device/profile/connection?syncSecago=0&clientUid=ANDROID-1",
            ):
                answer = await client.get(path, auth=("usa-p", secret))
                assert answer.status_code == 204
                assert answer.content == b""


async def test_racing_requests_with_one_token_get_one_certificate(tmp_path: Path) -> None:
    import asyncio

    async with marti_hub(tmp_path) as (hub, host, ca):
        secret = token(tmp_path, "USA", "usa-r")
        async with https(hub, host, ca, "enroll") as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/Marti/api/tls/signClient/v2",
                        content=csr("USA", "usa-r"),
                        auth=("usa-r", secret),
                    )
                    for _ in range(6)
                )
            )
        assert sorted(a.status_code for a in answers) == [200, 401, 401, 401, 401, 401]
        assert len([i for i in issued(ca) if i.name == "usa-r"]) == 1


async def test_enroll_listener_needs_no_client_certificate_but_marti_does(tmp_path: Path) -> None:
    async with marti_hub(tmp_path) as (hub, host, ca):
        async with https(hub, host, ca, "marti") as client:
            with pytest.raises(httpx.HTTPError):
                await client.get("/Marti/api/version")
