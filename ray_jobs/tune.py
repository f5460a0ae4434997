"""Hyperparameter search: Ray Tune driving Ray Train trials (the grammar and checks: `cvcore.search`).

    python -m ray_jobs.tune --data DIR --output OUT [--config configs/tune.yaml] [--num-samples N] [--resume] ...

Each trial is a function trainable that fits a training run's TorchTrainer (`ray_jobs.common.run_trial`);
`TuneReportCallback` hands every epoch's report to Tune, so ASHA can stop a poor trial after any epoch.
The data are loaded once at the largest input size in the space and reach the trials through the object
store. Writes OUT/best/ (ray_jobs.train's format), OUT/best_config.yaml (`ray_jobs.train --config` takes
it), OUT/tune_summary.csv, OUT/config.yaml (read back by --resume) and STORAGE/tune/ (Tune's experiment;
each trial's Train run in <trial id>/train/). STORAGE is OUT/ray_results unless --storage names a shared
file system or an s3:// / gs:// URI, which a multi-node cluster needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import ray.train
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from cvcore import search as grammar
from cvcore import training
from cvcore.config import CONFIG_FILE, ConfigParser, from_dict, run, save_config
from cvcore.engine import TrainConfig
from cvcore.errors import UserError
from cvcore.search import DEFAULT_CONFIG, TuneRequest, fine_tuning_space
from ray_jobs.common import TRAIN_RUN, export_best, init_ray, run_trial, scaling_for, share

EXPERIMENT = "tune"
SUMMARY_FILE = "tune_summary.csv"
BEST_CONFIG_FILE = "best_config.yaml"
DRIVER_CPU = 0.01  # a trial's driver only builds a TorchTrainer and relays its reports; Tune rejects 0
SAMPLERS = {"choice": tune.choice, "uniform": tune.uniform, "loguniform": tune.loguniform}


def param_space(request: TuneRequest) -> dict[str, Any]:
    """Tune's param space: the checked grammar with Tune's samplers, every trial `max_epochs` long."""
    flat = {name: args if kind is None else SAMPLERS[kind](args) if kind == "choice" else SAMPLERS[kind](*args)
            for name, (kind, args) in grammar.parameter_space(request).items()}  # fmt: skip
    return {**grammar.nest(flat), "epochs": request.search.max_epochs}


def trial_resources(request: TuneRequest) -> tuple[ray.train.ScalingConfig, int]:
    """Each trial's worker group, and how many trials run at once: the trial driver's DRIVER_CPU is
    carved out of its workers' share (on 2 CPUs two 1-CPU trials run side by side), and concurrency is
    capped by the cluster's CPUs (and GPUs), so no started trial waits for workers that cannot be placed."""
    workers = request.workers_per_trial
    scaling = scaling_for(workers, request.use_gpu, request.cpus_per_worker or (None if request.use_gpu else 1))
    cpus = scaling.resources_per_worker["CPU"]
    total = ray.cluster_resources()
    fits = int(total.get("CPU", 0) // (workers * cpus))
    if request.use_gpu:
        fits = min(fits, int(total.get("GPU", 0) // workers))
    return replace(scaling, resources_per_worker={"CPU": cpus - DRIVER_CPU / workers}), min(fits, request.search.num_samples)


def search(data: str | Path, output: str | Path, request: TuneRequest, *, resume: bool = False) -> tuple[pd.DataFrame, TrainConfig]:
    """Run (or, with `resume`, continue) the search; export the best trial; return the summary and the best configuration."""
    output = Path(output).resolve()
    request = replace(request, storage=request.storage or str(output / "ray_results"))
    experiment = f"{request.storage.rstrip('/')}/{EXPERIMENT}"
    space = param_space(request)
    if not resume and ((output / CONFIG_FILE).is_file() or (output / "best").exists() or tune.Tuner.can_restore(experiment)):
        raise UserError(f"{output} already holds another search or training run; pass --resume to continue it or choose another --output")
    init_ray()
    scaling, concurrent = trial_resources(request)
    base = grammar.data_config(request.space)
    payload = training.load_training_data(data, output, base, request.targets)
    n_train = len(payload.splits["train"]["images"])
    training.check_batch_fits(n_train, request.workers_per_trial, grammar.largest(request.space, "batch_size"), "lower the batch sizes in the search space")
    save_config(output / CONFIG_FILE, request)
    cpus = scaling.resources_per_worker["CPU"] + DRIVER_CPU / request.workers_per_trial  # the trial driver's share included
    print(grammar.describe_search(request, n_train, base.image_size, concurrent, cpus) + f"; experiment {experiment}", flush=True)
    s = request.search
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=share(payload), scaling=scaling, experiment_path=experiment),
        {"cpu": DRIVER_CPU},
    )
    if resume and tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        scheduler = (
            ASHAScheduler(time_attr="epoch", max_t=s.max_epochs, grace_period=s.grace_period, reduction_factor=s.reduction_factor)
            if s.scheduler == "asha"
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=training.METRIC,
                mode="min",
                num_samples=s.num_samples,
                search_alg=BasicVariantGenerator(max_concurrent=concurrent, random_state=s.seed),
                scheduler=scheduler,
                trial_dirname_creator=lambda trial: trial.trial_id,  # folders named as in tune_summary.csv
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=request.storage),
        )
    grid = tuner.fit()
    trials = [
        grammar.TrialRecord(result.metrics["trial_id"], result.config, [] if result.metrics_dataframe is None else
                            result.metrics_dataframe.to_dict("records"), str(result.error) if result.error else "")  # fmt: skip
        for result in grid
    ]
    summary = pd.DataFrame(grammar.summary_rows(trials, request))
    summary.to_csv(output / SUMMARY_FILE, index=False)
    print(grammar.format_summary(summary))
    best = export(summary, grid, experiment, output)
    print(f"TensorBoard: tensorboard --logdir {experiment}")
    return summary, best


