"""Load test matrix: Ray Serve's ingresses and settings against a plain FastAPI + uvicorn server,
same model, same load, side by side in one run.

    python bench/bench_serve.py [--checkpoint DIR] [--clients 32] [--duration 20] [--only NAME ...]

N clients (loopback only) each upload a photo to /predict as soon as their last answer arrived,
for a fixed time (and at most --max-requests in all); after a 503 a client waits its `Retry-After`.
The clients share the machine with the servers, so they are made cheap: the requests are built
once, sent over keep-alive connections with asyncio streams on uvloop, and only the responses'
status lines and headers are parsed; the table says what they cost. Every Serve case runs in its
own process with a fresh local Ray instance, because the ingress switches are environment variables
read where Ray starts: Serve's defaults (Python proxy), `RAY_SERVE_THROUGHPUT_OPTIMIZED`, the
HAProxy ingress as this project starts it (serve/edge.py), and, on HAProxy, one or two fixed
replicas instead of autoscaling 1-2, other batch sizes and batch waits, and 64 and 128 clients (the
128 once more as clients that retry at once after a 503). The replica count is sampled from
`serve.status()` every second. The baseline is what one would write without Serve: one uvicorn
process, a sync FastAPI route, one image per forward pass. Prints a Markdown table.

Besides what the clients see, the table gives the server side's CPU time per answered request
(every process a case started: for Serve the whole local Ray instance, proxy or HAProxy,
controller and replicas included; Linux /proc). On a machine shared with other work, throughput
moves with the neighbours' load, while CPU per request mostly does not; the load average before and
after the run is printed with the table.

Without --checkpoint an untrained checkpoint of the training defaults (`TrainConfig`: backbone
and image size) is made in a temporary folder: the speed of a network does not depend on its
weights. The photos are rendered by `cvcore.synth` at --photo-size.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import ray
import torch
import uvicorn
import uvloop
from fastapi import FastAPI, UploadFile
from ray import serve

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from bench.proc import processes  # noqa: E402
from cvcore.engine import TrainConfig  # noqa: E402
from cvcore.model import ModelSpec, build_model, load_model, save_checkpoint  # noqa: E402
from cvcore.synth import CHALLENGE_TARGETS, render_example  # noqa: E402
from serve.app import AUTOSCALING, REPLICA_ACTOR_OPTIONS, REPLICA_ENV, AppArgs, CarPartScorer, build_app  # noqa: E402
from serve.edge import EdgeSettings, ingress_env, with_free_ports  # noqa: E402

APP_NAME = "carpart"
SAMPLE_INTERVAL_S = 1.0
REQUEST_TIMEOUT_S = 30.0
RESULT_PREFIX = "CASE_RESULT "


@dataclass(frozen=True)
class Case:
    """One row of the matrix: where Ray starts (`ingress`), the app's arguments, the replicas, the load."""

    name: str
    ingress: str = "haproxy"  # "python" (Serve's default proxy), "throughput" (RAY_SERVE_THROUGHPUT_OPTIMIZED), "haproxy", "plain"
    app: dict[str, Any] = field(default_factory=dict)  # AppArgs fields
    edge: dict[str, Any] = field(default_factory=dict)  # EdgeSettings fields (HAProxy)
    fixed_replicas: int | None = None  # None: build_app's autoscaling
    clients: int | None = None  # None: --clients
    honor_retry_after: bool = True  # False: clients that retry at once after a 503, as a careless or hostile one does
    ray_env: dict[str, str] = field(default_factory=dict)  # more variables where Ray starts (Serve's switches)
    replica_env: dict[str, str] = field(default_factory=dict)  # replaces serve.app.REPLICA_ENV's values on the replicas

    def env(self) -> dict[str, str]:
        if self.ingress == "haproxy":
            return ingress_env(with_free_ports(EdgeSettings(**self.edge))) | self.ray_env
        if self.ingress == "throughput":
            return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"} | self.ray_env
        return dict(self.ray_env)


