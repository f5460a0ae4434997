"""Prepare throughput: images/s per core for decoding + letterboxing a data set into Parquet shards (Ray Data).

    python bench/bench_prepare.py --data DIR [--size 160]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from ray_jobs.common import init_ray
from ray_jobs.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="data set in the customer's format")
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()
    init_ray()
    cores = int(ray.cluster_resources().get("CPU", os.cpu_count()))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = prepare(args.data, Path(tmp) / "prepared", size=args.size)
        seconds = time.perf_counter() - start
    n = sum(manifest["counts"].values())
    print(f"\nprepare of {n} images at {args.size} px on {cores} cores: {seconds:.1f} s end to end, "
          f"{n / seconds:.0f} images/s, {n / seconds / cores:.0f} images/s per core (goal >= 300)")


if __name__ == "__main__":
    main()
