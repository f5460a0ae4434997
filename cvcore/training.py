"""Training without Ray: the training data, the one epoch runner, early stopping, continuation state.

`run_epochs` is the loop of both `ray_jobs.train` (in-memory photos) and `ray_jobs.pretrain`
(streamed renders): train an epoch, score the held-out set, combine the workers' sums, stop early
or not, report and checkpoint. What differs between launchers goes through `Hooks` (rank, world
size, all-reduce, report with a checkpoint); the base class runs in one process, `DirectoryHooks`
keeps checkpoints in a folder, and `ray_jobs.worker.RayTrainHooks` hands them to Ray Train.
A checkpoint holds model.safetensors + model.json and, for continuing, optimizer.safetensors +
train_state.json (tensors in safetensors, the rest in JSON: nothing is unpickled).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cvcore import engine, prepared
from cvcore.config import positive_int
from cvcore.errors import CheckpointError, UserError
from cvcore.image import resize_images
from cvcore.labels import part_of
from cvcore.metrics import METRIC, MetricSums
from cvcore.model import (
    ModelSpec,
    build_model,
    check_compatible,
    choose_head,
    for_serving,
    load_checkpoint_model,
    load_state,
    load_weights,
    parameter_groups,
    read_meta,
    save_checkpoint,
    unwrap,
)

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "train_state.json"
FINE_TUNE_LR = 1e-3
"""Default peak learning rate when fine-tuning (half of training from scratch): a pretrained
backbone only needs to adapt, and measured here the scratch rate made validation MAE jump around."""
FINE_TUNE_BACKBONE_LR_SCALE = 0.1
"""Default backbone learning rate relative to the head's when fine-tuning: at the head's rate the
first epochs undid the pretraining (validation MAE above the zero-shot one; bench/RESULTS.md)."""


# ---------------------------------------------------------------- the training data


@dataclass
class TrainingData:
    """Labelled photos for a run: `splits` holds the train and val arrays (images keep the prepared
    size; each worker resizes to its own `image_size`); labels are targets, factors, then auxiliary
    columns, the auxiliary ones scaled to [0, 1] on the training split."""

    splits: Any  # {"train"|"val": {"images", "labels", "aspect"}}, or a handle a launcher swaps in
    targets: list[str]
    head: str
    aux: list[str]
    manifest: dict[str, Any]
    prepared_dir: str


def inherit_from_checkpoint(settings: dict[str, Any]) -> dict[str, Any]:
    """Fine-tuning from one of our checkpoints: its backbone and input size, and the fine-tuning
    learning rates, unless set otherwise."""
    source = settings.get("init_from")
    if not source or not Path(source).is_dir():
        return settings
    meta = read_meta(source)
    defaults = {"backbone": meta["backbone"], "image_size": meta["image_size"], "lr": FINE_TUNE_LR, "backbone_lr_scale": FINE_TUNE_BACKBONE_LR_SCALE}
    return {**defaults, **settings}


def with_absolute_init(cfg: engine.TrainConfig) -> engine.TrainConfig:
    """`cfg` with `init_from` as an absolute path (workers may run elsewhere); refused when it does not exist."""
    if not cfg.init_from:
        return cfg
    if not Path(cfg.init_from).exists():
        raise CheckpointError(f"weights to start from not found: {cfg.init_from}")
    return replace(cfg, init_from=str(Path(cfg.init_from).resolve()))


def load_training_data(data: str | Path, output: str | Path, cfg: engine.TrainConfig, targets: Sequence[str] | None = None) -> TrainingData:
    """Prepare `data` into OUTPUT/prepared if it is raw, then read its train and val splits.

    Main targets are `targets` or the data set's targets; every other numeric column can serve as
    an auxiliary output (`cfg.aux_columns`).
    """
    data = Path(data)
    prepared_dir = data if prepared.is_prepared(data) else Path(output) / "prepared"
    if not prepared.is_prepared(data):
        prepared.prepare(data, prepared_dir, size=cfg.image_size)
    manifest = prepared.read_manifest(prepared_dir)
    if manifest["size"] < cfg.image_size:
        raise UserError(
            f"{prepared_dir} holds {manifest['size']} px images, smaller than --image-size {cfg.image_size}; prepare it again at that size"
        )
    numeric = [*manifest["targets"], *manifest["extra_columns"]]
    targets = list(targets or manifest["targets"])
    unknown = [t for t in targets if t not in numeric]
    if unknown:
        raise UserError(f"target column(s) not in the data: {', '.join(unknown)}; available: {', '.join(numeric)}")
    init_spec = ModelSpec.from_dict(read_meta(cfg.init_from)) if cfg.init_from and Path(cfg.init_from).is_dir() else None
    head = choose_head(cfg.head, targets, numeric, init_spec)
    factors = ModelSpec(cfg.backbone, targets, cfg.image_size, head=head).factors
    aux = aux_columns(cfg.aux_columns, [c for c in numeric if c not in targets and c not in factors])
    known = targets + [f for f in factors if f in numeric] + aux
    columns = targets + factors + aux  # a factor the data lack is NaN: the product alone trains it
    splits = {}
    for split in ("train", "val"):
        images, found, aspect, _ = prepared.load_split(prepared_dir, split, known)
        if len(images) == 0:
            raise UserError(f"the {split} split of {prepared_dir} is empty; the data set is too small to train on")
        labels = np.full((len(images), len(columns)), np.nan, np.float32)
        labels[:, [columns.index(c) for c in known]] = found
        splits[split] = {"images": images, "labels": labels, "aspect": aspect}
    scale_auxiliary(splits, first=len(targets) + len(factors))
    manifest = {k: manifest[k] for k in ("content_hash", "source", "size", "counts")}
    return TrainingData(splits, targets, head, aux, manifest, str(prepared_dir))


def aux_columns(choice: list[str] | str, available: list[str]) -> list[str]:
    """The auxiliary columns asked for: "all", or a list (or comma-separated text) of available ones."""
    if choice == "all" or choice == ["all"]:
        return list(available)
    if isinstance(choice, str):
        choice = [c for c in choice.split(",") if c]
    missing = sorted(set(choice) - set(available))
    if missing:
        raise UserError(f"auxiliary column(s) not in the data: {', '.join(missing)}; available: {', '.join(available) or 'none'}")
    return list(choice)


def scale_auxiliary(splits: dict[str, dict[str, np.ndarray]], first: int) -> None:
    """Columns from `first` on (degrees, metres, fractions) scaled to [0, 1] on the training split, in place."""
    labels = splits["train"]["labels"]
    lo = np.zeros(labels.shape[1], np.float32)
    span = np.ones(labels.shape[1], np.float32)
    if labels.shape[1] > first:
        lo[first:] = np.nanmin(labels[:, first:], axis=0)
        span[first:] = np.nanmax(labels[:, first:], axis=0) - lo[first:]
    span[~(span > 0)] = 1.0
    for split in splits.values():
        split["labels"] = ((split["labels"] - lo) / span).astype(np.float32)


def check_batch_fits(n_train: int, workers: int, batch_size: int, fix: str = "lower --batch-size") -> None:
    if n_train // workers < batch_size:
        raise UserError(f"batch size {batch_size} x {workers} worker(s) is larger than the training split ({n_train} rows); {fix}")


def describe_run(cfg: engine.TrainConfig, data: TrainingData, settings: RunSettings, cpus: float) -> str:
    n_train, n_val = (len(data.splits[s]["images"]) for s in ("train", "val"))
    return (
        f"training {cfg.backbone} at {cfg.image_size} px on {n_train} images (val {n_val}); targets {data.targets} ({data.head} head)"
        + (f" + {len(data.aux)} auxiliary" if data.aux else "")
        + f"; {settings.num_workers} worker(s) x {cpus:g} CPU{' + GPU' if settings.use_gpu else ''}"
    )


def refuse_incompatible_resume(run_dir: Path, backbone: str, targets: list[str]) -> None:
    """A rerun resumes from the run's latest checkpoint: refuse before starting if it is another model."""
    checkpoints = sorted(run_dir.glob("checkpoint_*/model.json"), key=lambda p: p.stat().st_mtime)
    if checkpoints:
        try:
            check_compatible(ModelSpec.from_dict(read_meta(checkpoints[-1].parent)), backbone=backbone, targets=targets)
        except CheckpointError as err:
            raise CheckpointError(f"{run_dir} holds an earlier run to resume, but {err}; use another --run-name or --output") from None


