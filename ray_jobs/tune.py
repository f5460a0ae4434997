"""Hyperparameter search for the perspective-score regressor: Ray Tune driving Ray Train trials.

    python -m ray_jobs.tune --data DIR --output OUT [--config configs/tune.yaml] [--num-samples N]
                            [--max-epochs E] [--workers-per-trial W] [--use-gpu] [--storage PATH] [--resume]

Every trial is a run of `ray_jobs.train`'s training: a Tune function trainable builds the same
`TorchTrainer` (`build_trainer` + `train_loop_per_worker`) and `TuneReportCallback` hands each
epoch's validation report to Tune, so ASHA can stop a poor trial after any epoch. Random search
(Tune's basic variant generator, seeded) over the space in the YAML file. The data are loaded once
on the driver at the largest input size in the space and reach the trials through the object
store; each worker resizes to its trial's size.

Outputs:
    OUT/best/              best checkpoint (model.safetensors + model.json), the format of ray_jobs.train:
                           ray_jobs.evaluate and serving take it as is
    OUT/best_config.yaml   that trial's TrainConfig (python -m ray_jobs.train --config takes it)
    OUT/tune_summary.csv   one row per trial: config, epochs reached, best val MAE, stopped early or not
    OUT/tune_settings.yaml what was asked for; --resume reads it back
    STORAGE/tune/          Tune's experiment (per-trial results and TensorBoard events; each trial's
                           Train run and checkpoints in <trial id>/train/)
STORAGE is OUT/ray_results unless --storage names a shared file system or an s3:// / gs:// URI,
which a multi-node cluster needs (every node writes checkpoints there).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import ray.train
import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from cvcore import engine
from cvcore.config import from_dict, load_yaml
from cvcore.errors import UserError
from cvcore.model import read_meta
from ray_jobs.cli import init_ray, run
from ray_jobs.train import METRIC, build_trainer, export_best, load_training_data, scaling_for

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tune.yaml"
EXPERIMENT = "tune"
TRAIN_RUN = "train"  # each trial's Train run, inside the trial's folder
SETTINGS_FILE = "tune_settings.yaml"
SUMMARY_FILE = "tune_summary.csv"
BEST_CONFIG_FILE = "best_config.yaml"
# A trial's driver only builds a TorchTrainer and relays its reports; Tune rejects 0.
DRIVER_CPU = 0.01
DISTRIBUTIONS = ("choice", "uniform", "loguniform")
SPACE_FORM = "a constant or one of {choice: [a, b, ...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}"


@dataclass
class SearchSettings:
    """The YAML's `search:` section: how many trials, how long each may train, when ASHA stops one."""

    num_samples: int = 6
    max_epochs: int = 3
    grace_period: int = 1  # epochs every trial gets before ASHA may stop it
    reduction_factor: int = 2  # ASHA keeps the best 1/reduction_factor at each rung
    scheduler: str = "asha"  # asha, or fifo: every trial trains max_epochs (the baseline ASHA saves on)
    seed: int = 0  # the random search's seed: the same seed draws the same trials


@dataclass
class TuneRequest:
    """Everything a search needs besides the data; saved to OUT/tune_settings.yaml for --resume."""

    search: SearchSettings = field(default_factory=SearchSettings)
    space: dict[str, Any] = field(default_factory=dict)  # dotted TrainConfig key -> distribution or constant
    targets: list[str] | None = None
    workers_per_trial: int = 1
    cpus_per_worker: int | None = None
    use_gpu: bool = False
    storage: str = ""

    @property
    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{EXPERIMENT}"


# ---------------------------------------------------------------- the search space


def load_request(path: str | Path) -> TuneRequest:
    """A search YAML ({search: ..., space: ...}) as a TuneRequest; `search_space` checks the space."""
    data = load_yaml(path)
    unknown = sorted(set(data) - {"search", "space"})
    if unknown:
        raise UserError(f"unknown section(s) in {path}: {', '.join(unknown)}; valid sections: search, space")
    return TuneRequest(search=from_dict(SearchSettings, data.get("search") or {}, f"{path}: search"), space=data.get("space"))


