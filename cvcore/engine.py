"""The torch pieces of training: settings, batches, augmentation, losses, schedules, one epoch's
pass and the held-out pass. No Ray; `cvcore.training.run_epochs` strings them into a run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2.functional import gaussian_blur

from cvcore.errors import UserError
from cvcore.metrics import MetricSums


@dataclass
class AugmentConfig:
    """Label-preserving augmentation; `strength` scales every knob at once (0 turns it off).

    Geometry only shrinks and shifts the photo inside the frame: a crop would cut the part and
    change its visible fraction, so the label would lie. A horizontal flip turns the left door into
    the right one: flipped samples swap left/right labels where the data has both sides and mask
    side-specific targets out of the loss where it does not.
    """

    strength: float = 1.0
    """scales every augmentation at once; 0 turns augmentation off"""
    zoom_out: float = 0.15
    """largest shrink of the photo inside the frame"""
    color_jitter: float = 0.25
    """brightness, contrast and saturation change"""
    blur_prob: float = 0.15
    """share of photos blurred"""
    jpeg_prob: float = 0.2
    """share of photos re-encoded as low-quality JPEG"""
    flip: bool = True
    """mirror half the photos, swapping left/right labels"""


LOSSES = ("mse", "l1", "huber")


@dataclass
class StepConfig:
    loss: str = field(default="mse", metadata={"choices": list(LOSSES)})
    """training loss"""
    grad_clip: float = 1.0
    """max gradient norm; 0 turns clipping off"""
    amp: bool = False
    """bf16 autocast (on by itself on GPUs)"""
    channels_last: bool = False
    """channels-last memory format (on by itself on GPUs)"""


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data and the cluster; the defaults run on a laptop."""

    backbone: str = "resnet18"
    """any timm model name"""
    image_size: int = 64
    """square input side in pixels (64: where bench/bench_quality.py reaches its goal on 2 CPU cores)"""
    epochs: int = 20
    """maximum epochs (early stopping may end sooner)"""
    batch_size: int = 64
    """per-worker batch size"""
    lr: float = 2e-3
    """peak learning rate of AdamW (1e-3 with --init-from one of our checkpoints)"""
    weight_decay: float = 0.05
    """AdamW weight decay"""
    warmup_epochs: float = 1.0
    """epochs of linear learning-rate warm-up before the cosine decay"""
    patience: int = 6
    """epochs without a better val MAE before stopping early"""
    max_minutes: float = 0.0
    """training time budget; stops after the epoch that passes it (0: none)"""
    aux_columns: list[str] | str = field(default="all", metadata={"type": str, "metavar": "COLUMNS"})
    """extra numeric columns trained as auxiliary outputs: all, or comma-separated names"""
    aux_weight: float = 0.5
    """total loss weight of the auxiliary outputs relative to the main targets"""
    head: str = field(default="auto", metadata={"choices": ["auto", "direct", "decomposed"]})
    """direct: regress each score; decomposed: score = visible fraction x facing, so serving can say why a photo fails;
    auto: decomposed when the data or --init-from provide the factors"""
    init_from: str | None = field(default=None, metadata={"aliases": ["--pretrained"], "metavar": "PATH"})
    """start from these weights: one of our checkpoint folders, e.g. the shipped pretrained/regnetx_002-64 (fine-tuning:
    its backbone and input size unless given, head rows kept for the outputs both have) or a timm/torchvision weights
    file; nothing is downloaded"""
    freeze_backbone: bool = False
    """train only the head"""
    backbone_lr_scale: float = 1.0
    """learning rate of the backbone relative to the head's (0.1 with --init-from one of our checkpoints:
    the new head learns at full speed while the pretrained features change slowly)"""
    seed: int = 0
    """random seed"""
    step: StepConfig = field(default_factory=StepConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def check(self, where: str = "config") -> None:
        """Refuse values every training run would fail on, before any compute starts."""
        if not timm.is_model(self.backbone):
            raise UserError(f"{where}: {self.backbone!r} is not a timm model name (see timm.list_models())")
        for name in ("epochs", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{where}: {name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"{where}: lr must be positive, got {self.lr}")
        if not 0 < self.backbone_lr_scale <= 10:
            raise UserError(f"{where}: backbone_lr_scale must be in (0, 10], got {self.backbone_lr_scale}")
        if self.head not in ("auto", "direct", "decomposed"):
            raise UserError(f"{where}: head must be auto, direct or decomposed, got {self.head!r}")
        if self.step.loss not in LOSSES:
            raise UserError(f"{where}: loss must be one of {', '.join(LOSSES)}, got {self.step.loss!r}")


class ArrayLoader:
    """Batches from in-memory uint8 images; every rank yields the same number of batches (DDP needs it)."""

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        aspect: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        steps: int | None = None,
        seed: int = 0,
    ):
        self.images, self.targets, self.aspect = images, targets, aspect
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        full = len(images) // batch_size if shuffle else math.ceil(len(images) / batch_size)
        self.steps = full if steps is None else min(steps, full)
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = np.arange(len(self.images))
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(order)
        self.epoch += 1
        for step in range(self.steps):
            idx = np.sort(order[step * self.batch_size : (step + 1) * self.batch_size])
            yield (
                torch.from_numpy(self.images[idx]),
                torch.from_numpy(self.targets[idx]),
                torch.from_numpy(self.aspect[idx]),
            )


def side_swap_plan(columns: Sequence[str]) -> tuple[list[int], list[bool]]:
    """For a horizontal flip: the column each output takes its label from, and which to mask.

    `..._left` and `..._right` swap when both exist; a side-specific column without its twin, and
    an azimuth (or its sine), cannot be mirrored from the label alone and is masked. The azimuth's
    cosine is the same in the mirror.
    """
    index = {name: i for i, name in enumerate(columns)}
    source, masked = [], []
    for i, name in enumerate(columns):
        tokens = name.split("_")
        if "left" in tokens or "right" in tokens:
            twin = "_".join({"left": "right", "right": "left"}.get(t, t) for t in tokens)
            source.append(index.get(twin, i))
            masked.append(twin not in index)
        else:
            source.append(i)
            masked.append("azimuth" in tokens and "cos" not in tokens)
    return source, masked


def content_boxes(aspect: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-extent of the letterboxed photo in grid coordinates ([-1, 1] is the whole frame)."""
    half_w = torch.where(aspect >= 1, torch.ones_like(aspect), aspect)
    half_h = torch.where(aspect >= 1, 1 / aspect, torch.ones_like(aspect))
    return half_w, half_h


class Augmented(NamedTuple):
    images: torch.Tensor  # float NCHW in [0, 1]
    flipped: torch.Tensor  # bool (N,): mirrored left/right, so side-specific labels must swap
    masks: torch.Tensor | None  # part masks moved like the pixels (ids not yet mirrored)


def augment(
    images: torch.Tensor,
    aspect: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    masks: torch.Tensor | None = None,
) -> Augmented:
    """Augment a uint8 NCHW batch and, when given, its (N, H, W) part masks with the same geometry."""
    n = images.shape[0]
    s = cfg.strength
    flipped = torch.zeros(n, dtype=torch.bool)
    if s <= 0:
        return Augmented(images.float().div_(255.0), flipped, masks)
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731

    if cfg.jpeg_prob > 0:
        images = images.clone()
        for i in torch.nonzero(rand(n) < cfg.jpeg_prob * s).flatten().tolist():
            quality = int(30 + 60 * rand(1).item())
            images[i] = decode_jpeg(encode_jpeg(images[i], quality=quality))
    x = images.float().div_(255.0)

    half_w, half_h = content_boxes(aspect.float())
    inside = _content_mask(x.shape[-2:], half_w, half_h)
    if cfg.color_jitter > 0:
        j = cfg.color_jitter * s
        brightness = 1 + j * (2 * rand(n, 1, 1, 1) - 1)
        contrast = 1 + j * (2 * rand(n, 1, 1, 1) - 1)
        saturation = 1 + j * (2 * rand(n, 1, 1, 1) - 1)
        gray = x.mean(dim=1, keepdim=True)
        x = gray + (x - gray) * saturation
        mean = (x * inside).sum(dim=(1, 2, 3), keepdim=True) / (3 * inside.sum(dim=(1, 2, 3), keepdim=True))
        x = ((x - mean) * contrast + mean) * brightness
        x = x.clamp_(0, 1) * inside
    if cfg.blur_prob > 0:
        blurred = torch.nonzero(rand(n) < cfg.blur_prob * s).flatten()
        if len(blurred):
            sigma = 0.3 + 1.2 * rand(1).item()
            x[blurred] = gaussian_blur(x[blurred], kernel_size=[5, 5], sigma=[sigma, sigma])

    # Shrink by a random factor and shift, keeping the whole photo inside the frame.
    scale = 1 - cfg.zoom_out * s * rand(n)
    room_x = (1 / scale - half_w).clamp_min(0)
    room_y = (1 / scale - half_h).clamp_min(0)
    shift_x = room_x * (2 * rand(n) - 1)
    shift_y = room_y * (2 * rand(n) - 1)
    if cfg.flip:
        flipped = rand(n) < 0.5
    sign = 1 - 2 * flipped.float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sign / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, 0, 2] = shift_x
    theta[:, 1, 2] = shift_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if masks is not None:
        moved = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        masks = moved[:, 0].to(masks.dtype)
    return Augmented(x, flipped, masks)


def _content_mask(size: torch.Size, half_w: torch.Tensor, half_h: torch.Tensor) -> torch.Tensor:
    h, w = size
    ys = (torch.arange(h) + 0.5) / h * 2 - 1
    xs = (torch.arange(w) + 0.5) / w * 2 - 1
    inside_x = xs.abs()[None, :] <= half_w[:, None] + 1e-6
    inside_y = ys.abs()[None, :] <= half_h[:, None] + 1e-6
    return (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1).float()


def apply_flip(
    targets: torch.Tensor, weights: torch.Tensor, flipped: torch.Tensor, plan: tuple[list[int], list[bool]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap or mask the side-specific labels of flipped samples."""
    source, masked = plan
    if not flipped.any():
        return targets, weights
    targets, weights = targets.clone(), weights.clone()
    targets[flipped] = targets[flipped][:, source]
    weights[flipped] = weights[flipped][:, source]
    mask_cols = torch.tensor(masked)
    weights[flipped.nonzero().flatten()[:, None], mask_cols.nonzero().flatten()[None, :]] = 0.0
    return targets, weights


def regression_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Weighted loss over outputs; NaN labels count zero.

    A prediction below 0 for a label of exactly 0 (or above 1 for a label of 1) is no error: the
    served score is clamped to [0, 1], so such outputs need no gradient.
    """
    known = ~torch.isnan(target)
    target = torch.where(known, target, torch.zeros_like(target))
    weight = weight * known
    err = pred - target
    saturated = ((target <= 0) & (pred < 0)) | ((target >= 1) & (pred > 1))
    err = torch.where(saturated, torch.zeros_like(err), err)
    if kind == "mse":
        per_element = err.square()
    elif kind == "l1":
        per_element = err.abs()
    elif kind == "huber":
        per_element = F.huber_loss(err, torch.zeros_like(err), reduction="none", delta=0.1)
    else:
        raise ValueError(f"unknown loss {kind!r}; choose mse, l1 or huber")
    return (per_element * weight).sum() / weight.sum().clamp_min(1e-6)


class WarmupCosine:
    """Linear warm-up, then cosine decay to 1 % of the peak; `total_steps` may be moved during training
    (a time budget shortens the run) and the decay follows."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def fit_schedule_to_budget(scheduler: torch.optim.lr_scheduler.LambdaLR, max_minutes: float, minutes: float, epochs_done: int,
                           max_epochs: int, steps_per_epoch: int, minutes_per_epoch: float) -> None:
    """Under a time budget, decay the learning rate over the epochs the budget leaves at this run's
    pace (`minutes_per_epoch`: a continuation's epochs may cost more than the earlier run's); same on every rank."""
    if max_minutes <= 0:
        return
    fit = epochs_done + int(max(0.0, max_minutes - minutes) / max(minutes_per_epoch, 1e-6))
    scheduler.lr_lambdas[0].total_steps = min(max_epochs, max(fit, epochs_done + 1)) * steps_per_epoch


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))


