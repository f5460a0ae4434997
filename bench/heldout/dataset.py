"""Write a held-out data set in the customer's format: imgs/*.jpg and a CSV with the two challenge columns.

Example `index` of seed `seed` depends on nothing else (not the number of workers nor the order),
so a data set is the same however it is produced; images are rendered in local processes.
"""

from __future__ import annotations

import os
import shutil
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from cvcore.data import DEFAULT_CSV, FILENAME_COLUMN, IMAGE_DIR
from cvcore.errors import UserError
from cvcore.labels import CHALLENGE_PARTS, CHALLENGE_TARGETS, score_column

from bench.heldout.render import Rendered, Scene, labels_only, render
from bench.heldout.scene import random_scene

_STREAM = zlib.crc32(b"bench.heldout")  # keeps this generator's random draws apart from any other's
_CHUNK = 16
RENDER_SCALE = 0.5
"""Photos are drawn at half their width and height and scaled up (a quarter of the CPU per photo on
the 2-core development box; the model sees 64 to 128 px of them)."""


def _scene(seed: int, index: int) -> Scene:
    return random_scene(np.random.default_rng([seed, index, _STREAM]))


def render_example(seed: int, index: int) -> Rendered:
    """Example `index` of the held-out data set with this seed."""
    return render(_scene(seed, index), scale=RENDER_SCALE)


def image_name(index: int) -> str:
    return f"heldout_{index:06d}.jpg"


def _render_chunk(seed: int, indices: list[int], image_dir: str) -> list[dict]:
    """Render and write the photos of `indices`; a photo already there (a resumed run) only gets its labels."""
    rows = []
    for index in indices:
        path = Path(image_dir, image_name(index))
        if path.is_file():
            labels = labels_only(_scene(seed, index), scale=RENDER_SCALE)
        else:
            example = render_example(seed, index)
            partial = path.with_suffix(".part")
            partial.write_bytes(example.jpeg_bytes())
            partial.replace(path)  # a killed run leaves no truncated photo behind
            labels = example.labels
        rows.append({FILENAME_COLUMN: path.name, **{score_column(p): labels[p]["score"] for p in CHALLENGE_PARTS}})
    return rows


def _keep_readable(image_dir: Path) -> None:
    """Delete what an interrupted run may have left unfinished: partial files and photos that do not decode."""
    for path in image_dir.iterdir():
        try:
            if path.suffix != ".jpg":
                raise OSError("not a photo")
            with Image.open(path) as photo:
                photo.load()
        except OSError:
            path.unlink()


def write_dataset(out_dir: str | os.PathLike, n: int, *, seed: int = 2026, workers: int | None = None,
                  progress: bool = True, overwrite: bool = False, resume: bool = False) -> Path:
    """Render `n` photos into `out_dir/imgs/` and write `out_dir/car_imgs_4000.csv`; returns the CSV path.

    `resume` continues an interrupted run with the same seed in `out_dir`: photos already there are
    kept and only labelled again (labels do not depend on the shading), the others are rendered.
    """
    out = Path(out_dir)
    if n < 1:
        raise UserError(f"n must be at least 1, got {n}")
    image_dir = out / IMAGE_DIR
    if resume and image_dir.is_dir():
        _keep_readable(image_dir)
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} is not empty; pass --overwrite to replace it or --resume to continue it")
        shutil.rmtree(out)
    image_dir.mkdir(parents=True, exist_ok=True)
    chunks = [list(range(start, min(start + _CHUNK, n))) for start in range(0, n, _CHUNK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks)))
    bar = tqdm(total=n, desc="held-out renders", unit="img", disable=not progress, file=sys.stdout, mininterval=5)
    rows: list[dict] = []
    if workers == 1:
        for chunk in chunks:
            rows += _render_chunk(seed, chunk, str(image_dir))
            bar.update(len(chunk))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for done in pool.map(_render_chunk, [seed] * len(chunks), chunks, [str(image_dir)] * len(chunks)):
                rows += done
                bar.update(len(done))
    bar.close()
    csv = out / DEFAULT_CSV
    pd.DataFrame(rows, columns=[FILENAME_COLUMN, *CHALLENGE_TARGETS]).to_csv(csv, index=False)
    return csv


def label_stats(frame: pd.DataFrame) -> str:
    """Share of exact zeros, mean and standard deviation of each challenge column, one line each."""
    lines = []
    for target in CHALLENGE_TARGETS:
        values = frame[target].to_numpy(float)
        lines.append(f"{target}: {np.mean(values == 0):.1%} zeros, mean {values.mean():.3f}, std {values.std():.3f}")
    return "\n".join(lines)
