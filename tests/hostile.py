"""Hostile uploads, crafted in a few lines each: small files that cost a naive decoder seconds of CPU
or gigabytes of memory. Used by the tests (at sizes the tests can afford) and by
bench/bench_uploads.py (at the sizes of the review that found them)."""

from __future__ import annotations

import io
import struct

from PIL import Image


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def lossless_webp_rgba(width: int, height: int) -> bytes:
    """One colour, half transparent: lossless WebP compresses it to a few dozen bytes."""
    return _save(Image.new("RGBA", (width, height), (200, 30, 30, 128)), "WEBP", lossless=True, quality=0, method=0)


def semi_transparent_png(width: int, height: int) -> bytes:
    """RGBA with every pixel half transparent: compositing it over white is a full-size pass."""
    return _save(Image.new("RGBA", (width, height), (30, 200, 30, 100)), "PNG", compress_level=9)


def grey16_png(width: int, height: int) -> bytes:
    """16-bit greyscale: converted through a 32-bit array in the old code."""
    return _save(Image.new("I;16", (width, height), 40_000), "PNG", compress_level=9)


def rle_bmp(width: int, height: int) -> bytes:
    """An 8-bit run-length BMP: each row is runs of 255 pixels of one palette colour."""
    row = bytearray()
    left = width
    while left:
        run = min(255, left)
        row += bytes((run, 7))
        left -= run
    pixels = bytes(row + b"\x00\x00") * height + b"\x00\x01"  # end of line per row, end of bitmap
    palette = b"".join(bytes((i, 255 - i, i // 2, 0)) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def progressive_jpeg_repeated_scan(width: int, height: int, repeats: int) -> bytes:
    """A progressive JPEG whose last scan is repeated: each copy is decoded again over the whole
    image, and on a flat picture a scan is only a few bytes per 8x8 block row."""
    data = _save(Image.new("RGB", (width, height), (90, 120, 150)), "JPEG", progressive=True, quality=70)
    last_scan = data.rindex(b"\xff\xda")
    scan = data[last_scan:-2]  # up to the end-of-image marker
    return data[:-2] + scan * repeats + b"\xff\xd9"


def as_type(data: bytes, fmt: str) -> bytes:
    """Re-encode a small photo in another container (a TIFF or BMP to be sent as image/jpeg)."""
    return _save(Image.open(io.BytesIO(data)).convert("RGB"), fmt)
