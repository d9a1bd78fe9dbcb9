"""A NATS URL's credentials are read by one rule (cluster/config.py header, `read_url`; RFC
3986 §3.2.1): the userinfo ends at the last `@`, user and password are percent-decoded, and
a character that would make the URL mean another host, port or password written raw is
refused with one line. Every reader of `nats_url` (the config check, the connection's
options, the user a message names) goes through it, and no form of the password is shown.

- Properties: any user and password `quote()`d come back as they were, over TLS or not;
  `shown`, `shown_url` and `without_secrets` mask them whatever they hold, raw or encoded.
- A real `nats-server -js` whose user's password holds / @ : # ? % and a space: a process
  given it percent-encoded serves (nats-py, given the URL, would have sent the `%XX` text);
  given it raw, it stops at start with one line, exit 2, the password in no form in its
  output. The tools' `--nats` (`nats_options`: the bench's clean-up, `conformance
  --cluster`) connect to it the same way."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from commonsky.bench.cluster import Cluster, forget, until
from commonsky.bench.ports import reserve_port
from commonsky.cluster.config import (
    ClusterSettings,
    Credentials,
    nats_options,
    read_url,
    shown,
    without_secrets,
)
from commonsky.cluster.nats_io import _credentials, _user
from commonsky.config import config_from_dict
from commonsky.errors import UsageError
from tests.cluster.conftest import ADMIN_URL
from tests.corpus.test_conformance_cli import good_track, run

from .test_nats_auth import process

PG = "postgresql://postgres@127.0.0.1:5432/commonsky"
USER = "odd:one"  # (a `:` in the user: %3A in the URL)
PASSWORD = "Pw/@:#?% x-9"
SPECIAL = "/@:#?% ,'\"[]\\"


def encoded(text: str) -> str:
    return quote(text, safe="")


def message_of(url: str) -> str:
    """What `read_url` says of a URL it refuses (or "" when it reads it)."""
    try:
        read_url(url)
    except UsageError as exc:
        return str(exc)
    return ""


texts = st.text(alphabet=st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8")))


@given(user=texts, password=texts)
@example(user="edge-a", password="p/ss@w:rd#1?")
@example(user="a:b", password="%41")
def test_quoted_credentials_come_back_and_are_never_shown(user: str, password: str) -> None:
    url = f"tls://{encoded(user)}:{encoded(password)}@h:4222"
    assert read_url(url) == ("tls://h:4222", Credentials(user, password))
    masked = f"tls://{encoded(user)}:***@h:4222"
    assert shown(url) == masked
    cluster = ClusterSettings(nats_url=f"{url}, nats://h2", nats_ca="ca.pem")
    assert cluster.shown_url == f"{masked},nats://h2"
    assert cluster.link() == (["tls://h:4222", "nats://h2"], Credentials(user, password))
    for text in (f"nats_url = {[url]!r}: expected str", f"lost {url}, {url} again"):
        assert without_secrets(text) == text.replace(url, masked)
    servers, options = _credentials(cluster, cast(Any, None))
    assert servers == ["tls://h:4222", "nats://h2"] and options["user"] == user
    assert callable(options["password"])  # (TLS configured: given only over TLS)
    plain = ClusterSettings(nats_url=url.replace("tls://", "nats://"))
    options = {"user": user, "password": password}
    assert _credentials(plain, cast(Any, None)) == (["nats://h:4222"], options)
    assert _user(plain) == f"user {user!r}"


@given(token=texts.filter(bool))
def test_a_quoted_token_comes_back_and_is_never_shown(token: str) -> None:
    url = f"nats://{encoded(token)}@h"
    assert read_url(url) == ("nats://h", Credentials(None, token))
    assert shown(url) == "nats://***@h"
    assert without_secrets(f"x {url} y") == "x nats://***@h y"
    cluster = ClusterSettings(nats_url=url)
    assert _credentials(cluster, cast(Any, None)) == (["nats://h"], {"token": token})
    assert _user(cluster) == "this token's user"


@given(password=texts)
@example(password="p/w")  # (urlsplit: netloc 'u:p', port 'p')
@example(password="#4222")  # (urlsplit: host 'u', the password a fragment: silently misread)
@example(password="50%off")
@example(password="%FF")  # (no UTF-8 text)
def test_a_raw_password_is_read_as_written_or_refused_and_never_shown(password: str) -> None:
    """Written raw: read (`%XX` decoded: the documented rule) or refused in one line that
    holds neither the password nor which of its characters is at fault."""
    url = f"nats://edge-a:{password}@h:4222"
    masked = "nats://edge-a:***@h:4222"
    assert shown(url) == masked
    said = message_of(url)
    if said:
        assert said.startswith(f"[cluster] nats_url = {masked!r}: the password")
        assert "\n" not in said and said.endswith("($.cluster.nats_url)")
        rest = said.removeprefix(f"[cluster] nats_url = {masked!r}: the password")
        assert rest in (
            " holds a character that must be percent-encoded: write / ? # [ ] @ % and spaces "
            "as %XX (%2F for /, %40 for @, %25 for %: RFC 3986 §3.2.1) ($.cluster.nats_url)",
            "'s %XX escapes are no UTF-8 text ($.cluster.nats_url)",
        )
        return
    assert read_url(url) == ("nats://h:4222", Credentials("edge-a", unquote(password)))
    assert not set(password) & set("/?#[]@ \t\n")
    echoed = f"hub.toml: [cluster]: nats_url = {[url]!r}: expected str"
    hidden = without_secrets(echoed)
    assert "edge-a:***@h:4222" in hidden
    if password and password not in echoed.replace(url, masked):
        assert password not in hidden


def test_a_password_holding_a_url_is_masked_in_a_message_whole() -> None:
    """Echoed before any check (a `nats_url` of the wrong type): `without_secrets` masks
    what it cannot read too, up to the last `@` before the next URL."""
    assert without_secrets("['nats://u:x://y@h', 'tls://v:it\"s q@h2']") == (
        "['nats://u:***@h', 'tls://v:***@h2']"
    )
    assert without_secrets("url:nats://t0k3n@h") == "url:nats://***@h"


def config(nats_url: str) -> dict[str, Any]:
    return {"server": {"store_url": PG}, "party": [{"id": "USA"}],
            "cluster": {"nats_url": nats_url, "role": "edge"}}  # fmt: skip


@pytest.mark.parametrize(
    ("nats_url", "named"),
    [
        ("nats://u:p/w@h:4222", "the password holds a character that must be percent-encoded"),
        ("nats://u:#4222@h", "the password holds a character"),
        ("nats://u:pw@h:4222, nats://u:other@h2", "its URLs carry different credentials"),
        ("nats://t/k@h", "the token holds a character"),
    ],
)
def test_the_config_check_refuses_what_it_cannot_read_in_one_line(nats_url: str,
                                                                   named: str) -> None:  # fmt: skip
    with pytest.raises(UsageError) as caught:
        config_from_dict(config(nats_url), "hub.toml")
    message = str(caught.value)
    assert message.startswith("hub.toml: [cluster]: nats_url = '") and named in message, message
    for secret in ("p/w", "#4222", "pw", "other", "t/k"):
        assert secret not in message


def test_urls_without_credentials_take_those_of_the_others() -> None:
    cluster = config_from_dict(config(f"nats://u:{encoded(PASSWORD)}@a:4222,nats://b:4222"))
    assert cluster.cluster is not None
    assert cluster.cluster.link() == (["nats://a:4222", "nats://b:4222"],
                                      Credentials("u", PASSWORD))  # fmt: skip


class OddNats:
    """`nats-server -js` on a free port whose one user is USER with PASSWORD."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).is_file():
            pytest.fail("these tests need the nats-server binary (Debian's nats-server)")
        folder.mkdir(parents=True)
        self.held = reserve_port()  # (until `stop`: the port is in the file before it starts)
        self.folder, self.port = folder, int(self.held.getsockname()[1])
        (folder / "server.conf").write_text(
            f'listen: "127.0.0.1:{self.port}"\njetstream {{ store_dir: "{folder}/store" }}\n'
            f'authorization {{ user: "{USER}", password: "{PASSWORD}" }}\n'
        )
        with (folder / "nats.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-c", str(folder / "server.conf")], stdout=out, stderr=subprocess.STDOUT
            )

    async def started(self) -> OddNats:
        def up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        await until(up, "the private nats-server answers")
        return self

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.held.close()


