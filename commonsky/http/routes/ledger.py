"""Ledger routes: the signed checkpoint (tree head) and a party's inclusion receipt for an
entry it is in the audience of."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from commonsky.http.base import Api, ApiError, JSONResponse, bearer_token, caller, json_error
from commonsky.ledger.entry import EntryError
from commonsky.ledger.log import LedgerError
from commonsky.ledger.proofs import Receipt


def routes(api: Api) -> list[BaseRoute]:
    services = api.services

    async def ledger_checkpoint(request: Request) -> Response:
        # A party gets the latest signed tree head (signed afresh at most once per
        # `timeout_checkpoint_s`, so polling it cannot time other parties' traffic); the
        # operator may ask for a fresh one.
        try:
            who = caller(services, bearer_token(request))
            if services.recorder is None:
                raise ApiError(404, "no ledger")
            ledger = services.recorder.ledger
            if who is None:
                return JSONResponse(ledger.checkpoint().to_json())
            return JSONResponse(services.party_checkpoint().to_json())
        except ApiError as exc:
            return json_error(exc.status, exc.public())

    return [
        Route("/api/ledger/checkpoint", ledger_checkpoint),
        Route("/api/ledger/receipts/{seq}", api.party_route(ledger_receipt)),
    ]


async def ledger_receipt(api: Api, request: Request, party: str) -> Response:
    services = api.services
    if services.recorder is None:
        raise ApiError(404, "no ledger")
    ledger = services.recorder.ledger
    raw = request.path_params["seq"]
    # Outside the audience or not there: the same answer (no oracle of what exists).
    missing = ApiError(404, f"no entry {raw[:20]!r} for this party")
    try:
        seq = int(raw)
        entry = ledger.entry(seq) if 0 <= seq < ledger.size else None
    except (ValueError, LedgerError, EntryError):  # (not a number; not there; unreadable)
        raise missing from None
    if entry is None or not entry.visible_to(party):
        raise missing
    cp = services.party_checkpoint()
    if cp.size <= seq:
        wait = services.checkpoint_due_in()
        return JSONResponse(
            {"error": f"entry {seq} is not in a signed checkpoint yet; retry in {wait} s"},
            status_code=409,
            headers={"Retry-After": str(wait)},
        )
    receipt = Receipt(seq, ledger.leaf(seq), ledger.inclusion_proof(seq, cp.size), cp)
    return JSONResponse(receipt.to_json())
