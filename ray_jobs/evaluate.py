"""Evaluate a checkpoint on one split and write metrics.json plus an HTML report with plots.

    python -m ray_jobs.evaluate --checkpoint CKPT_DIR --data DIR --out REPORT_DIR [--split test]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cvcore import prepared
from cvcore.image import resize_images
from cvcore.data import SPLITS
from cvcore.errors import CheckpointError, DataError
from cvcore.metrics import baseline_metrics, regression_metrics
from cvcore.model import load_model
from cvcore.report import write_report
from ray_jobs.cli import run
from ray_jobs.prepare import prepare


def evaluate(checkpoint: str | Path, data: str | Path, out: str | Path, split: str = "test", batch_size: int = 64) -> dict[str, Any]:
    predictor = load_model(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data)
    prepared_dir = data if prepared.is_prepared(data) else out / "prepared"
    if not prepared.is_prepared(data):
        prepare(data, prepared_dir, size=predictor.image_size)
    manifest = prepared.read_manifest(prepared_dir)
    available = [*manifest["targets"], *manifest["extra_columns"]]
    missing = [t for t in predictor.targets if t not in available]
    if missing:
        raise CheckpointError(f"checkpoint predicts {predictor.targets}, but the data has no column {', '.join(missing)}")
    images, labels, _, filenames = prepared.load_split(prepared_dir, split, predictor.targets)
    if len(images) == 0:
        raise DataError(f"the {split} split of {data} is empty")
    images = resize_images(images, predictor.image_size)
    predictions = np.concatenate([predictor.predict_arrays(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    targets = predictor.targets
    metrics = {"split": split, **regression_metrics(labels, predictions, targets)}
    metrics["baseline_all_zeros"] = baseline_metrics(labels, targets)
    metrics["checkpoint"] = str(Path(checkpoint).resolve())
    metrics["backbone"] = predictor.spec.backbone
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    frame = pd.DataFrame({"filename": filenames})
    for i, target in enumerate(targets):
        frame[target] = labels[:, i]
        frame[f"pred_{target}"] = predictions[:, i]
    frame.to_csv(out / "predictions.csv", index=False)
    by_name = dict(zip(filenames, images))
    html = write_report(
        out,
        frame,
        targets,
        metrics,
        image_loader=lambda name: Image.fromarray(by_name[name]),
        title=f"{predictor.spec.backbone} on the {split} split of {data.name}",
    )
    print(f"{split}: n={metrics['n']}  mean MAE {metrics['mean']['mae']:.4f}  RMSE {metrics['mean']['rmse']:.4f}  R2 {_fmt(metrics['mean']['r2'])}")
    for target in targets:
        values, zero = metrics["targets"][target], metrics["baseline_all_zeros"]["targets"][target]
        print(f"  {target}: MAE {values['mae']:.4f} (all-zeros {zero['mae']:.4f})  R2 {_fmt(values['r2'])}  within 0.1 {values['within_0.1']:.1%}")
    print(f"report: {html}")
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.evaluate",
        description="Score a checkpoint on one split of a data set; writes REPORT_DIR/metrics.json, predictions.csv and report.html with plots.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (model.safetensors + model.json), or a train/tune output holding best/")
    parser.add_argument("--data", required=True, help="raw data set (imgs/ + CSV) or a folder made by ray_jobs.prepare")
    parser.add_argument("--out", required=True, help="folder for the report")
    parser.add_argument("--split", default="test", choices=SPLITS, help="which split to score (default test)")
    args = parser.parse_args(argv)
    evaluate(args.checkpoint, args.data, args.out, args.split)
    return 0


if __name__ == "__main__":
    run(main)
