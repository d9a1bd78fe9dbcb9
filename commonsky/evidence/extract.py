"""What an image says about itself: when it was taken, where, and what it looks like small.

Sources, in order of trust:

- a **GeoTIFF** (tags ModelTiepoint 33922, ModelPixelScale 33550, GeoKeyDirectory 34735; OGC
  GeoTIFF 1.1) gives a footprint: the image's four corners in its CRS, taken to WGS-84 with
  pyproj (a projected CRS by its EPSG code). Rotated or sheared images
  (ModelTransformation) are not read: no footprint rather than a wrong one.
- **EXIF GPS** (GPSLatitude/Longitude with their Ref; Exif 2.32 §4.6.6) gives a position, not a
  footprint: a camera's position says nothing of what it saw.
- Capture time: EXIF DateTimeOriginal with OffsetTimeOriginal (local time without an offset
  is taken as UTC, and said so), else the GPS date and time stamps (UTC by definition), else
  TIFF DateTime.

Nothing is decoded past `limit_image_pixels` (decompression bombs): such an image is kept
as a file but is no evidence.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from commonsky.errors import CommonSkyError

THUMBNAIL_PX = 160  # small enough to ride in the marker (about 4 KiB of JPEG)
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825


class NotEvidence(CommonSkyError):
    """An image that cannot be read as evidence (the reason is the message): the sender's
    file, HTTP 400."""

    http_status = 400
    reason = "not_evidence"


@dataclass
class ImageFacts:
    mime: str
    width: int
    height: int
    captured: float | None = None  # epoch seconds, UTC
    captured_from: str = ""  # "exif" | "exif-local" | "gps" | "tiff" | ""
    position: tuple[float, float] | None = None  # (lat, lon)
    footprint: list[tuple[float, float]] | None = None  # closed ring of (lon, lat)
    located_from: str = ""  # "geotiff" | "exif-gps" | ""
    thumbnail: bytes = b""  # JPEG
    notes: list[str] = field(default_factory=list)

    @property
    def centre(self) -> tuple[float, float] | None:
        """(lat, lon) of the footprint's centre, or the position."""
        if self.footprint:
            ring = self.footprint[:-1]
            return (
                sum(p[1] for p in ring) / len(ring),
                sum(p[0] for p in ring) / len(ring),
            )
        return self.position


