"""Synthetic pretraining on renders streamed by Ray Data (the backbone customers fine-tune from).

    python -m ray_jobs.pretrain --output OUT [--images N] [--max-minutes M] [--render-cpus C] [--resume-from DIR] ...

Ray Data tasks render a stream of indices (`cvcore.pretrain.render_batch`) while Ray Train workers train
on their shard of it (`cvcore.pretrain.pretrain_worker`): on a cluster CPU nodes render while GPU nodes
train; on one machine the CPUs the training workers leave free render. OUT/best/ gets the best checkpoint
in float16 with what `--resume-from` needs to continue (a restarted worker group starts the stream over).
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
from cvcore.config import CONFIG_FILE, ConfigParser, frame_size, from_dict, run, save_config
from cvcore.runlog import read_history
from ray_jobs.common import export_best, init_ray, run_config, scaling_for
from ray_jobs.runlog import RunLogCallback
from ray_jobs.worker import latest_checkpoint, start_worker

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
    with latest_checkpoint() as folder:  # a restarted worker group's; else where the run was asked to start
        start = {"resume": folder} if folder else {"resume": config["resume_from"], "init_from": config["init_from"]}
        dense.pretrain_worker(cfg, stream, val, hooks, device, **start)


def pretrain(output: str | Path, cfg: dense.PretrainConfig, settings: dense.PretrainRun | None = None, **cluster: Any) -> dict[str, Any]:
    """Pretrain into `output`; `settings` (or its fields as keywords) place the workers and say where to start."""
    settings = dense.PretrainRun(**{**asdict(settings or dense.PretrainRun()), **cluster})
    output = Path(output).resolve()
    resume, start = dense.starting_point(settings, cfg)
    init_ray()
    data = ray.data.DataContext.get_current()  # progress: the epoch lines; render tasks hand on 8 MiB blocks (~500 images)
    data.enable_progress_bars, data.target_max_block_size = False, 8 << 20  # as they go, not a task's whole 65 MB at its end
    cpus = dense.training_cpus(ray.cluster_resources().get("CPU", 0), settings)
    scaling = scaling_for(settings.num_workers, settings.use_gpu, cpus, settings.wait_for_nodes)
    spec = dense.pretrain_spec(cfg.backbone, cfg.image_size)
    print(dense.describe_plan(cfg, settings, cpus, start, resume), flush=True)
    save_config(output / CONFIG_FILE, cfg, settings)
    loop_config = {"pretrain": asdict(cfg), "val": ray.put(dense.validation_set(cfg)), "cpus_per_worker": cpus,
                   "init_from": settings.init_from and str(Path(settings.init_from).resolve()), "resume_from": resume and str(resume)}  # fmt: skip
    trainer = TorchTrainer(
        pretrain_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling,
        datasets={"train": render_stream(cfg, spec.outputs, settings.render_cpus, start)},
        run_config=run_config(settings.run_name, settings.storage or str(output / "ray_results"), max_failures=settings.max_failures,
                              callbacks=[RunLogCallback(str(output))]),  # fmt: skip
    )
    metrics = export_best(trainer.fit(), output / "best", serving=False, half=True, with_state=True)
    print(f"best after {int(metrics['images_seen'])} images: val MAE {metrics[training.METRIC]:.4f} (challenge targets)")
    print(f"pretrained checkpoint (float16): {output / 'best'}; fine-tune it with ray_jobs.train --init-from, continue it with --resume-from")
    return {"best": metrics, "history": read_history(output)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = ConfigParser(
        prog="python -m ray_jobs.pretrain",
        description="Pretrain a backbone on renders streamed by Ray Data: every part's visible fraction and facing, "
        "the camera pose and part masks. The best checkpoint goes to OUTPUT/best/ (float16); fine-tune it with "
        "`python -m ray_jobs.train --init-from OUTPUT/best`, continue it with --resume-from. Rerun the same command to resume.",
    )
    parser.add_argument("--output", required=True, help="folder for best/, config.yaml, metrics.jsonl, tensorboard/, ray_results/")
    parser.add_argument("--render-size", type=frame_size, metavar="WxH",
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
