"""Decode a data set once into Parquet shards of fixed-size pixels, as Ray Data tasks.

    python -m ray_jobs.prepare DATA_DIR --out PREPARED_DIR [--size 160]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from cvcore import prepare as prepared
from cvcore.data import read_dataset
from cvcore.errors import DataError
from ray_jobs.cli import init_ray, run

DEFAULT_SIZE = 160
ROWS_PER_TASK = 256


def source_key(csv_path: Path, size: int, targets: Sequence[str]) -> dict[str, Any]:
    """What a prepared directory was made from; equal keys mean it can be reused as is."""
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()[:16]
    return {"csv": str(csv_path.resolve()), "csv_sha256": digest, "size": size, "targets": list(targets)}


def prepare(
    data_dir: str | Path,
    out: str | Path,
    *,
    size: int = DEFAULT_SIZE,
    csv_name: str | None = None,
    targets: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Prepare `data_dir` into `out` and return the manifest; reuse `out` if it was made from the same data."""
    import ray

    if size < 16:
        raise DataError(f"--size must be at least 16 pixels, got {size}")
    out = Path(out)
    dataset = read_dataset(data_dir, csv_name, targets, check_images="none")
    dataset.require_usable()
    key = source_key(dataset.csv_path, size, dataset.targets)
    if prepared.is_prepared(out):
        manifest = prepared.read_manifest(out)
        if manifest.get("source") == key and not overwrite:
            print(f"{out} already holds this data set prepared at {size} px; reusing it")
            return manifest
        if not overwrite:
            raise DataError(f"{out} holds another prepared data set; pass --overwrite or choose another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite and not prepared.is_prepared(out):
            raise DataError(f"{out} is not empty; pass --overwrite or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    print(dataset.report.summary())
    frame = dataset.frame
    start = time.perf_counter()
    init_ray()
    chunks = [frame.iloc[i : i + ROWS_PER_TASK].reset_index(drop=True) for i in range(0, len(frame), ROWS_PER_TASK)]
    ds = ray.data.from_pandas(chunks)
    ds = ds.map_batches(
        prepared.decode_batch,
        fn_kwargs={"images_dir": str(dataset.image_path("")), "size": size},
        batch_format="numpy",
        batch_size=64,
    )
    ds.write_parquet(str(out / prepared.SHARDS))
    elapsed = time.perf_counter() - start

    skipped = prepared.skipped_images(out)
    counts = prepared.split_counts(out)
    manifest = prepared.write_manifest(
        out,
        {
            "format_version": prepared.FORMAT_VERSION,
            "source": key,
            "size": size,
            "targets": dataset.targets,
            "extra_columns": dataset.extra_columns,
            "counts": counts,
            "validation": dataset.report.to_dict(),
            "skipped_images": skipped,
            "seconds": round(elapsed, 2),
        },
    )
    n_ok = sum(counts.values())
    print(f"prepared {n_ok} images at {size}x{size} px in {elapsed:.1f} s ({n_ok / max(elapsed, 1e-9):.0f} images/s) -> {out}")
    print("split counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if skipped:
        print(f"skipped {len(skipped)} images that could not be decoded (listed in {out / prepared.MANIFEST}):")
        for row in skipped[:5]:
            print(f"  {row['filename']}: {row['error']}")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.prepare",
        description="Decode every valid image once (EXIF-transposed, RGB, letterboxed to SIZE x SIZE) into "
        "Parquet shards with labels and the split, as Ray Data tasks. Bad images are skipped and listed in the manifest.",
    )
    parser.add_argument("data_dir", help="data set folder: imgs/ + a CSV (filename, perspective_score_* columns)")
    parser.add_argument("--out", required=True, help="folder for the prepared shards and manifest.json")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"side of the square images in pixels (default {DEFAULT_SIZE})")
    parser.add_argument("--csv", dest="csv_name", help="CSV file name inside DATA_DIR (default car_imgs_4000.csv)")
    parser.add_argument("--targets", help="comma-separated target columns (default: every perspective_score_* column)")
    parser.add_argument("--overwrite", action="store_true", help="replace whatever OUT holds")
    args = parser.parse_args(argv)
    targets = args.targets.split(",") if args.targets else None
    prepare(args.data_dir, args.out, size=args.size, csv_name=args.csv_name, targets=targets, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    run(main)