@dataclass
class MaskSupervision:
    """Per-pixel part masks as a second loss (pretraining on renders): cross-entropy with this weight.

    `mirror[i]` is the id of part i's left/right twin, so a flipped mask names the right parts.
    """

    weight: float
    mirror: torch.Tensor


def mask_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of part logits against masks brought to the logits' size (nearest)."""
    small = F.interpolate(masks[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    return F.cross_entropy(logits.float(), small)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, ...]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    output_weights: torch.Tensor,
    flip_plan: tuple[list[int], list[bool]],
    augment_cfg: AugmentConfig,
    step_cfg: StepConfig,
    device: torch.device,
    generator: torch.Generator,
    mask_supervision: MaskSupervision | None = None,
) -> dict[str, float]:
    """One pass over the loader's (images, targets, aspect[, masks]) batches: mean loss, images, seconds."""
    model.train()
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    for images, targets, aspect, *masks in loader:
        x, flipped, moved = augment(images.permute(0, 3, 1, 2), aspect, augment_cfg, generator, masks[0] if masks else None)
        weights = output_weights.expand_as(targets)
        targets, weights = apply_flip(targets, weights, flipped, flip_plan)
        x, targets, weights = x.to(device, non_blocking=True), targets.to(device), weights.to(device)
        if step_cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=step_cfg.amp):
            if mask_supervision is not None:
                pred, logits = model(x, with_masks=True)
            else:
                pred = model(x)
        loss = regression_loss(pred.float(), targets, weights, step_cfg.loss)
        if mask_supervision is not None:
            moved = torch.where(flipped[:, None, None], mask_supervision.mirror[moved.long()], moved.long())
            loss = loss + mask_supervision.weight * mask_loss(logits, moved.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step_cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), step_cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(x)
        seen += len(x)
    elapsed = time.perf_counter() - start
    return {"train_loss": total_loss / max(seen, 1), "images_per_s": seen / max(elapsed, 1e-9), "images": seen, "seconds": elapsed}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: ArrayLoader,
    targets: Sequence[str],
    output_weights: torch.Tensor,
    step_cfg: StepConfig,
    device: torch.device,
) -> tuple[MetricSums, float, int]:
    """Metric sums on the main targets (to be all-reduced across workers), the summed loss and the count."""
    model.eval()
    sums = MetricSums(list(targets))
    loss_sum, count = 0.0, 0
    n_main = len(targets)
    for images, labels, _ in loader:
        x = images.permute(0, 3, 1, 2).to(device).float().div_(255.0)
        if step_cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=step_cfg.amp):
            pred = model(x).float()
        labels = labels.to(device)
        loss = regression_loss(pred, labels, output_weights.to(device).expand_as(labels), step_cfg.loss)
        loss_sum += loss.item() * len(x)
        count += len(x)
        sums.update(pred[:, :n_main].clamp(0, 1).cpu(), labels[:, :n_main].cpu())
    return sums, loss_sum, count
