"""Shared command-line plumbing: every entry point runs through `run`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from cvcore.errors import UserError


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run `main(argv)` and exit with its status; user errors become one clear line, not a traceback."""
    try:
        status = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster this job was submitted to (RAY_ADDRESS), or start a local one.

    The dashboard stays on: Tune driving Train trials needs its State API (without it, every trial
    after the first hangs).
    """
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=True, configure_logging=False)
