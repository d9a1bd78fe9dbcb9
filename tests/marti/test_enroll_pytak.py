"""pytak's own enrollment client enrolls with a one-time token, then speaks CoT over TLS."""

from __future__ import annotations

import asyncio
import configparser
import time
from pathlib import Path

import pytak

from commonsky.marti.tokens import TokenStore
from commonsky.revocation import issued
from tests.integration.test_tak_tcp import FULL_TRACKS, track
from tests.marti.helpers import ENROLL_PORT, marti_hub


async def test_pytak_enrolls_then_exchanges_cot(tmp_path: Path) -> None:
    back = {**FULL_TRACKS, "name": "JP-US tracks", "from": "JPN", "to": ["USA"]}
    async with marti_hub(tmp_path, [FULL_TRACKS, back], enroll_port=ENROLL_PORT) as (hub, host, ca):
        store = TokenStore(tmp_path / "hub")
        token = store.issue("USA", "usa-phone", 600, time.time())
        store.close()
        jpn = await hub.connect("JPN")
        section = configparser.ConfigParser()
        section["pytak"] = {
            "COT_URL": f"tls://{host}:{hub.server.port('tak-tls')}",
            "PYTAK_TLS_CERT_ENROLLMENT_USERNAME": "usa-phone",
            "PYTAK_TLS_CERT_ENROLLMENT_PASSWORD": token,
            "PYTAK_TLS_CLIENT_CAFILE": str(ca / "ca.pem"),
            "PYTAK_TLS_DONT_CHECK_HOSTNAME": "1",
        }
        reader, writer = await pytak.protocol_factory(section["pytak"])
        writer.write(track("ENROLLED-1", callsign="NEW-PHONE"))
        await writer.drain()
        got = await jpn.wait_for(lambda e: e["uid"] == "USA::ENROLLED-1")
        assert got["callsign"] == "NEW-PHONE"
        # The certificate names the token's party and user.
        assert {c.user for c in hub.hub.connections["USA"]} == {"usa-phone"}
        [record] = [i for i in issued(ca) if i.how == "enroll"]
        assert (record.party, record.name) == ("USA", "usa-phone")
        # ... and it hears the other side too.
        jpn.send(track("JPN-1", callsign="JPN-PLANE"))
        data = await asyncio.wait_for(reader.readuntil(b"JPN-PLANE"), 10)
        assert b'uid="JPN::JPN-1"' in data
        writer.close()
