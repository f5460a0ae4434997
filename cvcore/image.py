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

MAX_JPEG_SCANS = 32
"""Most scans a JPEG may have. Every scan of a progressive JPEG is decoded over the whole image
(about 40 ms per scan at 64 megapixels), so a file that repeats one scan costs CPU without bound;
encoders write about 10 (libjpeg's progression) and rarely more than 20."""

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
"""Container formats we open (JPEG includes multi-picture MPO). Pillow would otherwise try every
plugin it has, some of which (EPS via Ghostscript, for one) widen the attack surface for no gain."""

ImageSource = bytes | str | os.PathLike


def _describe(source: ImageSource) -> str:
    """How error messages name the image: its path, or the size of the uploaded bytes."""
    if isinstance(source, bytes):
        return f"image data ({len(source)} bytes)"
    return str(source)


def _jpeg_scans(source: ImageSource) -> int:
    """Start-of-scan markers in a JPEG file: an upper bound on its scans (an EXIF thumbnail's
    scans count too; inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart
    marker, so the marker cannot appear there)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return data.count(b"\xff\xda")


@contextmanager
def _opened(
    source: ImageSource,
    max_pixels: int,
    max_jpeg_scans: int = MAX_JPEG_SCANS,
    formats: tuple[str, ...] = ACCEPTED_FORMATS,
) -> Iterator[Image.Image]:
    """Open the header only, refuse anything over `max_pixels` (or a JPEG with more than
    `max_jpeg_scans` scans), and map every failure to `ImageError`."""
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
            img = Image.open(fp, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({err})") from err
    except Image.UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image in a supported format ({', '.join(formats)})") from err
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
        if img.format in ("JPEG", "MPO") and (scans := _jpeg_scans(source)) > max_jpeg_scans:
            raise ImageError(f"{name}: a JPEG with {scans} scans is over the limit of {max_jpeg_scans}")
        yield img


def probe_image(
    source: ImageSource,
    *,
    max_pixels: int = MAX_PIXELS,
    max_jpeg_scans: int = MAX_JPEG_SCANS,
    formats: tuple[str, ...] = ACCEPTED_FORMATS,
) -> tuple[int, int]:
    """Read only the header and return (width, height): a cheap check that a file is an image
    we would accept (one of `formats`, within the limits), without decoding it."""
    with _opened(source, max_pixels, max_jpeg_scans, formats) as img:
        return img.size


def decode_image(
    source: ImageSource,
    *,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
    max_jpeg_scans: int = MAX_JPEG_SCANS,
) -> Image.Image:
    """Decode an image to RGB with its EXIF orientation applied.

    The pixel count is checked from the header before any decoding; the image is then decoded
    completely so that truncation shows up here rather than as grey rows in training.
    Pillow's own bomb guard (about 89 million pixels) applies as well, whatever `max_pixels` says.
    `draft_size` lets JPEG decode at a reduced scale that is still at least that many pixels
    on both sides (much faster for large photos that are going to be shrunk anyway); other formats
    are decoded whole and then box-reduced by an integer factor to the same bound, before any
    conversion, so the full-size image is never copied (EXIF transpose in place, transparency
    composited after the reduction). The JPEG scan count is checked against `max_jpeg_scans`.
    """
    name = _describe(source)
    with _opened(source, max_pixels, max_jpeg_scans) as img:
        try:
            if draft_size is not None:
                img.draft("RGB", (draft_size, draft_size))
            img.load()
        except Exception as err:  # noqa: BLE001 - untrusted bytes can trip any error inside Pillow
            raise ImageError(f"{name}: truncated or corrupt image ({err})") from err
        try:
            ImageOps.exif_transpose(img, in_place=True)
            return to_rgb(_reduced(img, draft_size) if draft_size is not None else img)
        except Exception as err:  # noqa: BLE001 - a malformed EXIF block or an exotic mode
            raise ImageError(f"{name}: cannot convert to RGB ({type(err).__name__}: {err})") from err


def _reduced(img: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps both sides at least `min_side`
    (`Image.reduce` averages RGBA premultiplied). Palette, bilevel and 16-bit images, which
    `reduce` cannot average, are converted to RGB first."""
    factor = min(img.width, img.height) // min_side
    if factor < 2:
        return img
    if img.mode in ("P", "PA", "1") or img.mode.startswith("I;16"):
        img = to_rgb(img)
    return img.reduce(factor)


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
    """Decode, then letterbox to `size`: what prepare stores (the first half of `preprocess`)."""
    return letterbox(decode_image(source, max_pixels=max_pixels, draft_size=size), size)


RESIZE_METHOD = "bilinear-antialias"
"""How prepared pixels reach a model's input size (`resize_images`); checkpoints record it."""


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resample square uint8 images (N, S, S, 3) to another side, bilinear with antialiasing:
    training's step from the prepared size to a model's input size. (torch is imported here, not
    at the top: reading and validating data sets needs no torch.)"""
    if images.shape[1] == size:
        return images
    import torch
    import torch.nn.functional as F

    out = np.empty((len(images), size, size, 3), np.uint8)
    for start in range(0, len(images), 256):
        chunk = torch.tensor(images[start : start + 256]).permute(0, 3, 1, 2).float()  # a copy: inputs may be read-only
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + 256] = chunk.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out


def preprocess(
    source: ImageSource | Image.Image | np.ndarray,
    size: int,
    *,
    prepared_size: int | None = None,
    resize: str = RESIZE_METHOD,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """The one path from a photo (file, bytes, PIL image or HxWx3 uint8 array) to a model's input:
    decode safely, letterbox to the prepared size, then resize to `size` as training does.

    Training sees prepared pixels (letterboxed to `prepared_size` by prepare) resized to its input
    size; taking the same two steps here makes serving and evaluation see exactly what training
    saw. Returns uint8 (size, size, 3).
    """
    if resize != RESIZE_METHOD:
        raise ImageError(f"unknown resize method {resize!r}; this version knows {RESIZE_METHOD!r}")
    prepared_size = prepared_size or size
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise ImageError(f"an image array must be uint8 (height, width, 3), got {source.dtype} {source.shape}")
        pixels = letterbox(Image.fromarray(source), prepared_size)
    elif isinstance(source, Image.Image):
        pixels = letterbox(source, prepared_size)
    else:
        pixels = load_image(source, prepared_size, max_pixels=max_pixels)
    return resize_images(pixels[None], size)[0]
