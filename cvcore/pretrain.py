"""Synthetic pretraining: dense labels of streamed renders, for a backbone customers fine-tune.

Why: a customer has a few thousand labelled photos, too few to learn this task from scratch, while
the renderer makes unlimited examples with far richer labels than any customer has. Every rendered
example supervises the model densely:

- the perspective score of every part of both sides (`synth.PARTS`, the challenge targets first),
  through a decomposed head: per part the visible fraction and the facing factor, whose product is
  the score (the labels' own definition, `cvcore.synth`);
- the camera pose (`POSE_COLUMNS`, scaled to about [0, 1]);
- per-pixel part masks through a light segmentation head.

A horizontal flip mirrors the car, so side-specific labels and mask ids swap with their twins
(`engine.side_swap_plan`, `mask_mirror`); only the sine of the azimuth cannot be mirrored from the
label and is masked out of flipped samples. Rendering happens in `render_batch`, which a Ray Data
pipeline maps over a stream of indices (`ray_jobs/pretrain.py`); nothing here knows of Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from cvcore.engine import AugmentConfig, StepConfig, side_swap_plan
from cvcore.image import letterbox
from cvcore.model import ModelSpec
from cvcore.synth import PARTS, extended_columns, render_example

POSE_COLUMNS = ["pose_azimuth_cos", "pose_azimuth_sin", "pose_elevation", "pose_distance"]
"""Camera pose outputs: cos/sin of the azimuth mapped to [0, 1], elevation / 90 degrees,
distance / 40 m (clipped): fixed scales, so every pretraining run means the same thing."""
MASK_CLASSES = len(PARTS) + 1  # 0 = not the car
MAX_DISTANCE_M = 40.0
VAL_SEED_OFFSET = 1_000_000
"""Held-out images come from seed + this offset, so no streamed image is ever a validation image."""


@dataclass
class PretrainConfig:
    """A pretraining run; the defaults are the shipped backbone's (see pretrained/README.md)."""

    backbone: str = "regnetx_002"  # 2.3 M parameters: 4.6 MB in float16, fast on CPUs
    image_size: int = 64
    render_width: int = 160  # renders are drawn at this size, then letterboxed to image_size
    render_height: int = 120
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_images: int = 4096
    images: int = 200_000  # the stream's length: every image is rendered once and seen once
    images_per_epoch: int = 8192  # validation, report and checkpoint after this many images
    max_minutes: float = 0.0  # stop after the epoch that passes this much time (0: no limit)
    val_images: int = 512
    mask_weight: float = 0.3  # weight of the segmentation loss against the regression loss
    pose_weight: float = 0.1  # total weight of the pose outputs against the perspective outputs
    seed: int = 1
    step: StepConfig = field(default_factory=StepConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def pretrain_spec(backbone: str, image_size: int) -> ModelSpec:
    """Every part's score through a decomposed head, the pose, and part masks."""
    scores = [c for c in extended_columns() if c.startswith("perspective_score_")]
    return ModelSpec(backbone, scores, image_size, aux_targets=list(POSE_COLUMNS), head="decomposed", mask_classes=MASK_CLASSES)


def output_weights(spec: ModelSpec, pose_weight: float) -> torch.Tensor:
    """Loss weight per output: 1 for scores and factors; the pose outputs share `pose_weight`."""
    weights = torch.ones(len(spec.outputs))
    weights[len(spec.outputs) - len(POSE_COLUMNS) :] = pose_weight * len(spec.targets) / len(POSE_COLUMNS)
    return weights


def dense_labels(labels: dict[str, float], columns: list[str]) -> np.ndarray:
    """One example's label vector in the order of `columns` (a pretraining spec's outputs)."""
    azimuth = math.radians(labels["camera_azimuth"])
    pose = {
        "pose_azimuth_cos": (1 + math.cos(azimuth)) / 2,
        "pose_azimuth_sin": (1 + math.sin(azimuth)) / 2,
        "pose_elevation": labels["camera_elevation"] / 90.0,
        "pose_distance": min(labels["camera_distance"], MAX_DISTANCE_M) / MAX_DISTANCE_M,
    }
    return np.array([pose[c] if c in pose else labels[c] for c in columns], dtype=np.float32)


def letterbox_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A part mask letterboxed exactly like its image (`image.letterbox`), with nearest sampling."""
    height, width = mask.shape
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(Image.fromarray(mask).resize((new_w, new_h), Image.Resampling.NEAREST))
    canvas = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def render_batch(
    indices: np.ndarray,
    *,
    seed: int,
    columns: list[str],
    image_size: int,
    render_size: tuple[int, int],
    distribution: str = "default",
) -> dict[str, np.ndarray]:
    """Render examples `indices` of the stream `seed`: images, masks, labels and aspect ratios."""
    width, height = render_size
    images = np.zeros((len(indices), image_size, image_size, 3), np.uint8)
    masks = np.zeros((len(indices), image_size, image_size), np.uint8)
    labels = np.zeros((len(indices), len(columns)), np.float32)
    for row, index in enumerate(indices):
        example = render_example(seed, int(index), width=width, height=height, distribution=distribution)
        images[row] = letterbox(example.image, image_size)
        masks[row] = letterbox_mask(example.mask, image_size)
        labels[row] = dense_labels(example.labels, columns)
    aspect = np.full(len(indices), width / height, np.float32)
    return {"image": images, "mask": masks, "labels": labels, "aspect": aspect}


def mask_mirror() -> torch.Tensor:
    """Mask id -> the id of the same part seen in a mirror (left and right swap)."""
    source, _ = side_swap_plan(list(PARTS))
    return torch.tensor([0, *(i + 1 for i in source)], dtype=torch.long)
