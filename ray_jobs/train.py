"""Data-parallel training of the perspective-score regressor on Ray Train (V2 `TorchTrainer`).

    python -m ray_jobs.train --data DIR --output OUT [--config YAML] [--num-workers N] [--use-gpu] ...

DIR is a raw data set (prepared on the fly into OUT/prepared) or a prepared one. The best
checkpoint by validation MAE is exported to OUT/best/ (model.safetensors + model.json).
Rerunning the same command resumes the run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from cvcore import engine
from cvcore import prepared
from cvcore.config import from_dict, load_yaml
from cvcore.errors import CheckpointError, UserError
from cvcore.image import resize_images
from cvcore.metrics import MetricSums
from cvcore.model import (
    ModelSpec,
    build_model,
    check_compatible,
    choose_head,
    load_checkpoint_model,
    load_state,
    load_weights,
    read_meta,
    save_checkpoint,
    unwrap,
    for_serving,
)
from ray_jobs.cli import add_run_arguments, init_ray, run

METRIC = "val_mae"
HISTORY_FILE = "metrics.jsonl"


# ---------------------------------------------------------------- data (driver side)


def load_training_data(data: str | Path, output: Path, cfg: engine.TrainConfig, targets: Sequence[str] | None = None) -> dict[str, Any]:
    """Prepare if needed, then read the train and val splits into memory for the workers.

    The arrays go to the object store, so workers on other nodes get them without a shared disk.
    They keep the prepared size; each worker resizes to its own `image_size` (Tune varies it).
    Main targets are `targets` or the data set's targets; every other numeric column can serve as
    an auxiliary output.
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
    aux = _aux_columns(cfg.aux_columns, [c for c in numeric if c not in targets and c not in factors])
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
    # Auxiliary columns (degrees, metres, fractions) are scaled to [0, 1] on the training split.
    scored = len(targets) + len(factors)
    lo = np.zeros(len(columns), np.float32)
    span = np.ones(len(columns), np.float32)
    if aux:
        train_aux = splits["train"]["labels"][:, scored:]
        lo[scored:] = np.nanmin(train_aux, axis=0)
        span[scored:] = np.nanmax(train_aux, axis=0) - lo[scored:]
    span[~(span > 0)] = 1.0
    for split in splits.values():
        split["labels"] = ((split["labels"] - lo) / span).astype(np.float32)
    return {
        "splits": splits,
        "targets": targets,
        "head": head,
        "aux": aux,
        "manifest": {k: manifest[k] for k in ("content_hash", "source", "size", "counts")},
        "prepared_dir": str(prepared_dir),
    }


def _aux_columns(choice: list[str] | str, available: list[str]) -> list[str]:
    if choice == "all":
        return list(available)
    if isinstance(choice, str):
        choice = [c for c in choice.split(",") if c]
    missing = sorted(set(choice) - set(available))
    if missing:
        raise UserError(f"auxiliary column(s) not in the data: {', '.join(missing)}; available: {', '.join(available) or 'none'}")
    return list(choice)


# ---------------------------------------------------------------- the loop (each worker)


