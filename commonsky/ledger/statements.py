# What a party signs through the API, and the entry it backs.
#
# Rule: a `statement` entry (desks/recorder.py) holds exactly the payload a party signed and
# comes right after the entry of the item or fact it backs, with the same time and
# audience. A verifier checks that the two agree — the signed words are the recorded
# ones — so a hub that rewrote a message or an acknowledgement (and re-signed its own
# checkpoints) cannot keep the party's signature as if it still backed it. Shapes:
#   {"to": PARTY, "text": TEXT, "uid": UID}   a hotline message: the `item` entry just
#                                             before is a hotline item by the signer, with
#                                             that uid, addressed to PARTY, saying TEXT
#   {"ack": "SENDER::UID"}                    an acknowledgement: the `ack` entry just before
#                                             is by the signer, of that message
from __future__ import annotations

from typing import Any

from lxml import etree

from commonsky.ledger.entry import Entry


def statement_problem(statement: Entry, backed: Entry | None) -> str | None:
    """Why `statement` does not back `backed` (the entry just before it), or None."""
    sig = statement.signature
    if sig is None:
        return "statement entry carries no signature"
    if backed is None:
        return "statement does not follow the entry it backs (redacted or missing)"
    if statement.originator != sig.party or backed.originator != sig.party:
        return f"statement signed by {sig.party} backs an entry by {backed.originator}"
    if backed.time_us != statement.time_us or backed.audience != statement.audience:
        return "statement and the entry it backs differ in time or audience"
    payload = statement.payload
    if set(payload) == {"to", "text", "uid"}:
        return _message_problem(payload, backed)
    if set(payload) == {"ack"}:
        if backed.kind != "ack" or backed.payload.get("of") != payload["ack"]:
            return f"signed acknowledgement of {payload['ack']!r} backs another entry"
        return None
    return "statement of no known shape"


def _message_problem(signed: Any, backed: Entry) -> str | None:
    from commonsky.protocol.cot import detail_tree  # the CoT reader, only when needed

    item = backed.payload
    if backed.kind != "item" or item.get("category") != "hotline":
        return "signed hotline message backs an entry that is no hotline item"
    if item.get("uid") != signed["uid"]:
        return f"signed message {signed['uid']!r} backs item {item.get('uid')!r}"
    try:
        detail = detail_tree(str(item.get("detail", "")))
    except etree.XMLSyntaxError:
        return "the item's detail cannot be read"
    remarks = detail.find("remarks")
    text = (remarks.text or "") if remarks is not None else ""
    dests = [d.get("party") for d in detail.iter("dest") if d.get("party")]
    if text != signed["text"]:
        return "the recorded text is not the text the sender signed"
    if dests != [signed["to"]]:
        return "the recorded addressee is not the one the sender signed"
    return None
