"""Shared command-line plumbing: every entry point runs through `run` (with the argparse count types
from `cvcore.config`). It imports no Ray and no torch, so that light commands (`validate`, `synth`,
`--help`) start in a second; `ray_jobs.common.init_ray` joins or starts the Ray cluster."""

from cvcore.config import integer, non_negative_int, positive_int, run

__all__ = ["integer", "non_negative_int", "positive_int", "run"]
