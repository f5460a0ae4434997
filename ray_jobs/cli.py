"""Shared command-line plumbing: every entry point runs through `run` (with the argparse count types
from `cvcore.config`); `init_ray` (from `ray_jobs.common`) joins or starts the Ray cluster."""

from cvcore.config import integer, non_negative_int, positive_int, run
from ray_jobs.common import init_ray

__all__ = ["init_ray", "integer", "non_negative_int", "positive_int", "run"]
