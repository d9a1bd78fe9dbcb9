"""The README's promises to a new operator: its pytak example works against the hub the
repository ships (`examples/hub.toml`), and nothing in it points outside the repository."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from commonsky.config import load_config
from tests.conftest import running_hub

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


async def test_the_pytak_example_works_against_examples_hub_toml(
    tmp_path: Path, held_port: Callable[[], int]
) -> None:
    (example,) = re.findall(r"```python\n(.*?)```", README, re.S)[:1]
    assert "tcp://127.0.0.1:18087" in example
    config_text = (ROOT / "examples" / "hub.toml").read_text()
    assert 'bind = "127.0.0.1:18087"\nparty = "USA"' in config_text
    # The same file and code on a free port (other test runs may share this machine).
    port = held_port()  # (written into the file and the example before the hub binds it)
    (tmp_path / "hub.toml").write_text(
        config_text.replace("18087", str(port)).replace("18088", "0")
    )
    config = load_config(tmp_path / "hub.toml", {"http": "127.0.0.1:0"})
    assert config.data_dir == tmp_path / "var" / "hub"
    async with running_hub(config) as hub:
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            example.replace("18087", str(port)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(client.communicate(), 60)
        assert client.returncode == 0, err.decode()
        assert b"t-x-takp-v" in out  # the hub's offer of TAK protocol v1, as the comment says
        token = "jpn-example-token-change-me"
        async with httpx.AsyncClient(base_url=hub.http) as http:
            for _ in range(50):
                seen = await http.get("/api/items", headers={"Authorization": f"Bearer {token}"})
                if any(i["uid"] == "USA::F16-1" for i in seen.json()):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"JPN never saw USA's F16-1: {seen.text}")


def test_nothing_points_outside_the_repository() -> None:
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "web" / "README.md"]:
        text = doc.read_text()
        assert "../" not in text, f"{doc.name} points outside the repository"
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
