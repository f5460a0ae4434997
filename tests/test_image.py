"""Safe decoding and letterboxing: every bad input is an ImageError, every mode comes back RGB."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cvcore.errors import ImageError
from cvcore.image import MAX_PIXELS, decode_image, letterbox, load_image, probe_image


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header that claims any size, with no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_jpeg_bytes_and_path_decode_to_rgb(tmp_path):
    data = encode(noise(64, 48), "JPEG")
    path = tmp_path / "car.jpg"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        img = decode_image(source)
        assert img.mode == "RGB" and img.size == (64, 48)


def test_exif_orientation_is_applied():
    # Left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise to view".
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :40] = (255, 0, 0)
    pixels[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    img = decode_image(encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95))
    assert img.size == (40, 80)
    top, bottom = np.asarray(img)[10, 20], np.asarray(img)[70, 20]
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize(
    ("mode", "fmt", "value", "expected"),
    [
        ("L", "PNG", 128, (128, 128, 128)),
        ("1", "PNG", 1, (255, 255, 255)),
        ("LA", "PNG", (0, 0), (255, 255, 255)),  # fully transparent black → white background
        ("RGBA", "PNG", (0, 0, 0, 0), (255, 255, 255)),
        ("RGBA", "PNG", (10, 20, 30, 255), (10, 20, 30)),
        ("CMYK", "JPEG", (0, 0, 0, 0), (255, 255, 255)),
        ("CMYK", "TIFF", (0, 255, 255, 0), (255, 0, 0)),
        ("RGB", "WEBP", (0, 0, 255), (0, 0, 255)),
    ],
)
def test_any_mode_comes_back_rgb(mode, fmt, value, expected):
    img = decode_image(encode(Image.new(mode, (16, 12), value), fmt))
    assert img.mode == "RGB"
    np.testing.assert_allclose(np.asarray(img)[6, 8], expected, atol=3)


def test_palette_with_transparency_is_composited_over_white():
    img = Image.new("P", (16, 12), 1)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    decoded = np.asarray(decode_image(encode(img, "PNG", transparency=0)))
    assert tuple(decoded[0, 0]) == (255, 255, 255)
    assert tuple(decoded[5, 5]) == (200, 0, 0)


def test_16_bit_grey_is_scaled_not_clipped():
    img = Image.fromarray(np.full((12, 16), 40000, dtype=np.uint16))
    decoded = decode_image(encode(img, "PNG"))
    assert decoded.mode == "RGB"
    assert tuple(np.asarray(decoded)[0, 0]) == (155, 155, 155)  # 40000 / 257


def test_png_header_claiming_huge_dimensions_is_refused_before_decoding():
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(png_header(100_000, 100_000))


def test_pillows_own_bomb_warning_becomes_an_error():
    # 10^8 pixels: under our raised limit, over Pillow's warning threshold.
    with pytest.raises(ImageError, match="100000000 pixels"):
        decode_image(png_header(10_000, 10_000), max_pixels=10**9)


def test_pixel_limit_names_size_and_limit():
    with pytest.raises(ImageError, match=r"64x48 = 3,072 pixels is over the limit of 1,000"):
        decode_image(encode(noise(64, 48), "PNG"), max_pixels=1000)
    with pytest.raises(ImageError, match="over the limit"):
        probe_image(encode(noise(64, 48), "PNG"), max_pixels=1000)
    assert MAX_PIXELS >= 48_000_000  # a 48-megapixel phone photo must pass


def test_truncated_jpeg_is_an_error():
    data = encode(noise(200, 150), "JPEG")
    assert probe_image(data[: len(data) // 2]) == (200, 150)  # the header alone looks fine
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (bytes(random.Random(0).randrange(256) for _ in range(2000)), "not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # EPS is never opened
    ],
)
def test_non_images_are_errors(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(tmp_path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the tags it skips
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_corrupted_bytes_only_ever_raise_image_error(fmt):
    """The HTTP server feeds untrusted uploads straight in: flipped bytes may decode or fail,
    but never with anything other than ImageError."""
    original = bytearray(encode(noise(24, 16), fmt))
    rng = random.Random(fmt)
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            assert decode_image(bytes(data[: rng.randint(1, len(data))])).mode == "RGB"
        except ImageError:
            pass


def test_draft_decodes_jpeg_at_reduced_scale_but_never_below_the_requested_size():
    data = encode(noise(1600, 1200), "JPEG")
    assert decode_image(data, draft_size=300).size == (400, 300)
    assert decode_image(data, draft_size=1000).size == (1600, 1200)
    small = decode_image(data, draft_size=100)
    assert min(small.size) >= 100 and small.size[0] < 1600


@pytest.mark.parametrize(("width", "height"), [(200, 100), (100, 200), (90, 90), (10, 5)])
def test_letterbox_keeps_aspect_and_centres_on_black(width, height):
    out = letterbox(Image.new("RGB", (width, height), (255, 255, 255)), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    rows = np.flatnonzero(out[:, :, 0].max(axis=1) > 0)
    cols = np.flatnonzero(out[:, :, 0].max(axis=0) > 0)
    scale = 64 / max(width, height)
    assert (rows.size, cols.size) == (round(height * scale), round(width * scale))
    assert rows[0] == 64 - 1 - rows[-1] or rows[0] == 64 - 2 - rows[-1]  # centred (odd padding: 1 px)
    assert cols[0] == 64 - 1 - cols[-1] or cols[0] == 64 - 2 - cols[-1]


def test_letterbox_antialiases_when_shrinking():
    stripes = np.zeros((64, 256, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes average to mid-grey, not to aliasing patterns
    out = letterbox(Image.fromarray(stripes), 64)
    band = out[24:40, 4:60, 0].astype(float)
    assert 100 < band.mean() < 155 and band.std() < 20


def test_load_image_is_decode_then_letterbox(tmp_path):
    path = tmp_path / "car.jpg"
    path.write_bytes(encode(noise(640, 480), "JPEG"))
    out = load_image(path, 128)
    assert out.shape == (128, 128, 3)
    assert not out[:16].any() and not out[-16:].any()  # 4:3 leaves black bands top and bottom
    np.testing.assert_array_equal(out, letterbox(decode_image(path, draft_size=128), 128))
