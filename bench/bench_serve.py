"""Load test matrix: Ray Serve's ingresses and settings against a plain FastAPI + uvicorn server,
same model, same load, side by side in one run.

    python bench/bench_serve.py [--checkpoint DIR] [--clients 32] [--duration 20] [--only NAME ...]

N clients (asyncio + httpx, loopback only) each upload a photo to /predict as soon as their last
answer arrived, for a fixed time (and at most --max-requests in all). Every Serve case runs in its
own process with a fresh local Ray instance, because the ingress switches are environment variables
read where Ray starts: Serve's defaults (Python proxy), `RAY_SERVE_THROUGHPUT_OPTIMIZED`, the
HAProxy ingress as this project starts it (serve/edge.py), and, on HAProxy, one replica instead of
autoscaling 1-2, other batch sizes and batch waits, and 64 and 128 clients. The replica count is
sampled from `serve.status()` every second. The baseline is what one would write without Serve:
one uvicorn process, a sync FastAPI route, one image per forward pass. Prints a Markdown table.

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
from typing import Any

import httpx
import numpy as np
import ray
import torch
import uvicorn
from fastapi import FastAPI, UploadFile
from ray import serve

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from cvcore.engine import TrainConfig  # noqa: E402
from cvcore.model import ModelSpec, build_model, load_model, save_checkpoint  # noqa: E402
from cvcore.synth import CHALLENGE_TARGETS, render_example  # noqa: E402
from serve.app import AUTOSCALING, REPLICA_ACTOR_OPTIONS, REPLICA_ENV, AppArgs, CarPartScorer, build_app  # noqa: E402
from serve.edge import EdgeSettings, ingress_env, with_free_ports  # noqa: E402

APP_NAME = "carpart"
SAMPLE_INTERVAL_S = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
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
    Case("HAProxy, one replica, replica logs to stderr too (Serve's default)", fixed_replicas=1, replica_env={"RAY_SERVE_LOG_TO_STDERR": "1"}),
    Case("HAProxy, 4 threads (Ray's default)", edge={"threads": 4}),
    Case("HAProxy, batch 8 (max_ongoing 16)", app={"max_batch_size": 8}),
    Case("HAProxy, batch 32 (max_ongoing 64)", app={"max_batch_size": 32}),
    Case("HAProxy, batch wait 20 ms", app={"batch_wait_timeout_s": 0.02}),
    Case("HAProxy, batch wait 100 ms", app={"batch_wait_timeout_s": 0.1}),
    Case("HAProxy, 64 clients", clients=64),
    Case("HAProxy, 128 clients", clients=128),
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
    parent, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ..., utime, stime
            parent[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return sum(seconds for pid, seconds in cpu.items() if descends(pid))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_load(url: str, photos: list[bytes], clients: int, duration_s: float, max_requests: int) -> LoadResult:
    """`clients` closed-loop clients POSTing multipart photos to `url` until time or request budget runs out."""
    result = LoadResult()
    budget = itertools.count()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:

        async def client(offset: int) -> None:
            for n in itertools.count(offset):
                if time.perf_counter() >= deadline or next(budget) >= max_requests:
                    return
                files = {"file": ("car.jpg", photos[n % len(photos)], "image/jpeg")}
                start = time.perf_counter()
                try:
                    response = await http.post(url, files=files)
                    kind = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as err:
                    kind = type(err).__name__
                if kind is None:
                    result.latencies_ms.append((time.perf_counter() - start) * 1000)
                else:
                    result.errors[kind] = result.errors.get(kind, 0) + 1

        await asyncio.gather(*(http.post(url, files={"file": ("car.jpg", p, "image/jpeg")}) for p in photos))  # warm-up
        cpu_before = server_cpu_s()
        begin = time.perf_counter()
        deadline = begin + duration_s
        await asyncio.gather(*(client(i) for i in range(clients)))
        result.seconds = time.perf_counter() - begin
        result.server_cpu_s = server_cpu_s() - cpu_before
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
        result = await run_load(base + "/predict", photos, case.clients or args.clients, args.duration, args.max_requests)
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
        "| server | clients | requests | throughput (req/s) | vs plain | p50 (ms) | p95 (ms) | p99 (ms) | errors | server CPU per request (ms) | replicas |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case, r, replicas in rows:
        errors = sum(r.errors.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in r.errors.items())})" if errors else ""
        lines.append(
            f"| {case.name} | {case.clients or clients} | {r.ok} | {r.throughput:.1f} | {r.throughput / baseline:.2f}x "
            f"| {r.percentile(50):.0f} | {r.percentile(95):.0f} | {r.percentile(99):.0f} | {errors}{detail} "
            f"| {r.server_cpu_s / max(r.ok, 1) * 1000:.1f} | {replicas} |"
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
        asyncio.run(run_case(arguments, next(c for c in MATRIX if c.name == arguments.case), arguments.checkpoint))
    else:
        main(arguments)