# ---------------------------------------------------------------- continuation state


@dataclass
class TrainState:
    """Where a run stands after an epoch: what a continuation needs besides weights and optimizer."""

    epoch: int = 0
    step: int = 0  # optimizer steps so far (the learning-rate schedule's position)
    images_seen: int = 0  # also the position in a render stream: its images are indexed 0, 1, ...
    best_val_mae: float = math.inf
    stale_epochs: int = 0  # epochs since the best
    minutes: float = 0.0


def save_training_state(directory: str | os.PathLike, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """Optimizer tensors in safetensors and the rest in JSON, so resuming never unpickles."""
    optim_state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, entries in optim_state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param_id}.{key}"] = value
    save_file(tensors, Path(directory) / OPTIMIZER_FILE)
    document = {**asdict(state), "optimizer": {"param_groups": optim_state["param_groups"], "scalars": scalars}}
    (Path(directory) / STATE_FILE).write_text(json.dumps(document, indent=2))


def load_training_state(directory: str | os.PathLike, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 0) -> TrainState:
    """The state saved in `directory`, loading the optimizer's; checkpoints older than the `step`
    count assume full epochs of `steps_per_epoch`."""
    document = json.loads((Path(directory) / STATE_FILE).read_text())
    saved = document.pop("optimizer")
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*load_file(Path(directory) / OPTIMIZER_FILE).items(), *saved["scalars"].items()]:
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    known = {f.name for f in fields(TrainState)}
    document.setdefault("step", document.get("epoch", 0) * steps_per_epoch)
    return TrainState(**{k: v for k, v in document.items() if k in known})


