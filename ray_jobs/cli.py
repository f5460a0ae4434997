"""Shared command-line plumbing: every entry point runs through `run`."""

from __future__ import annotations

import argparse
import os
import socket
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


def positive_int(text: str) -> int:
    """argparse type: a count of at least 1, with a one-line message otherwise."""
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster this job was submitted to (RAY_ADDRESS), or start a fresh local Ray.

    The dashboard stays on: Tune driving Train trials needs its State API, which Train's
    placement-group cleaner finds through RAY_API_SERVER_ADDRESS; without it the cleaner scans the
    machine, fails when several Ray instances run there, never frees the workers of trials ASHA
    stopped, and later trials hang. A local Ray therefore gets its dashboard on a free port and the
    variable set before it starts (the raylet, hence every worker, inherits it).
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=True, configure_logging=False)
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        configure_logging=False,
    )
    print(f"Ray dashboard: http://127.0.0.1:{port}", flush=True)


def add_run_arguments(parser: argparse.ArgumentParser, run_name: str) -> None:
    """Where a Ray Train run keeps its checkpoints, the name that resumes it, and its restarts."""
    parser.add_argument("--storage", help="Ray storage path for checkpoints; on a multi-node cluster use s3://, gs:// or NFS")
    parser.add_argument("--run-name", default=run_name, help=f"Ray run name; the same name resumes (default {run_name})")
    parser.add_argument("--max-failures", type=int, default=2, help="worker-group restarts from the latest checkpoint (default 2)")
