"""The main job: data → validate → prepare → tune → train the winner → evaluate → serve, in one command.

    python -m ray_jobs.pipeline [--data DIR] [--output runs/pipeline] [--preset small]

With no `--data`, a synthetic data set in the customer's format is rendered into data/synthetic-N
(once; later runs reuse it). Every training fine-tunes the shipped pretrained backbone unless
`--from-scratch` (the smoke preset starts from scratch unless `--init-from` is given). The small preset took 13.5 minutes
on 2 cores (test MAE 0.050 hood, 0.033 back-left door).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cvcore import engine
from cvcore.config import from_dict, load_yaml
from cvcore.data import read_dataset
from cvcore.synth import CHALLENGE_TARGETS, write_dataset
from ray_jobs import tune as tune_job
from ray_jobs.cli import init_ray, run
from ray_jobs.evaluate import evaluate
from ray_jobs.prepare import prepare
from ray_jobs.pretrain import SHIPPED_BACKBONE
from ray_jobs.train import train
from serve.edge import apply_ingress_env

SYNTHETIC_DATA = "data/synthetic-{n}"
DEFAULT_OUTPUT = Path("runs/pipeline")


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


def stage(title: str) -> float:
    print(f"\n==== {title} ====", flush=True)
    return time.perf_counter()


def pipeline(
    data: Path | None, output: Path, preset: Preset, *, init_from: Path | None = None, port: int = 8000, serve_forever: bool = False
) -> dict:
    """Run every stage; `init_from` (a pretrained checkpoint) makes every trial and the final run fine-tune from it."""
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    apply_ingress_env()  # Serve's HAProxy ingress with our edge rules (serve/edge.py), read where Ray starts
    init_ray()
    targets = None
    if data is None:
        data = Path(SYNTHETIC_DATA.format(n=preset.n_images)).resolve()
        targets = list(CHALLENGE_TARGETS)
        if not (data / "car_imgs_4000.csv").is_file():
            stage(f"synthesise {preset.n_images} images into {data}")
            write_dataset(data, preset.n_images, seed=0, extended=True)

    stage(f"validate {data}")
    dataset = read_dataset(data, targets=targets, check_images="header", progress=True)
    print(dataset.report.summary())
    dataset.require_usable()

    stage("prepare (Ray Data)")
    prepared = output / "prepared"
    prepare(data, prepared, size=preset.image_size, targets=dataset.targets)

    stage(f"tune: {preset.tune_samples} trials x up to {preset.tune_epochs} epochs (Ray Tune + ASHA)")
    request = tune_job.load_request(tune_job.DEFAULT_CONFIG)
    request = replace(
        request,
        search=replace(request.search, num_samples=preset.tune_samples, max_epochs=preset.tune_epochs, grace_period=1),
        space={**request.space, **(preset.space or {})},
        targets=dataset.targets,
    )
    if init_from is not None:
        request = replace(request, space=tune_job.fine_tuning_space(request.space, init_from))
    tune_job.search(prepared, output / "tune", request, resume=(output / "tune" / tune_job.SETTINGS_FILE).is_file())

    stage("train the best configuration (Ray Train)")
    best = load_yaml(output / "tune" / tune_job.BEST_CONFIG_FILE)
    cfg = replace(from_dict(engine.TrainConfig, best), epochs=preset.train_epochs, max_minutes=preset.train_minutes)
    train(prepared, output / "train", cfg, targets=dataset.targets)
    checkpoint = output / "train" / "best"

    stage("evaluate on the test split")
    metrics = evaluate(checkpoint, prepared, output / "report", split="test")

    stage("serve (Ray Serve)")
    sample = dataset.image_path(dataset.frame[dataset.frame["split"] == "test"]["filename"].iloc[0])
    response = serve_and_ask(checkpoint, sample, port)
    print(f"POST /predict {sample.name} ->\n{json.dumps(response, indent=2)}")

    minutes = (time.perf_counter() - start) / 60
    print(f"\n==== done in {minutes:.1f} min ====")
    print("test MAE per target: " + ", ".join(f"{t} {m['mae']:.4f}" for t, m in metrics["targets"].items()))
    print(f"model:       {checkpoint}")
    print(f"report:      {output / 'report' / 'report.html'}")
    print(f"tune:        {output / 'tune' / tune_job.SUMMARY_FILE}")
    print(f"TensorBoard: tensorboard --logdir {output}")
    print(f"serve it:    serve run serve.app:build_app checkpoint={checkpoint}")
    if serve_forever:
        print(f"endpoint:    http://127.0.0.1:{port}/predict (docs at /docs); Ctrl-C stops it")
        _wait_forever()
    return {"metrics": metrics, "checkpoint": str(checkpoint), "response": response, "minutes": minutes}


def serve_and_ask(checkpoint: Path, image: Path, port: int) -> dict:
    """Deploy the checkpoint on loopback and send it one photo, as a client would."""
    import httpx
    from ray import serve

    from serve.app import AppArgs, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(AppArgs(checkpoint=str(checkpoint))), name="carpart", route_prefix="/")
    with image.open("rb") as f:
        reply = httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": (image.name, f, "image/jpeg")}, timeout=60)
    reply.raise_for_status()
    return reply.json()


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.pipeline",
        description="The whole lifecycle in one command: (synthesise) → validate → prepare → tune → train the best "
        "configuration → evaluate on the test split → serve, then print where everything is.",
    )
    parser.add_argument("--data", type=Path, help=f"data set (imgs/ + CSV); default: a synthetic one rendered into {SYNTHETIC_DATA.format(n='N')}")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"folder for every stage's output (default {DEFAULT_OUTPUT})")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small", help="how much work: smoke (~2 min), small (default, ~14 min on 2 cores), large")
    parser.add_argument("--init-from", type=Path, metavar="DIR",
                        help=f"pretrained checkpoint every training starts from (default: the shipped {SHIPPED_BACKBONE.name}, "
                        "except with the smoke preset, which trains from scratch)")
    parser.add_argument("--from-scratch", action="store_true", help="train from random weights instead of fine-tuning")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the endpoint (default 8000)")
    parser.add_argument("--serve-forever", action="store_true", help="keep the endpoint up after the run until Ctrl-C")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    if args.from_scratch and args.init_from:
        parser.error("--from-scratch and --init-from contradict each other")
    init_from = args.init_from or (SHIPPED_BACKBONE if preset.fine_tune and not args.from_scratch else None)
    pipeline(args.data, args.output, preset, init_from=init_from, port=args.port, serve_forever=args.serve_forever)
    return 0


if __name__ == "__main__":
    run(main)
