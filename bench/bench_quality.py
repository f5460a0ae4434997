"""Quality within a CPU budget: render a synthetic set, train from scratch for a fixed time, score the test split.

    python bench/bench_quality.py --n 16000 --minutes 20 [--backbone resnet18] [--image-size 64] [--out runs/quality]

Rendering and training times are reported separately; the all-zeros baseline sits beside the model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cvcore import engine
from cvcore.synth import CHALLENGE_TARGETS, write_dataset
from ray_jobs.common import init_ray
from cvcore.evaluation import EvaluateConfig, evaluate
from ray_jobs.prepare import prepare
from ray_jobs.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16000, help="images to render")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--aux", default="all", help="auxiliary columns: all, or none")
    parser.add_argument("--seed", type=int, default=0, help="renderer seed")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = parser.parse_args()

    init_ray()
    data = args.out / f"data-{args.n}-seed{args.seed}"
    render_s = 0.0
    if not (data / "car_imgs_4000.csv").is_file():
        start = time.perf_counter()
        write_dataset(data, args.n, seed=args.seed, extended=True)
        render_s = time.perf_counter() - start
    run = args.out / f"{args.backbone}-{args.image_size}px-{args.minutes:g}min-{args.n}-aux_{args.aux}"
    prepared_dir = args.out / f"prepared-{args.n}-seed{args.seed}-{args.image_size}"
    start = time.perf_counter()
    manifest = prepare(data, prepared_dir, size=args.image_size, targets=list(CHALLENGE_TARGETS))
    prepare_s = time.perf_counter() - start
    cfg = engine.TrainConfig(
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=args.batch_size,
        lr=args.lr,
        epochs=200,
        patience=200,
        max_minutes=args.minutes,
        aux_columns="all" if args.aux == "all" else [],
    )
    start = time.perf_counter()
    result = train(prepared_dir, run, cfg, targets=list(CHALLENGE_TARGETS))
    train_s = time.perf_counter() - start
    metrics = evaluate(EvaluateConfig(str(run / "best"), str(prepared_dir), str(run / "report")))

    epochs = len(result["history"])
    print(f"\nrendered {args.n} images in {render_s:.0f} s (0 = reused), prepared {sum(manifest['counts'].values())} in {prepare_s:.0f} s")
    print(f"trained {args.backbone} at {args.image_size} px for {epochs} epochs in {train_s / 60:.1f} min (budget {args.minutes:g} min of training)\n")
    print("| target | test MAE | test R2 | within 0.1 | all-zeros MAE | n |")
    print("|---|---:|---:|---:|---:|---:|")
    for target, values in metrics["targets"].items():
        zero = metrics["baseline_all_zeros"]["targets"][target]
        print(f"| {target} | {values['mae']:.4f} | {values['r2']:.3f} | {values['within_0.1']:.1%} | {zero['mae']:.4f} | {metrics['n']} |")
    (run / "bench_quality.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "render_s": render_s, "train_s": train_s, "epochs": epochs, "test": metrics}, indent=2))


if __name__ == "__main__":
    main()
