"""The one parser for untrusted XML (CoT, TAK protobuf's xmlDetail, data package manifests).

No DTD, no entity, no network, no huge tree; comments and processing instructions dropped.
Imports nothing of commonsky, so the item model can read a `<detail>` without importing the
CoT codec (which imports the model).
"""

from __future__ import annotations

from lxml import etree

PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    collect_ids=False,
)


def detail_tree(detail: str) -> etree._Element:
    """The `<detail>` of an accepted event as a tree.

    The text came out of `parse_event` (our parser re-serialised it), so it is well-formed
    and free of DTDs and entities; the same locked-down parser is used all the same.
    """
    return etree.fromstring(f"<detail>{detail}</detail>", PARSER)
