"""Evaluate a checkpoint on one split of a data set: predictions, metrics.json, predictions.csv and
report.html. No Ray: scoring a split is one process's work (`ray_jobs.evaluate` is its command line).

The model sees what it saw in training. From a prepared folder: the stored pixels, resized to the
model's input exactly as training resizes them. From a raw data set: every photo through
`Predictor.preprocess`, the path serving takes (`cvcore.image.preprocess` with the prepared size the
checkpoint records). A checkpoint may predict more targets than the data hold (the shipped backbone
predicts every part); the targets both have are scored, and one sharing none is refused.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cvcore import prepared
from cvcore.data import SPLITS, read_dataset
from cvcore.errors import CheckpointError, DataError, ImageError, UserError
from cvcore.image import resize_images
from cvcore.intake import IntakeThresholds
from cvcore.metrics import baseline_metrics, decision_metrics, regression_metrics
from cvcore.model import Predictor, load_model
from cvcore.report import write_report

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"


@dataclass
class EvaluateConfig:
    """What `ray_jobs.evaluate` scores and where the report goes."""

    checkpoint: str
    """checkpoint folder (model.safetensors + model.json), or a train/tune output holding best/"""
    data: str
    """raw data set (imgs/ + CSV) or a folder made by ray_jobs.prepare"""
    out: str
    """folder for metrics.json, predictions.csv and report.html"""
    split: str = field(default="test", metadata={"choices": SPLITS})
    """which split to score"""
    csv: str | None = None
    """CSV file name inside a raw data set (default car_imgs_4000.csv, or the only *.csv)"""
    accept: float = IntakeThresholds().accept
    """score at or above which serving accepts a photo for a part: the threshold of the decision metrics"""
    batch_size: int = 64
    """images per forward pass"""

    def __post_init__(self) -> None:
        if not 0.0 < self.accept <= 1.0:
            raise UserError(f"accept must be in (0, 1], got {self.accept}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass
class SplitPredictions:
    """One split scored: the model inputs, true labels and predictions of the shared targets."""

    targets: list[str]
    filenames: list[str]
    images: np.ndarray  # uint8 (N, S, S, 3), what the model saw
    labels: np.ndarray  # (N, len(targets))
    predictions: np.ndarray  # (N, len(targets))
    skipped: list[str] = field(default_factory=list)  # rows left out: unreadable photo or unknown label

    def frame(self) -> pd.DataFrame:
        """`filename`, `<target>` (true) and `pred_<target>` columns, as `write_report` takes them."""
        frame = pd.DataFrame({"filename": self.filenames})
        for i, target in enumerate(self.targets):
            frame[target] = self.labels[:, i]
            frame[f"pred_{target}"] = self.predictions[:, i]
        return frame


def shared_targets(predicted: list[str], available: list[str]) -> list[str]:
    """The checkpoint's targets that the data have, in the checkpoint's order; none is an error."""
    shared = [t for t in predicted if t in available]
    if not shared:
        raise CheckpointError(
            f"the checkpoint predicts {', '.join(predicted)}, and the data have none of them "
            f"(their label columns: {', '.join(available) or 'none'})"
        )
    return shared


def predict_split(predictor: Predictor, data: str | Path, split: str, *, csv_name: str | None = None, batch_size: int = 64) -> SplitPredictions:
    """Score every row of `split` for the targets both the checkpoint and the data have."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    data = Path(data)
    skipped: list[str] = []
    if prepared.is_prepared(data):
        manifest = prepared.read_manifest(data)
        targets = shared_targets(predictor.targets, [*manifest["targets"], *manifest["extra_columns"]])
        stored, labels, _, filenames = prepared.load_split(data, split, targets)
        images = resize_images(stored, predictor.image_size)
    else:
        dataset = read_dataset(data, csv_name, check_images="none")
        targets = shared_targets(predictor.targets, [*dataset.targets, *dataset.extra_columns])
        rows = dataset.frame[dataset.frame["split"] == split]
        with ThreadPoolExecutor() as pool:  # Pillow releases the GIL while it decodes
            inputs = list(pool.map(lambda name: _preprocessed_or_error(predictor, dataset.image_path(name)), rows["filename"]))
        readable = [not isinstance(x, str) for x in inputs]
        skipped += [f"{name}: {x}" for name, x in zip(rows["filename"], inputs) if isinstance(x, str)]
        size = predictor.image_size
        images = np.stack([x for x in inputs if not isinstance(x, str)]) if any(readable) else np.zeros((0, size, size, 3), np.uint8)
        labels = rows.loc[readable, targets].to_numpy(np.float32)
        filenames = rows.loc[readable, "filename"].tolist()
    known = np.isfinite(labels).all(axis=1)
    skipped += [f"{name}: no label for a target" for name, ok in zip(filenames, known) if not ok]
    images, labels, filenames = images[known], labels[known], [n for n, ok in zip(filenames, known) if ok]
    if len(images) == 0:
        raise DataError(f"the {split} split of {data} has no usable rows to score")
    columns = [predictor.targets.index(t) for t in targets]
    scores = np.concatenate([predictor.predict_arrays(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return SplitPredictions(targets, filenames, images, labels, scores[:, columns], skipped)


def _preprocessed_or_error(predictor: Predictor, path: Path) -> np.ndarray | str:
    try:
        return predictor.preprocess(path)
    except ImageError as err:
        return str(err)


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score the split and write metrics.json, predictions.csv and report.html into `cfg.out`."""
    predictor = load_model(cfg.checkpoint)
    result = predict_split(predictor, cfg.data, cfg.split, csv_name=cfg.csv, batch_size=cfg.batch_size)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = result.targets
    metrics = {
        "split": cfg.split,
        **regression_metrics(result.labels, result.predictions, targets),
        "baseline_all_zeros": baseline_metrics(result.labels, targets),
        "decisions": decision_metrics(result.labels, result.predictions, targets, cfg.accept),
        "not_in_data": [t for t in predictor.targets if t not in targets],
        "skipped": result.skipped,
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "backbone": predictor.spec.backbone,
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    frame = result.frame()
    frame.to_csv(out / PREDICTIONS_FILE, index=False)
    by_name = dict(zip(result.filenames, result.images))
    metrics["report"] = str(
        write_report(
            out,
            frame,
            targets,
            metrics,
            image_loader=lambda name: Image.fromarray(by_name[name]),
            title=f"{predictor.spec.backbone} on the {cfg.split} split of {Path(cfg.data).name}",
        )
    )
    return metrics


def summary(metrics: dict[str, Any]) -> str:
    """What a person reads after an evaluation: per target MAE against all zeros, R², decisions."""
    mean = metrics["mean"]
    lines = [f"{metrics['split']}: n={metrics['n']}  mean MAE {mean['mae']:.4f}  RMSE {mean['rmse']:.4f}  R2 {_fmt(mean['r2'])}"]
    if missing := metrics["not_in_data"]:
        lines.append(f"  not scored, no such column in the data: {len(missing)} target(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if metrics["skipped"]:
        lines.append(f"  {len(metrics['skipped'])} row(s) left out, e.g. {metrics['skipped'][0]}")
    decisions = metrics["decisions"]
    for target, values in metrics["targets"].items():
        zero, decided = metrics["baseline_all_zeros"]["targets"][target], decisions["targets"][target]
        lines.append(
            f"  {target}: MAE {values['mae']:.4f} (all-zeros {zero['mae']:.4f})  R2 {_fmt(values['r2'])}  "
            f"within 0.1 {values['within_0.1']:.1%}  accept/retake at {decisions['accept']:g}: agreement {_pct(decided['agreement'])}, "
            f"false retakes {_pct(decided['false_retake_rate'])}, false accepts {_pct(decided['false_accept_rate'])}"
        )
    lines.append(f"report: {metrics['report']}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