def read_facts(data: bytes, mime: str, max_pixels: int) -> ImageFacts:
    """Facts of one JPEG, PNG or TIFF. Raises NotEvidence for an image Pillow cannot open or
    one over `max_pixels`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise NotEvidence(f"{width}x{height} pixels (limit_image_pixels={max_pixels})")
            facts = ImageFacts(mime, width, height)
            exif = image.getexif()
            _capture_time(exif, facts)
            _gps(exif, facts)
            if mime == "image/tiff":
                _geotiff(data, facts)
            facts.thumbnail = _thumbnail(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise NotEvidence(f"not a readable image ({exc})") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise NotEvidence(str(exc)) from None
    return facts


def _thumbnail(image: Image.Image) -> bytes:
    try:
        small = image.convert("RGB")
        small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=80)
        return out.getvalue()
    except (OSError, ValueError):
        return b""  # an unusual pixel format: no thumbnail, still evidence


def _exif_time(text: Any, offset: Any) -> tuple[float, bool] | None:
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.strptime(text.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    if isinstance(offset, str) and len(offset.strip("\x00")) == 6:
        try:
            hours, minutes = int(offset[1:3]), int(offset[4:6])
        except ValueError:
            hours = minutes = 0
        sign = -1 if offset.startswith("-") else 1
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        return moment.replace(tzinfo=tz).timestamp(), True
    return moment.replace(tzinfo=dt.UTC).timestamp(), False


def _capture_time(exif: Image.Exif, facts: ImageFacts) -> None:
    sub = exif.get_ifd(_EXIF_IFD)
    found = _exif_time(sub.get(0x9003), sub.get(0x9011))  # DateTimeOriginal, OffsetTime…
    if found is not None:
        facts.captured, zoned = found
        facts.captured_from = "exif" if zoned else "exif-local"
        if not zoned:
            facts.notes.append("capture time has no UTC offset; taken as UTC")
        return
    gps = exif.get_ifd(_GPS_IFD)
    date, stamp = gps.get(29), gps.get(7)  # GPSDateStamp, GPSTimeStamp
    if isinstance(date, str) and stamp is not None and len(stamp) == 3:
        try:
            day = dt.datetime.strptime(date.strip("\x00")[:10], "%Y:%m:%d").replace(tzinfo=dt.UTC)
            seconds = float(stamp[0]) * 3600 + float(stamp[1]) * 60 + float(stamp[2])
            facts.captured = day.timestamp() + seconds
            facts.captured_from = "gps"
            return
        except (ValueError, TypeError, ZeroDivisionError):
            pass
    found = _exif_time(exif.get(0x0132), None)  # TIFF DateTime
    if found is not None:
        facts.captured = found[0]
        facts.captured_from = "tiff"


def _degrees(value: Any, ref: Any, negative: str) -> float | None:
    try:
        d, m, s = (float(v) for v in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    degrees = d + m / 60 + s / 3600
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    if isinstance(ref, str) and ref.strip("\x00").upper() == negative:
        degrees = -degrees
    return degrees if math.isfinite(degrees) else None


def _gps(exif: Image.Exif, facts: ImageFacts) -> None:
    gps = exif.get_ifd(_GPS_IFD)
    if not gps:
        return
    lat = _degrees(gps.get(2), gps.get(1), "S")
    lon = _degrees(gps.get(4), gps.get(3), "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return
    facts.position = (round(lat, 7), round(lon, 7))
    facts.located_from = "exif-gps"


def _geotiff(data: bytes, facts: ImageFacts) -> None:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            meta = tif.geotiff_metadata
            page = tif.pages.first
            width, height = int(page.imagewidth), int(page.imagelength)
    except Exception as exc:  # tifffile raises many kinds on a damaged file
        facts.notes.append(f"GeoTIFF tags unreadable ({type(exc).__name__})")
        return
    if not meta or "ModelTiepoint" not in meta or "ModelPixelScale" not in meta:
        return
    if "ModelTransformation" in meta:
        facts.notes.append("rotated GeoTIFF (ModelTransformation): footprint not read")
        return
    tie = [float(v) for v in meta["ModelTiepoint"]][:6]
    scale = [float(v) for v in meta["ModelPixelScale"]][:2]
    i, j, _, x0, y0, _ = tie
    sx, sy = scale

    def model(px: float, py: float) -> tuple[float, float]:
        return x0 + (px - i) * sx, y0 - (py - j) * sy

    corners = [model(0, 0), model(width, 0), model(width, height), model(0, height)]
    epsg = _epsg(meta)
    if epsg is None:
        facts.notes.append("GeoTIFF CRS not given as an EPSG code: footprint not read")
        return
    if epsg != 4326:
        try:
            from pyproj import Transformer

            transform = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
            corners = [transform.transform(x, y) for x, y in corners]
        except Exception as exc:  # pyproj: unknown code, failed transform
            facts.notes.append(f"EPSG:{epsg} cannot be taken to WGS-84 ({type(exc).__name__})")
            return
    ring = [(round(lon, 7), round(lat, 7)) for lon, lat in corners]
    if not all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring):
        facts.notes.append("GeoTIFF corners fall outside WGS-84: footprint not read")
        return
    facts.footprint = [*ring, ring[0]]
    facts.located_from = "geotiff"


def _epsg(meta: dict[str, Any]) -> int | None:
    for key in ("ProjectedCSTypeGeoKey", "GeographicTypeGeoKey"):
        value = meta.get(key)
        if value is None:
            continue
        try:
            code = int(value)
        except (TypeError, ValueError):
            continue
        if 1024 <= code < 32767:
            return code
    return None
