"""The hyperparameter search's grammar, settings and results, without Ray.

A search YAML has two sections: `search:` (SearchSettings: how many trials, how long each trains,
when ASHA stops one) and `space:`, which maps TrainConfig keys (nested ones dotted, `step.loss`) to
a constant or one distribution: `{choice: [a, b, ...]}`, `{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}`.
`parameter_space` checks every value a trial could draw against TrainConfig before anything
starts; `ray_jobs.tune` turns the distributions into Ray Tune's and runs the trials.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cvcore.config import from_dict, load_yaml
from cvcore.engine import TrainConfig
from cvcore.errors import UserError
from cvcore.model import read_meta
from cvcore.training import FINE_TUNE_BACKBONE_LR_SCALE

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tune.yaml"
DISTRIBUTIONS = ("choice", "uniform", "loguniform")
SPACE_FORM = "a constant or one of {choice: [a, b, ...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}"
FILE_HELP = (
    "--config (default configs/tune.yaml): `search:` (the search flags) and `space:` mapping TrainConfig keys (nested ones "
    f"dotted: step.loss, augment.strength) to {SPACE_FORM}. Flags override the file. Exit status 2 on bad input (message on stderr)."
)
CONSTANT_ONLY = ("aux_columns", "head", "init_from")
"""Settings every trial must share: the data (and their label columns) are loaded once for all."""
FINE_TUNE_LR_RANGE = {"loguniform": [2.0e-4, 2.0e-3]}
"""Learning rates for fine-tuning trials: around `training.FINE_TUNE_LR`; the scratch range's upper
end would wreck the pretrained weights."""


@dataclass
class SearchSettings:
    """The YAML's `search:` section: how many trials, how long each may train, when ASHA stops one."""

    num_samples: int = 6
    """number of trials"""
    max_epochs: int = 3
    """epochs of a trial that is never stopped early"""
    grace_period: int = 1
    """epochs every trial gets before ASHA may stop it"""
    reduction_factor: int = 2
    """ASHA keeps the best 1/reduction-factor of the trials at each rung"""
    scheduler: str = field(default="asha", metadata={"choices": ["asha", "fifo"]})
    """asha stops poor trials early; fifo trains every trial fully (the baseline ASHA saves on)"""
    seed: int = 0
    """seed of the random search (the same seed draws the same trials)"""


@dataclass
class TuneRequest:
    """Everything a search needs besides the data and the output; saved with the search for --resume."""

    search: SearchSettings = field(default_factory=SearchSettings, metadata={"flatten": True})
    space: dict[str, Any] = field(default_factory=dict, metadata={"flag": False})
    """dotted TrainConfig key -> distribution or constant"""
    targets: list[str] | None = None
    """comma-separated main targets (default: the data set's perspective_score_* columns)"""
    workers_per_trial: int = 1
    """Ray Train workers per trial"""
    cpus_per_worker: int | None = None
    """CPUs per worker (default 1; 2 with --use-gpu)"""
    use_gpu: bool = False
    """one GPU per worker; trials run side by side on free GPUs"""
    storage: str = ""
    """where Tune and the trials' Train runs keep results and checkpoints (default OUTPUT/ray_results); a multi-node
    cluster needs storage every node reaches: a shared file system path or an s3:// / gs:// URI"""


def load_request(path: str | Path) -> TuneRequest:
    """A search YAML ({search: ..., space: ..., and any other TuneRequest key}) as a TuneRequest."""
    return from_dict(TuneRequest, load_yaml(path), str(path))


def parameter_space(request: TuneRequest) -> dict[str, tuple[str | None, Any]]:
    """The space as {dotted key: (distribution or None for a constant, its arguments)}, refusing,
    before anything starts, what every trial would fail on."""
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
    parameters = {}
    for name, value in space.items():
        where = f"space.{name}"
        if name == "epochs":
            raise UserError(f"{where}: the epochs of a trial are search.max_epochs (--max-epochs)")
        kind, args = distribution(value, where)
        if kind and name in CONSTANT_ONLY:
            raise UserError(f"{where} must be a constant: the data (and their label columns) are loaded once for every trial")
        for candidate in candidates(kind, args):
            from_dict(TrainConfig, nest({name: candidate}), "space").check(where)
        parameters[name] = (kind, args)
    return parameters


def distribution(value: Any, where: str) -> tuple[str | None, Any]:
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


