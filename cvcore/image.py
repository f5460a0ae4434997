"""Safe image decoding and the one preprocessing shared by prepare, training, predict and serve.

Images come from customers' folders and from untrusted HTTP uploads, so every failure caused by
the bytes (not an image, truncated, a decompression bomb, a Pillow bug tripped by odd input) is
reported as `ImageError` and nothing else.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cvcore.errors import ImageError

MAX_PIXELS = 64_000_000
"""Pixel limit checked from the header before decoding: room for 48-megapixel phone photos,
small enough that one decoded RGB image stays under 200 MB."""

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
"""Container formats we open (JPEG includes multi-picture MPO). Pillow would otherwise try every
plugin it has, some of which (EPS via Ghostscript, for one) widen the attack surface for no gain."""

ImageSource = bytes | str | os.PathLike


def _describe(source: ImageSource) -> str:
    """How error messages name the image: its path, or the size of the uploaded bytes."""
    if isinstance(source, bytes):
        return f"image data ({len(source)} bytes)"
    return str(source)


@contextmanager
def _opened(source: ImageSource, max_pixels: int) -> Iterator[Image.Image]:
    """Open the header only, refuse anything over `max_pixels`, and map every failure to `ImageError`."""
    name = _describe(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError("image data is empty (0 bytes)")
        fp: Path | io.BytesIO = io.BytesIO(source)
    else:
        fp = Path(source)
    try:
        # Pillow's own bomb guard only warns below twice its limit; make the warning an error too.
        # (catch_warnings is not thread-safe, but a lost filter only lets the check below decide.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({err})") from err
    except Image.UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})") from err
    except OSError as err:
        if err.errno is not None:  # the file itself: missing, a folder, no permission
            raise ImageError(f"{name}: cannot read ({err.strerror})") from err
        raise ImageError(f"{name}: truncated or corrupt image ({err})") from err
    except Exception as err:  # noqa: BLE001 - untrusted bytes can trip any error inside Pillow
        raise ImageError(f"{name}: not a valid image ({type(err).__name__}: {err})") from err
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(
                f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of "
                f"{max_pixels:,} pixels (possible decompression bomb)"
            )
        yield img


def probe_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Read only the header and return (width, height): a cheap check that a file is an image
    we would accept, without decoding it."""
    with _opened(source, max_pixels) as img:
        return img.size


def decode_image(
    source: ImageSource, *, max_pixels: int = MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
    """Decode an image to RGB with its EXIF orientation applied.

    The pixel count is checked from the header before any decoding; the image is then decoded
    completely so that truncation shows up here rather than as grey rows in training.
    Pillow's own bomb guard (about 89 million pixels) applies as well, whatever `max_pixels` says.
    `draft_size` lets JPEG decode at a reduced scale that is still at least that many pixels
    on both sides (much faster for large photos that are going to be shrunk anyway).
    """
    name = _describe(source)
    with _opened(source, max_pixels) as img:
        try:
            if draft_size is not None:
                img.draft("RGB", (draft_size, draft_size))
            img.load()
        except Exception as err:  # noqa: BLE001 - untrusted bytes can trip any error inside Pillow
            raise ImageError(f"{name}: truncated or corrupt image ({err})") from err
        try:
            return to_rgb(ImageOps.exif_transpose(img))
        except Exception as err:  # noqa: BLE001 - a malformed EXIF block or an exotic mode
            raise ImageError(f"{name}: cannot convert to RGB ({type(err).__name__}: {err})") from err


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: transparency is composited over white (how viewers show
    it), 16-bit grey is scaled down rather than clipped."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        grey = (np.asarray(img, dtype=np.uint32) // 257).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def letterbox(img: Image.Image, size: int) -> np.ndarray:
    """Scale the long side to `size` keeping the aspect ratio, and centre on black.

    Returns uint8 (size, size, 3). Pillow's bilinear resize widens its kernel when shrinking,
    so downscaling is antialiased.
    """
    img = to_rgb(img)
    scale = size / max(img.size)
    width = max(1, round(img.width * scale))
    height = max(1, round(img.height * scale))
    resized = img.resize((width, height), Image.Resampling.BILINEAR)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    canvas[top : top + height, left : left + width] = np.asarray(resized)
    return canvas


def load_image(source: ImageSource, size: int, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The single preprocessing path for prepare, predict and serve: decode, then letterbox."""
    return letterbox(decode_image(source, max_pixels=max_pixels, draft_size=size), size)
