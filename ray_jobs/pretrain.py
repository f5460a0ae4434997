"""Synthetic pretraining on renders streamed by Ray Data (the backbone customers fine-tune from).

    python -m ray_jobs.pretrain --output OUT [--images N] [--max-minutes M] [--render-cpus C] ...

Ray Data tasks render examples from a stream of indices (`cvcore.pretrain.render_batch`) while
Ray Train workers consume their shard of it (`get_dataset_shard`): on a cluster CPU nodes render
while GPU nodes train; on one machine the CPUs that the training workers leave free render. No
image is stored and none is seen twice (a restarted worker group starts the stream over).
Supervision is dense (every part's visible fraction and facing, the camera pose, part masks;
`cvcore/pretrain.py`). After each `--images-per-epoch` images the model is scored on held-out
renders and checkpointed; the best by validation MAE is exported to OUT/best/ in float16.
Fine-tune it with `python -m ray_jobs.train --init-from OUT/best ...`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
import ray.train
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer

from cvcore import engine
from cvcore import pretrain as dense
from cvcore.config import from_dict, load_yaml
from cvcore.errors import UserError
from cvcore.metrics import MetricSums
from cvcore.model import build_model, load_state, load_weights, save_checkpoint, unwrap
from ray_jobs.cli import add_run_arguments, init_ray, positive_int, run
from ray_jobs.train import METRIC, RunLogCallback, export_best, read_history, scaling_for, setup_worker

SHIPPED_BACKBONE = Path(__file__).resolve().parents[1] / "pretrained" / "regnetx_002-64"
"""Made by this job (pretrained/README.md has the command); what fine-tuning starts from by default."""
RENDER_BATCH = 32  # images per Ray Data render call: small enough to keep the trainer fed early
IMAGES_PER_BLOCK = 4096  # indices per read block; each becomes one render task that streams out its batches


def render_stream(cfg: dense.PretrainConfig, columns: list[str], render_cpus: float) -> ray.data.Dataset:
    """The endless-data source: indices 0..images-1 of seed `cfg.seed`, rendered on the fly."""
    blocks = max(4, cfg.images // IMAGES_PER_BLOCK)  # few blocks: planning thousands costs the coordinator a CPU
    return ray.data.range(cfg.images, override_num_blocks=blocks).map_batches(
        _render,
        fn_kwargs={"cfg": asdict(cfg), "columns": columns},
        batch_size=RENDER_BATCH,
        batch_format="numpy",
        num_cpus=render_cpus,
    )


def _render(batch: dict[str, np.ndarray], cfg: dict[str, Any], columns: list[str]) -> dict[str, np.ndarray]:
    return dense.render_batch(
        batch["id"],
        seed=cfg["seed"],
        columns=columns,
        image_size=cfg["image_size"],
        render_size=(cfg["render_width"], cfg["render_height"]),
    )


def _tensors(batches: Iterator[dict[str, np.ndarray]], clock: dict[str, float]) -> Iterator[tuple[torch.Tensor, ...]]:
    """Ray Data numpy batches -> engine's (images, labels, aspect, masks); counts time spent waiting."""
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        clock["wait_s"] += time.perf_counter() - started
        if batch is None:
            return
        yield tuple(torch.from_numpy(np.array(batch[k])) for k in ("image", "labels", "aspect", "mask"))  # writable copies


