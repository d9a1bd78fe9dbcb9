"""Made-up aerial photographs for the demo and the tests — rendered, never downloaded.

`aerial_geotiff` draws a plan view of a bounding box (fields, a river, roads, the scenario's
points of interest as dark blobs) and writes it as a GeoTIFF in WGS-84 (EPSG:4326) with a
tie point, pixel scale and capture time (TIFF DateTime); `aerial_jpeg` writes the same kind
of picture as a JPEG whose EXIF carries GPS position and DateTimeOriginal with its offset —
the two ways a real image says where and when.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import Sequence
from fractions import Fraction

from PIL import Image, ImageDraw


def _picture(
    width: int,
    height: int,
    seed: int,
    spots: Sequence[tuple[float, float]] = (),
    river: bool = True,
) -> Image.Image:
    """A plan view: fields, a river and roads, and dark blobs at `spots` (x, y in 0..1)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), (176, 160, 120))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        w, h = rng.randrange(20, width // 3), rng.randrange(20, height // 3)
        shade = rng.randrange(-30, 30)
        draw.rectangle((x, y, x + w, y + h), fill=(150 + shade, 150 + shade, 95 + shade // 2))
    if river:
        points = [(0, int(height * 0.3))]
        for i in range(1, 9):
            points.append((width * i // 8, int(height * (0.3 + 0.4 * rng.random()))))
        draw.line(points, fill=(70, 100, 140), width=max(4, width // 40))
    for _ in range(3):
        y = rng.randrange(height)
        draw.line((0, y, width, rng.randrange(height)), fill=(205, 200, 190), width=3)
    for sx, sy in spots:
        cx, cy = int(sx * width), int(sy * height)
        r = max(4, width // 60)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(40, 35, 30))
    return image


def aerial_geotiff(
    west: float,
    south: float,
    east: float,
    north: float,
    captured: float,
    seed: int = 1,
    spots: Sequence[tuple[float, float]] = (),
    width: int = 384,
    height: int = 256,
) -> bytes:
    """A GeoTIFF of the box (degrees), taken at `captured` (epoch seconds, UTC)."""
    import numpy as np
    import tifffile

    relative = [
        ((lon - west) / (east - west), (north - lat) / (north - south)) for lon, lat in spots
    ]
    pixels = np.asarray(_picture(width, height, seed, relative))
    stamp = dt.datetime.fromtimestamp(captured, dt.UTC).strftime("%Y:%m:%d %H:%M:%S")
    geokeys = (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326)  # geographic, WGS 84
    out = io.BytesIO()
    tifffile.imwrite(
        out,
        pixels,
        photometric="rgb",
        datetime=stamp,
        extratags=[
            (33550, "d", 3, ((east - west) / width, (north - south) / height, 0.0), True),
            (33922, "d", 6, (0.0, 0.0, 0.0, west, north, 0.0), True),
            (34735, "H", len(geokeys), geokeys, True),
        ],
    )
    return out.getvalue()


def _rational(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = Fraction(round((value - degrees - minutes / 60) * 3600 * 1000), 1000)
    return Fraction(degrees), Fraction(minutes), seconds


def aerial_jpeg(
    lat: float, lon: float, captured: float, seed: int = 2, width: int = 384, height: int = 256
) -> bytes:
    """A JPEG with EXIF GPS (lat, lon) and DateTimeOriginal + OffsetTimeOriginal (UTC)."""
    image = _picture(width, height, seed, [(0.5, 0.5)])
    exif = Image.Exif()
    stamp = dt.datetime.fromtimestamp(captured, dt.UTC).strftime("%Y:%m:%d %H:%M:%S")
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = stamp  # DateTimeOriginal
    sub[0x9011] = "+00:00"  # OffsetTimeOriginal
    gps = exif.get_ifd(0x8825)
    gps[1] = "N" if lat >= 0 else "S"
    gps[2] = _rational(lat)
    gps[3] = "E" if lon >= 0 else "W"
    gps[4] = _rational(lon)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()
