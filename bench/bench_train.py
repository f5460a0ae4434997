"""Training throughput: Ray Train (1 worker x 2 CPUs, 2 x 1) against a plain PyTorch loop, in one run.

Also the ingest path alone (batches + augmentation, no model), which must outrun the model by 5x.

    python bench/bench_train.py --data PREPARED_OR_RAW_DIR [--backbone resnet18] [--image-size 64] [--epochs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cvcore import engine
from cvcore import prepared
from cvcore.image import resize_images
from cvcore.model import ModelSpec, build_model
from ray_jobs import prepare as prepare_job
from ray_jobs import train as train_job
from ray_jobs.common import init_ray


def plain_loop(images, labels, aspect, cfg: engine.TrainConfig, epochs: int, threads: int) -> float:
    """The same epoch function, no Ray: images/s of the last epochs (the first warms up)."""
    torch.set_num_threads(threads)
    spec = ModelSpec(cfg.backbone, [f"target_{i}" for i in range(labels.shape[1])], cfg.image_size)
    model = build_model(spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loader = engine.ArrayLoader(images, labels, aspect, cfg.batch_size, shuffle=True)
    scheduler = engine.warmup_cosine(optimizer, len(loader), epochs * len(loader))
    plan = engine.side_swap_plan(spec.outputs)
    rates = []
    for _ in range(epochs):
        stats = engine.train_one_epoch(model, loader, optimizer, scheduler, torch.ones(labels.shape[1]), plan, cfg.augment, cfg.step, torch.device("cpu"), torch.Generator())
        rates.append(stats["images_per_s"])
    return float(np.mean(rates[1:] or rates))


def ingest_only(images, labels, aspect, cfg: engine.TrainConfig) -> float:
    loader = engine.ArrayLoader(images, labels, aspect, cfg.batch_size, shuffle=True)
    generator = torch.Generator()
    start, seen = time.perf_counter(), 0
    for batch, _, batch_aspect in loader:
        x = engine.augment(batch.permute(0, 3, 1, 2), batch_aspect, cfg.augment, generator).images
        seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    cfg = engine.TrainConfig(backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs, aux_columns=[])
    init_ray()
    data = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        if not prepared.is_prepared(data):
            prepare_job.prepare(data, Path(tmp) / "prepared", size=args.image_size)
            data = Path(tmp) / "prepared"
        manifest = prepared.read_manifest(data)
        images, labels, aspect, _ = prepared.load_split(data, "train", manifest["targets"])
        images = resize_images(images, args.image_size)

        rows = [("ingest only (batches + augmentation)", ingest_only(images, labels, aspect, cfg))]
        rows.append(("plain PyTorch loop, 2 threads", plain_loop(images, labels, aspect, cfg, args.epochs, threads=2)))
        for workers, cpus in ((1, 2), (2, 1)):
            result = train_job.train(data, Path(tmp) / f"ray_{workers}x{cpus}", cfg, num_workers=workers, cpus_per_worker=cpus)
            rates = [h["images_per_s"] for h in result["history"]]
            rows.append((f"Ray Train {workers} worker(s) x {cpus} CPU", float(np.mean(rates[1:] or rates))))

    plain = rows[1][1]
    print(f"\n{args.backbone} at {args.image_size} px, batch {args.batch_size}, {len(images)} training images, {args.epochs} epochs (first excluded)\n")
    print("| path | images/s | vs plain loop |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / plain:.2f}x |")


if __name__ == "__main__":
    main()
