"""What train, tune and pretrain share of Ray: joining the cluster, sizing workers, a Train run's
configuration, the training run's TorchTrainer, Tune's trial (a training run), exporting the best checkpoint.

Tune's trial actors and Train's controller import this module, so it imports neither timm nor torch's
extensions nor cvcore's training code: what runs in the workers is `ray_jobs.worker`. How the console
stays at one line per epoch: docs/ARCHITECTURE.md, "Data flow of a training run".
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from cvcore.errors import UserError
from cvcore.metrics import METRIC

TRAIN_RUN = "train"  # each Tune trial's Train run, inside the trial's folder


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
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # no preemptible nodes here: an actor and a warning less per run
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, configure_logging=False)
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
        name=name, storage_path=storage,
        checkpoint_config=CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=METRIC, checkpoint_score_order="min"),
        failure_config=FailureConfig(max_failures=max_failures),
        logging_config=LoggingConfig(log_level="WARNING"),
        callbacks=callbacks or [],
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """A training run's Train loop. Its module (torch's extensions, timm, cvcore's training) is imported
    here, in the worker: Train's controller and Tune's trial actors unpickle this function without it."""
    from ray_jobs import worker

    worker.train_loop(config)


def share(data: Any) -> dict[str, Any]:
    """A `cvcore.training.TrainingData` as a Train run's loop config carries it: the arrays in the object
    store, the rest plain values, so only the workers import cvcore's training code to rebuild it."""
    return {**vars(data), "splits": ray.put(data.splits)}


def build_trainer(config: dict[str, Any], data: dict[str, Any], scaling: ScalingConfig, run: RunConfig) -> TorchTrainer:
    """The TorchTrainer of one training run (train and every tune trial): `config` is a `TrainConfig` as a
    dict (validated in the workers), `data` the training data as `share` makes it."""
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config, "data": data, "cpus_per_worker": scaling.resources_per_worker["CPU"]},
        scaling_config=scaling,
        run_config=run,
    )


def run_trial(config: dict[str, Any], *, data: dict[str, Any], scaling: ScalingConfig, experiment_path: str) -> None:
    """One Tune trial (`ray_jobs.tune`): a training run whose every epoch's report is relayed to Tune. The
    Train run has a fixed place in the trial's folder, so a trial restarted by --resume continues from its checkpoint."""
    storage = f"{experiment_path}/{tune.get_context().get_trial_id()}"
    replay_latest_epoch(f"{storage}/{TRAIN_RUN}")
    build_trainer(config, data, scaling, run_config(TRAIN_RUN, storage, keep=1, callbacks=[TuneReportCallback()])).fit()


def replay_latest_epoch(train_run: str) -> None:
    """When a trial restarted by --resume finds its Train run, report the run's latest checkpointed epoch
    to Tune once more (marked `replayed`; a first start finds none): a killed driver's trials go on training
    for a moment, so an epoch can be checkpointed whose report never reached Tune, and the continued run
    starts after it. A repeated epoch changes neither ASHA's decisions (a rung records a trial once) nor the summary."""
    try:
        latest = ray.train.Result.from_path(train_run)
    except RuntimeError:  # a first start: no run snapshot there yet
        return
    if latest.checkpoint is not None and latest.metrics:
        tune.report({**latest.metrics, "replayed": True})


def export_best(result: ray.train.Result, destination: Path, **export: Any) -> dict[str, Any]:
    """Copy the best checkpoint by METRIC to `destination` (`cvcore.training.export_checkpoint` options); its metrics."""
    if not result.best_checkpoints:
        raise UserError("training reported no checkpoint; nothing to export")
    from cvcore.training import export_checkpoint  # loads the model with timm; only drivers export

    checkpoint, metrics = min(result.best_checkpoints, key=lambda pair: pair[1][METRIC])
    with checkpoint.as_directory() as folder:
        export_checkpoint(folder, destination, **export)
    return metrics
