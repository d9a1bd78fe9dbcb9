# Rule: public warnings leave CommonSky only as CAP 1.2 documents that pass our own schema
# (`cap12.xsd`) and the rules no schema can express (closed polygons, Update/Cancel carrying
# references, times with an offset). Messages are plain typed values here; XML is produced in
# one place (`cap_xml`) and every document read back is parsed with a locked-down parser.

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Literal
from urllib.parse import quote

import msgspec
from lxml import etree

from commonsky.errors import CommonSkyError

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
_C = f"{{{CAP_NS}}}"
_A = f"{{{ATOM_NS}}}"

Status = Literal["Actual", "Exercise", "System", "Test", "Draft"]
MsgType = Literal["Alert", "Update", "Cancel", "Ack", "Error"]


class CapInvalid(CommonSkyError, ValueError):
    """A CAP document that fails the schema or the extra rules; str() is one line. (The hub
    writes CAP itself: an invalid one is our bug, HTTP 500.)"""

    reason = "cap_invalid"


class CapArea(msgspec.Struct, frozen=True):
    area_desc: str
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()  # closed rings of (lat, lon)
    circles: tuple[tuple[float, float, float], ...] = ()  # (lat, lon, radius km)
    geocodes: tuple[tuple[str, str], ...] = ()  # (valueName, value)


class CapInfo(msgspec.Struct, frozen=True):
    category: tuple[str, ...]
    event: str
    urgency: str
    severity: str
    certainty: str
    response_type: tuple[str, ...] = ()
    language: str = "en-US"
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    areas: tuple[CapArea, ...] = ()


class CapAlert(msgspec.Struct, frozen=True):
    identifier: str
    sender: str
    sent: datetime
    status: Status
    msg_type: MsgType
    scope: Literal["Public", "Restricted", "Private"] = "Public"
    references: tuple[str, ...] = ()  # "sender,identifier,sent" of earlier messages
    note: str | None = None
    incidents: str | None = None
    info: tuple[CapInfo, ...] = ()

    @property
    def ref(self) -> str:
        """How a later message names this one in its `references`."""
        return f"{self.sender},{self.identifier},{cap_time(self.sent)}"