def setup_worker(step: engine.StepConfig, seed: int, cpus_per_worker: float) -> tuple[int, int, torch.device]:
    """Rank, world size and device of this worker; bf16 and channels-last on GPUs, one torch
    thread per reserved CPU otherwise (torch would take every core of the node)."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    use_gpu = device.type == "cuda"
    step.amp = step.amp or use_gpu
    step.channels_last = step.channels_last or use_gpu
    torch.manual_seed(seed + rank)
    if not use_gpu:
        torch.set_num_threads(max(1, round(cpus_per_worker)))
    return rank, world, device


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = from_dict(engine.TrainConfig, config["train"])
    data = config["data"]
    rank, world, device = setup_worker(cfg.step, cfg.seed, config["cpus_per_worker"])

    splits = ray.get(data["splits"])  # an ObjectRef: every node fetches the arrays from the object store
    train, val = splits["train"], splits["val"]
    shard = slice(rank, None, world)
    train_images = resize_images(train["images"][shard], cfg.image_size)
    val_images = resize_images(val["images"][shard], cfg.image_size)
    steps = (len(train["images"]) // world) // cfg.batch_size
    train_loader = engine.ArrayLoader(
        train_images, train["labels"][shard], train["aspect"][shard], cfg.batch_size, shuffle=True, steps=steps, seed=cfg.seed + rank
    )
    val_loader = engine.ArrayLoader(val_images, val["labels"][shard], val["aspect"][shard], cfg.batch_size * 2, shuffle=False)

    targets, aux = data["targets"], data["aux"]
    spec = ModelSpec(cfg.backbone, targets, cfg.image_size, aux_targets=aux, head=data["head"], prepared_size=data["manifest"]["size"])
    model = build_model(spec, init_from=cfg.init_from, freeze_backbone=cfg.freeze_backbone)
    if cfg.step.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "best_val_mae": math.inf, "stale_epochs": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            saved_spec, weights = load_state(directory)
            check_compatible(saved_spec, backbone=spec.backbone, targets=targets)
            load_weights(model, weights)
            state = engine.load_training_state(directory, optimizer)
        if rank == 0:
            print(f"resuming after epoch {state['epoch']} (best val MAE {state['best_val_mae']:.4f})")
    model = ray.train.torch.prepare_model(model)

    n_main = len(targets)
    weights = torch.ones(len(spec.outputs))
    if aux:
        weights[len(spec.outputs) - len(aux) :] = cfg.aux_weight * n_main / len(aux)
    plan = engine.side_swap_plan(spec.outputs)
    scheduler = engine.warmup_cosine(optimizer, int(cfg.warmup_epochs * steps), cfg.epochs * steps)
    for _ in range(state["epoch"] * steps):  # fast-forward the schedule after a resume
        scheduler.step()
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)

    started = time.monotonic() - state.get("minutes", 0.0) * 60
    for epoch in range(state["epoch"], cfg.epochs):
        train_loader.epoch = epoch
        stats = engine.train_one_epoch(model, train_loader, optimizer, scheduler, weights, plan, cfg.augment, cfg.step, device, generator)
        sums, val_loss, val_count = engine.evaluate(unwrap(model), val_loader, targets, weights, cfg.step, device)
        minutes = (time.monotonic() - started) / 60
        extra = torch.tensor(
            [val_loss, val_count, stats["train_loss"] * steps * cfg.batch_size, steps * cfg.batch_size, stats["images_per_s"], minutes / world],
            dtype=torch.float64,
        )
        totals = torch.cat([sums.as_tensor().double(), extra])
        if world > 1 and dist.is_initialized():
            dist.all_reduce(totals)
        sums = MetricSums.from_tensor(totals[: -len(extra)], targets)
        val_loss, val_count, train_loss_sum, train_count, images_per_s, minutes = totals[-len(extra) :].tolist()

        metrics = _flatten(sums.compute())
        metrics.update(
            epoch=epoch + 1,
            train_loss=train_loss_sum / train_count,
            val_loss=val_loss / max(val_count, 1),
            images_per_s=images_per_s,
            lr=optimizer.param_groups[0]["lr"],
            train_minutes=minutes,
        )
        improved = metrics[METRIC] < state["best_val_mae"]
        state = {
            "epoch": epoch + 1,
            "best_val_mae": metrics[METRIC] if improved else state["best_val_mae"],
            "stale_epochs": 0 if improved else state["stale_epochs"] + 1,
            "minutes": minutes,
        }
        out_of_time = 0 < cfg.max_minutes <= minutes
        engine.fit_schedule_to_budget(scheduler, cfg.max_minutes, minutes, epoch + 1, cfg.epochs, steps)
        stop = state["stale_epochs"] >= cfg.patience or out_of_time
        metrics.update(best_val_mae=state["best_val_mae"], stopped_early=stop)
        if rank == 0:
            per_target = "  ".join(f"{t.removeprefix('perspective_score_')} {metrics[f'val_mae_{t}']:.4f}" for t in targets)
            print(
                f"epoch {epoch + 1}/{cfg.epochs}  train loss {metrics['train_loss']:.4f}  val loss {metrics['val_loss']:.4f}  "
                f"val MAE {metrics[METRIC]:.4f} ({per_target})  R2 {metrics['val_r2']:.3f}  {images_per_s:.0f} img/s",
                flush=True,
            )
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                save_checkpoint(tmp, model, metrics=metrics, training_config=config["train"], data=data["manifest"])
                engine.save_training_state(tmp, optimizer, state)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
        if stop:
            if rank == 0:
                reason = f"the time budget of {cfg.max_minutes:g} min is spent" if out_of_time else f"val MAE has not improved for {cfg.patience} epochs"
                print(f"stopping early: {reason}", flush=True)
            break


def _flatten(computed: dict[str, Any]) -> dict[str, float]:
    """MetricSums.compute() → flat `val_*` keys that Ray Train, Tune and TensorBoard take."""
    flat = {f"val_{k}": v for k, v in computed["mean"].items()}
    for target, values in computed["targets"].items():
        flat.update({f"val_{k}_{target}": v for k, v in values.items() if k != "nonzero"})
        flat.update({f"val_nonzero_{k}_{target}": v for k, v in values["nonzero"].items() if k != "n"})
    return {k: (float("nan") if v is None else float(v)) for k, v in flat.items()}


# ---------------------------------------------------------------- the trainer (driver side)


class RunLogCallback(ray.train.UserCallback):
    """Writes every report as TensorBoard scalars and a line of `metrics.jsonl`.

    It runs in the Train controller, which Ray pins to the driver's node, so the files land beside
    the job's other outputs.
    """

    def __init__(self, output: str):
        self.output = output
        self.writer = None

    def after_report(self, run_context, metrics, checkpoint):
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is None:
            self.writer = SummaryWriter(str(Path(self.output) / "tensorboard"))
        report = metrics[0]
        for key, value in report.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, report["epoch"])
        self.writer.flush()
        with open(Path(self.output) / HISTORY_FILE, "a") as f:
            f.write(json.dumps(report) + "\n")


def read_history(output: str | Path) -> list[dict[str, Any]]:
    """Per-epoch metrics of the run in `output`, the latest report of each epoch (a resume repeats none)."""
    path = Path(output) / HISTORY_FILE
    if not path.is_file():
        return []
    by_epoch = {}
    for line in path.read_text().splitlines():
        report = json.loads(line)
        by_epoch[report["epoch"]] = report
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def scaling_for(num_workers: int, use_gpu: bool, cpus_per_worker: int | None, wait_for_nodes: float = 0.0) -> ScalingConfig:
    """Workers sized from the cluster; refuse what cannot be placed (Ray would retry forever).

    On an autoscaling cluster (`cluster.yaml` starts with no workers) `wait_for_nodes` seconds let
    the autoscaler add nodes for the request first.
    """
    total = ray.cluster_resources()
    if cpus_per_worker is None:
        cpus_per_worker = 2 if use_gpu else max(1, int(total.get("CPU", 1) // num_workers))
    bundle = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}

    def fits(resources: dict[str, float]) -> bool:
        return all(num_workers * amount <= resources.get(name, 0) for name, amount in bundle.items())

    if not fits(total) and wait_for_nodes > 0:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[bundle] * num_workers)
        print(f"waiting up to {wait_for_nodes:g} s for the autoscaler to add nodes for {num_workers} x {bundle}", flush=True)
        deadline = time.monotonic() + wait_for_nodes
        while not fits(total := ray.cluster_resources()) and time.monotonic() < deadline:
            time.sleep(5)
    if not fits(total):
        raise UserError(
            f"{num_workers} worker(s) x {cpus_per_worker} CPU{' + 1 GPU' if use_gpu else ''} do not fit this cluster "
            f"({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs); lower --num-workers or --cpus-per-worker"
            + ("" if wait_for_nodes else ", or give an autoscaling cluster time with --wait-for-nodes SECONDS")
        )
    return ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker})


def build_trainer(
    cfg: engine.TrainConfig,
    data: dict[str, Any],
    scaling: ScalingConfig,
    run_config: RunConfig,
) -> TorchTrainer:
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": asdict(cfg), "data": data, "cpus_per_worker": scaling.resources_per_worker["CPU"]},
        scaling_config=scaling,
        run_config=run_config,
    )


def export_best(result: ray.train.Result, destination: Path, *, serving: bool = True, half: bool = False) -> dict[str, Any]:
    """Copy the best checkpoint by val MAE to `destination`; for `serving`, with the targets' and
    factors' head rows only; `half` stores float16 weights."""
    if not result.best_checkpoints:
        raise UserError("training reported no checkpoint; nothing to export")
    checkpoint, metrics = min(result.best_checkpoints, key=lambda pair: pair[1][METRIC])
    with checkpoint.as_directory() as directory:
        model = load_checkpoint_model(directory)
        meta = read_meta(directory)
    model = for_serving(model) if serving else model
    extra = {k: v for k, v in meta.items() if k not in {*asdict(model.spec), "format_version"}}
    if destination.exists():
        shutil.rmtree(destination)
    save_checkpoint(destination, model, half=half, **extra)
    return metrics


