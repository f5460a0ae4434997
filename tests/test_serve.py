"""The Serve endpoint over real HTTP: scores equal the offline Predictor's, every bad input gets
its 4xx and error code (never a 500), batches match single calls, the API key guards all but
/healthz. Also the intake verdicts and serve/config.yaml, which need no Ray."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
import torch
import yaml
from PIL import Image
from ray import serve
from ray.serve.schema import ServeDeploySchema

from cvcore.errors import UserError
from cvcore.intake import Decision, IntakeThresholds, Reason, human_name, judge, viewpoint
from cvcore.model import ModelSpec, build_model, load_model, save_checkpoint
from serve.app import AUTOSCALING, REPLICA_ACTOR_OPTIONS, AppArgs, CarPartScorer, build_app

TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]
BODY_LIMIT = 300_000
MAX_IMAGES = 3
API_KEY = "s3cret-key"
KEY_ENV = "CARPART_TEST_API_KEY"
NO_KEY_ENV = "CARPART_TEST_UNSET_API_KEY"
CONFIG = Path(__file__).resolve().parents[1] / "serve" / "config.yaml"


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo(seed: int = 0, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Smooth colour gradients plus noise: something a JPEG encoder treats like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], (x + y) % 256], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return exif


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming any size, with no pixels behind it (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A train output holding best/: an untrained resnet10t with a decomposed head (scores are
    visible fraction x facing, so verdicts come from the factors) whose head is biased to 0.5, so
    that the scores land inside (0, 1). The direct head's verdicts are tested without HTTP below."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet10t", TARGETS, image_size=64, head="decomposed"))
    torch.nn.init.constant_(model.net.get_classifier().bias, 0.5)
    root = tmp_path_factory.mktemp("run")
    save_checkpoint(root / "best", model, metrics={"mean": {"mae": 0.123}})
    return root


@pytest.fixture(scope="module")
def predictor(run_dir):
    return load_model(run_dir / "best")


@pytest.fixture(scope="module")
def base_url(run_dir, free_port):
    """One Ray instance and two applications: an open one at / and one behind an API key at /secured."""
    os.environ[KEY_ENV] = API_KEY  # the replicas inherit the environment of the Ray instance
    os.environ.pop(NO_KEY_ENV, None)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        common = dict(checkpoint=str(run_dir), max_body_bytes=BODY_LIMIT, max_images=MAX_IMAGES, max_batch_size=4)
        serve.run(build_app(AppArgs(**common, api_key_env=NO_KEY_ENV)), name="open", route_prefix="/")
        serve.run(build_app(AppArgs(**common, api_key_env=KEY_ENV)), name="secured", route_prefix="/secured")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as http:
        yield http


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def assert_scores(scores: dict, expected: np.ndarray) -> None:
    assert list(scores) == TARGETS
    np.testing.assert_allclose([scores[t] for t in TARGETS], expected, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Scores


def test_multipart_and_raw_uploads_score_like_the_predictor(client, predictor, tmp_path):
    path = tmp_path / "car.jpg"
    path.write_bytes(encode(photo(1), "JPEG", quality=90))
    expected = predictor.predict([path])[0]
    assert 0.0 < expected.min() and expected.max() < 1.0

    multipart = client.post("/predict", files={"file": ("car.jpg", path.read_bytes(), "image/jpeg")})
    raw = client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        body = response.json()
        assert_scores(body["scores"], expected)
        assert set(body["verdicts"]) == set(TARGETS)
        hood = body["verdicts"]["perspective_score_hood"]
        assert hood["name"] == "hood" and hood["decision"] in ("accept", "retake") and hood["hint"]
        assert body["model"]["backbone"] == "resnet10t" and body["model"]["image_size"] == 64
    scores, factors = predictor.explain_arrays(predictor.preprocess(path)[None])
    named = dict(zip(predictor.factors, factors[0]))
    for target, verdict in multipart.json()["verdicts"].items():  # the reason comes from the factors
        part = target.removeprefix("perspective_score_")
        assert verdict["visible_fraction"] == pytest.approx(named[f"visible_fraction_{part}"], abs=1e-5)
        assert verdict["facing"] == pytest.approx(named[f"facing_{part}"], abs=1e-5)
        assert verdict["reason"] in ("ok", "not_visible", "partly_visible", "wrong_angle")
        assert len(body["model"]["id"]) == 12


@pytest.mark.parametrize(
    "name, data, media_type",
    [
        ("cmyk.jpg", encode(photo(2).convert("CMYK"), "JPEG"), "image/jpeg"),
        ("grey.png", encode(photo(3).convert("L"), "PNG"), "image/png"),
        ("alpha.png", encode(photo(4).convert("RGBA"), "PNG"), "image/png"),
        ("car.webp", encode(photo(5), "WEBP"), "image/webp"),
        ("rotated.jpg", encode(photo(6, (120, 60)), "JPEG", exif=rotated_exif()), "image/jpeg"),
    ],
)
def test_modes_and_exif_are_handled_like_in_training(client, predictor, name, data, media_type):
    response = client.post("/predict", content=data, headers={"Content-Type": media_type})
    assert response.status_code == 200, response.text
    assert_scores(response.json()["scores"], predictor.predict([data])[0])


def test_batch_matches_single_calls_and_reports_bad_items_in_place(client):
    images = [encode(photo(seed), "JPEG") for seed in (7, 8)]
    files = [
        ("files", ("a.jpg", images[0], "image/jpeg")),
        ("files", ("broken.jpg", b"not an image", "image/jpeg")),
        ("files", ("b.jpg", images[1], "image/jpeg")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["index"], r["filename"]) for r in results] == [(0, "a.jpg"), (1, "broken.jpg"), (2, "b.jpg")]
    assert results[1]["error"]["code"] == "invalid_image" and "scores" not in results[1]
    for item, data in zip((results[0], results[2]), images):
        single = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"}).json()
        assert_scores(item["scores"], [single["scores"][t] for t in TARGETS])  # batched: equal to float error
        for target in TARGETS:
            assert item["verdicts"][target]["hint"] == single["verdicts"][target]["hint"]


# ----------------------------------------------------------------------------------------------
# Bad input: a 4xx with a code, never a 500

JPEG = encode(photo(9), "JPEG")


def chunks(total: int, size: int = 64_000):
    """A body without Content-Length (httpx sends it chunked)."""
    for start in range(0, total, size):
        yield b"\xff" * min(size, total - start)


@pytest.mark.parametrize(
    "path, request_kwargs, status, code",
    [
        ("/predict", {"content": b"", "headers": {"Content-Type": "image/jpeg"}}, 400, "empty_body"),
        ("/predict/batch", {"content": b"", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 400, "empty_body"),
        ("/predict", {"content": b"hello, not an image", "headers": {"Content-Type": "image/png"}}, 400, "invalid_image"),
        ("/predict", {"content": JPEG[: len(JPEG) // 2], "headers": {"Content-Type": "image/jpeg"}}, 400, "invalid_image"),
        ("/predict", {"files": {"file": ("empty.jpg", b"", "image/jpeg")}}, 400, "invalid_image"),
        ("/predict", {"content": b"--x--", "headers": {"Content-Type": "multipart/form-data"}}, 400, "bad_request"),
        ("/predict", {"content": b"\0" * (BODY_LIMIT + 1), "headers": {"Content-Type": "image/jpeg"}}, 413, "body_too_large"),
        ("/predict", {"content": chunks(BODY_LIMIT + 1), "headers": {"Content-Type": "image/jpeg"}}, 413, "body_too_large"),
        ("/predict", {"files": {"file": ("big.jpg", b"\0" * BODY_LIMIT, "image/jpeg")}}, 413, "body_too_large"),
        ("/predict", {"content": JPEG, "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ("/predict", {"content": JPEG}, 415, "unsupported_media_type"),
        ("/predict", {"files": {"image": ("car.jpg", JPEG, "image/jpeg")}}, 422, "missing_field"),
        ("/predict", {"data": {"file": "car.jpg"}, "files": {"other": ("x", b"x")}}, 422, "missing_field"),
        ("/predict", {"files": [("file", ("a.jpg", JPEG)), ("file", ("b.jpg", JPEG))]}, 413, "too_many_images"),
        ("/predict/batch", {"files": [("files", (f"{i}.jpg", JPEG)) for i in range(MAX_IMAGES + 1)]}, 413, "too_many_images"),
        ("/predict/batch", {"files": {"file": ("car.jpg", JPEG)}}, 422, "missing_field"),
        ("/predict/batch", {"content": JPEG, "headers": {"Content-Type": "image/jpeg"}}, 415, "unsupported_media_type"),
        ("/nowhere", {}, 404, "not_found"),
    ],
    ids=lambda value: value if isinstance(value, str) and value.startswith("/") else None,
)
def test_bad_input_gets_its_4xx(client, path, request_kwargs, status, code):
    method = "GET" if path == "/nowhere" else "POST"
    assert_error(client.request(method, path, **request_kwargs), status, code)


def test_decompression_bomb_is_refused_from_its_header(client):
    error = assert_error(
        client.post("/predict", content=png_header(10_000, 10_000), headers={"Content-Type": "image/png"}),
        400,
        "invalid_image",
    )
    assert "pixels" in error["message"]


def test_wrong_method(client):
    assert_error(client.get("/predict"), 405, "method_not_allowed")


# ----------------------------------------------------------------------------------------------
# API key, /model, /healthz


def test_api_key_guards_everything_but_healthz(client):
    upload = {"content": JPEG, "headers": {"Content-Type": "image/jpeg"}}
    assert_error(client.post("/secured/predict", **upload), 401, "unauthorized")
    wrong = {"Content-Type": "image/jpeg", "X-API-Key": API_KEY + "x"}
    assert_error(client.post("/secured/predict", content=JPEG, headers=wrong), 401, "unauthorized")
    assert_error(client.get("/secured/model"), 401, "unauthorized")
    for auth in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
        response = client.post("/secured/predict", content=JPEG, headers={"Content-Type": "image/jpeg", **auth})
        assert response.status_code == 200, response.text
        assert client.get("/secured/model", headers=auth).status_code == 200
    assert client.get("/secured/healthz").status_code == 200


def test_model_and_healthz(client, predictor):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = client.get("/model").json()
    assert info["backbone"] == "resnet10t" and info["targets"] == TARGETS and info["image_size"] == 64
    assert info["metrics"] == {"mean": {"mae": 0.123}}
    assert info["id"] == health.json()["model"]
    assert info["serving"]["max_images"] == MAX_IMAGES and info["serving"]["thresholds"]["accept"] == 0.5
    assert "/predict" in client.get("/openapi.json").json()["paths"]


# ----------------------------------------------------------------------------------------------
# Intake verdicts and config (no Ray)


def test_part_names_and_viewpoints():
    assert human_name("perspective_score_backdoor_left") == "back-left door"
    assert human_name("hood") == "hood"
    assert human_name("wheel_rear_right") == "rear-right wheel"
    assert human_name("headlight_left") == "left headlight"
    assert human_name("front") == "front of the car"
    assert human_name("side_mirror_left") == "left side mirror"  # not a known part: generic
    assert viewpoint("backdoor_left") == "the car's left rear"
    assert viewpoint("taillight_right") == "the car's right rear"
    assert viewpoint("antenna") == "the antenna"


def test_verdicts_from_scores_alone():
    verdicts = judge({"perspective_score_hood": 0.8, "perspective_score_backdoor_left": 0.3, "perspective_score_roof": 0.01})
    hood, door, roof = verdicts.values()
    assert (hood.decision, hood.reason) == (Decision.ACCEPT, Reason.OK)
    assert (door.decision, door.reason) == (Decision.RETAKE, Reason.POORLY_SHOWN)
    assert (roof.decision, roof.reason) == (Decision.RETAKE, Reason.NOT_VISIBLE)
    assert "the car's left rear" in door.hint


def test_verdicts_from_factors_say_which_factor_failed():
    factors = {
        "visible_fraction_backdoor_left": 0.43, "facing_backdoor_left": 0.95,
        "visible_fraction_hood": 1.0, "facing_hood": 0.3,
    }  # fmt: skip
    verdicts = judge({"perspective_score_backdoor_left": 0.41, "perspective_score_hood": 0.3}, factors=factors)
    door, hood = verdicts["perspective_score_backdoor_left"], verdicts["perspective_score_hood"]
    assert door.reason == Reason.PARTLY_VISIBLE
    assert door.hint == "only 43 % of the back-left door is visible — step back and photograph the car's left rear"
    assert hood.reason == Reason.WRONG_ANGLE and hood.facing == 0.3
    strict = judge({"perspective_score_hood": 0.6}, IntakeThresholds(accept=0.7))
    assert strict["perspective_score_hood"].decision == Decision.RETAKE
    with pytest.raises(UserError, match="below accept"):
        IntakeThresholds(accept=0.1, not_visible=0.2)


def test_config_yaml_deploys_this_app():
    config = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    args = AppArgs.model_validate(app["args"])
    assert args.thresholds == IntakeThresholds() and args.max_body_bytes == 20_000_000
    (deployment,) = app["deployments"]
    assert deployment["name"] == CarPartScorer.name and "num_replicas" not in deployment
    assert deployment["max_ongoing_requests"] >= args.max_batch_size
    # `serve run` behaves like `serve deploy`:
    assert deployment["autoscaling_config"] == AUTOSCALING
    assert deployment["ray_actor_options"] == REPLICA_ACTOR_OPTIONS
    assert args.batch_wait_timeout_s == AppArgs.model_fields["batch_wait_timeout_s"].default
