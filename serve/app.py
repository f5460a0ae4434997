"""Ray Serve HTTP endpoint: perspective scores and intake verdicts for car photos.

Requests reach the replicas through HAProxy (serve/edge.py: slow headers 408, oversized headers
400, client `x-request-*` headers dropped). A request goes through the route first: API key,
content type, size (Content-Length before reading, then a running count while reading, since
chunked bodies declare nothing; an oversized body is drained before the 413 so that every client
can read it, and the body must arrive within `body_timeout_s`, else 408). Then, in a small thread
pool, the upload's declared type is checked against its bytes and its header against the serving
limits (serve/uploads.py), and `Predictor.preprocess` (the preprocessing training used) decodes it.
A bad image therefore fails only its own request. The preprocessed uint8 arrays of concurrent
requests meet in `_score` (`@serve.batch`), one forward pass per batch, on the GPU in half
precision when the replica has one (serve/replica_model.py). A replica holds at most
`max_ongoing_requests` requests and queues `MAX_QUEUED_REQUESTS` more; HAProxy sends it no more
than that (serve/edge.py) and refuses the rest itself after a short queue, and whatever still comes
beyond it gets 503 with `Retry-After` at once instead of an unbounded wait.

Endpoints (every error is `{"error": {"code": ..., "message": ...}}`, OpenAPI at `/docs`):

- `POST /predict`: one image, as multipart field `file` or as the raw body with
  `Content-Type: image/jpeg|image/png|image/webp` ->
  `{"scores": {target: float}, "verdicts": {target: PartVerdict}, "model": {"id", "backbone", "image_size"}}`.
- `POST /predict/batch`: multipart field `files`, up to `max_images` ->
  `{"results": [{"index", "filename", "scores", "verdicts"} | {"index", "filename", "error"}], "model": {...}}`,
  in upload order. A bad image is reported in its own item (the others are still scored, status
  200); a bad request as a whole (auth, content type, size, no or too many files) is a 4xx.
- `GET /model`: what the model is (backbone, targets, head, input size, normalisation, metrics,
  data hash), the weights id and the serving settings; no server paths. `GET /healthz`: liveness,
  never behind the API key.

Error codes: 400 `empty_body`, `invalid_image` (not an image, truncated, over the pixel or scan
limit), `bad_request` (malformed multipart); 401 `unauthorized`; 404 `not_found`;
405 `method_not_allowed`; 408 `request_timeout`; 413 `body_too_large`, `too_many_images`;
415 `unsupported_media_type` (also a declared type that its bytes contradict); 422 `missing_field`;
503 `overloaded` (from HAProxy, with `Retry-After`; serve/edge.py).

When the environment variable named by `api_key_env` (default `CARPART_API_KEY`) is set on the
replica, every endpoint but `/healthz` wants that key as `X-API-Key` or `Authorization: Bearer`;
without it a replica refuses to start unless `allow_anonymous` is true (serve/config.yaml sets it
false; `serve run` defaults to true and logs that the service is open).
The service never fetches anything a client names: images come in the request body only.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import metrics
from ray.serve.deployment import Application
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from cvcore.errors import ImageError, UserError
from cvcore.image import MAX_JPEG_SCANS
from cvcore.intake import IntakeThresholds, PartVerdict, judge
from cvcore.model import Predictor
from serve.replica_model import inference_device, is_uri, load_replica_model
from serve.uploads import MEDIA_TYPE_FORMATS, SERVING_MAX_PIXELS, UploadPolicy, WrongMediaType

logger = logging.getLogger("ray.serve")

RAW_IMAGE_TYPES = tuple(MEDIA_TYPE_FORMATS)
MULTIPART = "multipart/form-data"
DECODE_THREADS = 2
"""Images decoded at once per replica: bounds the memory of large uploads (a 64-megapixel PNG
decodes to about 200 MB) and leaves the CPU to the forward pass."""
LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64]
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 16,
    "look_back_period_s": 15,
    "upscale_delay_s": 5,
    "downscale_delay_s": 30,
}
"""Defaults for `serve run`, the same as serve/config.yaml: one replica per core on a 2-core
machine; the short look-back makes a replica come within seconds of a burst."""
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_LOG_TO_STDERR": "0"}
"""Run the routes on the replica's own event loop instead of a second loop in another thread: about
1.2 ms of CPU less per request; safe because nothing in the request path blocks the loop (decoding
and the forward pass run in threads). Write the replica's logs, one access line per request among
them, to its files under the session's logs/serve/ only, not to stderr as well: 3 to 5 ms of CPU
less per request (both measured, bench/RESULTS.md). What a user must see at start is said by
`build_app` on the driver."""
REPLICA_ACTOR_OPTIONS = {"num_cpus": 1, "runtime_env": {"env_vars": REPLICA_ENV}}
"""One CPU per replica (Ray then gives torch one thread), and REPLICA_ENV; serve/config.yaml says the same."""
MAX_QUEUED_REQUESTS = 32
"""Requests a replica queues beyond `max_ongoing_requests` before it answers 503 at once: about
two batches' worth, a few hundred milliseconds of waiting on one core (bench/RESULTS.md)."""
HEALTH_CHECK_PERIOD_S = 2.0
"""How often Serve's controller checks each replica (Serve's default: 10 s). A killed replica is noticed
at the next check, and only then replaced: with one replica the endpoint answered nothing for about
20 s after a kill (bench/RESULTS.md). A check is one actor call, nothing on the request path."""
BACKPRESSURE = {"status_code": 503, "retry_after_s": 1}
"""The answer to a request over the queue limit: 503 with `Retry-After: 1`."""
DRAIN_LIMIT_BYTES = 64_000_000
"""How much of an oversized body is read and dropped before its 413, so that clients that send the
whole body before reading (Python's urllib, for one) get the answer rather than a reset
connection (RFC 9112 9.6); past this the connection is closed."""
PUBLIC_META = ("format_version", "backbone", "targets", "aux_targets", "head", "image_size", "prepared_size", "resize", "mean", "std", "metrics")
"""The model.json fields `GET /model` shows: what the model is, nothing about the server (training
configs and data manifests hold absolute paths)."""