def cap_time(t: datetime) -> str:
    """CAP time: seconds precision, explicit numeric offset (never 'Z' or naive)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"CAP times need a timezone: {t!r}")
    return t.replace(microsecond=0).isoformat()


def _fmt(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".") if v != 0 else "0"


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, _C + tag)
    if text is not None:
        el.text = text
    return el


def _named(parent: etree._Element, tag: str, name: str, value: str) -> None:
    el = _sub(parent, tag)
    _sub(el, "valueName", name)
    _sub(el, "value", value)


def cap_xml(alert: CapAlert) -> bytes:
    """The CAP 1.2 XML document for `alert` (UTF-8, with XML declaration)."""
    root = etree.Element(_C + "alert", nsmap={None: CAP_NS})  # type: ignore[dict-item]
    _sub(root, "identifier", alert.identifier)
    _sub(root, "sender", alert.sender)
    _sub(root, "sent", cap_time(alert.sent))
    _sub(root, "status", alert.status)
    _sub(root, "msgType", alert.msg_type)
    _sub(root, "scope", alert.scope)
    if alert.note is not None:
        _sub(root, "note", alert.note)
    if alert.references:
        _sub(root, "references", " ".join(alert.references))
    if alert.incidents is not None:
        _sub(root, "incidents", alert.incidents)
    for info in alert.info:
        el = _sub(root, "info")
        _sub(el, "language", info.language)
        for c in info.category:
            _sub(el, "category", c)
        _sub(el, "event", info.event)
        for r in info.response_type:
            _sub(el, "responseType", r)
        _sub(el, "urgency", info.urgency)
        _sub(el, "severity", info.severity)
        _sub(el, "certainty", info.certainty)
        for tag, t in (
            ("effective", info.effective),
            ("onset", info.onset),
            ("expires", info.expires),
        ):
            if t is not None:
                _sub(el, tag, cap_time(t))
        for tag, text in (
            ("senderName", info.sender_name),
            ("headline", info.headline),
            ("description", info.description),
            ("instruction", info.instruction),
        ):
            if text is not None:
                _sub(el, tag, text)
        for name, value in info.parameters:
            _named(el, "parameter", name, value)
        for area in info.areas:
            a = _sub(el, "area")
            _sub(a, "areaDesc", area.area_desc)
            for ring in area.polygons:
                _sub(a, "polygon", " ".join(f"{_fmt(la)},{_fmt(lo)}" for la, lo in ring))
            for la, lo, rad in area.circles:
                _sub(a, "circle", f"{_fmt(la)},{_fmt(lo)} {_fmt(rad)}")
            for name, value in area.geocodes:
                _named(a, "geocode", name, value)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


@cache
def cap_schema() -> etree.XMLSchema:
    src = importlib.resources.files("commonsky.alerts").joinpath("cap12.xsd").read_bytes()
    return etree.XMLSchema(etree.fromstring(src, _parser()))


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_pis=True
    )


def _parse(data: bytes) -> etree._Element:
    try:
        tree = etree.fromstring(data, _parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        raise CapInvalid(f"not well-formed XML: {exc}") from None
    if tree.docinfo.doctype:  # type: ignore[union-attr]
        raise CapInvalid("DOCTYPE declarations are refused")
    return tree.getroot()


def validate_cap(data: bytes) -> etree._Element:
    """Check one CAP 1.2 document; return its root or raise `CapInvalid` (one line)."""
    root = _parse(data)
    schema = cap_schema()
    try:
        schema.assertValid(root)
    except etree.DocumentInvalid as exc:
        raise CapInvalid(str(exc).splitlines()[0]) from None
    msg_type = root.findtext(_C + "msgType")
    if msg_type in ("Update", "Cancel", "Ack", "Error") and root.find(_C + "references") is None:
        raise CapInvalid(f"a {msg_type} message must carry <references>")
    for poly in root.iter(_C + "polygon"):
        pairs = (poly.text or "").split()
        if pairs[0] != pairs[-1]:
            raise CapInvalid(f"line {poly.sourceline}: polygon is not closed (first != last)")
    for el in root.iter(_C + "polygon", _C + "circle"):
        for pair in (el.text or "").split()[: None if el.tag == _C + "polygon" else 1]:
            la, lo = (float(v) for v in pair.split(","))
            if not (-90 <= la <= 90 and -180 <= lo <= 180):
                raise CapInvalid(f"line {el.sourceline}: coordinate {pair} out of range")
    return root


def alert_url(base_url: str, identifier: str) -> str:
    return f"{base_url.rstrip('/')}/cap/alerts/{quote(identifier, safe='')}.xml"


def atom_feed(
    alerts: Iterable[CapAlert],
    base_url: str,
    *,
    title: str = "CommonSky public warnings",
    updated: datetime | None = None,
) -> bytes:
    """Atom feed, newest first; each entry links its CAP document at /cap/alerts/{id}.xml."""
    items: Sequence[CapAlert] = sorted(alerts, key=lambda a: (a.sent, a.identifier), reverse=True)
    base = base_url.rstrip("/")
    feed = etree.Element(_A + "feed", nsmap={None: ATOM_NS})  # type: ignore[dict-item]
    etree.SubElement(feed, _A + "id").text = f"{base}/cap/feed.atom"
    etree.SubElement(feed, _A + "title").text = title
    newest = updated or (items[0].sent if items else datetime(1970, 1, 1, tzinfo=UTC))
    etree.SubElement(feed, _A + "updated").text = cap_time(newest)
    etree.SubElement(feed, _A + "link", rel="self", href=f"{base}/cap/feed.atom")
    for a in items:
        url = alert_url(base, a.identifier)
        entry = etree.SubElement(feed, _A + "entry")
        etree.SubElement(entry, _A + "id").text = url
        headline = next((i.headline for i in a.info if i.headline), None)
        etree.SubElement(entry, _A + "title").text = f"{a.msg_type}: {headline or a.identifier}"
        etree.SubElement(entry, _A + "updated").text = cap_time(a.sent)
        author = etree.SubElement(entry, _A + "author")
        etree.SubElement(author, _A + "name").text = a.sender
        etree.SubElement(entry, _A + "link", rel="alternate", type="application/cap+xml", href=url)
        summary = next((i.description for i in a.info if i.description), None)
        if summary:
            etree.SubElement(entry, _A + "summary").text = summary
    return bytes(etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def feed_links(data: bytes) -> list[str]:
    """The CAP document addresses an Atom feed of `atom_feed` links, newest first."""
    root = _parse(data)
    return [
        str(link.get("href"))
        for entry in root.iter(_A + "entry")
        for link in entry.iter(_A + "link")
        if link.get("type") == "application/cap+xml"
    ]


def read_cap(data: bytes) -> CapAlert:
    """One CAP 1.2 document back as a `CapAlert` (what `cap_xml` writes, read with the
    locked-down parser after `validate_cap`). Raises `CapInvalid` (one line)."""
    root = validate_cap(data)

    def text(el: etree._Element, tag: str) -> str | None:
        return el.findtext(_C + tag)

    def texts(el: etree._Element, tag: str) -> tuple[str, ...]:
        return tuple(c.text or "" for c in el.findall(_C + tag))

    def when(el: etree._Element, tag: str) -> datetime | None:
        value = text(el, tag)
        return datetime.fromisoformat(value) if value is not None else None

    def named(el: etree._Element, tag: str) -> tuple[tuple[str, str], ...]:
        return tuple(
            (c.findtext(_C + "valueName") or "", c.findtext(_C + "value") or "")
            for c in el.findall(_C + tag)
        )

    def pair(text: str) -> tuple[float, float]:
        la, lo = text.split(",")
        return float(la), float(lo)

    infos = []
    for el in root.findall(_C + "info"):
        areas = []
        for a in el.findall(_C + "area"):
            polygons = tuple(tuple(pair(p) for p in ring.split()) for ring in texts(a, "polygon"))
            circles = []
            for circle in texts(a, "circle"):
                centre, radius = circle.split()
                circles.append((*pair(centre), float(radius)))
            areas.append(
                CapArea(text(a, "areaDesc") or "", polygons, tuple(circles), named(a, "geocode"))
            )
        infos.append(
            CapInfo(
                category=texts(el, "category"),
                event=text(el, "event") or "",
                urgency=text(el, "urgency") or "",
                severity=text(el, "severity") or "",
                certainty=text(el, "certainty") or "",
                response_type=texts(el, "responseType"),
                language=text(el, "language") or "en-US",
                effective=when(el, "effective"),
                onset=when(el, "onset"),
                expires=when(el, "expires"),
                sender_name=text(el, "senderName"),
                headline=text(el, "headline"),
                description=text(el, "description"),
                instruction=text(el, "instruction"),
                parameters=named(el, "parameter"),
                areas=tuple(areas),
            )
        )
    references = text(root, "references")
    sent = when(root, "sent")
    assert sent is not None  # (the schema requires it)
    return msgspec.convert(
        {
            "identifier": text(root, "identifier"),
            "sender": text(root, "sender"),
            "sent": sent,
            "status": text(root, "status"),
            "msg_type": text(root, "msgType"),
            "scope": text(root, "scope"),
            "references": tuple(references.split()) if references else (),
            "note": text(root, "note"),
            "incidents": text(root, "incidents"),
            "info": tuple(infos),
        },
        CapAlert,
        from_attributes=True,
    )
