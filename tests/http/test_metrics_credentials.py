"""`GET /metrics` (http/app.py `metrics_answer`, the hub's and a cluster edge's): the public
series for a request with no credential at all; 401 for any credential that is not one good
bearer token — never the public answer, nor another token's series."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from commonsky.http.app import metrics_answer
from commonsky.metrics import Metrics
from commonsky.policy import Party, Policy

OPERATOR = "operator-token-0123456789"
USA = "usa-token-0123456789"


@pytest.fixture
def app() -> Starlette:
    metrics = Metrics()
    policy = Policy([Party("USA", token=USA), Party("JPN", token="jpn-token-0123456789")], [])
    metrics.items_in.inc(("JPN", "track"))

    async def answer(request: Request) -> Response:
        return metrics_answer(request, metrics, policy, OPERATOR)

    return Starlette(routes=[Route("/metrics", answer)])


async def get(app: Starlette, url: str, presented: list[tuple[str, str]]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        return await client.get(url, headers=presented)


def headers(*values: str) -> list[tuple[str, str]]:
    return [("Authorization", value) for value in values]


@pytest.mark.parametrize(
    ("presented", "query"),
    [
        (headers("Bearer"), ""),  # the scheme, no token
        (headers("Basic dXNlcjpwYXNz"), ""),  # another scheme
        (headers("Digest username=x"), ""),
        (headers("nonsense"), ""),
        (headers(f"Bearer {USA}", "Bearer nope"), ""),  # two headers
        (headers(f"Bearer {OPERATOR}", f"Bearer {OPERATOR}"), ""),
        (headers("Basic dXNlcjpwYXNz"), f"?token={OPERATOR}"),  # a header that is no token
        ([], f"?token=nope&token={OPERATOR}"),  # two tokens
        ([], f"?token={OPERATOR}&token={OPERATOR}"),
    ],
)
async def test_a_credential_that_is_no_one_good_bearer_token_is_401(
    app: Starlette, presented: list[tuple[str, str]], query: str
) -> None:
    r = await get(app, f"/metrics{query}", presented)
    assert r.status_code == 401, r.text
    assert "commonsky_up" not in r.text and "JPN" not in r.text
