"""Decode a data set once into Parquet shards of fixed-size pixels, as Ray Data tasks.

    python -m ray_jobs.prepare DATA_DIR --out PREPARED_DIR [--size 160]

Everything but the decoding is `cvcore.prepared.prepare`; here the decoding runs as Ray Data
`map_batches` tasks, so a cluster's CPUs share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from cvcore import prepared
from cvcore.config import CONFIG_FILE, ConfigParser, run, save_config
from cvcore.labels import SCORE_PREFIX
from ray_jobs.common import init_ray


def write_shards_with_ray_data(frame: pd.DataFrame, images_dir: str, size: int, shards: Path) -> None:
    """`cvcore.prepared.ShardWriter` on Ray Data: one task per ROWS_PER_TASK rows."""
    init_ray()
    chunks = [frame.iloc[i : i + prepared.ROWS_PER_TASK].reset_index(drop=True) for i in range(0, len(frame), prepared.ROWS_PER_TASK)]
    decoded = ray.data.from_pandas(chunks).map_batches(
        prepared.decode_batch, fn_kwargs={"images_dir": images_dir, "size": size}, batch_format="numpy", batch_size=64
    )
    decoded.write_parquet(str(shards))


def prepare(data_dir: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """`cvcore.prepared.prepare` (same options) with the decoding on Ray Data."""
    return prepared.prepare(data_dir, out, write_shards=write_shards_with_ray_data, **options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ConfigParser(
        prog="python -m ray_jobs.prepare",
        description="Decode every valid image once (EXIF-transposed, RGB, letterboxed to SIZE x SIZE) into Parquet shards "
        "with labels and the split, as Ray Data tasks. Bad images are skipped and listed in the manifest.",
    )
    parser.add_argument("data_dir", help=f"data set folder: imgs/ + a CSV (filename, {SCORE_PREFIX}* columns)")
    parser.add_argument("--out", required=True, help="folder for the prepared shards, manifest.json and config.yaml")
    parser.add_config(prepared.PrepareOptions, "options")
    args = parser.parse_args(argv)
    prepare(args.data_dir, args.out, **asdict(args.options))
    save_config(Path(args.out) / CONFIG_FILE, args.options)
    return 0


if __name__ == "__main__":
    run(main)