def export(summary: pd.DataFrame, grid: tune.ResultGrid, experiment: str, output: Path) -> TrainConfig:
    """OUT/best/ (ray_jobs.train's format) and OUT/best_config.yaml from the best trial's Train run; returns its configuration."""
    reported = summary[summary["best_val_mae"].notna()]
    if reported.empty:
        raise UserError(f"no trial reported a validation MAE; see {output / SUMMARY_FILE} and the trial logs under {experiment}")
    trial_id = reported.iloc[0]["trial_id"]
    config = next(r.config for r in grid if r.metrics["trial_id"] == trial_id)
    metrics = export_best(ray.train.Result.from_path(f"{experiment}/{trial_id}/{TRAIN_RUN}"), output / "best")
    (output / BEST_CONFIG_FILE).write_text(grammar.best_config_text(config, f"{experiment} ({trial_id})", metrics, output / BEST_CONFIG_FILE))
    print(f"\nbest trial {trial_id}: val MAE {metrics[training.METRIC]:.4f} at epoch {int(metrics['epoch'])}, R2 {metrics['val_r2']:.3f}")
    print(f"checkpoint: {output / 'best'}   config: {output / BEST_CONFIG_FILE}   summary: {output / SUMMARY_FILE}")
    return from_dict(TrainConfig, config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ConfigParser(
        prog="python -m ray_jobs.tune",
        description="Search hyperparameters of the perspective-score regressor with Ray Tune: random search over "
        "the YAML's space, each trial a ray_jobs.train run on Ray Train, ASHA stopping poor trials after any epoch. "
        "Writes OUTPUT/best/ (the best checkpoint, same format as ray_jobs.train), OUTPUT/best_config.yaml and "
        "OUTPUT/tune_summary.csv.",
        epilog=grammar.FILE_HELP,
        default_config=DEFAULT_CONFIG,
    )
    parser.add_argument("--data", required=True, help="raw data set (imgs/ + CSV) or a folder made by ray_jobs.prepare")
    parser.add_argument("--output", required=True, help="folder for best/, best_config.yaml, tune_summary.csv (and prepared/ for raw data)")
    parser.add_argument("--init-from", metavar="DIR", help="fine-tune every trial from this checkpoint of ours "
                        "(e.g. pretrained/regnetx_002-64): pins the space's backbone to the checkpoint's")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search in OUTPUT with the settings "
                        "it was started with; finished trials are kept")  # fmt: skip
    parser.add_config(TuneRequest, "request")
    args = parser.parse_args(argv)
    request = args.request
    if args.resume:
        request = grammar.resume_request(Path(args.output) / CONFIG_FILE)
    elif args.init_from:
        request = replace(request, space=fine_tuning_space(request.space, args.init_from))
    search(args.data, args.output, request, resume=args.resume)
    return 0


if __name__ == "__main__":
    run(main)
