"""A run's record beside its outputs: every report as TensorBoard scalars (OUTPUT/tensorboard) and a
line of OUTPUT/metrics.jsonl. Imports neither torch nor timm, so that Ray Train's controller, which
writes it, starts without them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

HISTORY_FILE = "metrics.jsonl"


class RunLog:
    """Appends reports to OUTPUT's TensorBoard events and metrics.jsonl."""

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.writer = None

    def write(self, report: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow to import; only runs that report need it

        if self.writer is None:
            self.writer = SummaryWriter(str(self.output / "tensorboard"))
        for key, value in report.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, report["epoch"])
        self.writer.flush()
        with open(self.output / HISTORY_FILE, "a") as f:
            f.write(json.dumps(report) + "\n")


def read_history(output: str | Path) -> list[dict[str, Any]]:
    """Per-epoch metrics of the run in `output`, the latest report of each epoch (a resume repeats none)."""
    path = Path(output) / HISTORY_FILE
    if not path.is_file():
        return []
    by_epoch = {}
    for line in path.read_text().splitlines():
        report = json.loads(line)
        by_epoch[report["epoch"]] = report
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]
