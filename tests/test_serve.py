"""The Serve endpoint over real HTTP, through the HAProxy ingress with our edge rules (serve/edge.py):
scores equal the offline Predictor's, every bad input gets its 4xx and error code (never a 500),
batches match single calls, the API key guards all but /healthz, hostile uploads and the HTTP edge
(oversized or slow headers and bodies, client control headers, overload) get bounded answers, tested
with raw sockets where a well-behaved client cannot misbehave. Also the intake verdicts and
serve/config.yaml, which need no Ray."""

from __future__ import annotations

import io
import json
import re
import select
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import hostile

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
from serve.app import AUTOSCALING, BACKPRESSURE, HEALTH_CHECK_PERIOD_S, MAX_QUEUED_REQUESTS, REPLICA_ACTOR_OPTIONS, AppArgs, CarPartScorer, build_app
from serve.edge import EdgeSettings, ingress_env, wait_until_routed, with_free_ports
from serve.edge import main as edge_main

pytestmark = pytest.mark.xdist_group("ray")  # Ray's tests run one after another: tests/conftest.py

TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]
BODY_LIMIT = 300_000
MAX_IMAGES = 3
API_KEY = "s3cret-key"
KEY_ENV = "CARPART_TEST_API_KEY"
NO_KEY_ENV = "CARPART_TEST_UNSET_API_KEY"
CONFIG = Path(__file__).resolve().parents[1] / "serve" / "config.yaml"
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 4.0
BATCH = 4  # max_ongoing_requests = 2 x BATCH per replica


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
    server_paths = {"training_config": {"init_from": str(root / "init")}, "data": {"source": str(root / "data"), "content_hash": "c0ffee"}}
    save_checkpoint(root / "best", model, metrics={"mean": {"mae": 0.123}}, **server_paths)
    return root


@pytest.fixture(scope="module")
def predictor(run_dir):
    return load_model(run_dir / "best")


@pytest.fixture(scope="module")
def base_url(run_dir, free_port, tmp_path_factory):
    """One Ray instance behind the HAProxy ingress and two applications: an open one at / and one
    behind an API key at /secured, whose checkpoint is a file:// URI (copied into the replica's cache)."""
    # HAProxy's stats and metrics ports are fixed by default: other Ray instances on this machine may hold them.
    settings = with_free_ports(EdgeSettings(header_timeout_s=HEADER_TIMEOUT_S))
    edge = ingress_env(settings, tmp_path_factory.mktemp("edge"))
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        # With direct ingress a stopping replica drains for 30 s for external balancers; nothing here needs that.
        quick_drain = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
        for name, value in {**edge, **quick_drain, KEY_ENV: API_KEY}.items():  # Ray's processes inherit them
            patch.setenv(name, value)
        patch.delenv(NO_KEY_ENV, raising=False)
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            common = dict(max_body_bytes=BODY_LIMIT, max_images=MAX_IMAGES, max_batch_size=BATCH, body_timeout_s=BODY_TIMEOUT_S)
            serve.run(build_app(AppArgs(checkpoint=str(run_dir), **common, api_key_env=NO_KEY_ENV)), name="open", route_prefix="/")
            secured = AppArgs(checkpoint=(run_dir / "best").as_uri(), **common, api_key_env=KEY_ENV, allow_anonymous=False)
            serve.run(build_app(secured), name="secured", route_prefix="/secured")
            url = f"http://127.0.0.1:{port}"
            for path in ("/healthz", "/secured/healthz"):
                wait_until_routed(url + path)
            yield url
        finally:
            serve.shutdown()
            ray.shutdown()


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


def test_model_and_healthz(client, predictor, run_dir):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    response = client.get("/model")
    info = response.json()
    assert info["backbone"] == "resnet10t" and info["targets"] == TARGETS and info["image_size"] == 64
    assert info["metrics"] == {"mean": {"mae": 0.123}} and info["data_hash"] == "c0ffee"
    assert str(run_dir) not in response.text and "training_config" not in info  # no server paths
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
    assert args.allow_anonymous is False  # production refuses to start without an API key
    # `serve run` behaves like `serve deploy`:
    assert deployment["autoscaling_config"] == AUTOSCALING
    assert {k: v for k, v in deployment["ray_actor_options"].items() if k != "num_gpus"} == REPLICA_ACTOR_OPTIONS
    assert deployment["max_queued_requests"] == MAX_QUEUED_REQUESTS and deployment["backpressure_config"] == BACKPRESSURE
    assert deployment["health_check_period_s"] == HEALTH_CHECK_PERIOD_S
    for name in ("batch_wait_timeout_s", "max_pixels", "max_jpeg_scans", "body_timeout_s"):
        assert getattr(args, name) == AppArgs.model_fields[name].default, name