class AppArgs(BaseModel):
    """Arguments of `build_app` (`serve run ... key=value`, or `args:` in serve/config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="checkpoint directory, or a train/tune output holding best/")
    max_batch_size: int = Field(16, ge=1, description="images per forward pass")
    batch_wait_timeout_s: float = Field(
        0.05,
        ge=0,
        description="how long a batch waits to fill up: longer than a forward pass, so that batches grow "
        "under load (a batch of 8 costs half as much CPU per image as one of 2); a lone request waits this long",
    )
    max_images: int = Field(16, ge=1, description="images per /predict/batch request")
    max_body_bytes: int = Field(20_000_000, ge=1, description="request body limit, batch requests included")
    body_timeout_s: float = Field(30.0, gt=0, description="seconds for the whole body to arrive, else 408")
    max_pixels: int = Field(SERVING_MAX_PIXELS, ge=1, description="pixel limit per uploaded image, from its header")
    max_jpeg_scans: int = Field(MAX_JPEG_SCANS, ge=1, description="scan limit per uploaded JPEG (progressive JPEGs)")
    thresholds: IntakeThresholds = IntakeThresholds()
    api_key_env: str = Field("CARPART_API_KEY", description="environment variable holding the API key")
    allow_anonymous: bool = Field(
        True,
        description="serve without an API key when api_key_env is unset (logged at start); false makes the replicas "
        "refuse to start without one (serve/config.yaml)",
    )
    num_gpus: float = Field(0, ge=0, description="GPUs per replica for `serve run` (serve/config.yaml: ray_actor_options)")


class ModelInfo(BaseModel):
    id: str = Field(description="first 12 hex digits of the SHA-256 of the loaded weights")
    backbone: str
    image_size: int


class Prediction(BaseModel):
    scores: dict[str, float]
    verdicts: dict[str, PartVerdict]
    model: ModelInfo


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class BatchItem(BaseModel):
    """One image of a batch request: scores and verdicts, or the error of that image alone."""

    index: int
    filename: str | None = None
    scores: dict[str, float] | None = None
    verdicts: dict[str, PartVerdict] | None = None
    error: ErrorBody | None = None


class BatchPrediction(BaseModel):
    results: list[BatchItem]
    model: ModelInfo


CLOSE = {"Connection": "close"}
"""Sent with answers that leave part of a body unread: the connection ends with them."""


class ApiError(Exception):
    """A problem with the request, answered as `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def _binary(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "empty body, invalid image, malformed request",
        401: "missing or wrong API key",
        413: "body over the size limit, too many images",
        415: "unsupported Content-Type",
        422: "missing form field",
    }.items()
}
SINGLE_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {"schema": {"type": "object", "required": ["file"], "properties": {"file": _binary("the photo")}}},
            **{media_type: {"schema": _binary("the photo")} for media_type in RAW_IMAGE_TYPES},
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": _binary("one photo per part")}},
                }
            }
        },
    }
}

api = FastAPI(
    title="Car part perspective scores",
    description="How well a car photo shows each car part (0 = not visible, 1 = whole and head-on), "
    "with an accept/retake verdict per part.",
)


@api.exception_handler(ApiError)
async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"code": err.code, "message": err.message}}, err.status, headers=err.headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """Unknown paths and methods get the same error shape as everything else."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": str(err.detail)}}, err.status_code, headers=err.headers)


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


async def presented_key(
    x_api_key: str | None = Security(_api_key_header),
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
) -> str | None:
    """The key the client sent, as `X-API-Key` or `Authorization: Bearer` (declared so /docs offers both).
    `async` although it awaits nothing: FastAPI runs a plain `def` dependency in a worker thread,
    a thread hop per request for a dictionary lookup."""
    return x_api_key or (bearer.credentials if bearer else None)


@dataclass(frozen=True)
class ApiKeyCheck:
    """The API key from the replica's environment; `expected=None` leaves the service open."""

    expected: bytes | None

    @classmethod
    def from_env(cls, name: str, allow_anonymous: bool) -> "ApiKeyCheck":
        key = os.environ.get(name)
        if not key and not allow_anonymous:
            raise UserError(f"{name} is not set on this node: set the API key there, or allow_anonymous: true to serve without one")
        if not key:
            logger.warning("%s is not set: the service is OPEN, it accepts requests without an API key", name)
        return cls(key.encode() if key else None)

    def check(self, presented: str | None) -> None:
        if self.expected is None:
            return
        # compare_digest takes the same time wherever the strings differ: no timing oracle.
        if presented is None or not hmac.compare_digest(presented.encode(), self.expected):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )


class ServiceMetrics:
    """Request count and latency per endpoint and status, and batch sizes, exported by Ray to
    Prometheus (`ray_carpart_*`); Ray Serve tags them with deployment, replica and application."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "carpart_requests", description="requests by endpoint and HTTP status", tag_keys=("endpoint", "status")
        )
        self.latency_ms = metrics.Histogram(
            "carpart_request_latency_ms",
            description="time in the replica per request, reading the body included",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("endpoint",),
        )
        self.batch_size = metrics.Histogram(
            "carpart_batch_size", description="images per forward pass", boundaries=BATCH_SIZE_BUCKETS
        )

    @contextmanager
    def track(self, endpoint: str) -> Iterator[None]:
        start = time.perf_counter()
        status = 500
        try:
            yield
            status = 200
        except ApiError as err:
            status = err.status
            raise
        finally:
            self.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
            self.latency_ms.observe((time.perf_counter() - start) * 1000, tags={"endpoint": endpoint})


def weights_id(predictor: Predictor) -> str:
    """A short fingerprint of the weights actually loaded, so a response names the exact model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(predictor.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


@serve.deployment(
    ray_actor_options=REPLICA_ACTOR_OPTIONS,
    autoscaling_config=AUTOSCALING,
    max_queued_requests=MAX_QUEUED_REQUESTS,
    backpressure_config=BACKPRESSURE,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
@serve.ingress(api)
class CarPartScorer:
    """One replica: the model, a decode pool and the batch queue."""

    def __init__(self, args: AppArgs):
        self.args = args
        self.api_key = ApiKeyCheck.from_env(args.api_key_env, args.allow_anonymous)
        device, dtype = inference_device(ray.get_gpu_ids())
        self.predictor = load_replica_model(args.checkpoint, device, dtype)
        logger.info("model on %s in %s", device, dtype)
        self.info = ModelInfo(
            id=weights_id(self.predictor), backbone=self.predictor.spec.backbone, image_size=self.predictor.image_size
        )
        self.uploads = UploadPolicy(max_pixels=args.max_pixels, max_jpeg_scans=args.max_jpeg_scans)
        self.decode_pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
        self.metrics = ServiceMetrics()
        self._score.set_max_batch_size(args.max_batch_size)
        self._score.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "model": self.info.id}

    @api.get("/model", responses=ERROR_RESPONSES)
    async def model(self, key: str | None = Depends(presented_key)) -> dict[str, Any]:
        """model.json of the checkpoint, the weights id and the serving settings."""
        self.api_key.check(key)
        serving = self.args.model_dump(mode="json", exclude={"checkpoint"})  # no server paths to clients
        public = {name: self.predictor.meta[name] for name in PUBLIC_META if name in self.predictor.meta}
        data_hash = (self.predictor.meta.get("data") or {}).get("content_hash")
        return {**public, "data_hash": data_hash, "id": self.info.id, "serving": serving}

    @api.post(
        "/predict",
        response_model=Prediction,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        openapi_extra=SINGLE_IMAGE_BODY,
    )
    async def predict(self, request: Request, key: str | None = Depends(presented_key)) -> Prediction:
        """Scores and verdicts for one photo."""
        with self.metrics.track("/predict"):
            self.api_key.check(key)
            media_type = _media_type(request)
            if media_type in RAW_IMAGE_TYPES:
                data = b"".join([chunk async for chunk in self._body(request)])
                declared: str | None = media_type
            elif media_type == MULTIPART:
                files = await self._form_files(request, "file")
                if len(files) > 1:
                    raise ApiError(413, "too_many_images", f"/predict takes one image, got {len(files)}; use /predict/batch")
                _, declared, data = files[0]
            else:
                raise self._unsupported(media_type, "a multipart field 'file', or the raw image as " + ", ".join(RAW_IMAGE_TYPES))
            scores, verdicts = await self._predict(data, declared)
            return Prediction(scores=scores, verdicts=verdicts, model=self.info)

    @api.post(
        "/predict/batch",
        response_model=BatchPrediction,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        openapi_extra=BATCH_BODY,
    )
    async def predict_batch(self, request: Request, key: str | None = Depends(presented_key)) -> BatchPrediction:
        """Scores and verdicts for several photos, in upload order; a bad image fails only its item."""
        with self.metrics.track("/predict/batch"):
            self.api_key.check(key)
            media_type = _media_type(request)
            if media_type != MULTIPART:
                raise self._unsupported(media_type, "multipart/form-data with the images in field 'files'")
            files = await self._form_files(request, "files")
            if len(files) > self.args.max_images:
                raise ApiError(413, "too_many_images", f"{len(files)} images is over the limit of {self.args.max_images} per request")
            results = await asyncio.gather(*(self._batch_item(i, *file) for i, file in enumerate(files)))
            return BatchPrediction(results=results, model=self.info)

    async def _batch_item(self, index: int, filename: str | None, declared: str | None, data: bytes) -> BatchItem:
        try:
            scores, verdicts = await self._predict(data, declared)
        except ApiError as err:
            return BatchItem(index=index, filename=filename, error=ErrorBody(code=err.code, message=err.message))
        return BatchItem(index=index, filename=filename, scores=scores, verdicts=verdicts)

    async def _predict(self, data: bytes, declared: str | None) -> tuple[dict[str, float], dict[str, PartVerdict]]:
        try:
            image = await asyncio.get_running_loop().run_in_executor(self.decode_pool, self._decode, data, declared)
        except WrongMediaType as err:
            raise ApiError(415, "unsupported_media_type", str(err)) from None
        except ImageError as err:
            raise ApiError(400, "invalid_image", str(err)) from None
        row = await self._score(image)
        n = len(self.predictor.targets)
        scores = {target: float(value) for target, value in zip(self.predictor.targets, row[:n])}
        factors = {name: float(value) for name, value in zip(self.predictor.factors, row[n:])}
        return scores, judge(scores, self.args.thresholds, factors)

    def _decode(self, data: bytes, declared: str | None) -> np.ndarray:
        """The upload checks (type, pixels, scans: header only), then the model's preprocessing."""
        self.uploads.check(data, declared)
        return self.predictor.preprocess(data)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05)
    async def _score(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass for the images of concurrent requests (sizes set from AppArgs in __init__);
        each row holds the scores, then the factors of a decomposed head."""
        self.metrics.batch_size.observe(len(images))
        scores, factors = await asyncio.to_thread(self.predictor.explain_arrays, np.stack(images))
        return list(np.concatenate([scores, factors], axis=1))

    async def _body(self, request: Request) -> AsyncIterator[bytes]:
        """The request body, refused when empty or past `max_body_bytes`: from Content-Length before
        reading, then by counting while reading (chunked bodies declare no length). The whole body
        must arrive within `body_timeout_s`: a client trickling bytes holds a connection, not a replica."""
        limit = self.args.max_body_bytes
        declared = request.headers.get("content-length", "")  # the HTTP server has checked it is a number
        stream = request.stream().__aiter__()
        deadline = asyncio.get_running_loop().time() + self.args.body_timeout_s
        if declared.isdigit() and int(declared) > limit:
            await self._drain(stream, deadline)
            raise ApiError(413, "body_too_large", f"the body is {int(declared):,} bytes, over the limit of {limit:,}", CLOSE)
        received = 0
        while (chunk := await self._next_chunk(stream, deadline)) is not None:
            received += len(chunk)
            if received > limit:
                await self._drain(stream, deadline)
                raise ApiError(413, "body_too_large", f"the body is over the limit of {limit:,} bytes", CLOSE)
            yield chunk
        if received == 0:
            raise ApiError(400, "empty_body", "the request body is empty")

    async def _next_chunk(self, stream: AsyncIterator[bytes], deadline: float) -> bytes | None:
        """The next chunk of the body, None at its end; 408 past `deadline`."""
        try:
            async with asyncio.timeout_at(deadline):
                return await anext(stream)
        except StopAsyncIteration:
            return None
        except ClientDisconnect:  # nobody reads the answer; 499 only tells the metrics (nginx's code)
            raise ApiError(499, "client_disconnected", "the client closed the connection") from None
        except TimeoutError:
            # The rest of the body may still come: the connection cannot carry another request (RFC 9110 §15.5.9).
            raise ApiError(408, "request_timeout", f"the body did not arrive within {self.args.body_timeout_s:g} s", CLOSE) from None

    async def _drain(self, stream: AsyncIterator[bytes], deadline: float) -> None:
        """Read and drop the rest of a refused body (at most DRAIN_LIMIT_BYTES, until `deadline`), so
        that a client still sending it can read the answer."""
        drained = 0
        try:
            while drained <= DRAIN_LIMIT_BYTES and (chunk := await self._next_chunk(stream, deadline)) is not None:
                drained += len(chunk)
        except ApiError:  # out of time: answer anyway, the connection closes
            return

    async def _form_files(self, request: Request, field: str) -> list[tuple[str | None, str | None, bytes]]:
        """(filename, declared content type, bytes) of every file in multipart `field`, the body limit
        applied while parsing."""
        parser = MultiPartParser(request.headers, self._body(request))
        parser.spool_max_size = self.args.max_body_bytes  # bounded, and needed in memory anyway: no temp files
        try:
            form = await parser.parse()
        except MultiPartException as err:
            raise ApiError(400, "bad_request", f"malformed multipart body: {err.message}") from None
        try:
            values = form.getlist(field)
            if not values:
                raise ApiError(422, "missing_field", f"no file in multipart field {field!r}")
            if not all(isinstance(value, UploadFile) for value in values):
                raise ApiError(422, "missing_field", f"multipart field {field!r} must hold file uploads, not text")
            return [(value.filename, value.content_type, await value.read()) for value in values]
        finally:
            await form.close()

    @staticmethod
    def _unsupported(media_type: str, expected: str) -> ApiError:
        return ApiError(415, "unsupported_media_type", f"Content-Type {media_type or '(none)'} is not supported; send {expected}")


def build_app(args: AppArgs) -> Application:
    """Application builder: `serve run serve.app:build_app checkpoint=DIR|URI [max_batch_size=16 ...]`.

    A checkpoint path is made absolute here, where the caller's working directory is known; a URI
    (s3://, gs://, file://) is copied by each replica into its node's cache. `max_ongoing_requests`
    is twice the batch size, so that the next batch fills while one runs (below the batch size,
    batches could never fill).
    """
    if not is_uri(args.checkpoint):
        args = args.model_copy(update={"checkpoint": str(Path(args.checkpoint).expanduser().resolve())})
    if args.allow_anonymous and not os.environ.get(args.api_key_env):  # the replicas' own warning goes to their log files
        logger.warning("%s is not set here: unless the replicas' nodes have it, the service is OPEN, it accepts requests "
                       "without an API key", args.api_key_env)  # fmt: skip
    actor_options = {**REPLICA_ACTOR_OPTIONS, "num_gpus": args.num_gpus} if args.num_gpus else REPLICA_ACTOR_OPTIONS
    return CarPartScorer.options(max_ongoing_requests=2 * args.max_batch_size, ray_actor_options=actor_options).bind(args)