def has_training_state(directory: str | os.PathLike) -> bool:
    return (Path(directory) / STATE_FILE).is_file() and (Path(directory) / OPTIMIZER_FILE).is_file()


# ---------------------------------------------------------------- the epoch runner


class Hooks:
    """How the epoch runner meets its launcher. This base runs in one process and keeps no checkpoint."""

    rank = 0
    world = 1

    def all_reduce(self, totals: torch.Tensor) -> torch.Tensor:
        return totals

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def report(self, metrics: dict[str, Any], write_checkpoint: Callable[[Path], None]) -> None:
        """Hand over an epoch's metrics; a launcher that keeps checkpoints calls `write_checkpoint(folder)` on rank 0."""

    def print(self, line: str) -> None:
        if self.rank == 0:
            print(line, flush=True)


class DirectoryHooks(Hooks):
    """One process, a checkpoint per epoch in `root/checkpoint_<epoch>` and the reports in a list."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.reports: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], write_checkpoint: Callable[[Path], None]) -> None:
        self.reports.append(metrics)
        folder = self.root / f"checkpoint_{int(metrics['epoch']):06d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_checkpoint(folder)


@dataclass
class Fit:
    """One model being trained: what `engine.train_one_epoch` needs besides the batches."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    output_weights: torch.Tensor
    flip_plan: tuple[list[int], list[bool]]
    augment: engine.AugmentConfig
    step: engine.StepConfig
    device: torch.device
    masks: engine.MaskSupervision | None = None


