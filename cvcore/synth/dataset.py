"""Data sets in the customer's layout (imgs/ + CSV), rendered in parallel and deterministic, with a manifest."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from cvcore.data import DEFAULT_CSV, FILENAME_COLUMN, IMAGE_DIR
from cvcore.errors import UserError
from cvcore.labels import CHALLENGE_TARGETS, PART_IDS
from cvcore.synth.distributions import scene_distribution
from cvcore.synth.labels import extended_columns
from cvcore.synth.render import render_example

RENDERER_VERSION = 2

MANIFEST_NAME = "synth.json"
MASK_DIR = "masks"


def image_name(index: int, n: int) -> str:
    """File name of image `index` inside imgs/ (zero-padded so names sort in index order)."""
    return f"car_{index:0{max(6, len(str(n - 1)))}d}.jpg"


def dataset_manifest(
    n: int,
    *,
    seed: int = 0,
    extended: bool = False,
    masks: bool = False,
    csv_name: str = DEFAULT_CSV,
    image_size: tuple[int, int] | None = None,
    distribution: str = "default",
) -> dict:
    """What `write_dataset` records in `MANIFEST_NAME` for this request, the renderer's version included."""
    return {
        "generator": "cvcore.synth",
        "version": RENDERER_VERSION,
        "n": n,
        "seed": seed,
        "extended": extended,
        "masks": masks,
        "csv_name": csv_name,
        "image_size": list(image_size) if image_size else None,
        "distribution": distribution,
    }


def dataset_is_current(out_dir: str | os.PathLike, n: int, **request) -> bool:
    """Whether `out_dir` holds the complete data set `write_dataset(out_dir, n, **request)` would write with
    this renderer: same manifest (so an older RENDERER_VERSION is not current) and its CSV written last."""
    out = Path(out_dir)
    manifest = dataset_manifest(n, **request)
    try:
        old = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return old == manifest and (out / manifest["csv_name"]).is_file()


def write_dataset(
    out_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    workers: int | None = None,
    extended: bool = False,
    masks: bool = False,
    progress: bool = True,
    csv_name: str = DEFAULT_CSV,
    image_size: tuple[int, int] | None = None,
    overwrite: bool = False,
    distribution: str = "default",
) -> Path:
    """Render `n` examples into `out_dir` in the customer's layout (imgs/ + CSV); returns the CSV path.

    `distribution` names the scene distribution (`DISTRIBUTIONS`). The bytes depend only on
    (seed, index, distribution) of each image, so any number of `workers` (processes, default: all
    CPUs) writes the same data set. The CSV is written last: a data set without its CSV is an
    interrupted one. `image_size` (width, height) replaces the varied sizes, e.g. for small, fast
    test sets. `out_dir` must be empty, hold the same data set (it is rewritten), or `overwrite`
    must be set (imgs/, masks/ and the CSVs named there are removed first).
    """
    _check_request(n, seed, workers, csv_name, image_size, distribution)
    out = Path(out_dir)
    manifest = dataset_manifest(
        n,
        seed=seed,
        extended=extended,
        masks=masks,
        csv_name=csv_name,
        image_size=image_size,
        distribution=distribution,
    )
    _prepare_output(out, manifest, overwrite)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    if masks:
        (out / MASK_DIR).mkdir(exist_ok=True)
        (out / MASK_DIR / "parts.json").write_text(
            json.dumps({str(i): p for p, i in PART_IDS.items()}, indent=2) + "\n"
        )

    workers = min(workers or os.cpu_count() or 1, n)
    chunk = max(1, min(32, n // (workers * 8)))
    jobs = [
        (str(out), seed, n, range(start, min(start + chunk, n)), masks, image_size, distribution)
        for start in range(0, n, chunk)
    ]
    rows: list[dict[str, float | str]] = []
    with tqdm(total=n, desc="rendering", unit="img", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for done in pool.map(_render_chunk, jobs):
                    rows.extend(done)
                    bar.update(len(done))
        else:
            for job in jobs:
                done = _render_chunk(job)
                rows.extend(done)
                bar.update(len(done))

    columns = [FILENAME_COLUMN, *(extended_columns() if extended else CHALLENGE_TARGETS)]
    frame = pd.DataFrame(rows)[columns]
    csv_path = out / csv_name
    frame.to_csv(csv_path, index=False)
    return csv_path


def _check_request(
    n: int, seed: int, workers: int | None, csv_name: str, image_size: tuple[int, int] | None, distribution: str
) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise UserError(f"the number of images must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"the seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers <= 0):
        raise UserError(f"workers must be a positive integer, got {workers!r}")
    if Path(csv_name).name != csv_name or not csv_name.endswith(".csv"):
        raise UserError(f"the CSV name must be a bare file name ending in .csv, got {csv_name!r}")
    if image_size is not None and not (len(image_size) == 2 and all(16 <= int(side) <= 4096 for side in image_size)):
        raise UserError(f"image_size must be (width, height) with sides of 16 to 4096 pixels, got {image_size!r}")
    scene_distribution(distribution)


def _prepare_output(out: Path, manifest: dict, overwrite: bool) -> None:
    """Refuse to mix a new data set into a folder holding another one, unless told to replace it."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if not out.exists():
        return
    old_path = out / MANIFEST_NAME
    try:
        old = json.loads(old_path.read_text()) if old_path.exists() else None
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict):
        old.setdefault("distribution", "default")  # written before there was a choice
    holds_data = old_path.exists() or (out / IMAGE_DIR).exists() or any(out.glob("*.csv"))
    if not holds_data or old == manifest:
        return
    if not overwrite:
        what = f"a different synthetic data set ({_describe(old)})" if old else "a data set"
        raise UserError(f"{out} already holds {what}; choose another folder or pass --overwrite to replace it")
    for folder in (IMAGE_DIR, MASK_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)
    for name in {manifest["csv_name"], (old or {}).get("csv_name")} - {None}:
        (out / name).unlink(missing_ok=True)
    old_path.unlink(missing_ok=True)


def _describe(manifest: dict) -> str:
    keys = ("n", "seed", "distribution", "extended", "masks", "csv_name", "image_size")
    return ", ".join(f"{key}={manifest.get(key)}" for key in keys)


def _render_chunk(
    job: tuple[str, int, int, range, bool, tuple[int, int] | None, str],
) -> list[dict[str, float | str]]:
    """Render and write a run of images (worker side); returns their CSV rows."""
    out_dir, seed, n, indices, with_masks, size, distribution = job
    out = Path(out_dir)
    rows = []
    for index in indices:
        example = render_example(
            seed, index, width=size and size[0], height=size and size[1], distribution=distribution
        )
        name = image_name(index, n)
        (out / IMAGE_DIR / name).write_bytes(example.jpeg_bytes())
        if with_masks:
            Image.fromarray(example.mask).save(out / MASK_DIR / (Path(name).stem + ".png"))
        rows.append({FILENAME_COLUMN: name, **example.labels})
    return rows