MATRIX = [
    Case("plain FastAPI + uvicorn, 1 image per forward pass", ingress="plain"),
    Case("Serve default: Python proxy", ingress="python"),
    Case("Python proxy, RAY_SERVE_THROUGHPUT_OPTIMIZED=1", ingress="throughput"),
    Case("HAProxy ingress (serve/edge.py)"),
    Case("HAProxy, one replica", fixed_replicas=1),
    Case("HAProxy, two replicas", fixed_replicas=2),
    Case("HAProxy, one replica, replica logs to stderr too (Serve's default)", fixed_replicas=1, replica_env={"RAY_SERVE_LOG_TO_STDERR": "1"}),
    Case("HAProxy, 4 threads (Ray's default)", edge={"threads": 4}),
    Case("HAProxy, batch 8 (max_ongoing 16)", app={"max_batch_size": 8}),
    Case("HAProxy, batch 32 (max_ongoing 64)", app={"max_batch_size": 32}),
    Case("HAProxy, batch wait 20 ms", app={"batch_wait_timeout_s": 0.02}),
    Case("HAProxy, batch wait 100 ms", app={"batch_wait_timeout_s": 0.1}),
    Case("HAProxy, 64 clients", clients=64),
    Case("HAProxy, 128 clients", clients=128),
    Case("HAProxy, 128 clients that ignore Retry-After", clients=128, honor_retry_after=False),
    Case("plain FastAPI + uvicorn, 128 clients", ingress="plain", clients=128),
]


@dataclass
class LoadResult:
    """What the clients saw: latency of every answered request, errors by kind, wall time; and the
    CPU time the servers spent meanwhile."""

    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0  # this process: the clients, and for Serve cases the Ray driver

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@dataclass
class ReplicaSample:
    t: float
    running: int
    starting: int


