"""Cost of hostile uploads: CPU time and peak extra memory of what a Serve replica does with one
upload (the serving checks, then `Predictor.preprocess`'s `load_image`), each in a fresh process.

    python bench/bench_uploads.py [--size 8000] [--scans 200] [--image-size 64]

Every case is a small file crafted by tests/hostile.py. A case that is refused shows the error
message; the goal is at most 1 s of CPU and 512 MB of extra memory for any upload.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # run as a script from anywhere; crafters live with the tests

import hostile  # noqa: E402

from cvcore.errors import ImageError  # noqa: E402
from cvcore.image import load_image  # noqa: E402

try:  # the serving checks, where this version of the code has them
    from serve.uploads import UploadPolicy
except ImportError:
    UploadPolicy = None


def measure(data: bytes, media_type: str, image_size: int, queue: multiprocessing.Queue) -> None:
    """In a fresh process: CPU seconds, peak memory above the start and the outcome of one upload."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to what is resident now
    base_kb = peak_rss_kb()
    start = time.process_time()
    try:
        if UploadPolicy is not None:
            UploadPolicy().check(data, media_type)
        load_image(data, image_size)
        outcome = "decoded"
    except ImageError as err:
        outcome = f"refused: {str(err)[:90]}"
    except Exception as err:  # noqa: BLE001 - the serving checks' own errors
        outcome = f"refused: {type(err).__name__}: {str(err)[:80]}"
    cpu = time.process_time() - start
    queue.put((cpu, (peak_rss_kb() - base_kb) / 1024, outcome))


def peak_rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


def run_case(data: bytes, media_type: str, image_size: int, timeout_s: float) -> tuple[float, float, str]:
    context = multiprocessing.get_context("spawn")  # a fresh process: a fork would reuse the parent's resident heap
    queue = context.Queue()
    process = context.Process(target=measure, args=(data, media_type, image_size, queue))
    process.start()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()
        return float("inf"), float("nan"), f"still decoding after {timeout_s:.0f} s (killed)"
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000, help="width and height of the crafted images")
    parser.add_argument("--scans", type=int, default=200, help="repeats of the last scan of the progressive JPEG")
    parser.add_argument("--image-size", type=int, default=64, help="model input size (the letterbox)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case is killed")
    args = parser.parse_args()
    n = args.size
    cases = [
        (f"lossless WebP {n}x{n} RGBA", hostile.lossless_webp_rgba(n, n), "image/webp"),
        (f"PNG {n}x{n} semi-transparent RGBA", hostile.semi_transparent_png(n, n), "image/png"),
        (f"16-bit grey PNG {n}x{n}", hostile.grey16_png(n, n), "image/png"),
        (f"run-length BMP {n}x{n}", hostile.rle_bmp(n, n), "image/bmp"),
        (f"progressive JPEG {n}x{n}, last scan repeated {args.scans}x", hostile.progressive_jpeg_repeated_scan(n, n, args.scans), "image/jpeg"),
        ("PNG 4000x4000 semi-transparent RGBA (16 MP)", hostile.semi_transparent_png(4000, 4000), "image/png"),
        (f"progressive JPEG 4000x4000, last scan repeated {args.scans}x", hostile.progressive_jpeg_repeated_scan(4000, 4000, args.scans), "image/jpeg"),
        ("progressive JPEG 4000x4000", hostile.progressive_jpeg_repeated_scan(4000, 4000, 0), "image/jpeg"),
        ("lossless WebP 4000x4000 RGBA (16 MP)", hostile.lossless_webp_rgba(4000, 4000), "image/webp"),
        ("16-bit grey PNG 4000x4000 (16 MP)", hostile.grey16_png(4000, 4000), "image/png"),
    ]
    print("\n| upload | bytes | CPU (s) | peak extra memory (MB) | outcome |\n|---|---:|---:|---:|---|")
    for name, data, media_type in cases:
        cpu, memory, outcome = run_case(data, media_type, args.image_size, args.timeout)
        print(f"| {name} | {len(data):,} | {cpu:.2f} | {memory:.0f} | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