def search_space(request: TuneRequest) -> dict[str, Any]:
    """Tune's param space for the request, refusing before anything starts what every trial would fail on."""
    settings = request.search
    for name in ("num_samples", "max_epochs", "grace_period"):
        if getattr(settings, name) < 1:
            raise UserError(f"{name.replace('_', '-')} must be at least 1, got {getattr(settings, name)}")
    if settings.grace_period > settings.max_epochs:
        raise UserError(f"grace-period ({settings.grace_period}) cannot exceed max-epochs ({settings.max_epochs})")
    if settings.reduction_factor < 2:
        raise UserError(f"reduction-factor must be at least 2, got {settings.reduction_factor}")
    if settings.scheduler not in ("asha", "fifo"):
        raise UserError(f"scheduler must be asha or fifo, got {settings.scheduler!r}")
    if request.workers_per_trial < 1:
        raise UserError(f"--workers-per-trial must be at least 1, got {request.workers_per_trial}")
    if request.cpus_per_worker is not None and request.cpus_per_worker < 1:
        raise UserError(f"--cpus-per-worker must be at least 1, got {request.cpus_per_worker}")
    space = request.space
    if not isinstance(space, dict) or not space:
        raise UserError(f"space must map TrainConfig keys (nested ones dotted, e.g. step.loss) to {SPACE_FORM}")
    flat = {}
    for name, value in space.items():
        where = f"space.{name}"
        if name == "epochs":
            raise UserError(f"{where}: the epochs of a trial are search.max_epochs (--max-epochs)")
        kind, args = _distribution(value, where)
        if kind and name in ("aux_columns", "head", "init_from"):
            raise UserError(f"{where} must be a constant: the data (and their label columns) are loaded once for every trial")
        for candidate in _candidates(kind, args):
            from_dict(engine.TrainConfig, _nest({name: candidate}), "space").check(where)
        flat[name] = value if kind is None else tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
    return {**_nest(flat), "epochs": settings.max_epochs}


def _distribution(value: Any, where: str) -> tuple[str | None, Any]:
    """(kind, arguments) of a `{kind: arguments}` entry, or (None, value) for a constant."""
    if not isinstance(value, dict):
        return None, value
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise UserError(f"{where} must be {SPACE_FORM}, got {value!r} (nested settings take dotted names, e.g. step.loss)")
    kind, args = next(iter(value.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}: choice takes a non-empty list, got {args!r}")
        return kind, args
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in args)):
        raise UserError(f"{where}: {kind} takes [lo, hi] numbers, got {args!r} (YAML reads 3e-4 as text; write 3.0e-4)")
    lo, hi = args
    if not lo < hi or (kind == "loguniform" and lo <= 0):
        raise UserError(f"{where}: {kind} needs {'0 < ' if kind == 'loguniform' else ''}lo < hi, got [{lo}, {hi}]")
    return kind, [float(lo), float(hi)]


