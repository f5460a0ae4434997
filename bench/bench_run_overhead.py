"""What one small Ray Train run costs besides the training: wall time, the machine's CPU, and which
processes spent it. The suite's time is mostly such runs (bench/RESULTS.md, "Suite time").

    python bench/bench_run_overhead.py [--reps 2] [--per-process]

One local Ray (2 CPUs, dashboard on, as the tests start it), 80 rendered photos prepared once, then
`ray_jobs.train.train` (resnet10t at 32 px, 2 epochs, 2 workers x 1 CPU) repeated for each variant
of Train's optional helpers, the variants alternating. Machine CPU from /proc/stat (every process,
so run it on a quiet machine); with --per-process, one more default run whose CPU is split by process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from bench.proc import processes  # noqa: E402
from cvcore.engine import TrainConfig  # noqa: E402
from cvcore.labels import CHALLENGE_TARGETS  # noqa: E402
from cvcore.synth import write_dataset  # noqa: E402
from ray_jobs import prepare, train  # noqa: E402

SETTLE_S = 3.0  # after a run, for its actors to exit
VARIANTS = {
    "Train's defaults": {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"},
    "no PreemptionWatcher (a local Ray's default here)": {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"},
}


def machine_cpu_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def per_process(run) -> list[tuple[float, str]]:
    """Run `run()` while sampling every process every 0.3 s: the CPU each spent meanwhile (the last sample of those that exited)."""
    before, last, stop = processes(), {}, threading.Event()

    def sample() -> None:
        while not stop.is_set():
            last.update(processes())
            time.sleep(0.3)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run()
        time.sleep(SETTLE_S)
    finally:
        stop.set()
        sampler.join()
    spent = [(process.cpu_s - (before[pid].cpu_s if pid in before else 0.0), process.title) for pid, process in last.items()]
    return sorted((row for row in spent if row[0] >= 0.2), reverse=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="runs per variant (default: %(default)s)")
    parser.add_argument("--per-process", action="store_true", help="one more default run, its CPU split by process")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="run-overhead-"))
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=False)
    write_dataset(work / "data", 80, seed=7, workers=1, progress=False, extended=True, image_size=(160, 120))
    prepare.prepare(work / "data", work / "prepared", size=48, targets=list(CHALLENGE_TARGETS))
    cfg = TrainConfig(backbone="resnet10t", image_size=32, epochs=2, batch_size=8, lr=3e-3, warmup_epochs=0.5)

    def one_run(name: str) -> None:
        train.train(work / "prepared", work / name, cfg, num_workers=2, cpus_per_worker=1)

    rows = []
    for rep in range(args.reps):
        for i, (name, env) in enumerate(VARIANTS.items()):
            os.environ.update(env)  # Train passes these on from the driver to its controller
            cpu, start = machine_cpu_s(), time.perf_counter()
            one_run(f"run-{rep}-{i}")
            wall = time.perf_counter() - start
            time.sleep(SETTLE_S)
            rows.append(f"| {name} | {wall:.1f} s | {machine_cpu_s() - cpu:.1f} s |")
    print("\n| variant | wall | machine CPU (run + 3 s for its actors to exit) |\n|---|---:|---:|")
    print("\n".join(rows))
    if args.per_process:
        os.environ.update(VARIANTS["Train's defaults"])
        spent = per_process(lambda: one_run("per-process"))
        print("\n| process | CPU |\n|---|---:|")
        print("\n".join(f"| {title[:60]} | {cpu:.1f} s |" for cpu, title in spent))
        print(f"| all | {sum(cpu for cpu, _ in spent):.1f} s |")
    ray.shutdown()


if __name__ == "__main__":
    main()
