"""Load test: the Ray Serve endpoint against a plain FastAPI + uvicorn server, same model, same load.

    python bench/bench_serve.py [--checkpoint DIR] [--clients 32] [--duration 30]

N clients (asyncio + httpx, loopback only) each upload a photo to /predict as soon as their last
answer arrived, for a fixed time (and at most --max-requests in all). The Serve run uses the
default serving config (`build_app` defaults: batch 16, autoscaling 1-2 replicas of one CPU
each) and samples the replica count from `serve.status()` every second, through the load and a
cool-down, to show a replica coming and going. The baseline is what one would write without
Serve: one uvicorn process, a sync FastAPI route, one image per forward pass. It runs after Ray
has been shut down, so the two never compete. Prints a Markdown table.

Besides what the clients see, the table gives the server side's CPU time per answered request
(every process this script started: for Serve the whole local Ray instance, proxy, controller and
replicas included; Linux /proc). On a machine shared with other work, throughput moves with the
neighbours' load, while CPU per request mostly does not.

Without --checkpoint an untrained checkpoint of the training defaults (`TrainConfig`: backbone
and image size) is made in a temporary folder: the speed of a network does not depend on its
weights. The photos are rendered by `cvcore.synth` at --photo-size.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

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
from serve.app import AUTOSCALING, PROXY_ENV, AppArgs, CarPartScorer, build_app  # noqa: E402

APP_NAME = "carpart"
SAMPLE_INTERVAL_S = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


async def bench_serve(args: argparse.Namespace, checkpoint: str, photos: list[bytes]) -> tuple[LoadResult, list[ReplicaSample]]:
    """Load the Serve app, sampling its replicas; then keep sampling until it is back to its minimum."""
    # Ray starts its workers at nice 15; the baseline runs at 0. On a machine shared with other
    # work that difference alone would decide the comparison, so both run at 0 here.
    os.environ.setdefault("RAY_worker_niceness", "0")
    for name, value in PROXY_ENV.items():  # the proxy reads it when it starts, in the environment Ray starts with
        os.environ.setdefault(name, value)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(AppArgs(checkpoint=checkpoint)), name=APP_NAME, route_prefix="/")
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
        result = await run_load(base + "/predict", photos, args.clients, args.duration, args.max_requests)
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
        serve.shutdown()
        ray.shutdown()


async def bench_baseline(args: argparse.Namespace, checkpoint: str, photos: list[bytes]) -> LoadResult:
    port = free_port()
    command = [sys.executable, __file__, "--baseline-server", str(port), "--checkpoint", checkpoint]
    server = subprocess.Popen(command, cwd=REPO)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", 120)
        return await run_load(f"http://127.0.0.1:{port}/predict", photos, args.clients, args.duration, args.max_requests)
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


def table(rows: list[tuple[str, LoadResult, str]]) -> str:
    lines = [
        "| server | requests | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | errors | server CPU per request (ms) | replicas |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r, replicas in rows:
        errors = sum(r.errors.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in r.errors.items())})" if errors else ""
        lines.append(
            f"| {name} | {r.ok} | {r.ok / r.seconds:.1f} | {r.percentile(50):.0f} | {r.percentile(95):.0f} "
            f"| {r.percentile(99):.0f} | {errors}{detail} | {r.server_cpu_s / max(r.ok, 1) * 1000:.1f} | {replicas} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or make_checkpoint(Path(tmp))
        spec = load_model(checkpoint).spec
        photos = render_photos(args.photos, tuple(args.photo_size))
        load_before = os.getloadavg()[0]
        serve_result, samples = await bench_serve(args, checkpoint, photos)
        baseline = await bench_baseline(args, checkpoint, photos)

    defaults = AppArgs(checkpoint=checkpoint)
    peak = max(s.running for s in samples)
    print(
        f"\n### Serve vs plain FastAPI: {spec.backbone} at {spec.image_size} px, {args.clients} clients, "
        f"{args.duration:.0f} s each, {args.photo_size[0]}x{args.photo_size[1]} JPEG uploads "
        f"(~{np.mean([len(p) for p in photos]) / 1000:.0f} kB), Ray num_cpus={args.num_cpus}, "
        f"{os.cpu_count()} cores, load average {load_before:.1f} before the run\n"
    )
    print(
        table(
            [
                (
                    f"Ray Serve (batch {defaults.max_batch_size}, wait {defaults.batch_wait_timeout_s * 1000:.0f} ms, "
                    f"{AUTOSCALING['min_replicas']}-{AUTOSCALING['max_replicas']} replicas)",
                    serve_result,
                    f"peak {peak}",
                ),
                ("FastAPI + uvicorn, 1 image per forward pass", baseline, "1 process"),
            ]
        )
    )
    speedup = (serve_result.ok / serve_result.seconds) / (baseline.ok / baseline.seconds)
    print(f"\nThroughput Serve / baseline: {speedup:.2f}x")
    print(f"Serve replicas (running) over time, load from 0 s to {serve_result.seconds:.0f} s: {timeline(samples)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint dir (default: an untrained one of the training defaults)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per server")
    parser.add_argument("--max-requests", type=int, default=20_000, help="request budget per server")
    parser.add_argument("--cooldown", type=float, default=75.0, help="most seconds to wait for the scale-down")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs given to Ray")
    parser.add_argument("--photos", type=int, default=8, help="distinct photos the clients cycle through")
    parser.add_argument("--photo-size", type=int, nargs=2, default=(1280, 960), metavar=("W", "H"))
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.baseline_server:
        serve_baseline(arguments.baseline_server, arguments.checkpoint)
    else:
        asyncio.run(main(arguments))
