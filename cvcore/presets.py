"""The main job's settings and presets, and what they ask of each stage, without Ray.

`ray_jobs.pipeline` runs the stages; what a preset means for them (how many images, the tune
request, the final training) is decided here, so it is tested without starting Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from cvcore.engine import TrainConfig
from cvcore.search import DEFAULT_CONFIG, TuneRequest, fine_tuning_space, load_request

SYNTHETIC_DATA = "data/synthetic-{n}"
SHIPPED_BACKBONE = Path(__file__).resolve().parents[1] / "pretrained" / "regnetx_002-64"
"""Made by `ray_jobs.pretrain` (pretrained/README.md has the command); what the main job fine-tunes from by default."""


@dataclass(frozen=True)
class Preset:
    """How much work each stage does."""

    n_images: int  # synthetic images rendered when the data folder has none
    image_size: int  # prepared (and largest trained) input size
    tune_samples: int
    tune_epochs: int
    train_epochs: int
    train_minutes: float  # time budget of the final training (0: epochs only)
    space: dict | None = None  # overrides of the tune space (None: configs/tune.yaml as is)
    fine_tune: bool = True  # start from the shipped pretrained backbone (which then replaces the space's backbones)


PRESETS = {
    # End-to-end check in about two minutes (tests use it); the model learns little.
    "smoke": Preset(120, 32, 2, 1, 1, 0, {"backbone": "resnet10t", "image_size": 32, "batch_size": 16}, fine_tune=False),
    # The default: about 14 minutes on a 2-core machine (bench/RESULTS.md), fine-tuning the shipped backbone.
    "small": Preset(4000, 64, 4, 2, 40, 8, {"backbone": {"choice": ["resnet10t", "resnet18"]}, "image_size": 64, "batch_size": 32}),
    # For a real cluster: a wider search and a longer final training.
    "large": Preset(16000, 128, 24, 8, 60, 60),
}


@dataclass
class PipelineConfig:
    """The main job's settings (`python -m ray_jobs.pipeline`)."""

    data: str | None = field(default=None, metadata={"metavar": "DIR"})
    """data set (imgs/ + CSV); default: a synthetic one rendered into data/synthetic-N"""
    output: str = "runs/pipeline"
    """folder for every stage's output"""
    preset: str = field(default="small", metadata={"choices": sorted(PRESETS)})
    """how much work: smoke (~2 min), small (~14 min on 2 cores), large (a cluster)"""
    init_from: str | None = field(default=None, metadata={"metavar": "DIR"})
    """pretrained checkpoint every training starts from (default: the shipped backbone, except with the smoke preset, which trains from scratch)"""
    from_scratch: bool = False
    """train from random weights instead of fine-tuning"""
    port: int = 8000
    """HTTP port of the endpoint"""
    serve_forever: bool = False
    """keep the endpoint up after the run until Ctrl-C"""


def tune_request(preset: Preset, targets: list[str], init_from: str | Path | None) -> TuneRequest:
    """configs/tune.yaml with the preset's trials, epochs and space; every trial fine-tunes `init_from` if given."""
    request = load_request(DEFAULT_CONFIG)
    request = replace(
        request,
        search=replace(request.search, num_samples=preset.tune_samples, max_epochs=preset.tune_epochs, grace_period=1),
        space={**request.space, **(preset.space or {})},
        targets=list(targets),
    )
    return request if init_from is None else replace(request, space=fine_tuning_space(request.space, init_from))


def final_training(best: TrainConfig, preset: Preset) -> TrainConfig:
    """The winning trial's configuration, trained for the preset's epochs and time budget."""
    return replace(best, epochs=preset.train_epochs, max_minutes=preset.train_minutes)