def _candidates(kind: str | None, args: Any) -> list[Any]:
    """Values that stand for a parameter when checking it: every choice, both bounds, or the constant."""
    return [args] if kind is None else args


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"step.loss": x} -> {"step": {"loss": x}}: the shape of TrainConfig (and of Tune's trial config)."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    """config["step"]["loss"] for "step.loss"."""
    for key in dotted.split("."):
        config = config[key]
    return config


def largest(space: dict[str, Any], name: str) -> Any:
    """The largest value a parameter can take (the default if the space leaves it alone)."""
    if name not in space:
        return getattr(engine.TrainConfig(), name)
    kind, args = _distribution(space[name], name)
    return max(_candidates(kind, args))


def constants(space: dict[str, Any]) -> dict[str, Any]:
    """The space's constants, nested like TrainConfig: the settings every trial shares."""
    return _nest({name: value for name, value in space.items() if not isinstance(value, dict)})


# ---------------------------------------------------------------- resources


def trial_resources(request: TuneRequest) -> tuple[ray.train.ScalingConfig, int]:
    """Each trial's worker group, and how many trials run at once on this cluster.

    A trial's driver takes DRIVER_CPU, carved out of its workers' share so that a trial costs exactly
    workers x CPUs: on 2 CPUs two 1-CPU trials run side by side. Concurrency is capped by what the
    cluster holds (CPUs, and GPUs with --use-gpu), so no started trial waits for workers that cannot
    be placed, and a GPU cluster runs one trial per free set of GPUs.
    """
    workers = request.workers_per_trial
    cpus = request.cpus_per_worker or (None if request.use_gpu else 1)
    scaling = scaling_for(workers, request.use_gpu, cpus)
    cpus = scaling.resources_per_worker["CPU"]
    total = ray.cluster_resources()
    fits = int(total.get("CPU", 0) // (workers * cpus))
    if request.use_gpu:
        fits = min(fits, int(total.get("GPU", 0) // workers))
    scaling = replace(scaling, resources_per_worker={"CPU": cpus - DRIVER_CPU / workers})
    return scaling, min(fits, request.search.num_samples)


# ---------------------------------------------------------------- one trial


def run_trial(config: dict[str, Any], *, data: dict[str, Any], scaling: ray.train.ScalingConfig, experiment_path: str) -> None:
    """One Tune trial: ray_jobs.train's TorchTrainer, each epoch's report relayed to Tune.

    The Train run has a fixed place in the trial's folder, so a trial restarted by --resume
    continues from its latest checkpoint instead of epoch 1. Train keeps the best checkpoint (and
    the latest, for resuming); the export reads it from there.
    """
    cfg = from_dict(engine.TrainConfig, config)
    run_config = ray.train.RunConfig(
        name=TRAIN_RUN,
        storage_path=f"{experiment_path}/{tune.get_context().get_trial_id()}",
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order="min"),
        callbacks=[TuneReportCallback()],
    )
    build_trainer(cfg, data, scaling, run_config).fit()


def _trial_dirname(trial) -> str:
    """Trial folders named by trial id, as in tune_summary.csv (Tune's default embeds the whole config)."""
    return trial.trial_id


# ---------------------------------------------------------------- the search (driver)


def search(data: str | Path, output: str | Path, request: TuneRequest, *, resume: bool = False) -> pd.DataFrame:
    """Run (or, with `resume`, continue) the search; export the best trial; return the summary."""
    output = Path(output).resolve()
    request = replace(request, storage=request.storage or str(output / "ray_results"))
    space = search_space(request)
    if not resume:
        refuse_other_experiment(output, request)
    init_ray()
    scaling, concurrent = trial_resources(request)
    base = from_dict(engine.TrainConfig, {**constants(request.space), "image_size": largest(request.space, "image_size")})
    payload = load_training_data(data, output, base, request.targets)
    n_train = len(payload["splits"]["train"]["images"])
    batch = largest(request.space, "batch_size")
    if n_train // request.workers_per_trial < batch:
        raise UserError(
            f"batch size {batch} x {request.workers_per_trial} worker(s) is larger than the training split ({n_train} rows); "
            "lower the batch sizes in the search space"
        )
    output.mkdir(parents=True, exist_ok=True)
    (output / SETTINGS_FILE).write_text(yaml.safe_dump(asdict(request), sort_keys=False))
    s = request.search
    cpus = scaling.resources_per_worker["CPU"] + DRIVER_CPU / request.workers_per_trial  # the driver's share included
    print(
        f"tuning on {n_train} images at up to {base.image_size} px: {s.num_samples} trial(s) x up to {s.max_epochs} epoch(s), "
        f"{s.scheduler}{f' (grace {s.grace_period}, reduction {s.reduction_factor})' if s.scheduler == 'asha' else ''}; "
        f"{concurrent} at a time, each {request.workers_per_trial} worker(s) x {cpus:g} CPU"
        f"{' + GPU' if request.use_gpu else ''}; experiment {request.experiment_path}",
        flush=True,
    )

    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            data={**payload, "splits": ray.put(payload["splits"])},  # the arrays go through the object store once
            scaling=scaling,
            experiment_path=request.experiment_path,
        ),
        {"cpu": DRIVER_CPU},
    )
    if resume and tune.Tuner.can_restore(request.experiment_path):
        tuner = tune.Tuner.restore(request.experiment_path, trainable=trainable, resume_errored=True)
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
                metric=METRIC,
                mode="min",
                num_samples=s.num_samples,
                search_alg=BasicVariantGenerator(max_concurrent=concurrent, random_state=s.seed),
                scheduler=scheduler,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=request.storage),
        )
    grid = tuner.fit()

    summary = summarise(grid, request)
    summary.to_csv(output / SUMMARY_FILE, index=False)
    print_top(summary)
    export(summary, grid, request, output)
    print(f"TensorBoard: tensorboard --logdir {request.experiment_path}")
    return summary


FINE_TUNE_LR_RANGE = {"loguniform": [2.0e-4, 2.0e-3]}
"""Learning rates for fine-tuning trials: around ray_jobs.train's FINE_TUNE_LR; the scratch range's
upper end would wreck the pretrained weights."""


