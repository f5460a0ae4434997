"""Prepared data: every valid image decoded once, letterboxed, stored as uint8 pixels in Parquet.

Layout of a prepared directory:
    manifest.json        targets, size, counts, validation report, skipped images, content hash
    shards/*.parquet     filename, split, image (raw uint8 size*size*3), width, height, error, labels

`prepare` does it all but the decoding, which a `ShardWriter` runs: `write_shards_locally` (threads
of this process) or `ray_jobs.prepare`'s Ray Data tasks across a cluster; both call `decode_batch`.
`load_split` reads one split back into memory for training or evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from cvcore.data import read_dataset
from cvcore.errors import DataError, ImageError
from cvcore.image import MAX_PIXELS, decode_image, letterbox

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT_VERSION = 1
DEFAULT_SIZE = 160
ROWS_PER_TASK = 256

@dataclass
class PrepareOptions:
    """How `prepare` reads a data set and what size it stores."""

    size: int = DEFAULT_SIZE
    """side of the square images in pixels (at least the largest input size trained on)"""
    csv_name: str | None = field(default=None, metadata={"aliases": ("--csv",), "metavar": "NAME"})
    """CSV file name inside the data set (default car_imgs_4000.csv, or the only *.csv)"""
    targets: list[str] | None = None
    """comma-separated target columns (default: every score column)"""
    overwrite: bool = False
    """replace whatever the output folder holds"""


ShardWriter = Callable[[pd.DataFrame, str, int, Path], None]
"""(valid rows, images folder, size, shards folder): decode every row with `decode_batch` and write
the results as Parquet files into the shards folder."""


def is_prepared(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def decode_batch(batch: dict[str, np.ndarray], images_dir: str, size: int, max_pixels: int = MAX_PIXELS) -> dict[str, np.ndarray]:
    """Decode and letterbox a batch of rows; a bad image keeps its row with `error` set, never raises."""
    n = len(batch["filename"])
    pixels, widths, heights, errors = [], np.zeros(n, np.int32), np.zeros(n, np.int32), []
    for i, name in enumerate(batch["filename"]):
        try:
            image = decode_image(Path(images_dir) / str(name), max_pixels=max_pixels, draft_size=size)
        except ImageError as err:
            pixels.append(b"")
            errors.append(str(err))
            continue
        # Draft mode may have decoded at a reduced scale: the aspect ratio is what matters.
        widths[i], heights[i] = image.size
        pixels.append(letterbox(image, size).tobytes())
        errors.append("")
    out = dict(batch)
    out.update(image=np.array(pixels, dtype=object), width=widths, height=heights, error=np.array(errors, dtype=object))
    return out


def write_shards_locally(frame: pd.DataFrame, images_dir: str, size: int, shards: Path) -> None:
    """The `ShardWriter` without a cluster: one Parquet file per ROWS_PER_TASK rows, decoded by a
    thread per core (Pillow releases the GIL while it decodes and resizes)."""
    shards.mkdir(parents=True, exist_ok=True)

    def write(start: int) -> None:
        chunk = frame.iloc[start : start + ROWS_PER_TASK]
        decoded = decode_batch({c: chunk[c].to_numpy() for c in chunk.columns}, images_dir, size)
        columns = {k: pa.array(list(v), type=pa.binary() if k == "image" else None) for k, v in decoded.items()}
        pq.write_table(pa.table(columns), shards / f"part-{start // ROWS_PER_TASK:05d}.parquet")

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(write, range(0, len(frame), ROWS_PER_TASK)))


def source_key(csv_path: Path, size: int, targets: Sequence[str]) -> dict[str, Any]:
    """What a prepared directory was made from; equal keys mean it can be reused as is."""
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()[:16]
    return {"csv": str(csv_path.resolve()), "csv_sha256": digest, "size": size, "targets": list(targets)}


def prepare(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int = DEFAULT_SIZE,
    csv_name: str | None = None,
    targets: Sequence[str] | None = None,
    overwrite: bool = False,
    write_shards: ShardWriter = write_shards_locally,
) -> dict[str, Any]:
    """Prepare `data_dir` into `out` and return the manifest; reuse `out` if it was made from the same data."""
    if size < 16:
        raise DataError(f"--size must be at least 16 pixels, got {size}")
    out = Path(out)
    dataset = read_dataset(data_dir, csv_name, targets, check_images="none")
    dataset.require_usable()
    key = source_key(dataset.csv_path, size, dataset.targets)
    if is_prepared(out):
        manifest = read_manifest(out)
        if manifest.get("source") == key and not overwrite:
            print(f"{out} already holds this data set prepared at {size} px; reusing it")
            return manifest
        if not overwrite:
            raise DataError(f"{out} holds another prepared data set; pass --overwrite or choose another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out} is not empty; pass --overwrite or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    print(dataset.report.summary())
    start = time.perf_counter()
    write_shards(dataset.frame, str(dataset.image_path("")), size, out / SHARDS)
    elapsed = time.perf_counter() - start
    skipped, counts = skipped_images(out), split_counts(out)
    manifest = write_manifest(
        out,
        {
            "format_version": FORMAT_VERSION,
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
        print(f"skipped {len(skipped)} images that could not be decoded (listed in {out / MANIFEST}):")
        for row in skipped[:5]:
            print(f"  {row['filename']}: {row['error']}")
    return manifest


def write_manifest(directory: str | os.PathLike, content: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest with a hash of its content, which checkpoints record as their data's identity."""
    body = json.dumps(content, sort_keys=True, default=str)
    manifest = {**content, "content_hash": hashlib.sha256(body.encode()).hexdigest()[:16]}
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{directory} is not a prepared data set (no {MANIFEST}); run ray_jobs.prepare first") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is corrupt: {err}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path} has format {manifest.get('format_version')}, expected {FORMAT_VERSION}; prepare again")
    return manifest