def server_cpu_s() -> float:
    """CPU seconds used so far by the living descendants of this process (the servers it started).
    A process that exits during the load takes its time with it, so this can only undercount."""
    living = processes()

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = living[pid].parent if pid in living else 0
            if pid == os.getpid():
                return True
        return False

    return sum(process.cpu_s for pid, process in living.items() if descends(pid))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart_request(host: str, path: str, photo: bytes) -> bytes:
    """The whole HTTP/1.1 request an HTML form would send for `photo`, built once so that the clients
    spend no CPU on encoding (httpx spent about 10 ms per request here: 40 % of a 2-core machine)."""
    boundary = "bench-serve-7d2f0c"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="car.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    body = part.encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, float]:
    """The status of one HTTP/1.1 response, whether the connection stays open and its `Retry-After`
    in seconds (0 without one); the body is read and dropped."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = dict((name.strip().lower(), value.strip().lower()) for name, _, value in (line.partition(":") for line in lines[1:] if line))
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readexactly(2)
    else:
        await reader.read()  # the body ends with the connection
        headers["connection"] = "close"
    retry_after = headers.get("retry-after", "")
    return status, headers.get("connection") != "close", float(retry_after) if retry_after.isdigit() else 0.0


async def run_load(url: str, photos: list[bytes], clients: int, duration_s: float, max_requests: int, honor_retry_after: bool = True) -> LoadResult:
    """`clients` closed-loop clients POSTing multipart photos to `url` until time or request budget runs out,
    each over its own keep-alive connection (a new one after an error or a `Connection: close`). A
    client told `Retry-After` waits that long before its next request, as a well-behaved client does,
    unless `honor_retry_after` is false."""
    result = LoadResult()
    address = urlsplit(url)
    requests = [multipart_request(address.netloc, address.path, photo) for photo in photos]

    async def client(offset: int, until: float, budget: Iterator[int]) -> None:
        """Requests one after another until `until` or until the shared `budget` is spent."""
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for n in itertools.count(offset):
            if time.perf_counter() >= until or next(budget, None) is None:
                break
            start = time.perf_counter()
            try:
                connection = connection or await asyncio.open_connection(address.hostname, address.port)
                connection[1].write(requests[n % len(requests)])
                status, keep_open, retry_after = await asyncio.wait_for(read_response(connection[0]), REQUEST_TIMEOUT_S)
                kind = None if status == 200 else f"HTTP {status}"
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError) as err:
                kind, keep_open, retry_after = type(err).__name__, False, 0.0
            if connection and not keep_open:
                connection[1].close()
                connection = None
            if kind is None:
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
            else:
                result.errors[kind] = result.errors.get(kind, 0) + 1
                if honor_retry_after and retry_after:
                    await asyncio.sleep(min(retry_after, until - time.perf_counter()))
        if connection:
            connection[1].close()

    warm_up = iter(range(len(photos)))  # each photo once, all at the same time
    await asyncio.gather(*(client(i, float("inf"), warm_up) for i in range(len(photos))))
    result.latencies_ms.clear()
    result.errors.clear()
    cpu_before, client_cpu_before = server_cpu_s(), time.process_time()
    begin = time.perf_counter()
    budget = iter(range(max_requests))
    await asyncio.gather(*(client(i, begin + duration_s, budget) for i in range(clients)))
    result.seconds = time.perf_counter() - begin
    result.server_cpu_s = server_cpu_s() - cpu_before
    result.client_cpu_s = time.process_time() - client_cpu_before
    return result


async def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.perf_counter() < deadline:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s")


def replica_counts() -> tuple[int, int]:
    states = serve.status().applications[APP_NAME].deployments[CarPartScorer.name].replica_states
    return states.get("RUNNING", 0), states.get("STARTING", 0)


async def bench_serve(args: argparse.Namespace, case: Case, checkpoint: str, photos: list[bytes]) -> tuple[LoadResult, list[ReplicaSample]]:
    """Load the Serve app of `case`, sampling its replicas; then keep sampling until it is back to its minimum.
    Runs in a process of its own whose environment already holds `case.env()`."""
    # Ray starts its workers at nice 15; the baseline runs at 0. On a machine shared with other
    # work that difference alone would decide the comparison, so both run at 0 here.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app_args = AppArgs(checkpoint=checkpoint, **case.app)
        if case.fixed_replicas:
            actor_options = {**REPLICA_ACTOR_OPTIONS, "runtime_env": {"env_vars": REPLICA_ENV | case.replica_env}}
            app = CarPartScorer.options(
                num_replicas=case.fixed_replicas, autoscaling_config=None, max_ongoing_requests=2 * app_args.max_batch_size,
                ray_actor_options=actor_options,
            ).bind(app_args)  # fmt: skip
        else:
            app = build_app(app_args)
        serve.run(app, name=APP_NAME, route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(base + "/healthz", 120)
        samples: list[ReplicaSample] = []
        begin = time.perf_counter()

        async def sample_until(stop: asyncio.Event) -> None:
            while not stop.is_set():
                running, starting = await asyncio.to_thread(replica_counts)
                samples.append(ReplicaSample(time.perf_counter() - begin, running, starting))
                await asyncio.sleep(SAMPLE_INTERVAL_S)

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_until(stop))
        result = await run_load(base + "/predict", photos, case.clients or args.clients, args.duration, args.max_requests, case.honor_retry_after)
        cooldown_end = time.perf_counter() + args.cooldown
        scaled_up = any(s.running + s.starting > AUTOSCALING["min_replicas"] for s in samples)
        while scaled_up and time.perf_counter() < cooldown_end:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            last = samples[-1]
            if last.running + last.starting <= AUTOSCALING["min_replicas"]:
                break
        stop.set()
        await sampler
        return result, samples
    finally:
        try:
            serve.shutdown()
        except ray.exceptions.RayError as err:  # a controller lost on an overloaded machine: the numbers still stand
            print(f"serve.shutdown failed: {err}", file=sys.stderr)
        ray.shutdown()


async def bench_baseline(args: argparse.Namespace, case: Case, checkpoint: str, photos: list[bytes]) -> LoadResult:
    port = free_port()
    command = [sys.executable, __file__, "--baseline-server", str(port), "--checkpoint", checkpoint]
    server = subprocess.Popen(command, cwd=REPO)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", 120)
        return await run_load(f"http://127.0.0.1:{port}/predict", photos, case.clients or args.clients, args.duration, args.max_requests)
    finally:
        server.terminate()
        server.wait(timeout=30)


def serve_baseline(port: int, checkpoint: str) -> None:
    """The plain server: what one writes without Serve (sync route, one image per forward pass)."""
    predictor = load_model(checkpoint)
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(file: UploadFile) -> dict[str, dict[str, float]]:
        scores = predictor.predict([file.file.read()])[0]
        return {"scores": dict(zip(predictor.targets, map(float, scores)))}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def make_checkpoint(directory: Path) -> str:
    defaults = TrainConfig()
    torch.manual_seed(0)
    model = build_model(ModelSpec(defaults.backbone, list(CHALLENGE_TARGETS), defaults.image_size))
    return str(save_checkpoint(directory / "best", model, metrics={"note": "untrained, for benchmarking"}))


def render_photos(n: int, size: tuple[int, int]) -> list[bytes]:
    return [render_example(0, i, width=size[0], height=size[1]).jpeg_bytes() for i in range(n)]


def timeline(samples: list[ReplicaSample]) -> str:
    """Replica count changes: `0 s: 1, 14 s: 1 (+1 starting), 17 s: 2, ...`."""
    changes, last = [], None
    for s in samples:
        state = (s.running, s.starting)
        if state != last:
            changes.append(f"{s.t:.0f} s: {s.running}" + (f" (+{s.starting} starting)" if s.starting else ""))
            last = state
    return ", ".join(changes)


def table(rows: list[tuple[Case, LoadResult, str]], clients: int, baseline: float) -> str:
    lines = [
        "| server | clients | requests | throughput (req/s) | vs plain | p50 (ms) | p95 (ms) | p99 (ms) | errors "
        "| server CPU per request (ms) | load generator CPU per request (ms) | replicas |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case, r, replicas in rows:
        errors = sum(r.errors.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in r.errors.items())})" if errors else ""
        lines.append(
            f"| {case.name} | {case.clients or clients} | {r.ok} | {r.throughput:.1f} | {r.throughput / baseline:.2f}x "
            f"| {r.percentile(50):.0f} | {r.percentile(95):.0f} | {r.percentile(99):.0f} | {errors}{detail} "
            f"| {r.server_cpu_s / max(r.ok, 1) * 1000:.1f} | {r.client_cpu_s / max(r.ok, 1) * 1000:.1f} | {replicas} |"
        )
    return "\n".join(lines)


async def run_case(args: argparse.Namespace, case: Case, checkpoint: str) -> None:
    """In the case's own process: run it and print its result as one JSON line."""
    photos = render_photos(args.photos, tuple(args.photo_size))
    if case.ingress == "plain":
        result, replicas = await bench_baseline(args, case, checkpoint, photos), "1 process"
    else:
        result, samples = await bench_serve(args, case, checkpoint, photos)
        replicas = f"peak {max(s.running for s in samples)}: {timeline(samples)}"
    print(RESULT_PREFIX + json.dumps({"result": asdict(result), "replicas": replicas}), flush=True)


