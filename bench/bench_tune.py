"""ASHA against no early stopping (FIFO) on the same random search: trial-epochs, wall time, best val MAE.

    python bench/bench_tune.py [--n 400] [--trials 12] [--epochs 12] [--reduction-factor 4]
                               [--config configs/tune.yaml] [--backbone resnet10t] [--image-size 32] [--out DIR]

Renders N synthetic images (kept in OUT/data-N for the next run), prepares them once, then runs
ray_jobs.tune twice with the same space and seed, hence the same trials: with ASHA, then with
FIFO. Only the scheduler stops trials early (the loop's own patience is set beyond the epochs), so
FIFO trains every trial fully. --backbone and --image-size pin those parameters of the space for a
quick run. Goal: ASHA spends at most 35 % of FIFO's trial-epochs and finds a best val MAE within
5 % of FIFO's.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

from cvcore import search as search_grammar
from cvcore.synth import CHALLENGE_TARGETS, write_dataset
from ray_jobs import prepare as prepare_job
from ray_jobs import tune
from ray_jobs.common import init_ray

EPOCH_SHARE_GOAL = 0.35
MAE_GAP_GOAL = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="synthetic images (default 400)")
    parser.add_argument("--trials", type=int, default=12, help="trials per search (default 12)")
    parser.add_argument("--epochs", type=int, default=12, help="max epochs per trial (default 12)")
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="random-search seed, the same for both searches")
    parser.add_argument("--config", default=str(search_grammar.DEFAULT_CONFIG), help="search space YAML (default configs/tune.yaml)")
    parser.add_argument("--backbone", help="pin the backbone (a quick run: resnet10t)")
    parser.add_argument("--image-size", type=int, help="pin the input size (a quick run: 32)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tune"))
    args = parser.parse_args()

    out = args.out.resolve()
    data = out / f"data-{args.n}"
    if not (data / "car_imgs_4000.csv").is_file():
        write_dataset(data, args.n, seed=0, progress=False)
    request = search_grammar.load_request(args.config)
    pinned = {k: v for k, v in {"backbone": args.backbone, "image_size": args.image_size}.items() if v is not None}
    space = {**request.space, **pinned, "patience": args.epochs}  # only the scheduler stops trials early
    search = replace(
        request.search, num_samples=args.trials, max_epochs=args.epochs, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, seed=args.seed,
    )  # fmt: skip
    init_ray(num_cpus=args.num_cpus)
    size = search_grammar.largest(space, "image_size")
    prepared = out / f"prepared-{args.n}-{size}"
    prepare_job.prepare(data, prepared, size=size, targets=list(CHALLENGE_TARGETS))

    rows = {}
    for scheduler in ("asha", "fifo"):
        output = out / scheduler
        shutil.rmtree(output, ignore_errors=True)
        start = time.perf_counter()
        summary, _ = tune.search(prepared, output, replace(request, search=replace(search, scheduler=scheduler), space=space))
        rows[scheduler] = {
            "trial_epochs": int(summary["last_epoch"].sum()),
            "seconds": time.perf_counter() - start,
            "best": float(summary["best_val_mae"].min()),
            "stopped": int(summary["stopped_early"].sum()),
        }

    asha, fifo = rows["asha"], rows["fifo"]
    share = asha["trial_epochs"] / fifo["trial_epochs"]
    gap = asha["best"] / fifo["best"] - 1
    print(
        f"\n{args.trials} trials x up to {args.epochs} epochs on {args.n} synthetic images, seed {args.seed}; "
        f"ASHA grace {args.grace_period}, reduction {args.reduction_factor}; space {args.config}"
        + (f" with {pinned}" if pinned else "")
        + "\n"
    )
    print("| search | trial-epochs | trials stopped early | wall time | best val MAE |")
    print("|---|---:|---:|---:|---:|")
    print(f"| FIFO (no early stopping) | {fifo['trial_epochs']} | {fifo['stopped']} | {fifo['seconds']:.0f} s | {fifo['best']:.4f} |")
    print(
        f"| ASHA | {asha['trial_epochs']} ({share:.0%}) | {asha['stopped']} | {asha['seconds']:.0f} s "
        f"({asha['seconds'] / fifo['seconds']:.0%}) | {asha['best']:.4f} ({gap:+.1%}) |"
    )
    print(
        f"\nASHA trial-epochs {share:.0%} of FIFO's (goal <= {EPOCH_SHARE_GOAL:.0%}): {'met' if share <= EPOCH_SHARE_GOAL else 'missed'}; "
        f"best val MAE {gap:+.1%} vs FIFO's (goal within {MAE_GAP_GOAL:.0%}): {'met' if gap <= MAE_GAP_GOAL else 'missed'}"
    )


if __name__ == "__main__":
    main()
