"""Recovery from killed processes: a Ray Train worker during training, a Serve replica under load.

    python bench/bench_recovery.py [--images 160] [--epochs 6] [--clients 8] [--seconds 40] [--kill-at 10]

One local Ray instance (2 CPUs, address="local", dashboard and Serve on loopback). Processes are
killed with SIGKILL, like the OOM killer or a lost node would, so nothing gets to clean up.

- Training: 2 workers x 1 CPU train resnet10t at 64 px on a synthetic set; one worker is killed
  half an epoch after the second epoch's report. Measured from the arrival of each line in
  metrics.jsonl: the usual epoch time, how long until the replacement workers are alive, until
  the next epoch is reported, and the time lost (that stretch minus one usual epoch). Also
  whether every epoch was reported exactly once (resumed from the latest checkpoint).
- Serving: the app as `build_app` deploys it behind the HAProxy ingress (serve/edge.py; HAProxy's
  health checks take a dead replica out of rotation), autoscaling from 1 replica, then from 2 replicas;
  --clients clients post a photo to /predict back to back for --seconds (at most --max-requests
  in all) and the replica that answers first is killed at --kill-at. Measured: failed requests,
  the longest stretch without a successful answer, and how long until a new replica is alive.

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from cvcore import engine  # noqa: E402
from cvcore.model import ModelSpec, build_model, save_checkpoint  # noqa: E402
from cvcore.runlog import HISTORY_FILE  # noqa: E402
from cvcore.synth import write_dataset  # noqa: E402
from ray_jobs import train  # noqa: E402

APP = "carpart"
REPLICA_CLASS = f"ServeReplica:{APP}:CarPartScorer"
TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]
Row = tuple[str, str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive_pids(class_name: str) -> set[int]:
    from ray.util.state import list_actors

    return {a.pid for a in list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")], limit=1000)}


def wait_for_new(class_name: str, old: set[int], timeout: float) -> float:
    """Monotonic time at which an actor of `class_name` not in `old` was first seen alive."""
    deadline = time.monotonic() + timeout
    while not alive_pids(class_name) - old:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new {class_name} within {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic()


# ---------------------------------------------------------------- training


def bench_training(data: Path, output: Path, epochs: int) -> list[Row]:
    cfg = engine.TrainConfig(backbone="resnet10t", image_size=64, epochs=epochs, batch_size=16, warmup_epochs=0.5, aux_columns=[])
    history = output / HISTORY_FILE
    arrivals: list[tuple[int, float]] = []  # (epoch, monotonic time the line appeared)
    events: dict[str, float] = {}
    done = threading.Event()

    def watch_and_kill() -> None:
        try:
            while not done.is_set():
                lines = history.read_text().splitlines() if history.is_file() else []
                arrivals.extend((json.loads(line)["epoch"], time.monotonic()) for line in lines[len(arrivals) :])
                if len(arrivals) == 2 and "kill" not in events:
                    time.sleep((arrivals[1][1] - arrivals[0][1]) / 2)  # mid-epoch
                    workers = alive_pids("RayTrainWorker")
                    os.kill(min(workers), signal.SIGKILL)
                    events["kill"] = time.monotonic()
                    events["replaced"] = wait_for_new("RayTrainWorker", workers, timeout=300)
                time.sleep(0.05)
        except Exception as err:  # reported in the table instead of dying silently in the thread
            events["error"] = err

    watcher = threading.Thread(target=watch_and_kill, daemon=True)
    watcher.start()
    start = time.monotonic()
    train.train(data, output, cfg, num_workers=2, cpus_per_worker=1, targets=TARGETS)
    total = time.monotonic() - start
    done.set()
    watcher.join()
    if "error" in events or "kill" not in events:
        raise RuntimeError(f"the kill did not happen as planned: {events.get('error', 'the run ended first')}")

    epochs_seen = [epoch for epoch, _ in arrivals]
    times = [t for _, t in arrivals]
    before = [b - a for a, b in zip(times, times[1:]) if b < events["kill"]]
    usual = statistics.median(before)
    last_before, first_after = max(t for t in times if t < events["kill"]), min(t for t in times if t > events["kill"])
    what = f"training, 2 workers x 1 CPU, resnet10t 64 px, {epochs} epochs"
    return [
        (what, "usual epoch (median before the kill)", f"{usual:.1f} s"),
        (what, "kill -> replacement workers alive", f"{events['replaced'] - events['kill']:.1f} s"),
        (what, "kill -> next epoch reported", f"{first_after - events['kill']:.1f} s"),
        (what, "time lost to the failure", f"{first_after - last_before - usual:.1f} s"),
        (what, "epochs reported", f"{epochs_seen} ({'each once' if epochs_seen == list(range(1, epochs + 1)) else 'NOT each once'})"),
        (what, "whole run", f"{total:.0f} s"),
    ]


# ---------------------------------------------------------------- serving


@dataclass
class Request:
    sent: float
    done: float
    ok: bool


async def load_with_a_kill(url: str, photo: bytes, clients: int, seconds: float, kill_at: float, max_requests: int) -> tuple[list[Request], float, float]:
    """Back-to-back clients; SIGKILL a replica at `kill_at`. The requests, when the kill happened and when a new replica was alive."""
    requests: list[Request] = []
    kill: dict = {}
    start = time.monotonic()

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() - start < seconds and len(requests) < max_requests:
            sent = time.monotonic()
            try:
                ok = (await http.post(url, content=photo, headers={"Content-Type": "image/jpeg"})).status_code == 200
            except httpx.HTTPError:
                ok = False
            requests.append(Request(sent, time.monotonic(), ok))

    async def killer() -> None:
        await asyncio.sleep(kill_at)
        kill["before"] = await asyncio.to_thread(alive_pids, REPLICA_CLASS)
        os.kill(min(kill["before"]), signal.SIGKILL)
        kill["at"] = time.monotonic()
        kill["replaced"] = await asyncio.to_thread(wait_for_new, REPLICA_CLASS, kill["before"], 120)

    async with httpx.AsyncClient(timeout=120) as http:
        await asyncio.gather(killer(), *(client(http) for _ in range(clients)))
    return requests, kill["at"], kill["replaced"]


def bench_serving(checkpoint: Path, photo: bytes, min_replicas: int, args: argparse.Namespace) -> list[Row]:
    from ray import serve

    from serve.app import AUTOSCALING, AppArgs, CarPartScorer
    from serve.edge import wait_until_routed

    app_args = AppArgs(checkpoint=str(checkpoint))
    scaling = {**AUTOSCALING, "min_replicas": min_replicas, "max_replicas": max(min_replicas, AUTOSCALING["max_replicas"])}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        # What build_app deploys, with the minimum replica count of the scenario.
        app = CarPartScorer.options(max_ongoing_requests=2 * app_args.max_batch_size, autoscaling_config=scaling).bind(app_args)
        serve.run(app, name=APP, route_prefix="/")
        wait_until_routed(f"http://127.0.0.1:{port}/healthz")
        requests, killed_at, replaced = asyncio.run(
            load_with_a_kill(f"http://127.0.0.1:{port}/predict", photo, args.clients, args.seconds, args.kill_at, args.max_requests)
        )
    finally:
        serve.shutdown()

    failed = sum(not r.ok for r in requests)
    answers = sorted([killed_at] + [r.done for r in requests if r.ok])
    gaps = [b - a for a, b in zip(answers, answers[1:]) if b >= killed_at]
    steady = [1000 * (r.done - r.sent) for r in requests if r.ok and r.done < killed_at]
    what = f"serving, {min_replicas} replica(s) minimum, {args.clients} clients"
    return [
        (what, "requests (failed)", f"{len(requests)} ({failed}: {failed / len(requests):.2%})"),
        (what, "latency before the kill, p50 / p99", f"{np.percentile(steady, 50):.0f} / {np.percentile(steady, 99):.0f} ms"),
        (what, "longest stretch without an answer after the kill", f"{max(gaps):.1f} s"),
        (what, "kill -> new replica alive", f"{replaced - killed_at:.1f} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160, help="synthetic images to train on (default 160)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (default 8)")
    parser.add_argument("--seconds", type=float, default=40, help="load duration per serving scenario (default 40)")
    parser.add_argument("--kill-at", type=float, default=10, help="seconds into the load when the replica is killed (default 10)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="request cap per serving scenario (default 20000)")
    parser.add_argument("--min-replicas", type=int, nargs="+", default=[1, 2], help="serving scenarios (default 1 2)")
    parser.add_argument("--serving-only", action="store_true", help="skip the training scenario")
    args = parser.parse_args()

    import ray

    from serve.edge import EdgeSettings, ingress_env, with_free_ports

    os.environ.update(ingress_env(with_free_ports(EdgeSettings())))  # read where Ray starts
    # A replica stopped between scenarios would drain 30 s for external load balancers, longer than
    # serve.shutdown waits, and the next scenario would join the dying controller.
    os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # Train's placement-group cleaner finds the State API here
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, configure_logging=False, log_to_driver=False)
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            write_dataset(data, args.images, seed=1, workers=1, progress=False)
            if not args.serving_only:
                rows += bench_training(data, Path(tmp) / "train", args.epochs)
            checkpoint = save_checkpoint(Path(tmp) / "model", build_model(ModelSpec("resnet10t", TARGETS, image_size=64)))
            photo = next((data / "imgs").glob("*.jpg")).read_bytes()
            for min_replicas in args.min_replicas:
                rows += bench_serving(checkpoint, photo, min_replicas, args)
    finally:
        ray.shutdown()
    print(f"\n{os.cpu_count()} CPUs, Ray {ray.__version__}, loopback only\n")
    print("| scenario | measure | value |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