async def test_a_password_with_reserved_characters_works_encoded_and_is_refused_raw(
    tmp_path: Path, postgres_url: str
) -> None:
    server = await OddNats(tmp_path / "nats").started()
    cluster = Cluster(tmp_path, "commonsky", "unused", postgres_url)
    forms = (PASSWORD, encoded(PASSWORD), PASSWORD.replace(" ", "%20"))
    try:
        good = f"nats://{encoded(USER)}:{encoded(PASSWORD)}@127.0.0.1:{server.port}"
        proc, _ = process(cluster, "all", good, 'edge = "edge-a"\n')
        await proc.wait_log(r"cluster core \S+ serving")
        await proc.wait_log(r"cluster edge \S+ ready")
        proc.stop()
        raw = f"nats://{encoded(USER)}:{PASSWORD}@127.0.0.1:{server.port}"
        refused, _ = process(cluster, "edge", raw, 'edge = "edge-a"\n')
        assert refused.proc is not None
        assert await asyncio.to_thread(refused.proc.wait, 60) == 2
        lines = [line for line in refused.text().strip().splitlines() if " INFO " not in line]
        assert len(lines) == 1 and "must be percent-encoded" in lines[0], lines
        assert f"odd%3Aone:***@127.0.0.1:{server.port}" in lines[0], lines
        for each in cluster.processes:
            assert "Traceback" not in each.text()
            for form in forms:
                assert form not in each.text()
    finally:
        cluster.stop()
        server.stop()


