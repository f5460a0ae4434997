"""Throughput of the synthetic renderer on one core, JPEG encoding included.

    python bench/bench_synth.py [--n 100] [--size 674x506] [--profile]

Renders random examples in this process only and divides by the process's CPU time, so the figure
is per core and holds on a machine shared with other work (wall time is printed too). The goal is
at least 20 images/s per core at 674x506, the real photos' size. To see what a renderer change
costs, run it alternately in worktrees of the old and the new code (`PYTHONPATH=<worktree>`): a
shared machine's speed drifts by more than the difference between two runs minutes apart.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from cvcore.synth import render_example

TARGET_PER_CORE = 20.0


def measure(n: int, width: int, height: int, seed: int = 0) -> tuple[float, float]:
    """CPU and wall seconds per image for examples 0..n-1 of `seed`, rendered and JPEG-encoded."""
    for index in range(3):  # warm-up: imports, first allocations
        render_example(seed + 1, index, width=width, height=height).jpeg_bytes()
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(n):
        render_example(seed, index, width=width, height=height).jpeg_bytes()
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="images to time (default: 100, a few seconds)")
    parser.add_argument("--size", default="674x506", help="image size WxH (default: 674x506)")
    parser.add_argument("--profile", action="store_true", help="also print where the time goes (cProfile)")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.split("x"))

    cpu, wall = measure(args.n, width, height)
    rate = 1 / cpu
    verdict = "OK" if rate >= TARGET_PER_CORE else "TOO SLOW"
    print(
        f"bench_synth: {rate:.1f} images/s per core at {width}x{height} incl. JPEG "
        f"({1000 * cpu:.1f} ms CPU, {1000 * wall:.1f} ms wall per image, n={args.n}); "
        f"target >= {TARGET_PER_CORE:.0f}: {verdict}"
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(measure, min(args.n, 30), width, height)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
