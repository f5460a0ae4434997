"""Fine-tuned from the shipped pretrained backbone against from scratch, same budget, side by side.

    python bench/bench_pretrain.py [--checkpoint pretrained/regnetx_002-64] [--n 4000] [--minutes 10]
                                   [--seed 7] [--distribution shifted] [--out runs/bench_pretrain]
    python bench/bench_pretrain.py --curve runs/pretrain-regnetx002     # the pretraining's own curve

Renders a customer-format data set (imgs/ + the two challenge columns, nothing else) that the
pretraining never saw: another seed and another scene distribution (`--distribution shifted`:
other lenses, elevations, framing, paints, light, compression). Then trains, at the same time as
concurrent `python -m ray_jobs.train` processes with 1 CPU each (so machine noise hits all alike)
and the same time budget: (1) fine-tuned from the checkpoint, (2) from scratch with the same
backbone, (3) from scratch with the training default (resnet18). Each best checkpoint is scored on
the test split. Goal: fine-tuned test MAE <= 0.06 per target and <= half of the from-scratch MAE.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from cvcore.engine import TrainConfig  # noqa: E402
from cvcore.model import read_meta  # noqa: E402
from cvcore.presets import SHIPPED_BACKBONE as SHIPPED  # noqa: E402
from cvcore.synth import CHALLENGE_TARGETS, write_dataset  # noqa: E402
from ray_jobs.common import init_ray  # noqa: E402
from cvcore.evaluation import EvaluateConfig, evaluate  # noqa: E402
from ray_jobs.prepare import prepare  # noqa: E402

MAE_GOAL = 0.06


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED, help="pretrained checkpoint (default: the shipped one)")
    parser.add_argument("--n", type=int, default=4000, help="images in the customer-format set (default 4000)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of every run (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="renderer seed of the customer set (default 7)")
    parser.add_argument("--distribution", default="shifted", help="scene distribution of the customer set (default shifted)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_pretrain"))
    parser.add_argument("--curve", type=Path, metavar="PRETRAIN_OUTPUT",
                        help="only print the pretraining curve (held-out MAE against images seen) of a ray_jobs.pretrain output")
    args = parser.parse_args()
    if args.curve:
        print_curve(args.curve)
        return

    out = args.out.resolve()
    meta = read_meta(args.checkpoint)
    data = out / f"data-{args.distribution}-{args.n}-seed{args.seed}"
    if not (data / "car_imgs_4000.csv").is_file():
        write_dataset(data, args.n, seed=args.seed, distribution=args.distribution)
    size = max(meta["image_size"], TrainConfig().image_size)
    prepared = out / f"prepared-{args.distribution}-{args.n}-seed{args.seed}-{size}"
    init_ray()
    prepare(data, prepared, size=size, targets=list(CHALLENGE_TARGETS))
    import ray

    ray.shutdown()  # every run starts its own Ray, as a user's job would

    runs = {
        f"fine-tuned from {args.checkpoint.name}": ["--init-from", str(args.checkpoint.resolve())],
        f"from scratch, {meta['backbone']}": ["--backbone", meta["backbone"], "--image-size", str(meta["image_size"])],
        f"from scratch, {TrainConfig().backbone} (training default)": [],
    }
    common = ["--data", str(prepared), "--max-minutes", str(args.minutes), "--epochs", "200", "--patience", "200", "--cpus-per-worker", "1"]
    processes = {}
    started = time.perf_counter()
    for i, (name, extra) in enumerate(runs.items()):
        run_dir = out / f"run{i}"
        log = open(out / f"run{i}.log", "w")
        command = [sys.executable, "-m", "ray_jobs.train", "--output", str(run_dir), *common, *extra]
        processes[name] = (subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), run_dir)
    for name, (process, run_dir) in processes.items():
        if process.wait() != 0:
            raise SystemExit(f"{name} failed; see {run_dir}.log")
    wall = time.perf_counter() - started

    results = {name: evaluate(EvaluateConfig(str(run_dir / "best"), str(prepared), str(run_dir / "report"))) for name, (_, run_dir) in processes.items()}
    targets = list(CHALLENGE_TARGETS)
    scratch = min(
        (r for name, r in results.items() if name.startswith("from scratch")),
        key=lambda r: r["mean"]["mae"],
    )
    print(
        f"\n{args.n} customer-format images ({args.distribution} distribution, seed {args.seed}; test split n={scratch['n']}), "
        f"{len(runs)} runs side by side with 1 CPU each and {args.minutes:g} min of training each ({wall / 60:.1f} min wall)\n"
    )
    print("| run | epochs | " + " | ".join(f"test MAE {t.removeprefix('perspective_score_')}" for t in targets) + " | R2 (mean) |")
    print("|---|---:|" + "---:|" * len(targets) + "---:|")
    for name, metrics in results.items():
        epochs = sum(1 for _ in open(processes[name][1] / "metrics.jsonl"))
        cells = " | ".join(f"{metrics['targets'][t]['mae']:.4f}" for t in targets)
        print(f"| {name} | {epochs} | {cells} | {metrics['mean']['r2']:.3f} |")
    zeros = results[next(iter(results))]["baseline_all_zeros"]["targets"]
    print("| all zeros | | " + " | ".join(f"{zeros[t]['mae']:.4f}" for t in targets) + " | |")
    tuned = results[next(iter(results))]
    verdicts = []
    for t in targets:
        mae, best_scratch = tuned["targets"][t]["mae"], scratch["targets"][t]["mae"]
        ok = mae <= MAE_GOAL and mae <= best_scratch / 2
        verdicts.append(f"{t}: {mae:.4f} = {mae / best_scratch:.0%} of the best from-scratch run ({'met' if ok else 'missed'})")
    print(f"\ngoal: fine-tuned test MAE <= {MAE_GOAL} and <= half of from scratch, per target\n" + "\n".join(verdicts))
    (out / "bench_pretrain.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


def print_curve(output: Path) -> None:
    """The pretraining's own curve from its metrics.jsonl."""
    from cvcore.runlog import read_history

    history = read_history(output)
    if not history:
        raise SystemExit(f"no metrics.jsonl in {output}")
    print("| images seen | minutes | val MAE hood | val MAE back-left door | val MAE all 23 parts | images/s | waiting for renders |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for h in history:
        print(
            f"| {h['images_seen']} | {h['train_minutes']:.1f} | {h['val_mae_perspective_score_hood']:.4f} | "
            f"{h['val_mae_perspective_score_backdoor_left']:.4f} | {h['val_mae_all_parts']:.4f} | {h['images_per_s']:.0f} | {h['data_wait_share']:.0%} |"
        )


if __name__ == "__main__":
    main()
