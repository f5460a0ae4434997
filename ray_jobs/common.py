"""What train, tune and pretrain share of Ray: joining the cluster, sizing workers, a Train run's
configuration, the report/all-reduce/checkpoint hooks of the epoch runner, the training run's
TorchTrainer (train and every tune trial), exporting the best checkpoint.

Output a person reads is one line per epoch (printed by rank 0). Ray Train's own INFO chatter
stays in its log files under the session's logs/train/: `ray.train.LoggingConfig(log_level="WARNING")`
keeps the `ray.train` loggers off the console, `quiet_console` the workers' other Ray INFO records
("Reporting training result ..."), configs/ray_data_logging.yaml Ray Data's (in a Ray that
`init_ray` starts), and RAY_TRAIN_ENABLE_PRINT_PATCH=0 lets a worker's print reach
the console once, as itself, instead of also through Train's logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from cvcore import training
from cvcore.config import from_dict
from cvcore.engine import StepConfig, TrainConfig
from cvcore.errors import UserError

os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # read by the driver, passed on to controller and workers
RAY_DATA_LOGGING = Path(__file__).resolve().parents[1] / "configs" / "ray_data_logging.yaml"


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster this job was submitted to (RAY_ADDRESS), or start a fresh local Ray whose
    dashboard (on a free port, in RAY_API_SERVER_ADDRESS, which every worker inherits) serves the State
    API: without it Train's placement-group cleaner scans the machine, fails when several Ray instances
    run there, never frees the workers of trials ASHA stopped, and later trials hang."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=True, configure_logging=False)
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))  # Ray Data's INFO lines to its log file only
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        configure_logging=False,
    )
    print(f"Ray dashboard: http://127.0.0.1:{port}", flush=True)


def scaling_for(num_workers: int, use_gpu: bool, cpus_per_worker: float | None, wait_for_nodes: float = 0.0) -> ScalingConfig:
    """Workers sized from the cluster; refuse what cannot be placed (Ray would retry forever). On an
    autoscaling cluster (`cluster.yaml` starts with none) `wait_for_nodes` seconds let it add nodes first."""
    if num_workers < 1:
        raise UserError(f"--num-workers must be at least 1, got {num_workers}")
    total = ray.cluster_resources()
    if cpus_per_worker is None:
        cpus_per_worker = 2 if use_gpu else max(1, int(total.get("CPU", 1) // num_workers))
    bundle = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}

    def fits(resources: dict[str, float]) -> bool:
        return all(num_workers * amount <= resources.get(name, 0) for name, amount in bundle.items())

    if not fits(total) and wait_for_nodes > 0:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[bundle] * num_workers)
        print(f"waiting up to {wait_for_nodes:g} s for the autoscaler to add nodes for {num_workers} x {bundle}", flush=True)
        deadline = time.monotonic() + wait_for_nodes
        while not fits(total := ray.cluster_resources()) and time.monotonic() < deadline:
            time.sleep(5)
    if not fits(total):
        raise UserError(
            f"{num_workers} worker(s) x {cpus_per_worker:g} CPU{' + 1 GPU' if use_gpu else ''} do not fit this cluster "
            f"({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs); lower --num-workers or --cpus-per-worker"
            + ("" if wait_for_nodes else ", or give an autoscaling cluster time with --wait-for-nodes SECONDS")
        )
    return ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker})


def run_config(name: str, storage: str, *, keep: int = 2, max_failures: int = 0, callbacks: list | None = None) -> RunConfig:
    """A Train run that keeps the best `keep` checkpoints by METRIC (and the latest, for resuming)."""
    return RunConfig(
        name=name,
        storage_path=storage,
        checkpoint_config=CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=training.METRIC, checkpoint_score_order="min"),
        failure_config=FailureConfig(max_failures=max_failures),
        logging_config=LoggingConfig(log_level="WARNING"),
        callbacks=callbacks or [],
    )


class RayTrainHooks(training.Hooks):
    """The epoch runner inside a Ray Train worker: DDP, all-reduce over the group, reports with checkpoints."""

    def __init__(self) -> None:
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()

    def all_reduce(self, totals: torch.Tensor) -> torch.Tensor:
        if self.world > 1 and dist.is_initialized():
            dist.all_reduce(totals)
        return totals

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict[str, Any], write_checkpoint) -> None:
        with tempfile.TemporaryDirectory() as folder:
            if self.rank == 0:
                write_checkpoint(Path(folder))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if self.rank == 0 else None)


def start_worker(step: StepConfig, seed: int, cpus_per_worker: float) -> tuple[RayTrainHooks, torch.device]:
    """This worker's hooks and device, set up by `training.settle_worker`."""
    quiet_console()
    hooks = RayTrainHooks()
    device = ray.train.torch.get_device()
    training.settle_worker(step, device, seed + hooks.rank, cpus_per_worker)
    return hooks, device


def quiet_console() -> None:
    """Keep Ray's INFO records off this worker's console; Train's log-file handlers still get them."""
    ray_dir = os.path.dirname(ray.__file__)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(lambda record: record.levelno >= logging.WARNING or not record.pathname.startswith(ray_dir))


def latest_checkpoint() -> contextlib.AbstractContextManager[str | None]:
    """The folder of the checkpoint a restarted worker group continues from (None on a first start)."""
    checkpoint = ray.train.get_checkpoint()
    return checkpoint.as_directory() if checkpoint else contextlib.nullcontext()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = from_dict(TrainConfig, config["train"])
    hooks, device = start_worker(cfg.step, cfg.seed, config["cpus_per_worker"])
    data = ray.get(config["data"])
    data = replace(data, splits=ray.get(data.splits))  # every node fetches the arrays from the object store
    with latest_checkpoint() as folder:
        training.train_worker(cfg, data, hooks, device, resume=folder)


def build_trainer(cfg: TrainConfig, data: training.TrainingData, scaling: ray.train.ScalingConfig, run: ray.train.RunConfig) -> TorchTrainer:
    """The TorchTrainer of one training run (`data.splits` already in the object store); Tune's trials build it too."""
    return TorchTrainer(
        train_loop_per_worker,
        # Plain values and a ref: the controller unpickles the config, and it starts faster without torch and timm.
        train_loop_config={"train": asdict(cfg), "data": ray.put(data), "cpus_per_worker": scaling.resources_per_worker["CPU"]},
        scaling_config=scaling,
        run_config=run,
    )


def export_best(result: ray.train.Result, destination: Path, **export: Any) -> dict[str, Any]:
    """Copy the best checkpoint by METRIC to `destination` (`training.export_checkpoint` options); its metrics."""
    if not result.best_checkpoints:
        raise UserError("training reported no checkpoint; nothing to export")
    checkpoint, metrics = min(result.best_checkpoints, key=lambda pair: pair[1][training.METRIC])
    with checkpoint.as_directory() as folder:
        training.export_checkpoint(folder, destination, **export)
    return metrics
