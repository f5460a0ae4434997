"""Evaluate a checkpoint on one split and write metrics.json plus an HTML report with plots.

Evaluation needs no Ray: this is `cvcore.evaluation`'s command line, beside the other stages'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cvcore.config import CONFIG_FILE, ConfigParser, run, save_config
from cvcore.evaluation import EvaluateConfig, evaluate, summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = ConfigParser(
        prog="python -m ray_jobs.evaluate",
        description="Score a checkpoint on one split of a data set (the targets both have): writes OUT/metrics.json "
        "(error metrics, the all-zeros baseline, accept/retake decisions at the serving threshold), predictions.csv "
        "and report.html with plots.",
    )
    parser.add_config(EvaluateConfig, "evaluate")
    cfg = parser.parse_args(argv).evaluate
    metrics = evaluate(cfg)
    save_config(Path(cfg.out) / CONFIG_FILE, cfg)
    print(summary(metrics))
    return 0


if __name__ == "__main__":
    run(main)
