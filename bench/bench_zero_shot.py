"""Zero-shot test MAE and R² of checkpoints on raw data sets: the curve of a pretraining run.

    python bench/bench_zero_shot.py --data default=DIR --data heldout=DIR CHECKPOINT [CHECKPOINT ...]

Scores each checkpoint on each data set's test split (the targets both have) with the evaluation's
own path (`cvcore.evaluation.predict_split`, `cvcore.metrics.regression_metrics`), one JSON line per
checkpoint: images seen, validation MAE on renders, and per data set {target: [MAE, R²]}.
"""

from __future__ import annotations

import argparse
import json

from cvcore.evaluation import predict_split
from cvcore.metrics import regression_metrics
from cvcore.model import load_model, read_meta


def named_dir(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint folders (model.json + model.safetensors)")
    parser.add_argument("--data", type=named_dir, action="append", required=True, metavar="NAME=DIR", help="a raw data set to score on")
    args = parser.parse_args()
    for checkpoint in args.checkpoints:
        meta = read_meta(checkpoint)
        predictor = load_model(checkpoint)
        row = {"checkpoint": checkpoint, "images_seen": meta.get("images_seen"), "val_mae_renders": meta.get("metrics", {}).get("val_mae")}
        for name, data in args.data:
            result = predict_split(predictor, data, "test")
            per_target = regression_metrics(result.labels, result.predictions, result.targets)["targets"]
            row[name] = {t: [round(per_target[t]["mae"], 4), round(per_target[t]["r2"], 3)] for t in result.targets}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
