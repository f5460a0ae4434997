"""Synthetic pretraining on renders streamed by Ray Data (the backbone customers fine-tune from).

    python -m ray_jobs.pretrain --output OUT [--images N] [--max-minutes M] [--render-cpus C] [--resume-from DIR] ...

Ray Data tasks render examples from a stream of indices (`cvcore.pretrain.render_batch`) while
Ray Train workers consume their shard of it (`get_dataset_shard`) in `cvcore.pretrain.pretrain_worker`:
on a cluster CPU nodes render while GPU nodes train; on one machine the CPUs that the training
workers leave free render. No image is stored and none is seen twice (a restarted worker group
starts this run's stream over). After each `--images-per-epoch` images the model is scored on
held-out renders and checkpointed; the best by validation MAE is exported to OUT/best/ in float16,
with the optimizer state and stream position that `--resume-from OUT/best` continues from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
import ray.train
from ray.train.torch import TorchTrainer

from cvcore import pretrain as dense
from cvcore import training
from cvcore.config import CONFIG_FILE, ConfigParser, from_dict, run, save_config
from cvcore.errors import UserError
from ray_jobs.common import RunLogCallback, export_best, init_ray, latest_checkpoint, run_config, scaling_for, start_worker

SHIPPED_BACKBONE = Path(__file__).resolve().parents[1] / "pretrained" / "regnetx_002-64"
"""Made by this job (pretrained/README.md has the command); what fine-tuning starts from by default."""
RENDER_BATCH = 32  # images per Ray Data render call: small enough to keep the trainer fed early
IMAGES_PER_BLOCK = 4096  # indices per read block; each becomes one render task that streams out its batches


def render_stream(cfg: dense.PretrainConfig, columns: list[str], render_cpus: float, start: int = 0) -> ray.data.Dataset:
    """The endless-data source: indices start..images-1 of seed `cfg.seed`, rendered on the fly."""
    blocks = max(4, (cfg.images - start) // IMAGES_PER_BLOCK)  # few blocks: planning thousands costs the coordinator a CPU
    return ray.data.range(cfg.images - start, override_num_blocks=blocks).map_batches(
        _render, fn_kwargs={"cfg": asdict(cfg), "columns": columns, "start": start}, batch_size=RENDER_BATCH, batch_format="numpy", num_cpus=render_cpus
    )


def _render(batch: dict[str, np.ndarray], cfg: dict[str, Any], columns: list[str], start: int) -> dict[str, np.ndarray]:
    size = (cfg["render_width"], cfg["render_height"])
    return dense.render_batch(batch["id"] + start, seed=cfg["seed"], columns=columns, image_size=cfg["image_size"], render_size=size)


def pretrain_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = from_dict(dense.PretrainConfig, config["pretrain"])
    hooks, device = start_worker(cfg.step, cfg.seed, config["cpus_per_worker"])
    batches = ray.train.get_dataset_shard("train").iter_batches(batch_size=cfg.batch_size, batch_format="numpy", drop_last=True, prefetch_batches=4)
    stream, val = iter(batches), ray.get(config["val"])
    checkpoint = latest_checkpoint()  # a restarted worker group; else where the run was asked to continue from
    if checkpoint is None:
        dense.pretrain_worker(cfg, stream, val, hooks, device, init_from=config["init_from"], resume=config["resume_from"])
        return
    with checkpoint as folder:
        dense.pretrain_worker(cfg, stream, val, hooks, device, resume=folder)


def pretrain(output: str | Path, cfg: dense.PretrainConfig, settings: dense.PretrainRun | None = None, **cluster: Any) -> dict[str, Any]:
    """Pretrain into `output`; `settings` (or its fields as keywords) place the workers and say where to start."""
    settings = dense.PretrainRun(**{**asdict(settings or dense.PretrainRun()), **cluster})
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    if settings.init_from and settings.resume_from:
        raise UserError("give --init-from (weights to start from) or --resume-from (a run to continue), not both")
    resume = settings.resume_from and dense.resume_point(settings.resume_from).resolve()
    start = dense.images_seen(resume) if resume else 0
    if start >= cfg.images:
        raise UserError(f"{resume} has seen {start} images already, as many as --images {cfg.images}; raise --images to go on")
    init_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False  # the epoch lines report progress
    total_cpus = ray.cluster_resources().get("CPU", 0)
    workers, use_gpu, cpus = settings.num_workers, settings.use_gpu, settings.cpus_per_worker
    cpus = cpus or (2 if use_gpu else max(1, int(total_cpus // 2) // workers))  # leave about half of a CPU-only machine to rendering
    scaling = scaling_for(workers, use_gpu, cpus, settings.wait_for_nodes)
    free = total_cpus - workers * cpus
    if free < settings.render_cpus:
        raise UserError(
            f"{workers} training worker(s) x {cpus} CPU leave {free:g} of {total_cpus:g} CPUs, less than one render "
            f"task's {settings.render_cpus:g}: the stream would stall; lower --cpus-per-worker or --render-cpus"
        )
    spec = dense.pretrain_spec(cfg.backbone, cfg.image_size)
    print(
        f"pretraining {cfg.backbone} at {cfg.image_size} px on {cfg.images - start} streamed renders ({cfg.render_width}x{cfg.render_height})"
        + (f" after the {start} of {resume}" if resume else "")
        + f"; {workers} worker(s) x {cpus} CPU{' + GPU' if use_gpu else ''} train, up to {int(free // settings.render_cpus)} render "
        f"task(s) x {settings.render_cpus:g} CPU render; {len(spec.outputs)} outputs + {spec.mask_classes}-class masks",
        flush=True,
    )
    val = dense.render_batch(
        np.arange(cfg.val_images), seed=cfg.seed + dense.VAL_SEED_OFFSET, columns=spec.outputs, image_size=cfg.image_size,
        render_size=(cfg.render_width, cfg.render_height),
    )  # fmt: skip
    save_config(output / CONFIG_FILE, cfg, settings)
    trainer = TorchTrainer(
        pretrain_loop_per_worker,
        train_loop_config={
            "pretrain": asdict(cfg),
            "val": ray.put(val),
            "init_from": settings.init_from and str(Path(settings.init_from).resolve()),
            "resume_from": resume and str(resume),
            "cpus_per_worker": cpus,
        },
        scaling_config=scaling,
        datasets={"train": render_stream(cfg, spec.outputs, settings.render_cpus, start)},
        run_config=run_config(
            settings.run_name, settings.storage or str(output / "ray_results"), max_failures=settings.max_failures, callbacks=[RunLogCallback(str(output))]
        ),
    )
    metrics = export_best(trainer.fit(), output / "best", serving=False, half=True, with_state=True)
    print(f"best after {int(metrics['images_seen'])} images: val MAE {metrics[training.METRIC]:.4f} (challenge targets)")
    print(f"pretrained checkpoint (float16): {output / 'best'}")
    print(f"fine-tune it: python -m ray_jobs.train --data DATA --output OUT --init-from {output / 'best'}")
    print(f"continue it:  python -m ray_jobs.pretrain --output OUT2 --resume-from {output / 'best'} --images N")
    return {"best": metrics, "history": training.read_history(output)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = ConfigParser(
        prog="python -m ray_jobs.pretrain",
        description="Pretrain a backbone on renders streamed by Ray Data: every part's visible fraction and facing, "
        "the camera pose and part masks. The best checkpoint goes to OUTPUT/best/ (float16); fine-tune it with "
        "`python -m ray_jobs.train --init-from OUTPUT/best`, continue it with --resume-from. Rerun the same command to resume.",
    )
    parser.add_argument("--output", required=True, help="folder for best/, config.yaml, metrics.jsonl, tensorboard/, ray_results/")
    parser.add_argument("--render-size", type=dense.render_size, metavar="WxH",
                        help="size renders are drawn at before letterboxing (sets render_width and render_height)")  # fmt: skip
    parser.add_config(dense.PretrainConfig, "pretrain", exclude=("render_width", "render_height"))
    parser.add_config(dense.PretrainRun, "cluster")
    args = parser.parse_args(argv)
    cfg = args.pretrain
    if args.render_size:
        cfg.render_width, cfg.render_height = args.render_size
    dense.check(cfg)
    pretrain(args.output, cfg, args.cluster)
    return 0


if __name__ == "__main__":
    run(main)
