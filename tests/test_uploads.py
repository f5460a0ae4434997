"""Untrusted inputs without Ray: hostile uploads (each class crafted by tests/hostile.py) are refused
from their header or decoded at bounded cost; declared types must match the bytes; checkpoints
from a URI, on the device Ray gives; model.json and data set symlinks that try to reach outside."""

from __future__ import annotations

import io
import json
import logging
import os
import time

import hostile
import numpy as np
import pytest
import torch
from PIL import Image

from cvcore.data import read_dataset
from cvcore.errors import CheckpointError, ImageError, UserError
from cvcore.image import MAX_JPEG_SCANS, decode_image, load_image
from cvcore.model import ModelSpec, build_model, load_model, save_checkpoint
from serve.app import ApiKeyCheck, AppArgs, build_app
from serve.replica_model import inference_device, load_replica_model, local_checkpoint
from serve.uploads import SERVING_MAX_PIXELS, UploadPolicy, WrongMediaType, sniff_media_type

OVER = (2100, 2000)  # over SMALL_POLICY's limit: refused from the header (the review's 8000x8000 files cost 3 s to craft)
AT_LIMIT = (4000, 4000)  # 16 MP: the serving limit, decoded
CPU_BUDGET_S = 1.0
POLICY = UploadPolicy()
SMALL_POLICY = UploadPolicy(max_pixels=4_000_000)


def cpu_seconds(function, *args, **kwargs):
    start = time.process_time()
    result = function(*args, **kwargs)
    return time.process_time() - start, result


def save(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def at_limit() -> dict[str, bytes]:
    """The lossless classes at the serving pixel limit, crafted once for the module (about 2 s)."""
    return {
        "webp": hostile.lossless_webp_rgba(*AT_LIMIT),
        "png_rgba": hostile.semi_transparent_png(*AT_LIMIT),
        "png_grey16": hostile.grey16_png(*AT_LIMIT),
    }


# ----------------------------------------------------------------------------------------------
# Hostile classes


@pytest.mark.parametrize(
    "craft, media_type",
    [
        (hostile.lossless_webp_rgba, "image/webp"),
        (hostile.semi_transparent_png, "image/png"),
        (hostile.grey16_png, "image/png"),
    ],
)
def test_lossless_uploads_over_the_serving_limit_are_refused_from_the_header(craft, media_type):
    data = craft(*OVER)
    assert len(data) < 100_000  # small files...
    start = time.process_time()
    with pytest.raises(ImageError, match="4,200,000 pixels is over the limit of 4,000,000"):
        SMALL_POLICY.check(data, media_type)
    assert time.process_time() - start < 0.05  # ...refused without decoding
    assert SERVING_MAX_PIXELS <= 16_000_000  # the default: the review's 64 MP files are refused like this


@pytest.mark.parametrize(
    "name, media_type, expected",
    [
        ("webp", "image/webp", [c * 128 / 255 + 255 - 128 for c in (200, 30, 30)]),  # over white
        ("png_rgba", "image/png", [c * 100 / 255 + 255 - 100 for c in (30, 200, 30)]),
        ("png_grey16", "image/png", [40000 / 257] * 3),
    ],
)
def test_lossless_uploads_at_the_limit_decode_within_a_second_and_right(at_limit, name, media_type, expected):
    data = at_limit[name]
    POLICY.check(data, media_type)
    seconds, pixels = cpu_seconds(load_image, data, 64)
    assert seconds < CPU_BUDGET_S
    np.testing.assert_allclose(pixels[32, 32], expected, atol=2)  # composited after the reduction, same colour


def test_decoding_reduces_lossless_images_before_converting_them(at_limit):
    img = decode_image(at_limit["png_rgba"], draft_size=64)
    assert img.mode == "RGB" and 64 <= img.width == img.height < 128  # a 62-fold reduction, not 4000 px
    small = decode_image(save(Image.new("RGBA", (100, 60), (0, 0, 0, 0)), "PNG"), draft_size=64)
    assert small.size == (100, 60)  # nothing to reduce


def test_run_length_bmp_is_not_served_and_decodes_bounded_elsewhere():
    data = hostile.rle_bmp(8000, 8000)
    for declared in ("image/jpeg", None, "application/octet-stream"):
        with pytest.raises(WrongMediaType, match="image/bmp"):
            POLICY.check(data, declared)
    seconds, img = cpu_seconds(decode_image, hostile.rle_bmp(2000, 2000), draft_size=64)  # data sets still read BMP
    assert img.size == (65, 65) and img.mode == "RGB" and seconds < CPU_BUDGET_S  # a 30-fold reduction


def test_progressive_jpeg_with_repeated_scans_is_refused_before_decoding():
    data = hostile.progressive_jpeg_repeated_scan(1000, 1000, 40)
    with pytest.raises(ImageError, match=rf"5\d scans is over the limit of {MAX_JPEG_SCANS}"):
        POLICY.check(data, "image/jpeg")
    with pytest.raises(ImageError, match="scans"):
        decode_image(data)  # data sets too
    normal = hostile.progressive_jpeg_repeated_scan(1000, 1000, 0)  # about 10 scans: fine
    POLICY.check(normal, "image/jpeg")
    assert load_image(normal, 64).shape == (64, 64, 3)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "GIF", "PNG"])
def test_declared_type_must_match_the_bytes(fmt):
    jpeg = save(Image.new("RGB", (40, 30), (1, 2, 3)), "JPEG")
    data = hostile.as_type(jpeg, fmt)
    with pytest.raises(WrongMediaType):
        POLICY.check(data, "image/jpeg")