def fine_tuning_space(space: dict[str, Any], checkpoint: str | Path) -> dict[str, Any]:
    """The space with every trial starting from `checkpoint`, whose backbone it must then use, and
    learning rates for fine-tuning."""
    meta = read_meta(checkpoint)
    if space.get("backbone", meta["backbone"]) != meta["backbone"]:
        print(f"--init-from {checkpoint}: every trial uses its backbone {meta['backbone']} instead of the space's {space['backbone']}")
    if space.get("lr", FINE_TUNE_LR_RANGE) != FINE_TUNE_LR_RANGE:
        print(f"--init-from {checkpoint}: learning rates {FINE_TUNE_LR_RANGE} instead of the space's {space['lr']}")
    return {**space, "init_from": str(Path(checkpoint).resolve()), "backbone": meta["backbone"], "lr": FINE_TUNE_LR_RANGE}


def refuse_other_experiment(output: Path, request: TuneRequest) -> None:
    """Never mix a new search into an output holding another search or a train run."""
    if (output / SETTINGS_FILE).is_file() or (output / "best").exists() or tune.Tuner.can_restore(request.experiment_path):
        raise UserError(f"{output} already holds another search or training run; pass --resume to continue it or choose another --output")


def resume_request(output: str | Path) -> TuneRequest:
    """The request a search in `output` was started with."""
    path = Path(output).resolve() / SETTINGS_FILE
    if not path.is_file():
        raise UserError(f"{path.parent} holds no search to resume (no {SETTINGS_FILE}); run without --resume")
    return from_dict(TuneRequest, load_yaml(path), str(path))


# ---------------------------------------------------------------- results


def summarise(grid: tune.ResultGrid, request: TuneRequest) -> pd.DataFrame:
    """One row per trial, best first: its parameters, epochs reached, best val MAE and how it ended
    (completed, asha, trainer: the loop's patience or time budget, error)."""
    max_epochs = request.search.max_epochs
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        row = {"trial_id": result.metrics["trial_id"], **{name: _lookup(result.config, name) for name in request.space}}
        last_epoch, best_epoch, best_mae = 0, 0, math.nan
        if history is not None and METRIC in history and history[METRIC].notna().any():
            best = history.loc[history[METRIC].idxmin()]
            last_epoch, best_epoch, best_mae = int(history["epoch"].max()), int(best["epoch"]), float(best[METRIC])
        if result.error:
            ended = "error"
        elif result.metrics.get("stopped_early"):  # the training loop's own rule: patience or time budget
            ended = "trainer"
        else:
            ended = request.search.scheduler if last_epoch < max_epochs else "completed"
        row.update(
            last_epoch=last_epoch,
            best_epoch=best_epoch,
            best_val_mae=best_mae,
            stopped_early=ended in ("asha", "trainer"),
            ended=ended,
            error=str(result.error).strip().splitlines()[-1] if result.error else "",
        )
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["best_val_mae", "trial_id"], na_position="last", ignore_index=True)


