"""Shared fixtures: small synthetic data sets and one Ray session per module that asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvcore.synth import write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """80 rendered cars in the customer's format, small images, plus one corrupt JPEG with a row."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    csv = write_dataset(root, 80, seed=7, workers=1, progress=False, extended=True, image_size=(160, 120))
    (root / "imgs" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    header = csv.read_text().splitlines()[0]
    row = ["corrupt.jpg"] + ["0.5"] * (len(header.split(",")) - 1)
    with csv.open("a") as f:
        f.write(",".join(row) + "\n")
    return root


@pytest.fixture(scope="module")
def ray_session():
    """A 2-CPU local Ray for the module; the dashboard stays on (Tune needs its State API)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, configure_logging=False)
    yield ray
    ray.shutdown()
