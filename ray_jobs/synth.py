"""Render the embedded default data set: procedural cars with exact perspective-score labels
(`python -m ray_jobs.synth --out DIR --n N`; `--help` for the rest).

Writes DIR/imgs/*.jpg and DIR/<csv-name> in the customer's format (plus DIR/masks/ with --masks),
then prints the label statistics to compare with the real challenge data. The output depends only
on --n, --seed and --distribution (and --size): any number of workers writes the same bytes.
--distribution shifted renders another photo source (other cameras, paints, light, compression).
Runs on local processes; no Ray cluster is needed for a few thousand images.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cvcore.config import frame_size, non_negative_int, positive_int, run
from cvcore.data import DEFAULT_CSV, IMAGE_DIR
from cvcore.report import dataset_contact_sheet
from cvcore.synth import CHALLENGE_TARGETS, DISTRIBUTIONS, MASK_DIR, PARTS, format_label_stats, label_stats, write_dataset

REAL_STATS = "real challenge set (4000 photos): ~52 % zeros, mean ~0.30, std ~0.38, max ~0.93, weak negative correlation"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.synth",
        description=(
            f"Render N synthetic car photos into DIR/{IMAGE_DIR}/ with a CSV of perspective scores "
            f"(filename, {', '.join(CHALLENGE_TARGETS)}), deterministic for a seed, then print the label "
            "statistics. score = visible fraction x facing; see cvcore/synth/ for the exact definition."
        ),
        epilog=(
            "Exit status: 0 written; 2 bad arguments (an unknown --distribution included), or DIR already "
            "holds a different data set (pass --overwrite to replace it)."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--n", type=positive_int, required=True, metavar="N", help="number of images")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="random seed (default: 0)")
    parser.add_argument(
        "--distribution",
        default="default",
        metavar="{" + ",".join(DISTRIBUTIONS) + "}",
        help="scene distribution: 'default' is the embedded data set, tuned to the real one's label statistics; "
        "'shifted' is another photo source: wide-angle phone lenses (60-90 degree field of view), higher "
        "viewpoints, more close-ups and crops, more saturated paints, darker overcast light, stronger blur "
        "and JPEG compression, more clutter (default: default)",
    )
    parser.add_argument("--workers", type=positive_int, metavar="W", help="rendering processes (default: CPU count)")
    parser.add_argument(
        "--extended",
        action="store_true",
        help=f"also write perspective_score_, visible_fraction_ and facing_ columns for all {len(PARTS)} parts "
        "and the camera's azimuth, elevation and distance",
    )
    parser.add_argument("--masks", action="store_true",
                        help=f"also write {MASK_DIR}/<image stem>.png (uint8 part ids, 0 = not the car) and {MASK_DIR}/parts.json")  # fmt: skip
    parser.add_argument("--csv-name", default=DEFAULT_CSV, metavar="NAME", help=f"label file name inside DIR (default: {DEFAULT_CSV})")
    parser.add_argument(
        "--size",
        type=frame_size,
        metavar="WxH",
        help="render every image at this size (default: varied sizes from 480x640 to 1024x768, portrait and landscape, "
        "674x506 like the real photos most often)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a different data set already in DIR (its imgs/, masks/ and CSV)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    csv_path = write_dataset(
        args.out, args.n, seed=args.seed, workers=args.workers, extended=args.extended, masks=args.masks, progress=not args.quiet,
        csv_name=args.csv_name, image_size=args.size, overwrite=args.overwrite, distribution=args.distribution,
    )  # fmt: skip
    print(f"wrote {args.n} images to {args.out / IMAGE_DIR} and labels to {csv_path}")
    frame = pd.read_csv(csv_path)
    print(format_label_stats(label_stats(frame, list(CHALLENGE_TARGETS))))
    print(REAL_STATS)
    sheet = dataset_contact_sheet(args.out, frame, list(CHALLENGE_TARGETS), args.out / "contact_sheet.png")
    print(f"contact sheet (check by eye that the scores fit the pictures): {sheet}")
    return 0


if __name__ == "__main__":
    run(main)
