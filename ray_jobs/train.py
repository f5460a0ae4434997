"""Data-parallel training of the perspective-score regressor on Ray Train (V2 `TorchTrainer`).

    python -m ray_jobs.train --data DIR --output OUT [--config YAML] [--num-workers N] [--use-gpu] ...

DIR is raw (prepared on the fly into OUT/prepared) or prepared. Each worker runs `cvcore.training.train_worker`
on its shard (`ray_jobs.common.build_trainer`); OUT/best/ gets the best checkpoint by val MAE, OUT/config.yaml the resolved settings.
Rerunning the same command resumes the run from its latest checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from cvcore import training
from cvcore.config import CONFIG_FILE, ConfigParser, run, save_config
from cvcore.engine import TrainConfig
from cvcore.runlog import read_history
from ray_jobs.common import build_trainer, export_best, init_ray, run_config, scaling_for, share
from ray_jobs.runlog import RunLogCallback


def train(data: str | Path, output: str | Path, cfg: TrainConfig, settings: training.RunSettings | None = None, *,
          targets: Sequence[str] | None = None, **cluster: Any) -> dict[str, Any]:  # fmt: skip
    """Train on `data`, export OUTPUT/best; `settings` (or its fields as keywords) place the workers."""
    settings = replace(settings or training.RunSettings(), **cluster)
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    cfg = training.with_absolute_init(cfg)  # workers may run elsewhere
    init_ray()
    scaling = scaling_for(settings.num_workers, settings.use_gpu, settings.cpus_per_worker, settings.wait_for_nodes)
    payload = training.load_training_data(data, output, cfg, targets)
    training.check_batch_fits(len(payload.splits["train"]["images"]), settings.num_workers, cfg.batch_size)
    print(training.describe_run(cfg, payload, settings, scaling.resources_per_worker["CPU"]), flush=True)
    storage = settings.storage or str(output / "ray_results")
    if settings.storage is None:
        training.refuse_incompatible_resume(Path(storage) / settings.run_name, cfg.backbone, payload.targets)
    save_config(output / CONFIG_FILE, cfg, settings)
    run = run_config(settings.run_name, storage, max_failures=settings.max_failures, callbacks=[RunLogCallback(str(output))])
    result = build_trainer(asdict(cfg), share(payload), scaling, run).fit()
    metrics = export_best(result, output / "best")
    print(f"best epoch {int(metrics['epoch'])}: val MAE {metrics[training.METRIC]:.4f}, R2 {metrics['val_r2']:.3f}; checkpoint: "
          f"{output / 'best'}\nTensorBoard: tensorboard --logdir {output / 'tensorboard'}")  # fmt: skip
    return {"best": metrics, "history": read_history(output)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = ConfigParser(
        prog="python -m ray_jobs.train",
        description="Train the perspective-score regressor with Ray Train (data-parallel, CPU or GPU). "
        "The best checkpoint by validation MAE goes to OUTPUT/best/. Rerun the same command to resume.",
    )
    parser.add_argument("--data", required=True, help="raw data set (imgs/ + CSV) or a folder made by ray_jobs.prepare")
    parser.add_argument("--output", required=True, help="folder for best/, config.yaml, tensorboard/, ray_results/ (and prepared/ for raw data)")
    parser.add_argument("--targets", help="comma-separated main targets (default: the data set's perspective_score_* columns); "
                        "other numeric columns train as auxiliary outputs")  # fmt: skip
    parser.add_config(TrainConfig, "train", complete=training.inherit_from_checkpoint)
    parser.add_config(training.RunSettings, "cluster")
    args = parser.parse_args(argv)
    args.train.check("training settings")
    train(args.data, args.output, args.train, args.cluster, targets=args.targets.split(",") if args.targets else None)
    return 0


if __name__ == "__main__":
    run(main)
