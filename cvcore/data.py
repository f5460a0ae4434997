"""The customer's data format, read strictly: a folder with `imgs/` and a CSV of labels.

Schema errors (wrong columns, bad labels) stop everything with a `DataError` before any image is
opened, because training on a half-understood table is worse than not training. Problems with
single rows (missing or broken images, duplicates, odd file names) exclude those rows and are
listed in a `ValidationReport`, so nothing is dropped without being said.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cvcore.errors import DataError, ImageError, UserError
from cvcore.image import decode_image, probe_image
from cvcore.labels import SCORE_PREFIX

DEFAULT_CSV = "car_imgs_4000.csv"
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
IMAGE_DIR = "imgs"
FILENAME_COLUMN = "filename"
CHECK_MODES = {
    "full": "every image fully decoded",
    "header": "image headers read",
    "none": "existence only, images not opened",
}
EXAMPLES_SHOWN = 5
MISSING_MARKERS = frozenset({"", "nan", "na", "n/a", "null", "none"})
"""Cells that mean "no value" in an auxiliary column (lower-cased, stripped)."""

PROBLEM_KINDS = {
    "bad_filename": "filename is not a bare file name inside imgs/",
    "duplicate": "same filename and labels as an earlier row, which is kept",
    "conflicting_duplicate": "same filename with different labels, every copy excluded",
    "missing_file": "file not found in imgs/",
    "unreadable_image": "image cannot be opened or decoded",
    "unlisted_file": "in imgs/ with no row; reported only, nothing excluded",
}
"""Every kind of problem a report can hold, in the order they are checked and printed."""


def split_of(filename: str, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The split of a file, from a SHA-256 of its name: the same on every machine and run, and
    a row never moves when the data set grows (Python's `hash` is salted per process)."""
    _check_fractions(fractions)
    digest = hashlib.sha256(filename.encode("utf-8", "surrogatepass")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    for split, upper in zip(SPLITS, itertools.accumulate(fractions)):
        if position < upper:
            return split
    return SPLITS[-1]  # fractions that sum to 1 - 1e-12 leave a sliver at the top


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(
            f"split fractions must be {len(SPLITS)} non-negative numbers for {'/'.join(SPLITS)} "
            f"that add up to 1, got {tuple(fractions)}"
        )


@dataclass
class ValidationReport:
    """What reading a data set found: counts, every problem, splits and label statistics."""

    csv_path: Path
    check_images: str
    n_rows: int
    n_valid: int
    targets: list[str]
    extra_columns: list[str]
    problems: dict[str, list[str]]
    """kind (a key of PROBLEM_KINDS) -> every entry of that kind; kinds with none are absent."""
    split_counts: dict[str, int]
    label_stats: dict[str, dict[str, float]]
    """target -> mean, std, min, max and zero_fraction (labels exactly 0: part not visible), over usable rows."""
    notes: list[str] = field(default_factory=list)
    """Decisions taken on the user's behalf (which CSV, which columns ignored); not problems."""

    @property
    def excluded(self) -> int:
        return self.n_rows - self.n_valid

    @property
    def is_clean(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """The human-readable report: counts, the first examples of each problem, splits, labels."""
        lines = [f"data set: {self.csv_path} (images: {CHECK_MODES[self.check_images]})"]
        lines += [f"note: {note}" for note in self.notes]
        lines += [
            f"rows read:      {self.n_rows}",
            f"usable rows:    {self.n_valid}",
            f"excluded rows:  {self.excluded}",
        ]
        for kind, entries in self.problems.items():
            if kind == "unlisted_file":
                continue
            lines.append(f"  {kind}: {len(entries)} ({PROBLEM_KINDS[kind]})")
            lines += _examples(entries)
        unlisted = self.problems.get("unlisted_file", [])
        explained = f" ({PROBLEM_KINDS['unlisted_file']})" if unlisted else ""
        lines.append(f"unlisted files: {len(unlisted)}{explained}")
        lines += _examples(unlisted)
        lines.append("splits:         " + ", ".join(f"{split} {n}" for split, n in self.split_counts.items()))
        if self.label_stats:
            width = max(len(name) for name in self.label_stats)
            lines.append(f"labels (usable rows):\n  {'target':<{width}}   mean    std    min    max  zeros")
            for name, s in self.label_stats.items():
                numbers = "  ".join(f"{s[key]:5.3f}" for key in ("mean", "std", "min", "max"))
                lines.append(f"  {name:<{width}}  {numbers}  {s['zero_fraction']:6.1%}")
        if self.extra_columns:
            lines.append("auxiliary columns: " + ", ".join(self.extra_columns))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready form with every problem entry, for `validate --json` and training manifests."""
        return {
            "csv_path": str(self.csv_path),
            "check_images": self.check_images,
            "n_rows": self.n_rows,
            "n_valid": self.n_valid,
            "excluded": self.excluded,
            "is_clean": self.is_clean,
            "targets": self.targets,
            "extra_columns": self.extra_columns,
            "problems": self.problems,
            "split_counts": self.split_counts,
            "label_stats": self.label_stats,
            "notes": self.notes,
        }


def _examples(entries: list[str]) -> list[str]:
    shown = [f"    {entry}" for entry in entries[:EXAMPLES_SHOWN]]
    if len(entries) > EXAMPLES_SHOWN:
        shown.append(f"    ... and {len(entries) - EXAMPLES_SHOWN} more")
    return shown


@dataclass
class CarDataset:
    """A data set that passed the schema checks; `frame` holds only the usable rows."""

    root: Path
    csv_path: Path
    targets: list[str]
    extra_columns: list[str]
    frame: pd.DataFrame
    """Columns: filename, the targets, the extra columns (float, NaN allowed in extras), split."""
    report: ValidationReport
    fractions: tuple[float, float, float]

    def image_path(self, filename: str) -> Path:
        return self.root / IMAGE_DIR / filename

    def require_usable(self) -> None:
        """Raise `DataError` unless there is something to train and evaluate on: a usable row in
        every split that is meant to have rows."""
        report = self.report
        if report.n_valid == 0:
            reasons = ", ".join(
                f"{len(entries)} {kind}" for kind, entries in report.problems.items() if kind != "unlisted_file"
            )
            raise DataError(
                f"no usable rows in {self.csv_path}: all {report.n_rows} rows were excluded ({reasons}). "
                f"Fix the rows the report names (run `python -m ray_jobs.validate {self.root}` to see them)."
            )
        expected = [split for split, fraction in zip(SPLITS, self.fractions) if fraction > 0]
        empty = [split for split in expected if not report.split_counts[split]]
        if empty:
            raise DataError(
                f"no rows in split {' and '.join(empty)}: {report.n_valid} usable rows divided "
                f"{'/'.join(f'{f:g}' for f in self.fractions)} by a hash of the file name leave it empty. "
                "Add rows, or change the split fractions."
            )


def read_dataset(
    root: str | os.PathLike,
    csv_name: str | None = None,
    targets: str | Sequence[str] | None = None,
    *,
    check_images: str = "full",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    workers: int | None = None,
    progress: bool = False,
) -> CarDataset:
    """Read and validate a data set.

    `targets` defaults to every `perspective_score_*` column (a string is split on commas).
    `check_images`: "full" decodes every image with `decode_image` over `workers` processes
    (default: CPU count), "header" reads only headers, "none" checks that files exist.
    Raises `DataError` for schema errors before any image is opened; row problems go to the report.
    """
    if check_images not in CHECK_MODES:
        raise UserError(f"check_images must be one of {', '.join(CHECK_MODES)}, got {check_images!r}")
    _check_fractions(fractions)
    fractions = (float(fractions[0]), float(fractions[1]), float(fractions[2]))
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data set folder {root} does not exist or is not a folder")
    notes: list[str] = []
    csv_path = _find_csv(root, csv_name, notes)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(f"{root} has no {IMAGE_DIR}/ folder; the images must be in {image_dir}")

    table = _Table.read(csv_path)
    target_names = _choose_targets(table, targets)
    labels = [_parse_labels(table, name) for name in target_names]
    _raise_label_errors(table, labels)
    extras = _extra_columns(table, target_names, notes)
    values = {column.name: column.numbers for column in labels} | extras

    problems: dict[str, list[str]] = {kind: [] for kind in PROBLEM_KINDS}
    names = table.column(FILENAME_COLUMN)
    keep = np.ones(len(names), dtype=bool)
    for i, name in enumerate(names):
        if reason := _filename_problem(name):
            problems["bad_filename"].append(f"{table.where(i)}: {reason}")
            keep[i] = False
    _exclude_duplicates(table, values, keep, problems)

    with os.scandir(image_dir) as entries:
        files = [entry for entry in entries if entry.is_file()]
    inside = image_dir.resolve()  # a symlink out of imgs/ would read any file the job can read, like '..'
    escaping = {entry.name for entry in files if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(inside)}
    present = {entry.name for entry in files} - escaping
    for i in np.flatnonzero(keep):
        if names[i] in escaping:
            problems["bad_filename"].append(f"{table.where(i)}: a symlink pointing outside imgs/")
            keep[i] = False
        elif names[i] not in present:
            problems["missing_file"].append(table.where(i))
            keep[i] = False
    if check_images != "none":
        to_check = np.flatnonzero(keep)
        outcomes = _check_images([image_dir / names[i] for i in to_check], check_images, workers, progress)
        for i, error in zip(to_check, outcomes):
            if error is not None:
                problems["unreadable_image"].append(f"{table.where(i)}: {error}")
                keep[i] = False
    problems["unlisted_file"] = sorted(name for name in present - set(names) if not name.startswith("."))

    rows = np.flatnonzero(keep)
    frame = pd.DataFrame({FILENAME_COLUMN: pd.Series([names[i] for i in rows], dtype=str)})
    for name, column in values.items():
        frame[name] = column[rows]
    frame["split"] = pd.Series([split_of(n, fractions) for n in frame[FILENAME_COLUMN]], dtype=str)
    report = ValidationReport(
        csv_path=csv_path,
        check_images=check_images,
        n_rows=len(names),
        n_valid=len(frame),
        targets=target_names,
        extra_columns=list(extras),
        problems={kind: entries for kind, entries in problems.items() if entries},
        split_counts={split: int((frame["split"] == split).sum()) for split in SPLITS},
        label_stats=_label_stats(frame, target_names),
        notes=notes,
    )
    return CarDataset(root, csv_path, target_names, list(extras), frame, report, fractions)


def _find_csv(root: Path, csv_name: str | None, notes: list[str]) -> Path:
    """The CSV named, else the default one, else the only CSV in the folder (said in a note)."""
    found = sorted(path.name for path in root.glob("*.csv"))
    available = f"CSV files in {root}: {', '.join(found) or 'none'}"
    if csv_name is not None:
        path = root / csv_name
        if not path.is_file():
            raise DataError(f"CSV {path} not found; {available}")
        return path
    if (root / DEFAULT_CSV).is_file():
        return root / DEFAULT_CSV
    if len(found) == 1:
        notes.append(f"{DEFAULT_CSV} not found; using the only CSV in the folder, {found[0]}")
        return root / found[0]
    raise DataError(
        f"no {DEFAULT_CSV} in {root} and no single other CSV to use instead; {available}. Name one (--csv)."
    )


@dataclass
class _Table:
    """The CSV as text cells, with the 1-based line number of every row for messages."""

    path: Path
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]

    @classmethod
    def read(cls, path: Path) -> _Table:
        """Parse with the csv module rather than pandas: pandas pads short rows with NaN and loses
        line numbers, and both would hide mistakes from the user."""
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                rows, lines = [], []
                for row in reader:
                    if any(cell.strip() for cell in row):
                        rows.append(row)
                        lines.append(reader.line_num)
        except UnicodeDecodeError as err:
            raise DataError(f"{path} is not UTF-8 text ({err})") from err
        except csv.Error as err:
            raise DataError(f"{path} cannot be parsed as CSV near line {reader.line_num}: {err}") from err
        except OSError as err:
            raise DataError(f"cannot read {path}: {err.strerror or err}") from err
        if header is None or not any(cell.strip() for cell in header):
            raise DataError(f"{path} is empty: expected a header line with {FILENAME_COLUMN!r} and label columns")
        columns = [cell.strip() for cell in header]
        repeated = sorted({name for name in columns if name and columns.count(name) > 1})
        if repeated:
            raise DataError(f"{path}: column names appear more than once in the header: {', '.join(repeated)}")
        ragged = [f"line {line} has {len(row)}" for row, line in zip(rows, lines) if len(row) != len(columns)]
        if ragged:
            raise DataError(
                f"{path}: rows must have as many fields as the header ({len(columns)}), but "
                + "; ".join(ragged[:EXAMPLES_SHOWN])
                + (f" (and {len(ragged) - EXAMPLES_SHOWN} more rows)" if len(ragged) > EXAMPLES_SHOWN else "")
            )
        if not rows:
            raise DataError(f"{path} has a header but no rows")
        if FILENAME_COLUMN not in columns:
            raise DataError(f"{path} has no {FILENAME_COLUMN!r} column; columns are: {', '.join(columns)}")
        return cls(path, columns, rows, lines)

    def column(self, name: str) -> list[str]:
        j = self.columns.index(name)
        return [row[j] for row in self.rows]

    def where(self, i: int) -> str:
        """How messages name row i: CSV line and file name."""
        return f"line {self.lines[i]} ({self.rows[i][self.columns.index(FILENAME_COLUMN)]!r})"


def _choose_targets(table: _Table, targets: str | Sequence[str] | None) -> list[str]:
    if targets is None:
        chosen = [name for name in table.columns if name.startswith(SCORE_PREFIX)]
        if not chosen:
            raise DataError(
                f"{table.path} has no target columns: expected columns named {SCORE_PREFIX}*, "
                f"or name targets explicitly (--targets); columns are: {', '.join(table.columns)}"
            )
        return chosen
    chosen = [name.strip() for name in targets.split(",")] if isinstance(targets, str) else list(targets)
    chosen = [name for name in chosen if name]
    unknown = [name for name in chosen if name not in table.columns or name == FILENAME_COLUMN]
    if unknown or not chosen:
        available = [name for name in table.columns if name and name != FILENAME_COLUMN]
        raise DataError(
            f"unknown target column(s) {', '.join(unknown) or '(none given)'} in {table.path}; "
            f"available columns: {', '.join(available)}"
        )
    if len(set(chosen)) != len(chosen):
        raise DataError(f"targets name a column more than once: {', '.join(chosen)}")
    return chosen


def _to_numbers(cells: Iterable[str]) -> np.ndarray:
    """Floats for cells that parse as numbers, NaN for the others."""
    stripped = pd.Series(list(cells), dtype=object).str.strip()
    return np.array(pd.to_numeric(stripped, errors="coerce"), dtype=np.float64)


@dataclass
class _Labels:
    name: str
    cells: list[str]
    numbers: np.ndarray
    bad: np.ndarray
    """Row indices whose label is not a number in [0, 1]."""


def _parse_labels(table: _Table, name: str) -> _Labels:
    cells = table.column(name)
    numbers = _to_numbers(cells)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~((numbers >= 0) & (numbers <= 1)))  # NaN fails both comparisons
    return _Labels(name, cells, numbers, bad)


def _raise_label_errors(table: _Table, labels: list[_Labels]) -> None:
    """One DataError naming, per target column, how many labels are bad and the first few."""
    messages = []
    for column in labels:
        if not column.bad.size:
            continue
        examples = "; ".join(
            f"{table.where(i)}: {_why_bad(column.cells[i], column.numbers[i])}"
            for i in column.bad[:EXAMPLES_SHOWN]
        )
        more = f"; and {column.bad.size - EXAMPLES_SHOWN} more" if column.bad.size > EXAMPLES_SHOWN else ""
        messages.append(f"column {column.name!r} has {column.bad.size} bad label(s): {examples}{more}")
    if messages:
        raise DataError(f"{table.path}: labels must be numbers in [0, 1]. " + ". ".join(messages))


def _why_bad(cell: str, number: float) -> str:
    if not cell.strip():
        return "empty"
    if np.isnan(number):
        return f"{cell!r} is not a number"
    return f"{cell!r} is outside [0, 1]"


def _extra_columns(table: _Table, targets: list[str], notes: list[str]) -> dict[str, np.ndarray]:
    """Other numeric columns (finite numbers or missing markers), kept as auxiliary targets;
    the columns left out are named in a note."""
    extras: dict[str, np.ndarray] = {}
    ignored = []
    for j, name in enumerate(table.columns):
        if name == FILENAME_COLUMN or name in targets:
            continue
        if not name:
            ignored.append(f"(unnamed column {j + 1})")
            continue
        cells = table.column(name)
        numbers = _to_numbers(cells)
        missing = np.array([cell.strip().lower() in MISSING_MARKERS for cell in cells], dtype=bool)
        if not missing.all() and np.isfinite(numbers[~missing]).all():
            numbers[missing] = np.nan
            extras[name] = numbers
        else:
            ignored.append(name)
    if ignored:
        notes.append(f"columns not used (not numeric, or unnamed): {', '.join(ignored)}")
    return extras


def _filename_problem(name: str) -> str | None:
    """Why a `filename` cell cannot name a file directly inside imgs/, or None if it can."""
    if not name:
        return "empty filename"
    if name.startswith(("/", "\\")):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "contains '..'"
    if "/" in name or "\\" in name:
        return "contains a path separator (must be a bare file name in imgs/)"
    if "\0" in name:
        return "contains a NUL character"
    return None


def _exclude_duplicates(
    table: _Table, values: dict[str, np.ndarray], keep: np.ndarray, problems: dict[str, list[str]]
) -> None:
    """Rows naming the same file: identical labels (NaN equal to NaN) keep the first copy;
    conflicting labels exclude every copy, since we cannot know which one is right."""
    names = table.column(FILENAME_COLUMN)
    rows_of: dict[str, list[int]] = {}
    for i in np.flatnonzero(keep):
        rows_of.setdefault(names[i], []).append(int(i))
    matrix = np.column_stack(list(values.values()))
    for copies in (rows for rows in rows_of.values() if len(rows) > 1):
        first = matrix[copies[0]]
        if all(np.array_equal(matrix[i], first, equal_nan=True) for i in copies[1:]):
            for i in copies[1:]:
                problems["duplicate"].append(f"{table.where(i)}: same as line {table.lines[copies[0]]}")
                keep[i] = False
            continue
        differing = [
            name
            for j, name in enumerate(values)
            if not all(np.array_equal(matrix[i, j], first[j], equal_nan=True) for i in copies[1:])
        ]
        conflict = f"lines {', '.join(str(table.lines[i]) for i in copies)} differ in {', '.join(differing)}"
        for i in copies:
            problems["conflicting_duplicate"].append(f"{table.where(i)}: {conflict}")
            keep[i] = False


def _check_one_image(job: tuple[Path, str]) -> str | None:
    """Worker: the problem with one image (without its path), or None when it is fine."""
    path, mode = job
    try:
        if mode == "full":
            decode_image(path)
        else:
            probe_image(path)
    except ImageError as err:
        return str(err).removeprefix(f"{path}: ")
    return None


def _check_images(paths: list[Path], mode: str, workers: int | None, progress: bool) -> list[str | None]:
    """Check images in order, fully decoded over a process pool, or headers only in-process
    (cheap enough that starting workers would cost more than it saves)."""
    jobs = [(path, mode) for path in paths]
    workers = min(workers or os.cpu_count() or 1, len(jobs)) if mode == "full" else 1
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(jobs), desc="checking images", unit="img", disable=not progress))
        if workers > 1:
            # spawn, not fork: the caller may hold threads (a server, tqdm's monitor) that fork copies mid-state
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=get_context("spawn")))
            outcomes = pool.map(_check_one_image, jobs, chunksize=max(1, min(32, len(jobs) // (workers * 8))))
        else:
            outcomes = map(_check_one_image, jobs)
        results = []
        for outcome in outcomes:
            results.append(outcome)
            bar.update()
    return results


def _label_stats(frame: pd.DataFrame, targets: list[str]) -> dict[str, dict[str, float]]:
    if frame.empty:
        return {}
    return {
        name: {
            "mean": float(frame[name].mean()),
            "std": float(frame[name].std(ddof=0)),
            "min": float(frame[name].min()),
            "max": float(frame[name].max()),
            "zero_fraction": float((frame[name] == 0).mean()),
        }
        for name in targets
    }
