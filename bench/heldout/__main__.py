"""Render a held-out data set (customer format, two challenge columns), print its label statistics, draw a contact sheet.

    python -m bench.heldout --out data/heldout-4000 [--n 4000] [--seed 2026] [--workers 2] [--overwrite | --resume]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cvcore.config import run
from cvcore.labels import CHALLENGE_TARGETS
from cvcore.report import dataset_contact_sheet

from bench.heldout.dataset import label_stats, write_dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.heldout",
        description="Render the held-out benchmark's photos (a renderer unlike cvcore.synth; for bench/bench_transfer.py only, "
        "never for training or choosing defaults) into OUT/imgs/ with OUT/car_imgs_4000.csv, print label statistics, "
        "and draw OUT/contact_sheet.png.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must be empty unless --overwrite)")
    parser.add_argument("--n", type=int, default=4000, help="number of photos (default 4000)")
    parser.add_argument("--seed", type=int, default=2026, help="random seed; the data set depends only on it and --n (default 2026)")
    parser.add_argument("--workers", type=int, default=None, help="local processes (default: one per CPU core)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run into --out (same --seed): keep its photos, render the rest")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    csv = write_dataset(args.out, args.n, seed=args.seed, workers=args.workers, overwrite=args.overwrite, resume=args.resume)
    seconds = time.perf_counter() - start
    frame = pd.read_csv(csv)
    print(f"{args.n} photos in {seconds:.0f} s ({args.n / seconds:.2f} images/s): {csv}")
    print(label_stats(frame))
    sheet = dataset_contact_sheet(args.out, frame, list(CHALLENGE_TARGETS), args.out / "contact_sheet.png", n=24, seed=0)
    print(f"contact sheet: {sheet}")
    return 0


if __name__ == "__main__":
    run(main)
