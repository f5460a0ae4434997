"""CPU cost of a serving replica's forward pass, variants side by side (issue 12: the forward pass is
about a third of a replica's CPU). One thread, as a replica with num_cpus=1 has.

    python bench/bench_forward.py [--checkpoint pretrained/regnetx_002-64] [--batch 16] [--repeats 30]

Variants: the model as `Predictor.explain_arrays` runs it (an NHWC batch permuted to a channels-last
view); the input made contiguous NCHW; the model's weights in channels-last too; TorchScript traced,
frozen and `optimize_for_inference` (folds batch norms into convolutions). Each reports the median
milliseconds per batch and the largest score difference from the first variant. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cvcore.errors import CheckpointError  # noqa: E402
from cvcore.model import load_model  # noqa: E402
from cvcore.presets import SHIPPED_BACKBONE  # noqa: E402


def median_ms(run, batch: torch.Tensor, repeats: int) -> float:
    for _ in range(3):
        run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(SHIPPED_BACKBONE))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        predictor = load_model(args.checkpoint)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    model, size = predictor.model.eval(), predictor.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    served = torch.tensor(pixels).permute(0, 3, 1, 2).float().div_(255.0)  # what explain_arrays feeds
    contiguous = served.contiguous()

    def scores(m):
        return lambda x: m.scores_and_factors(x)[0]

    with torch.inference_mode():
        variants = [("as served (channels-last view of the NHWC batch)", scores(model), served)]
        variants.append(("input contiguous NCHW", scores(model), contiguous))
        cl_model = load_model(args.checkpoint).model.eval().to(memory_format=torch.channels_last)
        variants.append(("weights channels-last too", scores(cl_model), served))

        class Scores(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner.scores_and_factors(x)[0]

        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(Scores(model).eval(), served)))
        variants.append(("TorchScript traced, frozen, optimize_for_inference", frozen, served))

        reference = variants[0][1](served)
        print(f"### Forward pass: {predictor.spec.backbone} at {size} px, batch {args.batch}, 1 thread, torch {torch.__version__}\n")
        print("| variant | ms per batch (median) | ms per image | max score difference |")
        print("|---|---:|---:|---:|")
        for name, run, batch in variants:
            ms = median_ms(run, batch, args.repeats)
            diff = float((run(batch) - reference).abs().max())
            print(f"| {name} | {ms:.1f} | {ms / args.batch:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
