"""What runs inside the Ray Train workers of train and pretrain: the epoch runner's hooks (DDP,
all-reduce, reports with checkpoints), a worker's set-up and the training run's loop.

torch's extensions, timm and cvcore's training code load here, in the workers; `ray_jobs.common`, which Tune's
trial actors and Train's controller import, stays without them (about 4 s less per process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from cvcore import training
from cvcore.config import from_dict
from cvcore.engine import StepConfig, TrainConfig


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


def train_loop(config: dict[str, Any]) -> None:
    """One worker of a training run (`ray_jobs.common.build_trainer`'s loop config)."""
    cfg = from_dict(TrainConfig, config["train"])
    hooks, device = start_worker(cfg.step, cfg.seed, config["cpus_per_worker"])
    data = training.TrainingData(**{**config["data"], "splits": ray.get(config["data"]["splits"])})  # each node fetches the arrays
    with latest_checkpoint() as folder:
        training.train_worker(cfg, data, hooks, device, resume=folder)
