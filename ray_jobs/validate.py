"""Check a data set in the customer's format before spending compute on it.

    python -m ray_jobs.validate DATA_DIR [--csv NAME] [--targets a,b] [--strict]
                                [--check full|header|none] [--workers N] [--json REPORT.json]

Prints the report. Exit 0 when the data set can be trained on; 2 with a one-paragraph reason
when it cannot (schema error, no usable rows, an empty split), or, with --strict, when any row
was excluded or any problem found.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from cvcore.config import positive_int, run
from cvcore.data import CHECK_MODES, DEFAULT_CSV, IMAGE_DIR, read_dataset
from cvcore.errors import DataError, UserError
from cvcore.labels import SCORE_PREFIX


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.validate",
        description=f"Validate a data set: a folder with {IMAGE_DIR}/ and a CSV with a 'filename' column and one label column in "
        "[0, 1] per target. Prints rows read and usable, excluded rows by reason, unlisted files, split sizes and label statistics.",
        epilog="Exit status: 0 usable; 2 unusable (schema error, no usable rows, an empty split) or, with --strict, any problem found.",
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help=f"data set folder (holds {IMAGE_DIR}/ and the CSV)")
    parser.add_argument("--csv", metavar="NAME", help=f"CSV file name inside DATA_DIR (default: {DEFAULT_CSV}, or the only *.csv in the folder)")
    parser.add_argument("--targets", metavar="A,B", help=f"comma-separated label columns (default: every {SCORE_PREFIX}* column)")
    parser.add_argument("--check", choices=list(CHECK_MODES), default="full",
                        help="how images are checked: " + "; ".join(f"{mode}: {what}" for mode, what in CHECK_MODES.items()) + " (default: full)")  # fmt: skip
    parser.add_argument("--workers", type=positive_int, metavar="N", help="processes decoding images (default: CPU count)")
    parser.add_argument("--strict", action="store_true", help="fail (exit 2) when any row is excluded or any problem is found")
    parser.add_argument("--json", type=Path, metavar="REPORT.json", help="also write the full report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dataset = read_dataset(args.data_dir, args.csv, args.targets, check_images=args.check, workers=args.workers, progress=True)
    report = dataset.report
    print(report.summary())
    if args.json:
        try:
            args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        except OSError as err:
            raise UserError(f"cannot write the report to {args.json}: {err.strerror or err}") from err
        print(f"report written to {args.json}")
    dataset.require_usable()
    if args.strict and not report.is_clean:
        kinds = ", ".join(f"{len(entries)} {kind}" for kind, entries in report.problems.items())
        raise DataError(f"--strict: {report.excluded} of {report.n_rows} rows excluded and problems found ({kinds}); the data set is usable without --strict")
    return 0


if __name__ == "__main__":
    run(main)