def test_edge_wrapper_inserts_the_rules_into_rays_haproxy_config(tmp_path):
    """The generated wrapper, run as Ray runs it, hands HAProxy Ray's config with our rules in the
    HTTP frontend and in each application's backend, not in others (checked by HAProxy itself with -c)."""
    env = ingress_env(EdgeSettings(header_timeout_s=7, requests_per_replica=5, queue_timeout_s=3), tmp_path / "edge")
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 10\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n"
        "    timeout server 60s\nfrontend http_frontend\n    bind 127.0.0.1:18999\n    use_backend http-app if { path_beg /app }\n"
        "    default_backend default_backend\nbackend default_backend\n    http-request return status 404\n"
        "backend http-app\n    default-server check inter 5s\n    server s1 127.0.0.1:9 check\n"
    )
    checked = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    edited = (tmp_path / "haproxy.cfg.edge").read_text()
    frontend = edited.split("frontend http_frontend\n", 1)[1]
    assert frontend.startswith("    # carpart edge rules") and "timeout http-request 7s" in frontend
    assert "http-request del-header x-request- -m beg" in frontend
    app_backend = edited.split("backend http-app\n", 1)[1]
    assert app_backend.startswith("    # carpart edge rules") and "default-server maxconn 5\n    timeout queue 3s" in app_backend
    assert "maxconn" not in edited.split("backend default_backend\n", 1)[1].split("backend http-app", 1)[0]
    refusal = Path(app_backend.split("errorfile 503 ", 1)[1].split("\n", 1)[0]).read_bytes()
    head, body = refusal.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in head and json.loads(body)["error"]["code"] == "overloaded"
    assert f"Content-Length: {len(body)}".encode() in head