def skipped_images(directory: str | os.PathLike) -> list[dict[str, str]]:
    """Rows whose image could not be decoded, read back from the shards."""
    table = _dataset(directory).to_table(columns=["filename", "error"], filter=pc.field("error") != "")
    return [{"filename": f, "error": e} for f, e in zip(table["filename"].to_pylist(), table["error"].to_pylist())]


def split_counts(directory: str | os.PathLike) -> dict[str, int]:
    table = _dataset(directory).to_table(columns=["split"], filter=pc.field("error") == "")
    splits, counts = np.unique(np.asarray(table["split"].to_pylist(), dtype=object), return_counts=True)
    return {str(s): int(c) for s, c in zip(splits, counts)}


def load_split(
    directory: str | os.PathLike,
    split: str,
    columns: list[str],
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """This rank's share of a split: images (N, S, S, 3) uint8, labels (N, len(columns)) float32 with
    NaN where unknown, aspect ratios (N,) and file names. Rows are ordered by file name, so every
    rank sees a disjoint, stable share."""
    manifest = read_manifest(directory)
    size = int(manifest["size"])
    table = _dataset(directory).to_table(
        columns=["filename", "image", "width", "height", *columns],
        filter=(pc.field("split") == split) & (pc.field("error") == ""),
    )
    table = table.sort_by("filename")
    table = table.take(np.arange(rank, table.num_rows, world_size))
    n = table.num_rows
    images = np.frombuffer(b"".join(table["image"].to_pylist()), dtype=np.uint8).reshape(n, size, size, 3)
    labels = np.stack(
        [table[c].to_numpy(zero_copy_only=False).astype(np.float32) for c in columns], axis=1
    ) if columns else np.zeros((n, 0), np.float32)
    aspect = (table["width"].to_numpy() / np.maximum(table["height"].to_numpy(), 1)).astype(np.float32)
    return images, labels, aspect, table["filename"].to_pylist()


def _dataset(directory: str | os.PathLike) -> pds.Dataset:
    shards = Path(directory) / SHARDS
    if not shards.is_dir():
        raise DataError(f"{directory} has no {SHARDS}/ folder; prepare it again")
    return pds.dataset(shards, format="parquet")
