"""What an upload may be before the replica decodes it: the declared type must match the bytes,
and the header must promise a bounded decode (pixels, JPEG scans).

Decoding is the costly part of a request (bench/bench_uploads.py): a 38-byte lossless WebP can
claim 64 megapixels of RGBA. These checks read only the header, so a refused upload costs
microseconds; an accepted one decodes within the serving pixel limit, which `cvcore.image`
then reduces before any full-size copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvcore.errors import ImageError
from cvcore.image import MAX_JPEG_SCANS, probe_image

SERVING_MAX_PIXELS = 16_000_000
"""Pixel limit for uploads, well below the data sets' 64 MP: a 12-megapixel phone photo passes, and
the costliest lossless upload at the limit decodes in about 0.35 s of CPU and 200 MB (measured,
bench/RESULTS.md); JPEGs, decoded at 1/8 scale, cost far less."""

MEDIA_TYPE_FORMATS = {"image/jpeg": ("JPEG", "MPO"), "image/png": ("PNG",), "image/webp": ("WEBP",)}
"""Media types served, and the Pillow formats their bytes may hold (MPO: a JPEG with extra pictures)."""

MAGIC_NUMBERS = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


class WrongMediaType(ImageError):
    """The bytes are an image of a type we do not serve, or of another type than declared (415)."""


def sniff_media_type(data: bytes) -> str | None:
    """The media type the first bytes say (magic numbers), None when they are no image we know."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((media_type for magic, media_type in MAGIC_NUMBERS if data.startswith(magic)), None)


@dataclass(frozen=True)
class UploadPolicy:
    """The checks one upload passes before it is decoded."""

    max_pixels: int = SERVING_MAX_PIXELS
    max_jpeg_scans: int = MAX_JPEG_SCANS

    def check(self, data: bytes, declared: str | None) -> None:
        """Raise `WrongMediaType` when the bytes are not a served type or not the `declared` one
        (a multipart part may declare none, or application/octet-stream), `ImageError` when they
        are not an image or over a limit."""
        actual = sniff_media_type(data)
        if actual is not None and actual not in MEDIA_TYPE_FORMATS:
            raise WrongMediaType(f"the upload is {actual}; send one of {', '.join(MEDIA_TYPE_FORMATS)}")
        if actual is not None and declared in MEDIA_TYPE_FORMATS and declared != actual:
            raise WrongMediaType(f"the upload is declared {declared} but its bytes are {actual}")
        formats = MEDIA_TYPE_FORMATS.get(actual or declared or "", ())
        if not formats:
            raise ImageError(f"image data ({len(data)} bytes): not a JPEG, PNG or WebP image")
        probe_image(data, max_pixels=self.max_pixels, max_jpeg_scans=self.max_jpeg_scans, formats=formats)
