"""Shared command-line plumbing: every entry point runs through `run` (cvcore.config, with the argparse
count types); `init_ray` joins or starts the Ray cluster."""

from __future__ import annotations

import argparse
import os
import socket

from cvcore.config import integer, non_negative_int, positive_int, run

__all__ = ["add_run_arguments", "init_ray", "integer", "non_negative_int", "positive_int", "run"]


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
