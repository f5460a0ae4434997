"""Transfer benchmark: the shipped backbone and the main job on our renders and on a renderer we never train on.

    python bench/bench_transfer.py [--work runs/bench-transfer] [--n 4000] [--seed 2026] [--skip-pipeline]

Side by side on two data sets in the customer's format: the default renderer's (`data/synthetic-4000`,
rendered by `python -m ray_jobs.synth` when missing) and the held-out generator's (`bench/heldout`,
structurally different cars, shading, backgrounds and camera; rendered into WORK when missing):

(a) zero-shot: `python -m ray_jobs.evaluate` of the shipped backbone on each test split;
(b) the main job, `python -m ray_jobs.pipeline --data DIR` (tune + fine-tune), one data set after the other;
(c) from each, the accept/retake decisions at the serving threshold against the true labels:
    agreement, false retakes (share of truly good photos sent back), false accepts (share of bad ones accepted).

Prints a markdown table, writes it (and the numbers as JSON) into WORK, and draws both contact sheets.
Results already in WORK are reused, so an interrupted run continues where it stopped, and `--only
default` (or `heldout`) runs one data set's stages ahead of a full run that then reuses them. Each stage's
output goes to a log file in WORK; this script prints the stages, their times and the table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from PIL import Image

from cvcore.data import DEFAULT_CSV
from cvcore.labels import CHALLENGE_TARGETS, part_of
from cvcore.report import dataset_contact_sheet

from bench.heldout.dataset import label_stats, write_dataset

REPO = Path(__file__).resolve().parent.parent
SHEET_BYTES = 300_000  # contact sheets are committed: keep each under this


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_logged(command: list[str], log_path: Path) -> float:
    """Run a command with its output in `log_path`; minutes taken. A failure stops the benchmark with the log's tail."""
    log(f"$ {' '.join(command)}  (log: {log_path})")
    start = time.perf_counter()
    with log_path.open("w") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=os.environ.copy())
    minutes = (time.perf_counter() - start) / 60
    if code != 0:
        tail = log_path.read_text().splitlines()[-25:]
        sys.exit(f"failed ({code}) after {minutes:.1f} min: {' '.join(command)}\n" + "\n".join(tail))
    log(f"done in {minutes:.1f} min")
    return minutes


