"""A PNG grid of a data set's images with their scores, to check by eye that the labels make sense.

    python -m ray_jobs.contact_sheet DATA_DIR [--out DATA_DIR/contact_sheet.png] [--n 24]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cvcore.config import positive_int, run
from cvcore.data import read_dataset
from cvcore.errors import DataError
from cvcore.labels import SCORE_PREFIX
from cvcore.report import dataset_contact_sheet


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.contact_sheet",
        description="Draw N images of a data set (a spread of scores: some zeros, some high) with their scores into one PNG.",
    )
    parser.add_argument("data_dir", type=Path, help="data set folder: imgs/ + a CSV")
    parser.add_argument("--out", type=Path, help="PNG to write (default DATA_DIR/contact_sheet.png)")
    parser.add_argument("--n", type=positive_int, default=24, help="images on the sheet (default 24)")
    parser.add_argument("--csv", dest="csv_name", help="CSV file name inside DATA_DIR (default car_imgs_4000.csv)")
    parser.add_argument("--targets", help=f"comma-separated score columns to show (default: {SCORE_PREFIX}*)")
    parser.add_argument("--seed", type=int, default=0, help="which images are picked (default 0)")
    args = parser.parse_args(argv)
    dataset = read_dataset(args.data_dir, args.csv_name, args.targets, check_images="none")
    if dataset.frame.empty:
        raise DataError(f"{args.data_dir} has no usable rows to draw; run ray_jobs.validate on it")
    out = dataset_contact_sheet(dataset.root, dataset.frame, dataset.targets, args.out or args.data_dir / "contact_sheet.png", n=args.n, seed=args.seed)
    print(f"contact sheet: {out}")
    return 0


if __name__ == "__main__":
    run(main)