def test_haproxy_queues_what_a_replica_cannot_take_and_refuses_it_with_retry_after(tmp_path, free_port):
    """Real HAProxy, through the wrapper, before a replica that never answers: with room for one request,
    a second waits in HAProxy's queue and gets HAProxy's 503 with Retry-After after the queue timeout."""
    env = ingress_env(EdgeSettings(requests_per_replica=1, queue_timeout_s=1), tmp_path / "edge")
    replica = socket.create_server(("127.0.0.1", 0))
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 10\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
        f"frontend http_frontend\n    bind 127.0.0.1:{front}\n    default_backend http-app\n"
        f"backend http-app\n    server s1 127.0.0.1:{replica.getsockname()[1]}\n"
    )
    haproxy = subprocess.Popen([env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    request = b"GET /predict HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                held = socket.create_connection(("127.0.0.1", front), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and haproxy.poll() is None, haproxy.stderr.read().decode() if haproxy.poll() is not None else "HAProxy did not listen"
                time.sleep(0.1)
        with held, socket.create_connection(("127.0.0.1", front), timeout=10) as probe:
            held.sendall(request)
            replica.settimeout(5)
            taken, _ = replica.accept()  # the held request reached the replica, which never answers
            start = time.monotonic()
            probe.sendall(request)
            answer = probe.recv(4096)
            waited = time.monotonic() - start
            taken.close()
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503") and b"\r\nretry-after: 1" in head.lower(), answer
        assert json.loads(body)["error"]["code"] == "overloaded"
        assert 0.8 < waited < 4, f"answered after {waited:.1f} s, the queue timeout is 1 s"
    finally:
        haproxy.kill()
        haproxy.wait()
        replica.close()


@pytest.mark.parametrize("flag", ["--threads", "--header-timeout", "--requests-per-replica", "--queue-timeout"])
def test_edge_command_refuses_limits_below_one(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        edge_main(["--dir", str(tmp_path), flag, "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "must be at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "haproxy").exists()  # nothing installed


def test_docker_image_turns_the_same_ingress_on():
    dockerfile = (CONFIG.parents[1] / "deploy" / "Dockerfile").read_text()
    env_block = dockerfile.split("\nENV ", 1)[1]
    image_env = dict(line.strip(" \\").split("=", 1) for line in env_block.splitlines() if "=" in line)
    assert image_env == EdgeSettings().env(Path("/home/ray/carpart-haproxy/haproxy"))


# ----------------------------------------------------------------------------------------------
# Hostile uploads over HTTP (each class in detail, without Ray: tests/test_uploads.py)


def test_hostile_uploads_get_their_4xx(client):
    bmp = hostile.rle_bmp(2000, 2000)
    assert_error(client.post("/predict", content=bmp, headers={"Content-Type": "image/jpeg"}), 415, "unsupported_media_type")
    assert_error(client.post("/predict", files={"file": ("car.jpg", bmp, "image/jpeg")}), 415, "unsupported_media_type")
    png_as_jpeg = {"file": ("car.png", encode(photo(10), "PNG"), "image/jpeg")}
    assert_error(client.post("/predict", files=png_as_jpeg), 415, "unsupported_media_type")
    undeclared = {"file": ("car", encode(photo(10), "PNG"), "application/octet-stream")}
    assert client.post("/predict", files=undeclared).status_code == 200  # no declared type: the bytes decide
    big = hostile.lossless_webp_rgba(4100, 4000)  # 38 bytes, over the serving limit of 16 MP
    error = assert_error(client.post("/predict", content=big, headers={"Content-Type": "image/webp"}), 400, "invalid_image")
    assert "over the limit of 16,000,000" in error["message"]
    scans = hostile.progressive_jpeg_repeated_scan(800, 600, 40)
    assert_error(client.post("/predict", content=scans, headers={"Content-Type": "image/jpeg"}), 400, "invalid_image")


# ----------------------------------------------------------------------------------------------
# The HTTP edge: raw sockets on loopback, every exchange bounded in time


def exchange(base_url: str, parts: list[bytes], pause_s: float = 0.0, timeout_s: float = 15.0) -> tuple[bytes, float]:
    """Send `parts` (pausing between them) until the server answers, then read the whole response
    (its Content-Length), until the server closes or `timeout_s`. Returns the response bytes and the
    seconds until its first byte."""
    host, port = base_url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        try:
            for part in parts:
                sock.sendall(part)
                if select.select([sock], [], [], pause_s)[0]:  # an answer (or a close) already
                    break
        except OSError:  # the server answered and closed while we were still sending
            pass
        first = sock.recv(65536)
        elapsed = time.monotonic() - start
        response = first
        while first and not complete(response):
            try:
                first = sock.recv(65536)
            except OSError:
                break
            response += first
    return response, elapsed


def complete(response: bytes) -> bool:
    """Whether `response` holds a whole HTTP response with a Content-Length."""
    head, sep, body = response.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return bool(sep and length and len(body) >= int(length.group(1)))


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_headers_over_the_limit_are_refused(base_url):
    big, _ = exchange(base_url, [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65_000 + b"\r\n\r\n"])
    many, _ = exchange(base_url, [b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"])
    assert status_of(big) in (400, 431) and status_of(many) in (400, 431)


def test_slow_headers_are_cut_off_with_408(base_url):
    trickle = [b"GET /healthz HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 20
    response, elapsed = exchange(base_url, trickle, pause_s=0.5)
    assert status_of(response) == 408
    assert HEADER_TIMEOUT_S - 0.5 < elapsed < HEADER_TIMEOUT_S + 3


def test_slow_body_is_cut_off_with_408(base_url):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
    response, elapsed = exchange(base_url, [head] + [b"\xff" * 10] * 20, pause_s=0.4)
    assert status_of(response) == 408 and b'"request_timeout"' in response
    assert elapsed < BODY_TIMEOUT_S + 3


def test_oversized_body_is_refused_and_python_clients_can_read_the_413(base_url):
    body = b"\0" * 24_000_000  # more than the socket buffers hold: the server must drain to be heard
    request = urllib.request.Request(base_url + "/predict", data=body, headers={"Content-Type": "image/jpeg"})
    start = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413 and b'"body_too_large"' in caught.value.read()
    assert time.monotonic() - start < 15


def test_client_control_headers_are_ignored(client):
    control = {"Content-Type": "image/jpeg", "X-Request-Timeout-Seconds": "0.000001", "X-Request-Disconnect-Disabled": "?1"}
    assert client.post("/predict", content=JPEG, headers=control).status_code == 200  # obeyed, it would time out


def test_overload_is_shed_with_503_and_retry_after(base_url, client):
    """Requests that hold a replica (bodies that never come) fill its slots and queue: the rest get 503 at once."""
    host, port = base_url.removeprefix("http://").split(":")
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100\r\n\r\n"
    held = 2 * BATCH + MAX_QUEUED_REQUESTS + 8
    sockets = [socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT_S + 5) for _ in range(held)]
    try:
        for sock in sockets:
            sock.sendall(head)
        time.sleep(1.0)  # until HAProxy has handed them to the replica
        shed = client.post("/predict", content=JPEG, headers={"Content-Type": "image/jpeg"})
        assert shed.status_code == 503 and shed.headers["Retry-After"] == str(BACKPRESSURE["retry_after_s"])
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(BODY_TIMEOUT_S + 0.5)  # the held requests end with their body timeout
    assert client.post("/predict", content=JPEG, headers={"Content-Type": "image/jpeg"}).status_code == 200