def print_top(summary: pd.DataFrame, top: int = 5) -> None:
    n_stopped = int(summary["stopped_early"].sum())
    n_errors = int((summary["ended"] == "error").sum())
    print(f"\n{len(summary)} trial(s): {n_stopped} stopped early, {n_errors} failed; {summary['last_epoch'].sum()} trial-epochs")
    columns = [c for c in summary.columns if c != "error"]
    print(f"top {min(top, len(summary))} by best val MAE:")
    print(summary[columns].head(top).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for row in summary[summary["ended"] == "error"].itertuples():
        print(f"trial {row.trial_id} failed: {row.error}")


def export(summary: pd.DataFrame, grid: tune.ResultGrid, request: TuneRequest, output: Path) -> dict[str, Any]:
    """OUT/best/ (ray_jobs.train's format, through its `export_best`) and OUT/best_config.yaml."""
    reported = summary[summary["best_val_mae"].notna()]
    if reported.empty:
        raise UserError(f"no trial reported a validation MAE; see {output / SUMMARY_FILE} and the trial logs under {request.experiment_path}")
    trial_id = reported.iloc[0]["trial_id"]
    config = next(r.config for r in grid if r.metrics["trial_id"] == trial_id)
    train_run = ray.train.Result.from_path(f"{request.experiment_path}/{trial_id}/{TRAIN_RUN}")
    metrics = export_best(train_run, output / "best")
    cfg = from_dict(engine.TrainConfig, config)
    header = (
        f"# best trial {trial_id} of {request.experiment_path}: val MAE {metrics[METRIC]:.4f} at epoch {int(metrics['epoch'])}\n"
        f"# retrain with: python -m ray_jobs.train --data DIR --output OUT --config {output / BEST_CONFIG_FILE}\n"
    )
    (output / BEST_CONFIG_FILE).write_text(header + yaml.safe_dump(asdict(cfg), sort_keys=False))
    print(f"\nbest trial {trial_id}: val MAE {metrics[METRIC]:.4f} at epoch {int(metrics['epoch'])}, R2 {metrics['val_r2']:.3f}")
    print(f"checkpoint: {output / 'best'}   config: {output / BEST_CONFIG_FILE}   summary: {output / SUMMARY_FILE}")
    return metrics


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.tune",
        description="Search hyperparameters of the perspective-score regressor with Ray Tune: random search over "
        "the YAML's space, each trial a ray_jobs.train run on Ray Train, ASHA stopping poor trials after any epoch. "
        "Writes OUTPUT/best/ (the best checkpoint, same format as ray_jobs.train), OUTPUT/best_config.yaml and "
        "OUTPUT/tune_summary.csv.",
        epilog="Space YAML: `search:` (num_samples, max_epochs, grace_period, reduction_factor, scheduler, seed) and "
        "`space:` mapping TrainConfig keys (nested ones dotted: step.loss, augment.strength) to a constant or "
        "{choice: [...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}. Flags override the search section. "
        "Exit status 2 on bad input (message on stderr).",
    )
    parser.add_argument("--data", required=True, help="raw data set (imgs/ + CSV) or a folder made by ray_jobs.prepare")
    parser.add_argument("--output", required=True, help="folder for best/, best_config.yaml, tune_summary.csv (and prepared/ for raw data)")
    parser.add_argument("--config", help=f"search space YAML (default {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[1])})")
    parser.add_argument("--num-samples", type=int, help="number of trials")
    parser.add_argument("--max-epochs", type=int, help="epochs of a trial that is never stopped early")
    parser.add_argument("--grace-period", type=int, help="epochs every trial gets before ASHA may stop it")
    parser.add_argument("--reduction-factor", type=int, help="ASHA keeps the best 1/reduction-factor of the trials at each rung")
    parser.add_argument("--scheduler", choices=("asha", "fifo"), help="asha stops poor trials early; fifo trains every trial fully")
    parser.add_argument("--seed", type=int, help="seed of the random search (the same seed draws the same trials)")
    parser.add_argument("--targets", help="comma-separated main targets (default: the data set's perspective_score_* columns)")
    parser.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial (default 1)")
    parser.add_argument("--cpus-per-worker", type=int, help="CPUs per worker (default 1; 2 with --use-gpu)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker; trials run side by side on free GPUs")
    parser.add_argument(
        "--storage",
        help="where Tune and the trials' Train runs keep results and checkpoints (default OUTPUT/ray_results); "
        "a multi-node cluster needs storage every node reaches: a shared file system path or an s3:// / gs:// URI",
    )
    parser.add_argument("--init-from", metavar="DIR",
                        help="fine-tune every trial from this checkpoint of ours (e.g. pretrained/regnetx_002-64): "
                        "pins the space's backbone to the checkpoint's")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search in OUTPUT with the settings it was started with; finished trials are kept")
    args = parser.parse_args(argv)
    if args.resume:
        request = resume_request(args.output)
        print(f"resuming with the settings in {Path(args.output) / SETTINGS_FILE}; other flags than --data are ignored")
    else:
        config = args.config or DEFAULT_CONFIG
        request = load_request(config)
        overrides = {
            "num_samples": args.num_samples,
            "max_epochs": args.max_epochs,
            "grace_period": args.grace_period,
            "reduction_factor": args.reduction_factor,
            "scheduler": args.scheduler,
            "seed": args.seed,
        }
        if args.init_from:
            request = replace(request, space=fine_tuning_space(request.space, args.init_from))
        request = replace(
            request,
            search=replace(request.search, **{k: v for k, v in overrides.items() if v is not None}),
            targets=args.targets.split(",") if args.targets else None,
            workers_per_trial=args.workers_per_trial,
            cpus_per_worker=args.cpus_per_worker,
            use_gpu=args.use_gpu,
            storage=args.storage or "",
        )
    search(args.data, args.output, request, resume=args.resume)
    return 0


if __name__ == "__main__":
    run(main)
