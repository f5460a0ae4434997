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
pipeline maps over a stream of indices (`ray_jobs/pretrain.py`); `pretrain_worker` trains on it
with `training.run_epochs`; nothing here knows of Ray.

A run continues where another stopped (`resume_point`): weights, optimizer state, schedule step
and the stream position (`images_seen`: renders are indexed, so the continuation renders the
images after the last one seen; none twice).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cvcore import engine, training
from cvcore.engine import AugmentConfig, StepConfig, side_swap_plan
from cvcore.errors import CheckpointError, UserError
from cvcore.image import letterbox
from cvcore.config import non_negative_int, positive_int
from cvcore.labels import is_score_column, part_of
from cvcore.model import ModelSpec, build_model, check_compatible, load_state, load_weights, read_meta, save_checkpoint
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

    backbone: str = "regnetx_002"
    """timm model name (regnetx_002: 2.3 M parameters, 4.6 MB in float16, fast on CPUs)"""
    image_size: int = field(default=64, metadata={"type": positive_int})
    """square input side in pixels"""
    render_width: int = field(default=160, metadata={"type": positive_int})
    """renders are drawn at this size, then letterboxed to image_size (--render-size sets both)"""
    render_height: int = field(default=120, metadata={"type": positive_int})
    batch_size: int = field(default=64, metadata={"type": positive_int})
    """per-worker batch size"""
    lr: float = 3e-3
    """peak learning rate of AdamW"""
    weight_decay: float = 0.05
    warmup_images: int = 4096
    """images of linear learning-rate warm-up"""
    images: int = field(default=200_000, metadata={"type": positive_int})
    """length of the stream: images rendered (a continuation counts the images seen before)"""
    replay: int = field(default=0, metadata={"type": non_negative_int})
    """after each rendered batch, train on this many batches drawn again from the last `replay_window` rendered images
    (new augmentation each time): the trainer's work while it would otherwise wait for renders"""
    replay_window: int = field(default=8192, metadata={"type": positive_int})
    """how many of the latest rendered images (per worker) replays are drawn from"""
    images_per_epoch: int = field(default=8192, metadata={"type": positive_int})
    """validate, report and checkpoint after this many images"""
    max_minutes: float = 0.0
    """time budget in training minutes, those of the run a continuation goes on from included (its model.json's
    train_minutes); stops after the epoch that passes it, the learning rate decaying to it at this run's pace (0: none)"""
    val_images: int = field(default=512, metadata={"type": positive_int})
    """held-out renders scored after every epoch"""
    mask_weight: float = 0.3
    """weight of the segmentation loss against the regression loss"""
    pose_weight: float = 0.1
    """total weight of the pose outputs against the perspective outputs"""
    seed: int = 1
    """stream seed; held-out renders use seed + 1000000"""
    step: StepConfig = field(default_factory=StepConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def check(cfg: PretrainConfig) -> None:
    """Refuse settings every pretraining run would fail on, before anything starts."""
    engine.TrainConfig(backbone=cfg.backbone, image_size=cfg.image_size, batch_size=cfg.batch_size, lr=cfg.lr).check("pretraining settings")


def cpu_share(text: str) -> float:
    """argparse type: CPUs of one render task."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of CPUs, got {text!r}") from None
    if not 0 < value <= 64:
        raise argparse.ArgumentTypeError(f"CPUs per render task must be in (0, 64], got {text!r}")
    return value


@dataclass
class PretrainRun(training.RunSettings):
    """The cluster side of a pretraining run, and where it starts from."""

    cpus_per_worker: int | None = field(default=None, metadata={"type": positive_int})
    """CPUs per training worker (default: half the cluster's CPUs / workers; 2 with --use-gpu)"""
    render_cpus: float = field(default=0.5, metadata={"type": cpu_share, "metavar": "CPUS"})
    """CPUs per Ray Data render task; as many run at once as the CPUs left by the training workers allow"""
    run_name: str = "pretrain"
    """Ray run name; the same name resumes"""
    init_from: str | None = field(default=None, metadata={"metavar": "DIR"})
    """start from the weights of one of our pretrained checkpoints (same backbone)"""
    resume_from: str | None = field(default=None, metadata={"metavar": "DIR"})
    """continue a pretraining: a checkpoint folder (e.g. pretrained/regnetx_002-64 or OUT/best) or an earlier run's OUT;
    weights, optimizer state, schedule and stream position go on (raise --images to go further)"""


def pretrain_spec(backbone: str, image_size: int) -> ModelSpec:
    """Every part's score through a decomposed head, the pose, and part masks."""
    scores = [c for c in extended_columns() if is_score_column(c)]
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


# ---------------------------------------------------------------- a pretraining run's worker


def resume_point(path: str | Path) -> Path:
    """The checkpoint to continue from: `path` itself (a checkpoint folder, such as the shipped
    pretrained/regnetx_002-64 or OUTPUT/best), or in a run's OUTPUT the latest checkpoint that can
    continue, else OUTPUT/best."""
    path = Path(path)
    if (path / "model.json").is_file():
        return path
    latest = sorted(
        (p.parent for p in path.glob("ray_results/*/checkpoint_*/model.json") if training.has_training_state(p.parent)),
        key=lambda p: p.stat().st_mtime,
    )
    if latest:
        return latest[-1]
    if (path / "best" / "model.json").is_file():
        return path / "best"
    raise CheckpointError(f"nothing to resume in {path}: neither a checkpoint folder (model.json) nor a pretraining output")


def starting_point(settings: PretrainRun, cfg: PretrainConfig) -> tuple[Path | None, int]:
    """The checkpoint a run continues (None: a fresh start) and the stream index it starts at."""
    if settings.init_from and settings.resume_from:
        raise UserError("give --init-from (weights to start from) or --resume-from (a run to continue), not both")
    if not settings.resume_from:
        return None, 0
    resume = resume_point(settings.resume_from).resolve()
    start = images_seen(resume)
    if start >= cfg.images:
        raise UserError(f"{resume} has seen {start} images already, as many as --images {cfg.images}; raise --images to go on")
    return resume, start


def training_cpus(total_cpus: float, settings: PretrainRun) -> int:
    """CPUs per training worker: as asked, else about half of a CPU-only cluster (the rest renders);
    refused when the workers would leave no render task room (the stream would stall)."""
    workers = settings.num_workers
    cpus = settings.cpus_per_worker or (2 if settings.use_gpu else max(1, int(total_cpus // 2) // workers))
    free = total_cpus - workers * cpus
    if free < settings.render_cpus:
        raise UserError(
            f"{workers} training worker(s) x {cpus} CPU leave {free:g} of {total_cpus:g} CPUs, less than one render "
            f"task's {settings.render_cpus:g}: the stream would stall; lower --cpus-per-worker or --render-cpus"
        )
    return cpus


def describe_plan(cfg: PretrainConfig, settings: PretrainRun, cpus: int, start: int, resume: Path | None) -> str:
    spec = pretrain_spec(cfg.backbone, cfg.image_size)
    return (
        f"pretraining {cfg.backbone} at {cfg.image_size} px on {cfg.images - start} streamed renders ({cfg.render_width}x{cfg.render_height})"
        + (f" after the {start} of {resume}" if resume else "")
        + f"; {settings.num_workers} worker(s) x {cpus} CPU{' + GPU' if settings.use_gpu else ''} train, render tasks of "
        f"{settings.render_cpus:g} CPU render; {len(spec.outputs)} outputs + {spec.mask_classes}-class masks"
    )


def validation_set(cfg: PretrainConfig) -> dict[str, np.ndarray]:
    """The held-out renders scored after every epoch: their own seed, so never a streamed image."""
    spec = pretrain_spec(cfg.backbone, cfg.image_size)
    return render_batch(np.arange(cfg.val_images), seed=cfg.seed + VAL_SEED_OFFSET, columns=spec.outputs,
                        image_size=cfg.image_size, render_size=(cfg.render_width, cfg.render_height))  # fmt: skip


def images_seen(checkpoint: str | Path) -> int:
    """How far into its stream the run that wrote `checkpoint` had got."""
    meta = read_meta(checkpoint)
    return int(meta.get("images_seen", meta.get("metrics", {}).get("images_seen", 0)))


def _tensors(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[tuple[torch.Tensor, ...]]:
    """Numpy batches of `render_batch` -> engine's (images, labels, aspect, masks) tensors."""
    for batch in batches:
        yield tuple(torch.from_numpy(np.array(batch[k])) for k in ("image", "labels", "aspect", "mask"))  # writable copies


def replayed(batches: Iterator[tuple[torch.Tensor, ...]], times: int, window: int, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Each batch, then `times` batches drawn at random from the last `window` batches (itself included).

    Renders cost several times what a training step on them does, so a trainer fed only new renders
    waits most of the time; training on recent renders again (augmented anew by the step) puts that
    time to use. `window` is in batches; the draws are seeded, so every rank's sequence repeats."""
    recent: collections.deque = collections.deque(maxlen=max(1, window))
    draw = random.Random(seed)
    for batch in batches:
        recent.append(batch)
        yield batch
        for _ in range(times):
            yield recent[draw.randrange(len(recent))]


def pretrain_worker(
    cfg: PretrainConfig,
    stream: Iterator[dict[str, np.ndarray]],
    val: dict[str, np.ndarray],
    hooks: training.Hooks,
    device: torch.device,
    *,
    init_from: str | Path | None = None,
    resume: str | Path | None = None,
) -> training.TrainState:
    """Train on this worker's `stream` of rendered batches, scoring its shard of `val` after each
    epoch. `init_from` starts from a checkpoint's weights; `resume` continues a run from its
    checkpoint (weights, optimizer, schedule and stream position; a checkpoint without optimizer
    state, like the shipped backbone, gives the weights and the position)."""
    rank, world = hooks.rank, hooks.world
    spec = pretrain_spec(cfg.backbone, cfg.image_size)
    model = build_model(spec, init_from=init_from)
    if cfg.step.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_images = cfg.batch_size * world
    new_batches = max(1, cfg.images_per_epoch // step_images)  # per epoch, each followed by cfg.replay replays
    steps_per_epoch = new_batches * (1 + cfg.replay)
    epochs = max(1, cfg.images // (new_batches * step_images))
    state = training.TrainState()
    if resume:
        saved_spec, weights = load_state(resume)
        check_compatible(saved_spec, backbone=cfg.backbone)
        load_weights(model, weights)
        if training.has_training_state(resume):
            state = training.load_training_state(resume, optimizer)
        else:
            seen = images_seen(resume)
            state = training.TrainState(epoch=seen // (new_batches * step_images), images_seen=seen)
        state.step = state.epoch * steps_per_epoch  # the schedule's position at this run's replay
        hooks.print(f"continuing after {state.images_seen} images (epoch {state.epoch}) from {resume}")
    model = hooks.prepare_model(model)
    scheduler = engine.warmup_cosine(optimizer, cfg.warmup_images // step_images, epochs * steps_per_epoch)
    training.fast_forward(scheduler, state.step)

    shard = slice(rank, None, world)
    val_loader = engine.ArrayLoader(val["image"][shard], val["labels"][shard], val["aspect"][shard], cfg.batch_size * 2, shuffle=False)
    masks = engine.MaskSupervision(cfg.mask_weight, mask_mirror())
    fit = training.Fit(model, optimizer, scheduler, output_weights(spec, cfg.pose_weight), side_swap_plan(spec.outputs),
                       cfg.augment, cfg.step, device, masks)  # fmt: skip
    plan = training.Plan(epochs, steps_per_epoch, new_batches * step_images, cfg.seed, max_minutes=cfg.max_minutes, passes=1 + cfg.replay)
    tensors = replayed(_tensors(stream), cfg.replay, cfg.replay_window // cfg.batch_size, cfg.seed + rank)
    challenge = spec.targets[:2]

    def score(sums) -> dict[str, float]:
        computed = sums.compute()
        per_target = computed["targets"]
        return {
            training.METRIC: float(np.mean([per_target[t]["mae"] for t in challenge])),
            "val_mae_all_parts": computed["mean"]["mae"],
            **{f"val_mae_{t}": per_target[t]["mae"] for t in challenge},
            "val_r2": float(np.mean([per_target[t]["r2"] for t in challenge])),
        }

    def save(folder: Path, metrics: dict[str, Any]) -> None:
        save_checkpoint(folder, model, metrics=metrics, pretrain_config=asdict(cfg), images_seen=metrics["images_seen"])

    def describe(m: dict[str, Any]) -> str:
        parts = ", ".join(f"{part_of(t)} {m[f'val_mae_{t}']:.4f}" for t in challenge)
        return (
            f"epoch {m['epoch']}/{epochs}  {m['images_seen']} images  train loss {m['train_loss']:.4f}  "
            f"val MAE {m[training.METRIC]:.4f} ({parts}; all parts {m['val_mae_all_parts']:.4f})  "
            f"{m['images_per_s']:.0f} img/s, waiting for renders {m['data_wait_share']:.0%}"
        )

    return training.run_epochs(
        fit, lambda epoch: itertools.islice(tensors, steps_per_epoch), val_loader, spec.targets, plan, state, hooks,
        score=score, save=save, describe=describe,
    )  # fmt: skip