def test_a_tool_reads_a_nats_url_as_the_hub_does() -> None:
    """`nats_options`: the `--nats` of the bench and conformance tools, by `read_url`."""
    url = f"nats://{encoded(USER)}:{encoded(PASSWORD)}@h:4222,nats://h2"
    assert nats_options(url) == {
        "servers": ["nats://h:4222", "nats://h2"], "user": USER, "password": PASSWORD
    }  # fmt: skip
    assert nats_options(f"nats://{encoded(PASSWORD)}@h") == {
        "servers": ["nats://h"], "token": PASSWORD
    }  # fmt: skip
    assert nats_options("nats://h") == {"servers": ["nats://h"]}
    with pytest.raises(UsageError) as caught:
        nats_options("nats://u:p/w@h:4222", "--cluster")
    assert str(caught.value) == (
        "--cluster 'nats://u:***@h:4222': the password holds a character that must be "
        "percent-encoded: write / ? # [ ] @ % and spaces as %XX (%2F for /, %40 for @, %25 "
        "for %: RFC 3986 §3.2.1)"
    )


def test_the_conformance_tool_plays_through_a_nats_whose_password_is_encoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`conformance --cluster URL`: the tool's own connection (the check that NATS answers,
    before any hub starts) and the hubs' read the URL one way. nats-py handed the URL sent
    the password's `%XX` text: "Authorization Violation", exit 2, before this."""
    server = asyncio.run(OddNats(tmp_path / "nats").started())
    try:
        good = f"nats://{encoded(USER)}:{encoded(PASSWORD)}@127.0.0.1:{server.port}"
        (tmp_path / "files").mkdir()
        (tmp_path / "files" / "a-track.xml").write_bytes(good_track())
        status, out, err = run(capsys, str(tmp_path / "files"), "--json", "--wire", "xml",
                               "--cluster", good, "--postgres", ADMIN_URL)  # fmt: skip
        assert status == 0, err
        (track,) = json.loads(out)["files"]
        assert track["ok"] is True, track
        for form in (PASSWORD, encoded(PASSWORD)):
            assert form not in out + err
    finally:
        server.stop()


async def test_the_bench_tools_clean_up_on_a_nats_whose_password_is_encoded(
    tmp_path: Path,
) -> None:
    """`bench.cluster.forget` (every cluster bench's clean-up) connects with the URL's
    credentials decoded, and removes the named cluster's streams."""
    import nats

    server = await OddNats(tmp_path / "nats").started()
    try:
        good = f"nats://{encoded(USER)}:{encoded(PASSWORD)}@127.0.0.1:{server.port}"
        nc = await nats.connect(servers=[f"nats://127.0.0.1:{server.port}"], user=USER,
                                password=PASSWORD)  # fmt: skip
        js = nc.jetstream()
        await js.add_stream(name="benchgone-in", subjects=["benchgone.in"])
        await js.add_stream(name="kept-in", subjects=["kept.in"])
        await forget(good, "benchgone")
        assert [s.config.name for s in await js.streams_info()] == ["kept-in"]
        await nc.close()
    finally:
        server.stop()