def run_case_process(args: argparse.Namespace, case: Case, checkpoint: str) -> tuple[LoadResult, str]:
    """A fresh process (and Ray instance) for `case`, with the case's environment from the start."""
    command = [sys.executable, __file__, "--case", case.name, "--checkpoint", checkpoint]
    command += ["--clients", str(args.clients), "--duration", str(args.duration), "--cooldown", str(args.cooldown)]
    command += ["--num-cpus", str(args.num_cpus), "--max-requests", str(args.max_requests), "--photos", str(args.photos)]
    command += ["--photo-size", *map(str, args.photo_size)]
    env = {**os.environ, **case.env()}
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=args.duration + args.cooldown + 400)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        return LoadResult(seconds=1.0, errors={f"case failed (exit {done.returncode})": 1}), "-"
    data = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    return LoadResult(**data["result"]), data["replicas"]


def main(args: argparse.Namespace) -> None:
    cases = [case for case in MATRIX if not args.only or any(word in case.name for word in args.only)]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or make_checkpoint(Path(tmp))
        spec = load_model(checkpoint).spec
        load_before = os.getloadavg()
        rows = []
        for case in cases:
            result, replicas = run_case_process(args, case, checkpoint)
            print(f"{case.name}: {result.throughput:.1f} req/s, p99 {result.percentile(99):.0f} ms, errors {result.errors}", flush=True)
            rows.append((case, result, replicas))
        load_after = os.getloadavg()

    plain = [r for c, r, _ in rows if c.ingress == "plain" and not c.clients]
    baseline = plain[0].throughput if plain else float("nan")
    photo_kb = np.mean([len(p) for p in render_photos(args.photos, tuple(args.photo_size))]) / 1000
    print(
        f"\n### Serve matrix: {spec.backbone} at {spec.image_size} px, {args.duration:.0f} s per case, "
        f"{args.photo_size[0]}x{args.photo_size[1]} JPEG uploads (~{photo_kb:.0f} kB), Ray num_cpus={args.num_cpus}, "
        f"{os.cpu_count()} cores, load average {load_before[0]:.1f} before and {load_after[0]:.1f} after the run\n"
    )
    print(table(rows, args.clients, baseline))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint dir (default: an untrained one of the training defaults)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per case")
    parser.add_argument("--max-requests", type=int, default=20_000, help="request budget per server")
    parser.add_argument("--cooldown", type=float, default=5.0, help="most seconds to wait for the scale-down after the load")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs given to Ray")
    parser.add_argument("--photos", type=int, default=8, help="distinct photos the clients cycle through")
    parser.add_argument("--photo-size", type=int, nargs=2, default=(1280, 960), metavar=("W", "H"))
    parser.add_argument("--only", nargs="+", metavar="WORD", help="run only the cases whose name holds one of these words")
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.baseline_server:
        serve_baseline(arguments.baseline_server, arguments.checkpoint)
    elif arguments.case:
        uvloop.run(run_case(arguments, next(c for c in MATRIX if c.name == arguments.case), arguments.checkpoint))
    else:
        main(arguments)