def pretrain_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = from_dict(dense.PretrainConfig, config["pretrain"])
    rank, world, device = setup_worker(cfg.step, cfg.seed, config["cpus_per_worker"])

    spec = dense.pretrain_spec(cfg.backbone, cfg.image_size)
    model = build_model(spec, init_from=config["init_from"])
    if cfg.step.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_images = cfg.batch_size * world
    steps_per_epoch = max(1, cfg.images_per_epoch // step_images)
    epochs = max(1, cfg.images // (steps_per_epoch * step_images))
    scheduler = engine.warmup_cosine(optimizer, cfg.warmup_images // step_images, epochs * steps_per_epoch)
    state = {"epoch": 0, "images_seen": 0, "best_val_mae": math.inf, "minutes": 0.0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            load_weights(model, load_state(directory)[1])
            state = engine.load_training_state(directory, optimizer)
        for _ in range(state["epoch"] * steps_per_epoch):
            scheduler.step()
        if rank == 0:
            print(f"resuming after {state['images_seen']} images (best val MAE {state['best_val_mae']:.4f}); the stream starts over")
    model = ray.train.torch.prepare_model(model)

    val = ray.get(config["val"])
    shard = slice(rank, None, world)
    val_loader = engine.ArrayLoader(val["image"][shard], val["labels"][shard], val["aspect"][shard], cfg.batch_size * 2, shuffle=False)
    weights = dense.output_weights(spec, cfg.pose_weight)
    plan = engine.side_swap_plan(spec.outputs)
    masks = engine.MaskSupervision(cfg.mask_weight, dense.mask_mirror())
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    clock = {"wait_s": 0.0}
    batches = ray.train.get_dataset_shard("train").iter_batches(
        batch_size=cfg.batch_size, batch_format="numpy", drop_last=True, prefetch_batches=4
    )
    stream = _tensors(iter(batches), clock)
    challenge = spec.targets[:2]

    started = time.monotonic() - state["minutes"] * 60
    for epoch in range(state["epoch"], epochs):
        clock["wait_s"] = 0.0
        chunk = itertools.islice(stream, steps_per_epoch)
        stats = engine.train_one_epoch(model, chunk, optimizer, scheduler, weights, plan, cfg.augment, cfg.step, device, generator, masks)
        sums, val_loss, val_count = engine.evaluate(unwrap(model), val_loader, spec.targets, weights, cfg.step, device)
        minutes = (time.monotonic() - started) / 60
        seen = stats["images"]
        extra = torch.tensor([val_loss, val_count, seen, clock["wait_s"], stats["seconds"]], dtype=torch.float64)
        totals = torch.cat([sums.as_tensor().double(), extra])
        if world > 1 and dist.is_initialized():
            dist.all_reduce(totals)
        sums = MetricSums.from_tensor(totals[: -len(extra)], spec.targets)
        val_loss, val_count, seen, wait_s, seconds = totals[-len(extra) :].tolist()
        if seen < steps_per_epoch * step_images:  # the stream ran dry: this chunk is not a full epoch
            if rank == 0:
                print(f"the stream of {cfg.images} images is used up", flush=True)
            break
        computed = sums.compute()
        per_target = computed["targets"]
        state["images_seen"] += int(seen)
        metrics = {
            "epoch": epoch + 1,
            "images_seen": state["images_seen"],
            METRIC: float(np.mean([per_target[t]["mae"] for t in challenge])),
            "val_mae_all_parts": computed["mean"]["mae"],
            **{f"val_mae_{t}": per_target[t]["mae"] for t in challenge},
            "val_r2": float(np.mean([per_target[t]["r2"] for t in challenge])),
            "train_loss": stats["train_loss"],
            "val_loss": val_loss / max(val_count, 1),
            "images_per_s": seen / max(seconds / world, 1e-9),
            "data_wait_share": wait_s / max(seconds, 1e-9),
            "lr": optimizer.param_groups[0]["lr"],
            "train_minutes": minutes,
        }
        improved = metrics[METRIC] < state["best_val_mae"]
        state.update(epoch=epoch + 1, minutes=minutes, best_val_mae=min(metrics[METRIC], state["best_val_mae"]))
        out_of_time = 0 < cfg.max_minutes <= minutes
        engine.fit_schedule_to_budget(scheduler, cfg.max_minutes, minutes, epoch + 1, epochs, steps_per_epoch)
        metrics.update(best_val_mae=state["best_val_mae"], stopped_early=out_of_time)
        if rank == 0:
            print(
                f"epoch {epoch + 1}/{epochs}  {state['images_seen']} images  train loss {metrics['train_loss']:.4f}  "
                f"val MAE {metrics[METRIC]:.4f} (hood {metrics[f'val_mae_{challenge[0]}']:.4f}, "
                f"back-left door {metrics[f'val_mae_{challenge[1]}']:.4f}; all parts {metrics['val_mae_all_parts']:.4f})  "
                f"{metrics['images_per_s']:.0f} img/s, waiting for renders {metrics['data_wait_share']:.0%}" + (" *" if improved else ""),
                flush=True,
            )
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                save_checkpoint(tmp, model, metrics=metrics, pretrain_config=config["pretrain"])
                engine.save_training_state(tmp, optimizer, state)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
        if out_of_time:
            if rank == 0:
                print(f"stopping: the time budget of {cfg.max_minutes:g} min is spent", flush=True)
            break


def pretrain(
    output: str | Path,
    cfg: dense.PretrainConfig,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: int | None = None,
    render_cpus: float = 0.5,
    init_from: str | None = None,
    storage: str | None = None,
    run_name: str = "pretrain",
    max_failures: int = 2,
) -> dict[str, Any]:
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    init_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False  # the epoch lines report progress
    total_cpus = ray.cluster_resources().get("CPU", 0)
    if cpus_per_worker is None:  # leave about half of a CPU-only machine to the renderer
        cpus_per_worker = 2 if use_gpu else max(1, int(total_cpus // 2) // num_workers)
    scaling = scaling_for(num_workers, use_gpu, cpus_per_worker)
    free = total_cpus - num_workers * cpus_per_worker
    if free < render_cpus:
        raise UserError(
            f"{num_workers} training worker(s) x {cpus_per_worker} CPU leave {free:g} of {total_cpus:g} CPUs, "
            f"less than one render task's {render_cpus:g}: the stream would stall; lower --cpus-per-worker or --render-cpus"
        )
    spec = dense.pretrain_spec(cfg.backbone, cfg.image_size)
    print(
        f"pretraining {cfg.backbone} at {cfg.image_size} px on {cfg.images} streamed renders ({cfg.render_width}x{cfg.render_height}); "
        f"{num_workers} worker(s) x {cpus_per_worker} CPU{' + GPU' if use_gpu else ''} train, "
        f"up to {int(free // render_cpus)} render task(s) x {render_cpus:g} CPU render; "
        f"{len(spec.outputs)} outputs + {spec.mask_classes}-class masks",
        flush=True,
    )
    started = time.perf_counter()
    val = dense.render_batch(
        np.arange(cfg.val_images),
        seed=cfg.seed + dense.VAL_SEED_OFFSET,
        columns=spec.outputs,
        image_size=cfg.image_size,
        render_size=(cfg.render_width, cfg.render_height),
    )
    print(f"rendered {cfg.val_images} held-out images in {time.perf_counter() - started:.1f} s", flush=True)
    trainer = TorchTrainer(
        pretrain_loop_per_worker,
        train_loop_config={
            "pretrain": asdict(cfg),
            "val": ray.put(val),
            "init_from": init_from and str(Path(init_from).resolve()),
            "cpus_per_worker": cpus_per_worker,
        },
        scaling_config=scaling,
        datasets={"train": render_stream(cfg, spec.outputs, render_cpus)},
        run_config=RunConfig(
            name=run_name,
            storage_path=storage or str(output / "ray_results"),
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=METRIC, checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=[RunLogCallback(str(output))],
        ),
    )
    result = trainer.fit()
    metrics = export_best(result, output / "best", serving=False, half=True)
    print(f"best after {int(metrics['images_seen'])} images: val MAE {metrics[METRIC]:.4f} (challenge targets)")
    print(f"pretrained checkpoint (float16): {output / 'best'}")
    print(f"fine-tune it: python -m ray_jobs.train --data DATA --output OUT --init-from {output / 'best'}")
    return {"best": metrics, "history": read_history(output)}


def config_from_args(args: argparse.Namespace) -> dense.PretrainConfig:
    data = load_yaml(args.config) if args.config else {}
    overrides = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "images": args.images,
        "images_per_epoch": args.images_per_epoch,
        "max_minutes": args.max_minutes,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "val_images": args.val_images,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    if args.render_size:
        data["render_width"], data["render_height"] = args.render_size
    cfg = from_dict(dense.PretrainConfig, data)
    engine.TrainConfig(backbone=cfg.backbone, image_size=cfg.image_size, batch_size=cfg.batch_size, lr=cfg.lr).check("pretraining settings")
    return cfg


def _render_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 160x120, got {text!r}") from None
    if min(width, height) < 16:
        raise argparse.ArgumentTypeError(f"renders must be at least 16 px a side, got {text!r}")
    return width, height


def _cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of CPUs, got {text!r}") from None
    if not 0 < value <= 64:
        raise argparse.ArgumentTypeError(f"CPUs per render task must be in (0, 64], got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    defaults = dense.PretrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.pretrain",
        description="Pretrain a backbone on renders streamed by Ray Data: every part's visible fraction and facing, "
        "the camera pose and part masks. The best checkpoint goes to OUTPUT/best/ (float16); fine-tune it with "
        "`python -m ray_jobs.train --init-from OUTPUT/best`. Rerun the same command to resume.",
    )
    parser.add_argument("--output", required=True, help="folder for best/, metrics.jsonl, tensorboard/, ray_results/")
    parser.add_argument("--config", help="YAML file of PretrainConfig settings (cvcore/pretrain.py); flags below override it")
    parser.add_argument("--backbone", help=f"timm model name (default {defaults.backbone})")
    parser.add_argument("--image-size", type=positive_int, help=f"square input side in pixels (default {defaults.image_size})")
    parser.add_argument("--render-size", type=_render_size, metavar="WxH",
                        help=f"size renders are drawn at before letterboxing (default {defaults.render_width}x{defaults.render_height})")
    parser.add_argument("--images", type=positive_int, help=f"length of the stream: images rendered and seen once each (default {defaults.images})")
    parser.add_argument("--images-per-epoch", type=positive_int,
                        help=f"validate, report and checkpoint after this many images (default {defaults.images_per_epoch})")
    parser.add_argument("--max-minutes", type=float, help="time budget; stops after the epoch that passes it (default: none)")
    parser.add_argument("--batch-size", type=positive_int, help=f"per-worker batch size (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, help=f"peak learning rate of AdamW (default {defaults.lr:g})")
    parser.add_argument("--seed", type=int, help=f"stream seed; held-out renders use seed + {dense.VAL_SEED_OFFSET} (default {defaults.seed})")
    parser.add_argument("--val-images", type=positive_int, help=f"held-out renders scored after every epoch (default {defaults.val_images})")
    parser.add_argument("--init-from", metavar="DIR", help="continue from one of our pretrained checkpoints (same backbone)")
    parser.add_argument("--num-workers", type=positive_int, default=1, help="Ray Train workers (default 1)")
    parser.add_argument("--cpus-per-worker", type=positive_int,
                        help="CPUs per training worker (default: half the cluster's CPUs / workers; 2 with --use-gpu)")
    parser.add_argument("--render-cpus", type=_cpus, default=0.5,
                        help="CPUs per Ray Data render task; as many run at once as the CPUs left by the training workers allow (default 0.5)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per training worker, bf16 autocast, channels-last")
    add_run_arguments(parser, run_name="pretrain")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    pretrain(
        args.output,
        cfg,
        num_workers=args.num_workers,
        use_gpu=args.use_gpu,
        cpus_per_worker=args.cpus_per_worker,
        render_cpus=args.render_cpus,
        init_from=args.init_from,
        storage=args.storage,
        run_name=args.run_name,
        max_failures=args.max_failures,
    )
    return 0


if __name__ == "__main__":
    run(main)