def test_sniffing_and_undeclared_types():
    jpeg = save(Image.new("RGB", (40, 30)), "JPEG")
    webp = save(Image.new("RGB", (40, 30)), "WEBP")
    assert sniff_media_type(jpeg) == "image/jpeg" and sniff_media_type(webp) == "image/webp"
    assert sniff_media_type(b"hello") is None
    POLICY.check(webp, None)  # a multipart part without a type: the bytes decide
    POLICY.check(webp, "application/octet-stream")
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP"):
        POLICY.check(b"hello", None)
    with pytest.raises(ImageError, match="empty"):
        POLICY.check(b"", "image/jpeg")
    with pytest.raises(ImageError, match="over the limit of 1,000"):
        UploadPolicy(max_pixels=1000).check(jpeg, "image/jpeg")  # configurable


# ----------------------------------------------------------------------------------------------
# Replica set-up: API key, checkpoint URI, device


def test_a_replica_without_api_key_refuses_to_start_unless_anonymous_is_allowed(monkeypatch):
    monkeypatch.delenv("CARPART_TEST_NO_KEY", raising=False)
    with pytest.raises(UserError, match="allow_anonymous"):
        ApiKeyCheck.from_env("CARPART_TEST_NO_KEY", allow_anonymous=False)
    assert ApiKeyCheck.from_env("CARPART_TEST_NO_KEY", allow_anonymous=True).expected is None
    monkeypatch.setenv("CARPART_TEST_NO_KEY", "k")
    assert ApiKeyCheck.from_env("CARPART_TEST_NO_KEY", allow_anonymous=False).expected == b"k"


def test_serve_run_says_on_the_driver_that_a_service_without_key_is_open(monkeypatch, tmp_path):
    """The replicas log to their files only (REPLICA_ENV), so the warning a user must see is said where they are."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("ray.serve").addHandler(handler)
    try:
        monkeypatch.setenv("CARPART_TEST_KEY", "k")
        build_app(AppArgs(checkpoint=str(tmp_path), api_key_env="CARPART_TEST_KEY"))
        assert lines == []
        monkeypatch.delenv("CARPART_TEST_KEY")
        build_app(AppArgs(checkpoint=str(tmp_path), api_key_env="CARPART_TEST_KEY"))
        assert len(lines) == 1 and "CARPART_TEST_KEY is not set" in lines[0] and "OPEN" in lines[0]
    finally:
        logging.getLogger("ray.serve").removeHandler(handler)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet10t", ["perspective_score_hood"], image_size=32))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", model, metrics={})


def test_checkpoint_uri_is_copied_once_into_the_cache(checkpoint, tmp_path):
    cache = tmp_path / "cache"
    local = local_checkpoint(checkpoint.as_uri(), cache)
    assert local.parent == cache and sorted(p.name for p in local.iterdir()) == ["model.json", "model.safetensors"]
    stamp = (local / "model.safetensors").stat().st_mtime_ns
    assert local_checkpoint(checkpoint.as_uri(), cache) == local  # second replica on the node: no copy
    assert (local / "model.safetensors").stat().st_mtime_ns == stamp
    assert local_checkpoint(str(checkpoint), cache) == checkpoint  # a local path is used as is
    with pytest.raises(CheckpointError, match="cannot copy|not a directory"):
        local_checkpoint((tmp_path / "nowhere").as_uri(), cache)


def test_device_choice_and_half_precision(checkpoint, monkeypatch):
    assert inference_device([]) == (torch.device("cpu"), torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device([0]) == (torch.device("cpu"), torch.float32)  # a GPU id but no CUDA: CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device([0]) == (torch.device("cuda"), torch.float16)
    batch = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    full = load_replica_model(str(checkpoint), torch.device("cpu"), torch.float32)
    half = load_replica_model(str(checkpoint), torch.device("cpu"), torch.float16)  # what CUDA gets, run on the CPU
    assert next(half.model.parameters()).dtype == torch.float16
    np.testing.assert_allclose(half.explain_arrays(batch)[0], full.explain_arrays(batch)[0], atol=2e-2)


# ----------------------------------------------------------------------------------------------
# model.json and data sets


@pytest.mark.parametrize(
    "field, value",
    [
        ("backbone", "hf-hub:timm/resnet18.a1_in1k"),
        ("backbone", "local-dir:/tmp/model"),
        ("backbone", "../resnet18"),
        ("backbone", "not_a_timm_model"),
        ("image_size", 100_000),
        ("image_size", "64"),
        ("mean", [0.5, 0.5]),
        ("std", [0.0, 0.2, 0.2]),
        ("mean", [2.0, 0.4, 0.4]),
    ],
)
def test_model_json_fields_are_validated(checkpoint, tmp_path, field, value):
    copy = tmp_path / "best"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    meta = json.loads((checkpoint / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**meta, field: value}))
    with pytest.raises(CheckpointError, match=rf"model.json: {field} "):
        load_model(copy)


def test_symlinks_out_of_imgs_are_refused_like_dotdot(tmp_path):
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(save(Image.new("RGB", (8, 8)), "JPEG"))
    (root / "imgs" / "inside.jpg").write_bytes(outside.read_bytes())
    os.symlink(outside, root / "imgs" / "escape.jpg")
    os.symlink(root / "imgs" / "inside.jpg", root / "imgs" / "alias.jpg")  # inside imgs/: fine
    (root / "car_imgs_4000.csv").write_text(
        "filename,perspective_score_hood\ninside.jpg,0.5\nescape.jpg,0.5\nalias.jpg,0.5\n"
    )
    dataset = read_dataset(root, check_images="none")
    assert list(dataset.frame["filename"]) == ["inside.jpg", "alias.jpg"]
    [entry] = dataset.report.problems["bad_filename"]
    assert "escape.jpg" in entry and "symlink pointing outside imgs/" in entry