def train(
    data: str | Path,
    output: str | Path,
    cfg: engine.TrainConfig,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: int | None = None,
    storage: str | None = None,
    run_name: str = "train",
    max_failures: int = 2,
    keep_checkpoints: int = 2,
    targets: Sequence[str] | None = None,
    wait_for_nodes: float = 0.0,
) -> dict[str, Any]:
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    if cfg.init_from:
        if not Path(cfg.init_from).exists():
            raise CheckpointError(f"weights to start from not found: {cfg.init_from}")
        cfg.init_from = str(Path(cfg.init_from).resolve())  # workers may run elsewhere
    init_ray()
    scaling = scaling_for(num_workers, use_gpu, cpus_per_worker, wait_for_nodes)
    payload = load_training_data(data, output, cfg, targets)
    n_train = len(payload["splits"]["train"]["images"])
    n_val = len(payload["splits"]["val"]["images"])
    if n_train // num_workers < cfg.batch_size:
        raise UserError(f"batch size {cfg.batch_size} x {num_workers} worker(s) is larger than the training split ({n_train} rows); lower --batch-size")
    print(
        f"training {cfg.backbone} at {cfg.image_size} px on {n_train} images (val {n_val}); targets {payload['targets']} ({payload['head']} head)"
        + (f" + {len(payload['aux'])} auxiliary" if payload["aux"] else "")
        + f"; {num_workers} worker(s) x {scaling.resources_per_worker['CPU']} CPU{' + GPU' if use_gpu else ''}"
    )
    run_config = RunConfig(
        name=run_name,
        storage_path=storage or str(output / "ray_results"),
        checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints, checkpoint_score_attribute=METRIC, checkpoint_score_order="min"),
        failure_config=FailureConfig(max_failures=max_failures),
        callbacks=[RunLogCallback(str(output))],
    )
    if storage is None:
        refuse_incompatible_resume(Path(run_config.storage_path) / run_name, cfg.backbone, payload["targets"])
    trainer = build_trainer(cfg, {**payload, "splits": ray.put(payload["splits"])}, scaling, run_config)
    result = trainer.fit()
    metrics = export_best(result, output / "best")
    print(f"best epoch {int(metrics['epoch'])}: val MAE {metrics[METRIC]:.4f}, R2 {metrics['val_r2']:.3f}")
    print(f"checkpoint: {output / 'best'}")
    print(f"TensorBoard: tensorboard --logdir {output / 'tensorboard'}")
    return {"best": metrics, "history": read_history(output)}