def free_port() -> int:
    """A free local port for the main job's endpoint (8000 may be taken on a shared machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_rows(data: Path, n: int) -> bool:
    csv = data / DEFAULT_CSV
    return csv.is_file() and len(pd.read_csv(csv)) == n


def small_sheet(data: Path, out_png: Path) -> None:
    """A contact sheet of the data set, palette-quantised so that it stays small enough to commit."""
    frame = pd.read_csv(data / DEFAULT_CSV)
    dataset_contact_sheet(data, frame, list(CHALLENGE_TARGETS), out_png, n=18, seed=0, columns=6, thumb=170)
    colours = 256
    while True:
        Image.open(out_png).convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT).save(out_png, optimize=True)
        if out_png.stat().st_size <= SHEET_BYTES or colours <= 32:
            break
        colours //= 2
    log(f"contact sheet {out_png} ({out_png.stat().st_size / 1000:.0f} kB)")


def metrics_of(report_dir: Path) -> dict:
    return json.loads((report_dir / "metrics.json").read_text())


def fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} %" if percent else f"{value:.3f}"


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per measure, a hood / back-left door pair of columns per data set."""
    names = list(results)
    header = "| measure | " + " | ".join(f"{name}: {' / '.join(part_of(t) for t in CHALLENGE_TARGETS)}" for name in names) + " |"
    rows = [header, "|---" * (len(names) + 1) + "|"]

    def row(label: str, cell) -> None:
        rows.append(f"| {label} | " + " | ".join(" / ".join(cell(results[name], t) for t in CHALLENGE_TARGETS) for name in names) + " |")

    for stage, title in (("zero_shot", "shipped backbone, zero-shot"), ("main_job", "main job (tune + fine-tune)")):
        if not all(stage in r for r in results.values()):
            continue
        row(f"{title}: test MAE", lambda r, t: fmt(r[stage]["targets"][t]["mae"]))
        row(f"{title}: R²", lambda r, t: fmt(r[stage]["targets"][t]["r2"]))
        row(f"{title}: accept/retake agreement", lambda r, t: fmt(r[stage]["decisions"]["targets"][t]["agreement"], True))
        row(f"{title}: false retakes (of good photos)", lambda r, t: fmt(r[stage]["decisions"]["targets"][t]["false_retake_rate"], True))
        row(f"{title}: false accepts (of bad photos)", lambda r, t: fmt(r[stage]["decisions"]["targets"][t]["false_accept_rate"], True))
    any_stage = next(iter(results.values()))
    stage = "zero_shot" if "zero_shot" in any_stage else "main_job"
    row("all zeros: test MAE", lambda r, t: fmt(r[stage]["baseline_all_zeros"]["targets"][t]["mae"]))
    row("test photos; truly good (≥ threshold)", lambda r, t: f"{r[stage]['n']}; {r[stage]['decisions']['targets'][t]['n_good']}")
    if all("main_job_minutes" in r for r in results.values()):
        rows.append("| main job minutes | " + " | ".join(f"{results[n]['main_job_minutes']:.1f}" for n in names) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--work", type=Path, default=Path("runs/bench-transfer"), help="folder for data, runs, logs and results (default runs/bench-transfer)")
    parser.add_argument("--default-data", type=Path, default=Path("data/synthetic-4000"), help="the default renderer's data set (rendered when missing)")
    parser.add_argument("--n", type=int, default=4000, help="photos per data set (default 4000)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the held-out data set (default 2026)")
    parser.add_argument("--workers", type=int, default=None, help="processes rendering the held-out data (default: one per core)")
    parser.add_argument("--checkpoint", type=Path, default=Path("pretrained/regnetx_002-64"), help="the shipped backbone to score zero-shot")
    parser.add_argument("--skip-pipeline", action="store_true", help="only data, contact sheets and the zero-shot scores")
    parser.add_argument("--only", choices=("default", "heldout"), help="run one data set's stages (a later full run reuses them)")
    parser.add_argument("--sheets", type=Path, default=Path("bench"), help="where the two contact sheet PNGs go (default bench/)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    data = {"default": ("default renderer", args.default_data.resolve()),
            "heldout": ("held-out generator", work / f"heldout-{args.n}-seed{args.seed}")}  # fmt: skip
    if args.only:
        data = {args.only: data[args.only]}

    if "default" in data and not has_rows(data["default"][1], args.n):
        synth = [python, "-m", "ray_jobs.synth", "--out", str(data["default"][1]), "--n", str(args.n)]
        run_logged(synth, work / "synth_default.log")
    if "heldout" in data and not has_rows(data["heldout"][1], args.n):
        heldout = data["heldout"][1]
        log(f"rendering {args.n} held-out photos (seed {args.seed}) into {heldout}")
        start = time.perf_counter()
        write_dataset(heldout, args.n, seed=args.seed, workers=args.workers, overwrite=True)
        seconds = time.perf_counter() - start
        log(f"held-out data in {seconds / 60:.1f} min ({args.n / seconds:.2f} images/s)")
    for slug, (name, folder) in data.items():
        log(f"{name}: {folder}\n" + label_stats(pd.read_csv(folder / DEFAULT_CSV)))
        small_sheet(folder, args.sheets / f"transfer_{slug}_sheet.png")

    results: dict[str, dict] = {}
    for slug, (name, folder) in data.items():
        zero_shot = work / f"{slug}-zero-shot"
        if not (zero_shot / "metrics.json").is_file():
            run_logged([python, "-m", "ray_jobs.evaluate", "--checkpoint", str(args.checkpoint), "--data", str(folder), "--out", str(zero_shot)],
                       work / f"{slug}-zero-shot.log")
        results[name] = {"data": str(folder), "zero_shot": metrics_of(zero_shot)}
    if not args.skip_pipeline:
        for slug, (name, folder) in data.items():  # one after the other: the main job uses every core
            output = work / f"{slug}-main-job"
            minutes_file = output / "bench_minutes.txt"
            if not (output / "report" / "metrics.json").is_file():
                command = [python, "-m", "ray_jobs.pipeline", "--data", str(folder), "--output", str(output), "--port", str(free_port())]
                minutes = run_logged(command, work / f"{slug}-main-job.log")
                minutes_file.write_text(f"{minutes:.2f}\n")
            results[name]["main_job"] = metrics_of(output / "report")
            if minutes_file.is_file():
                results[name]["main_job_minutes"] = float(minutes_file.read_text())

    text = table(results)
    (work / "transfer.md").write_text(text + "\n")
    (work / "transfer.json").write_text(json.dumps(results, indent=2))
    print("\n" + text)
    log(f"table: {work / 'transfer.md'}; every number: {work / 'transfer.json'}")


if __name__ == "__main__":
    main()