def candidates(kind: str | None, args: Any) -> list[Any]:
    """Values that stand for a parameter when checking it: every choice, both bounds, or the constant."""
    return [args] if kind is None else args


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"step.loss": x} -> {"step": {"loss": x}}: the shape of TrainConfig (and of Tune's trial config)."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """config["step"]["loss"] for "step.loss"."""
    for key in dotted.split("."):
        config = config[key]
    return config


def largest(space: dict[str, Any], name: str) -> Any:
    """The largest value a parameter can take (the default if the space leaves it alone)."""
    if name not in space:
        return getattr(TrainConfig(), name)
    return max(candidates(*distribution(space[name], name)))


def constants(space: dict[str, Any]) -> dict[str, Any]:
    """The space's constants, nested like TrainConfig: the settings every trial shares."""
    return nest({name: value for name, value in space.items() if not isinstance(value, dict)})


def data_config(space: dict[str, Any]) -> TrainConfig:
    """The settings the data are loaded with once for every trial: the constants at the largest input size."""
    return from_dict(TrainConfig, {**constants(space), "image_size": largest(space, "image_size")})


def fine_tuning_space(space: dict[str, Any], checkpoint: str | Path) -> dict[str, Any]:
    """The space with every trial starting from `checkpoint`, whose backbone it must then use, and
    learning rates for fine-tuning."""
    meta = read_meta(checkpoint)
    if space.get("backbone", meta["backbone"]) != meta["backbone"]:
        print(f"--init-from {checkpoint}: every trial uses its backbone {meta['backbone']} instead of the space's {space['backbone']}")
    if space.get("lr", FINE_TUNE_LR_RANGE) != FINE_TUNE_LR_RANGE:
        print(f"--init-from {checkpoint}: learning rates {FINE_TUNE_LR_RANGE} instead of the space's {space['lr']}")
    fine_tuning = {"init_from": str(Path(checkpoint).resolve()), "backbone": meta["backbone"], "lr": FINE_TUNE_LR_RANGE}
    return {"backbone_lr_scale": FINE_TUNE_BACKBONE_LR_SCALE, **space, **fine_tuning}


def describe_search(request: TuneRequest, n_train: int, image_size: int, concurrent: int, cpus: float) -> str:
    s = request.search
    return (
        f"tuning on {n_train} images at up to {image_size} px: {s.num_samples} trial(s) x up to {s.max_epochs} epoch(s), "
        f"{s.scheduler}{f' (grace {s.grace_period}, reduction {s.reduction_factor})' if s.scheduler == 'asha' else ''}; "
        f"{concurrent} at a time, each {request.workers_per_trial} worker(s) x {cpus:g} CPU{' + GPU' if request.use_gpu else ''}"
    )


# ---------------------------------------------------------------- results


@dataclass
class TrialRecord:
    """What a finished (or stopped, or failed) trial left: its configuration, reports and error."""

    trial_id: str
    config: dict[str, Any]
    history: list[dict[str, Any]]
    error: str = ""


def summary_rows(trials: list[TrialRecord], request: TuneRequest, metric: str = "val_mae") -> list[dict[str, Any]]:
    """One row per trial, best first: its parameters, epochs reached, best metric and how it ended
    (completed, asha, trainer: the loop's patience or time budget, error)."""
    rows = []
    for trial in trials:
        row = {"trial_id": trial.trial_id, **{name: lookup(trial.config, name) for name in request.space}}
        scored = [r for r in trial.history if r.get(metric) is not None and not math.isnan(r[metric])]
        last_epoch = max((int(r["epoch"]) for r in trial.history), default=0)
        best = min(scored, key=lambda r: r[metric]) if scored else None
        if trial.error:
            ended = "error"
        elif trial.history and trial.history[-1].get("stopped_early"):  # the training loop's own rule
            ended = "trainer"
        else:
            ended = request.search.scheduler if last_epoch < request.search.max_epochs else "completed"
        row.update(
            last_epoch=last_epoch,
            best_epoch=int(best["epoch"]) if best else 0,
            best_val_mae=float(best[metric]) if best else math.nan,
            stopped_early=ended in ("asha", "trainer"),
            ended=ended,
            error=trial.error.strip().splitlines()[-1] if trial.error else "",
        )
        rows.append(row)
    return sorted(rows, key=lambda r: (math.isnan(r["best_val_mae"]), r["best_val_mae"] if not math.isnan(r["best_val_mae"]) else 0, r["trial_id"]))


def best_config_text(config: dict[str, Any], source: str, metrics: dict[str, Any], path: Path) -> str:
    """The winning trial's TrainConfig as YAML that `ray_jobs.train --config` takes, with where it came from."""
    cfg = from_dict(TrainConfig, config)
    header = (
        f"# best trial of {source}: val MAE {metrics['val_mae']:.4f} at epoch {int(metrics['epoch'])}\n"
        f"# retrain with: python -m ray_jobs.train --data DIR --output OUT --config {path}\n"
    )
    return header + yaml.safe_dump(asdict(cfg), sort_keys=False)


def format_summary(summary: pd.DataFrame, top: int = 5) -> str:
    """The summary's head for a person: counts, the best `top` trials, and why any trial failed."""
    n_stopped, n_errors = int(summary["stopped_early"].sum()), int((summary["ended"] == "error").sum())
    table = summary[[c for c in summary.columns if c != "error"]].head(top).to_string(index=False, float_format=lambda v: f"{v:.4g}")
    failures = [f"trial {row.trial_id} failed: {row.error}" for row in summary[summary["ended"] == "error"].itertuples()]
    return "\n".join(
        [f"\n{len(summary)} trial(s): {n_stopped} stopped early, {n_errors} failed; {summary['last_epoch'].sum()} trial-epochs",
         f"top {min(top, len(summary))} by best val MAE:", table, *failures]
    )  # fmt: skip


def resume_request(path: Path) -> TuneRequest:
    """The request a search was started with, saved in its OUTPUT/config.yaml."""
    path = Path(path).resolve()
    if not path.is_file():
        raise UserError(f"{path.parent} holds no search to resume (no {path.name}); run without --resume")
    print(f"resuming with the settings in {path}; other flags than --data are ignored")
    return from_dict(TuneRequest, load_yaml(path), str(path))
