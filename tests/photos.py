"""A small data set in the customer's format without the renderer: JPEG photos of assorted sizes
and orientations with smooth random content, and score columns of random labels. For tests of
preprocessing and evaluation, where what the pictures show does not matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cvcore.data import DEFAULT_CSV, IMAGE_DIR
from cvcore.labels import CHALLENGE_TARGETS

SIZES = ((150, 100), (97, 130), (120, 120), (211, 90))


def write_photo_dataset(root: Path, n: int, columns=CHALLENGE_TARGETS, seed: int = 0) -> Path:
    """`root/imgs/photo_###.jpg` and `root/car_imgs_4000.csv` with `columns` (about a third exactly 0)."""
    rng = np.random.default_rng(seed)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        photo = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        name = f"photo_{i:03d}.jpg"
        photo.save(root / IMAGE_DIR / name, quality=90)
        labels = np.where(rng.random(len(columns)) < 0.33, 0.0, rng.random(len(columns)).round(4))
        rows.append({"filename": name, **dict(zip(columns, labels))})
    pd.DataFrame(rows).to_csv(root / DEFAULT_CSV, index=False)
    return root
