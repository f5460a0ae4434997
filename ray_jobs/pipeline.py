"""The main job: data → validate → prepare → tune → train the winner → evaluate → serve, in one command.

    python -m ray_jobs.pipeline [--data DIR] [--output runs/pipeline] [--preset small]

Stages meet only through what a user hands over: folders (data, prepared data, checkpoint), the
winning configuration (in memory), and the endpoint, built from `serve.app:build_app` as `serve run` does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cvcore.config import CONFIG_FILE, ConfigParser, run, save_config
from cvcore.data import read_dataset
from cvcore.evaluation import EvaluateConfig, evaluate, summary
from cvcore.labels import CHALLENGE_TARGETS
from cvcore.presets import PRESETS, SHIPPED_BACKBONE, SYNTHETIC_DATA, PipelineConfig, Preset, final_training, tune_request
from cvcore.synth import dataset_is_current, write_dataset
from ray_jobs import tune as tune_job
from ray_jobs.common import init_ray
from ray_jobs.prepare import prepare
from ray_jobs.train import train
from serve.edge import apply_ingress_env, wait_until_routed

SERVE_APP = "serve.app:build_app"  # what a user gives `serve run` (and serve/config.yaml's import_path)


def stage(title: str) -> None:
    print(f"\n==== {title} ====", flush=True)


def pipeline(data: Path | None, output: Path, preset: Preset, *, init_from: Path | None = None, port: int = 8000, serve_forever: bool = False) -> dict:
    """Run every stage; `init_from` (a pretrained checkpoint) makes every trial and the final run fine-tune from it."""
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    apply_ingress_env()  # Serve's HAProxy ingress with our edge rules (serve/edge.py), read where Ray starts
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")  # Serve's controller and proxies log to their files only
    init_ray()
    targets = None
    if data is None:
        data, targets = Path(SYNTHETIC_DATA.format(n=preset.n_images)).resolve(), list(CHALLENGE_TARGETS)
        if not dataset_is_current(data, preset.n_images, seed=0, extended=True):  # missing, partial or older renderer
            stage(f"synthesise {preset.n_images} images into {data}")
            write_dataset(data, preset.n_images, seed=0, extended=True, overwrite=True)

    stage(f"validate {data}")
    dataset = read_dataset(data, targets=targets, check_images="header", progress=True)
    print(dataset.report.summary())
    dataset.require_usable()

    stage("prepare (Ray Data)")
    prepare(data, prepared := output / "prepared", size=preset.image_size, targets=dataset.targets)

    stage(f"tune: {preset.tune_samples} trials x up to {preset.tune_epochs} epochs (Ray Tune + ASHA)")
    request = tune_request(preset, dataset.targets, init_from)
    _, best = tune_job.search(prepared, output / "tune", request, resume=(output / "tune" / CONFIG_FILE).is_file())

    stage("train the best configuration (Ray Train)")
    train(prepared, output / "train", final_training(best, preset), targets=dataset.targets)
    checkpoint = output / "train" / "best"

    stage("evaluate on the test split")
    metrics = evaluate(EvaluateConfig(checkpoint=str(checkpoint), data=str(prepared), out=str(output / "report")))
    print(summary(metrics))

    stage("serve (Ray Serve)")
    sample = dataset.image_path(dataset.frame[dataset.frame["split"] == "test"]["filename"].iloc[0])
    response = serve_and_ask(checkpoint, sample, port)
    print(f"POST /predict {sample.name} ->\n{json.dumps(response, indent=2)}")

    minutes = (time.perf_counter() - start) / 60
    print(f"\n==== done in {minutes:.1f} min ====")
    print("test MAE per target: " + ", ".join(f"{t} {m['mae']:.4f}" for t, m in metrics["targets"].items()))
    where = {"model": checkpoint, "report": metrics["report"], "tune": output / "tune" / tune_job.SUMMARY_FILE,
             "TensorBoard": f"tensorboard --logdir {output}", "serve it": f"serve run {SERVE_APP} checkpoint={checkpoint}"}  # fmt: skip
    print("\n".join(f"{name + ':':<13}{value}" for name, value in where.items()))
    if serve_forever:
        print(f"endpoint:    http://127.0.0.1:{port}/predict (docs at /docs); Ctrl-C stops it")
        threading.Event().wait()  # until Ctrl-C (cvcore.config.run says "interrupted")
    return {"metrics": metrics, "checkpoint": str(checkpoint), "response": response, "minutes": minutes}


def serve_and_ask(checkpoint: Path, image: Path, port: int) -> dict:
    """Deploy the checkpoint on loopback as `serve run serve.app:build_app checkpoint=DIR` does (with
    the function `serve run` builds an application with), then send it one photo, as a client would."""
    import httpx
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = call_user_app_builder_with_args_if_necessary(import_attr(SERVE_APP), {"checkpoint": str(checkpoint)})
    serve.run(app, name="carpart", route_prefix="/")
    wait_until_routed(f"http://127.0.0.1:{port}/healthz")  # the HAProxy ingress learns routes a moment after serve.run
    with image.open("rb") as f:
        reply = httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": (image.name, f, "image/jpeg")}, timeout=60)
    reply.raise_for_status()
    return reply.json()


def main(argv: Sequence[str] | None = None) -> int:
    parser = ConfigParser(
        prog="python -m ray_jobs.pipeline",
        description="The whole lifecycle in one command: (synthesise) → validate → prepare → tune → train the best "
        "configuration → evaluate on the test split → serve, then print where everything is.",
    )
    parser.add_config(PipelineConfig, "pipeline")
    cfg = parser.parse_args(argv).pipeline
    if cfg.from_scratch and cfg.init_from:
        parser.error("--from-scratch and --init-from contradict each other")
    preset = PRESETS[cfg.preset]
    init_from = Path(cfg.init_from) if cfg.init_from else SHIPPED_BACKBONE if preset.fine_tune and not cfg.from_scratch else None
    save_config(Path(cfg.output) / CONFIG_FILE, cfg)
    pipeline(Path(cfg.data) if cfg.data else None, Path(cfg.output), preset, init_from=init_from, port=cfg.port, serve_forever=cfg.serve_forever)
    return 0


if __name__ == "__main__":
    run(main)