def refuse_incompatible_resume(run_dir: Path, backbone: str, targets: list[str]) -> None:
    """A rerun resumes from the run's latest checkpoint: refuse before starting if it is another model."""
    checkpoints = sorted(run_dir.glob("checkpoint_*/model.json"), key=lambda p: p.stat().st_mtime)
    if checkpoints:
        try:
            check_compatible(ModelSpec.from_dict(read_meta(checkpoints[-1].parent)), backbone=backbone, targets=targets)
        except CheckpointError as err:
            raise CheckpointError(f"{run_dir} holds an earlier run to resume, but {err}; use another --run-name or --output") from None


# ---------------------------------------------------------------- command line


def config_from_args(args: argparse.Namespace) -> engine.TrainConfig:
    data = load_yaml(args.config) if args.config else {}
    overrides = {
        "backbone": args.backbone,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "lr": args.lr,
        "init_from": args.init_from,
        "seed": args.seed,
        "max_minutes": args.max_minutes,
        "patience": args.patience,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    if args.freeze_backbone:
        data["freeze_backbone"] = True
    if args.head:
        data["head"] = args.head
    data = inherit_from_checkpoint(data)
    cfg = from_dict(engine.TrainConfig, data)
    cfg.check("training settings")
    return cfg


FINE_TUNE_LR = 1e-3
"""Default peak learning rate when fine-tuning (half of training from scratch): a pretrained
backbone only needs to adapt, and measured here the scratch rate made validation MAE jump around."""


def inherit_from_checkpoint(settings: dict[str, Any]) -> dict[str, Any]:
    """Fine-tuning from one of our checkpoints: its backbone and input size, and the fine-tuning
    learning rate, unless set otherwise."""
    source = settings.get("init_from")
    if not source or not Path(source).is_dir():
        return settings
    meta = read_meta(source)
    return {"backbone": meta["backbone"], "image_size": meta["image_size"], "lr": FINE_TUNE_LR, **settings}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of TrainConfig settings (see configs/); flags below override it")
    parser.add_argument("--backbone", help="any timm model name (default resnet18)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (default 20; early stopping may end sooner)")
    parser.add_argument("--batch-size", type=int, help="per-worker batch size (default 64)")
    parser.add_argument("--image-size", type=int, help="square input side in pixels (default 64)")
    parser.add_argument("--lr", type=float, help=f"peak learning rate of AdamW (default 2e-3; {FINE_TUNE_LR:g} with --init-from one of our checkpoints)")
    parser.add_argument("--init-from", "--pretrained", dest="init_from", metavar="PATH",
                        help="start from these weights: one of our checkpoint folders, e.g. the shipped pretrained/regnetx_002-64 "
                        "(fine-tuning: its backbone and input size unless given, head rows kept for the outputs both have) "
                        "or a timm/torchvision weights file; nothing is downloaded")
    parser.add_argument("--freeze-backbone", action="store_true", help="train only the head")
    parser.add_argument("--head", choices=["auto", "direct", "decomposed"],
                        help="direct: regress each score; decomposed: score = visible fraction x facing, so serving can say why a "
                        "photo fails; auto (default): decomposed when the data or --init-from provide the factors")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--max-minutes", type=float, help="training time budget; stops after the epoch that passes it (default: none)")
    parser.add_argument("--patience", type=int, help="epochs without a better val MAE before stopping early (default 6)")
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (default 1)")
    parser.add_argument("--cpus-per-worker", type=int, help="CPUs per worker (default: all CPUs / workers; 2 with --use-gpu)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, bf16 autocast, channels-last")
    parser.add_argument("--wait-for-nodes", type=float, default=0.0, metavar="SECONDS",
                        help="on an autoscaling cluster, wait this long for nodes that fit the workers (default 0: refuse at once)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.train",
        description="Train the perspective-score regressor with Ray Train (data-parallel, CPU or GPU). "
        "The best checkpoint by validation MAE goes to OUTPUT/best/. Rerun the same command to resume.",
    )
    parser.add_argument("--data", required=True, help="raw data set (imgs/ + CSV) or a folder made by ray_jobs.prepare")
    parser.add_argument("--output", required=True, help="folder for best/, tensorboard/, ray_results/ (and prepared/ for raw data)")
    parser.add_argument("--targets", help="comma-separated main targets (default: the data set's perspective_score_* columns); "
                        "other numeric columns train as auxiliary outputs")
    add_train_arguments(parser)
    add_run_arguments(parser, run_name="train")
    args = parser.parse_args(argv)
    if args.num_workers < 1:
        parser.error("--num-workers must be at least 1")
    cfg = config_from_args(args)
    train(
        args.data,
        args.output,
        cfg,
        num_workers=args.num_workers,
        use_gpu=args.use_gpu,
        cpus_per_worker=args.cpus_per_worker,
        storage=args.storage,
        run_name=args.run_name,
        max_failures=args.max_failures,
        targets=args.targets.split(",") if args.targets else None,
        wait_for_nodes=args.wait_for_nodes,
    )
    return 0


if __name__ == "__main__":
    run(main)
