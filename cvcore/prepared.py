"""Prepared data: every valid image decoded once, letterboxed, stored as uint8 pixels in Parquet.

Layout of a prepared directory:
    manifest.json        targets, size, counts, validation report, skipped images, content hash
    shards/*.parquet     filename, split, image (raw uint8 size*size*3), width, height, error, labels

`decode_batch` is the per-batch work (Ray Data's `map_batches` runs it across the cluster);
`load_split` reads one split back into memory for a training worker.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import pyarrow.compute as pc
import pyarrow.dataset as pds

from cvcore.errors import DataError, ImageError
from cvcore.image import MAX_PIXELS, decode_image, letterbox

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT_VERSION = 1


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


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resample square uint8 images (N, S, S, 3) to another side, with antialiasing."""
    if images.shape[1] == size:
        return images
    out = np.empty((len(images), size, size, 3), np.uint8)
    for start in range(0, len(images), 256):
        chunk = torch.tensor(images[start : start + 256]).permute(0, 3, 1, 2).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + 256] = chunk.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out


def _dataset(directory: str | os.PathLike) -> pds.Dataset:
    shards = Path(directory) / SHARDS
    if not shards.is_dir():
        raise DataError(f"{directory} has no {SHARDS}/ folder; prepare it again")
    return pds.dataset(shards, format="parquet")
