"""Ray entry points, one per stage: `python -m ray_jobs.<stage> --help`."""

import os
from pathlib import Path

# Read when Ray is imported, so set before any stage imports it: Ray Data's INFO lines go to its log file, not the
# console; every worker's epoch line is printed (Ray's log dedup folds lines that differ only in numbers into one).
os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(Path(__file__).resolve().parents[1] / "configs" / "ray_data_logging.yaml"))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # read by the driver, passed on to controller and workers
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # reports wait for the controller's poll (2 s): docs/ARCHITECTURE.md