@dataclass
class Plan:
    """How long a run goes and when it stops early."""

    epochs: int
    steps_per_epoch: int  # optimizer steps, replays included
    images_per_epoch: int  # new images over all workers; an epoch with fewer means the data ran out
    seed: int = 0
    patience: int = 0  # epochs without a better val MAE before stopping (0: never)
    max_minutes: float = 0.0  # stop after the epoch that passes this much training time (0: no limit)
    passes: int = 1  # times each new image is trained on within its epoch (pretraining's replay); images_seen counts it once


def fast_forward(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    """Move a fresh schedule to where a continued run stood (torch warns of steps without an optimizer step)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            scheduler.step()


def stop_reason(state: TrainState, plan: Plan) -> str:
    """Why the run should stop after this epoch ('' to go on): its time budget or its patience."""
    if 0 < plan.max_minutes <= state.minutes:
        return f"the time budget of {plan.max_minutes:g} min is spent"
    if 0 < plan.patience <= state.stale_epochs:
        return f"val MAE has not improved for {plan.patience} epochs"
    return ""


def settle_worker(step: engine.StepConfig, device: torch.device, seed: int, cpus: float) -> None:
    """bf16 and channels-last on GPUs; one torch thread per reserved CPU otherwise (torch would take
    every core of the node); the worker's seed."""
    on_gpu = device.type == "cuda"
    step.amp, step.channels_last = step.amp or on_gpu, step.channels_last or on_gpu
    torch.manual_seed(seed)
    if not on_gpu:
        torch.set_num_threads(max(1, round(cpus)))


def augment_generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """Augmentation randomness fixed by (seed, rank, epoch), so a resumed run draws what it would have."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0]))


def _timed(batches: Iterable[Any], clock: dict[str, float]) -> Iterator[Any]:
    """The batches, adding the time spent waiting for each to clock["wait_s"]."""
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        batch = next(iterator, None)
        clock["wait_s"] += time.perf_counter() - started
        if batch is None:
            return
        yield batch


def run_epochs(
    fit: Fit,
    batches: Callable[[int], Iterable[tuple[torch.Tensor, ...]]],
    val_loader: engine.ArrayLoader,
    targets: Sequence[str],
    plan: Plan,
    state: TrainState,
    hooks: Hooks,
    *,
    score: Callable[[MetricSums], dict[str, float]],
    save: Callable[[Path, dict[str, Any]], None],
    describe: Callable[[dict[str, Any]], str],
) -> TrainState:
    """Epochs `state.epoch`..`plan.epochs - 1`: train on `batches(epoch)`, score the val set on
    `targets` (`score` turns the combined sums into `val_*` metrics with METRIC among them), report
    each epoch with a checkpoint (`save` writes the model, then the continuation state is added),
    print `describe(metrics)`, stop early by `plan`. Returns the final state."""
    started = time.monotonic() - state.minutes * 60
    first_epoch, minutes_before = state.epoch, state.minutes
    for epoch in range(state.epoch, plan.epochs):
        clock = {"wait_s": 0.0}
        generator = augment_generator(plan.seed, hooks.rank, epoch)
        stats = engine.train_one_epoch(
            fit.model, _timed(batches(epoch), clock), fit.optimizer, fit.scheduler, fit.output_weights, fit.flip_plan,
            fit.augment, fit.step, fit.device, generator, fit.masks,
        )  # fmt: skip
        sums, val_loss, val_count = engine.evaluate(unwrap(fit.model), val_loader, targets, fit.output_weights, fit.step, fit.device)
        local = {
            "val_loss": val_loss, "val_count": val_count, "train_loss": stats["train_loss"] * stats["images"],
            "images": stats["images"], "seconds": stats["seconds"], "wait_s": clock["wait_s"],
            "minutes": (time.monotonic() - started) / 60 / hooks.world,
        }  # fmt: skip
        totals = hooks.all_reduce(torch.cat([sums.as_tensor().double(), torch.tensor(list(local.values()), dtype=torch.float64)]))
        sums = MetricSums.from_tensor(totals[: -len(local)], list(targets))
        total = dict(zip(local, totals[-len(local) :].tolist()))
        new_images = int(total["images"]) // plan.passes
        if new_images < plan.images_per_epoch:
            hooks.print(f"the data ran out after {state.images_seen + new_images} images, before a full epoch")
            break
        state = replace(state, epoch=epoch + 1, step=state.step + plan.steps_per_epoch, minutes=total["minutes"])
        state.images_seen += new_images
        metrics = {
            "epoch": epoch + 1,
            "images_seen": state.images_seen,
            **score(sums),
            "train_loss": total["train_loss"] / max(total["images"], 1),
            "val_loss": total["val_loss"] / max(total["val_count"], 1),
            "images_per_s": total["images"] / max(total["seconds"] / hooks.world, 1e-9),
            "data_wait_share": total["wait_s"] / max(total["seconds"], 1e-9),
            "lr": fit.optimizer.param_groups[0]["lr"],
            "train_minutes": state.minutes,
        }
        improved = metrics[METRIC] < state.best_val_mae
        state.best_val_mae = min(metrics[METRIC], state.best_val_mae)
        state.stale_epochs = 0 if improved else state.stale_epochs + 1
        reason = stop_reason(state, plan)
        pace = (state.minutes - minutes_before) / (epoch + 1 - first_epoch)
        engine.fit_schedule_to_budget(fit.scheduler, plan.max_minutes, state.minutes, epoch + 1, plan.epochs, plan.steps_per_epoch, pace)
        metrics.update(best_val_mae=state.best_val_mae, stopped_early=bool(reason))
        hooks.print(describe(metrics) + ("  *" if improved else ""))

        def write_checkpoint(folder: Path, metrics: dict[str, Any] = metrics, state: TrainState = state) -> None:
            save(folder, metrics)
            save_training_state(folder, fit.optimizer, state)

        hooks.report(metrics, write_checkpoint)
        if reason:
            hooks.print(f"stopping early: {reason}")
            break
    return state


def flat_metrics(sums: MetricSums) -> dict[str, float]:
    """MetricSums → flat `val_*` keys that Ray Train, Tune and TensorBoard take."""
    computed = sums.compute()
    flat = {f"val_{k}": v for k, v in computed["mean"].items()}
    for target, values in computed["targets"].items():
        flat.update({f"val_{k}_{target}": v for k, v in values.items() if k != "nonzero"})
        flat.update({f"val_nonzero_{k}_{target}": v for k, v in values["nonzero"].items() if k != "n"})
    return {k: (float("nan") if v is None else float(v)) for k, v in flat.items()}


# ---------------------------------------------------------------- a training run's worker


def train_worker(cfg: engine.TrainConfig, data: TrainingData, hooks: Hooks, device: torch.device, resume: str | Path | None = None) -> TrainState:
    """Fine-tune or train one worker's shard of `data` (splits as arrays) for `cfg.epochs`; `resume`
    is a checkpoint folder of this run to continue from."""
    rank, world = hooks.rank, hooks.world
    train, val = data.splits["train"], data.splits["val"]
    shard = slice(rank, None, world)
    steps = (len(train["images"]) // world) // cfg.batch_size
    train_loader = engine.ArrayLoader(
        resize_images(train["images"][shard], cfg.image_size), train["labels"][shard], train["aspect"][shard],
        cfg.batch_size, shuffle=True, steps=steps, seed=cfg.seed + rank,
    )  # fmt: skip
    val_images = resize_images(val["images"][shard], cfg.image_size)
    val_loader = engine.ArrayLoader(val_images, val["labels"][shard], val["aspect"][shard], cfg.batch_size * 2, shuffle=False)

    spec = ModelSpec(cfg.backbone, data.targets, cfg.image_size, aux_targets=data.aux, head=data.head, prepared_size=data.manifest["size"])
    model = build_model(spec, init_from=cfg.init_from, freeze_backbone=cfg.freeze_backbone)
    if cfg.step.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.lr, cfg.backbone_lr_scale), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState()
    if resume:
        saved_spec, weights = load_state(resume)
        check_compatible(saved_spec, backbone=spec.backbone, targets=data.targets)
        load_weights(model, weights)
        state = load_training_state(resume, optimizer, steps)
        hooks.print(f"resuming after epoch {state.epoch} (best val MAE {state.best_val_mae:.4f})")
    model = hooks.prepare_model(model)

    weights = torch.ones(len(spec.outputs))
    if data.aux:
        weights[len(spec.outputs) - len(data.aux) :] = cfg.aux_weight * len(data.targets) / len(data.aux)
    scheduler = engine.warmup_cosine(optimizer, int(cfg.warmup_epochs * steps), cfg.epochs * steps)
    fast_forward(scheduler, state.step)
    fit = Fit(model, optimizer, scheduler, weights, engine.side_swap_plan(spec.outputs), cfg.augment, cfg.step, device)
    plan = Plan(cfg.epochs, steps, steps * cfg.batch_size * world, cfg.seed, cfg.patience, cfg.max_minutes)

    def batches(epoch: int) -> engine.ArrayLoader:
        train_loader.epoch = epoch
        return train_loader

    def save(folder: Path, metrics: dict[str, Any]) -> None:
        save_checkpoint(folder, model, metrics=metrics, training_config=asdict(cfg), data=data.manifest)

    def describe(m: dict[str, Any]) -> str:
        per_target = "  ".join(f"{part_of(t)} {m[f'val_mae_{t}']:.4f}" for t in data.targets)
        return (
            f"epoch {m['epoch']}/{cfg.epochs}  train loss {m['train_loss']:.4f}  val loss {m['val_loss']:.4f}  "
            f"val MAE {m[METRIC]:.4f} ({per_target})  R2 {m['val_r2']:.3f}  {m['images_per_s']:.0f} img/s"
        )

    return run_epochs(fit, batches, val_loader, data.targets, plan, state, hooks, score=flat_metrics, save=save, describe=describe)


# ---------------------------------------------------------------- placement and export


@dataclass
class RunSettings:
    """The cluster side of a Ray Train run: workers, where checkpoints go, restarts."""

    num_workers: int = field(default=1, metadata={"type": positive_int})
    """Ray Train workers"""
    cpus_per_worker: int | None = field(default=None, metadata={"type": positive_int})
    """CPUs per worker (default: all CPUs / workers; 2 with --use-gpu)"""
    use_gpu: bool = False
    """one GPU per worker, bf16 autocast, channels-last"""
    wait_for_nodes: float = field(default=0.0, metadata={"metavar": "SECONDS"})
    """on an autoscaling cluster, wait this long for nodes that fit the workers (0: refuse at once)"""
    storage: str | None = None
    """Ray storage path for checkpoints; on a multi-node cluster use s3://, gs:// or NFS (default OUTPUT/ray_results)"""
    run_name: str = "train"
    """Ray run name; the same name resumes"""
    max_failures: int = 2
    """worker-group restarts from the latest checkpoint"""


def export_checkpoint(source: str | Path, destination: Path, *, serving: bool = True, half: bool = False, with_state: bool = False) -> None:
    """Copy checkpoint `source` to `destination`: for `serving`, with the targets' and factors' head
    rows only; `half` stores float16 weights; `with_state` keeps what a continuation needs."""
    model = load_checkpoint_model(source)
    meta = read_meta(source)
    model = for_serving(model) if serving else model
    extra = {k: v for k, v in meta.items() if k not in {*asdict(model.spec), "format_version"}}
    if destination.exists():
        shutil.rmtree(destination)
    save_checkpoint(destination, model, half=half, **extra)
    if with_state and has_training_state(source):
        for name in (OPTIMIZER_FILE, STATE_FILE):
            shutil.copy2(Path(source) / name, destination / name)
