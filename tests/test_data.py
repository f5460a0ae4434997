"""The data contract: schema errors stop early and name rows and columns; row problems are
reported and excluded; splits are stable; the validate command exits as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

import cvcore.data
from cvcore.config import run
from cvcore.data import DEFAULT_CSV, SPLITS, read_dataset, split_of
from cvcore.errors import DataError, UserError
from ray_jobs.validate import main

HEADER = "filename,perspective_score_hood,perspective_score_backdoor_left"
REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, rows: list[str] | None = None, *, n: int = 12, header: str = HEADER,
                 csv_name: str = DEFAULT_CSV) -> Path:
    """A data set folder: imgs/ with car_000.jpg ... car_{n-1}.jpg, and a CSV of `rows` (default:
    one clean row per image). Returns the folder."""
    (root / "imgs").mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (32, 24), (i * 20 % 256, 80, 160)).save(root / "imgs" / f"car_{i:03d}.jpg")
    if rows is None:
        rows = [f"car_{i:03d}.jpg,{i / n:.3f},{1 - i / n:.3f}" for i in range(n)]
    (root / csv_name).write_text("\n".join([header, *rows]) + "\n")
    return root


def clean_rows(n: int) -> list[str]:
    return [f"car_{i:03d}.jpg,0.5,0.25" for i in range(n)]


# --- schema errors: DataError before any image is touched --------------------------------------


@pytest.fixture
def no_image_access(monkeypatch):
    """Fail the test if anything tries to open an image."""

    def forbidden(*args, **kwargs):
        raise AssertionError("an image was opened during a schema check")

    monkeypatch.setattr(cvcore.data, "decode_image", forbidden)
    monkeypatch.setattr(cvcore.data, "probe_image", forbidden)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "nope")


def test_missing_imgs_folder(tmp_path):
    (tmp_path / DEFAULT_CSV).write_text(HEADER + "\ncar_000.jpg,0.5,0.5\n")
    with pytest.raises(DataError, match="no imgs/ folder"):
        read_dataset(tmp_path)


def test_missing_csv_lists_what_is_there(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(DataError, match=f"no {DEFAULT_CSV}.*CSV files in .*: none"):
        read_dataset(tmp_path)


def test_several_other_csvs_are_ambiguous(tmp_path):
    make_dataset(tmp_path, csv_name="a.csv")
    (tmp_path / "b.csv").write_text(HEADER + "\n")
    with pytest.raises(DataError, match="a.csv, b.csv"):
        read_dataset(tmp_path)


def test_the_only_other_csv_is_used_and_said_so(tmp_path):
    make_dataset(tmp_path, csv_name="labels.csv")
    dataset = read_dataset(tmp_path, check_images="none")
    assert dataset.csv_path.name == "labels.csv"
    assert any("labels.csv" in note for note in dataset.report.notes)
    assert "labels.csv" in dataset.report.summary()


def test_named_csv_that_does_not_exist(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(DataError, match=f"other.csv not found.*{DEFAULT_CSV}"):
        read_dataset(tmp_path, "other.csv")


def test_empty_csv(tmp_path, no_image_access):
    make_dataset(tmp_path, n=1)
    (tmp_path / DEFAULT_CSV).write_text("")
    with pytest.raises(DataError, match="is empty"):
        read_dataset(tmp_path)


def test_header_without_rows(tmp_path, no_image_access):
    make_dataset(tmp_path, [], n=1)
    with pytest.raises(DataError, match="no rows"):
        read_dataset(tmp_path)


def test_csv_that_is_not_text(tmp_path, no_image_access):
    make_dataset(tmp_path, n=1)
    (tmp_path / DEFAULT_CSV).write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(DataError, match="not UTF-8"):
        read_dataset(tmp_path)


def test_rows_with_the_wrong_number_of_fields_are_named(tmp_path, no_image_access):
    make_dataset(tmp_path, ["car_000.jpg,0.5,0.5", "car_001.jpg,0.5", "car_002.jpg,0.5,0.5,0.1"], n=3)
    with pytest.raises(DataError, match=r"\(3\).*line 3 has 2; line 4 has 4"):
        read_dataset(tmp_path)


def test_no_filename_column(tmp_path, no_image_access):
    make_dataset(tmp_path, ["car_000.jpg,0.5,0.5"], header=HEADER.replace("filename", "file"))
    with pytest.raises(DataError, match="no 'filename' column; columns are: file, perspective_score_hood"):
        read_dataset(tmp_path)


def test_no_target_columns(tmp_path, no_image_access):
    make_dataset(tmp_path, ["car_000.jpg,0.5"], header="filename,score")
    with pytest.raises(DataError, match=r"no target columns.*perspective_score_\*.*columns are: filename, score"):
        read_dataset(tmp_path)


def test_unknown_targets_list_the_available_columns(tmp_path, no_image_access):
    make_dataset(tmp_path)
    with pytest.raises(DataError, match="unknown target column.*wheel.*available columns: perspective_score_hood, "
                                        "perspective_score_backdoor_left"):
        read_dataset(tmp_path, targets=["perspective_score_hood", "wheel"])


@pytest.mark.parametrize(
    ("cell", "why"),
    [("abc", "'abc' is not a number"), ("nan", "'nan' is not a number"), ("", "empty"),
     ("1.5", "'1.5' is outside"), ("-0.1", "'-0.1' is outside"), ("inf", "'inf' is outside")],
)
def test_bad_label_names_column_line_and_file(tmp_path, no_image_access, cell, why):
    make_dataset(tmp_path, ["car_000.jpg,0.5,0.5", f"car_001.jpg,0.5,{cell}"], n=2)
    with pytest.raises(DataError) as caught:
        read_dataset(tmp_path)
    message = str(caught.value)
    assert "'perspective_score_backdoor_left' has 1 bad label" in message
    assert f"line 3 ('car_001.jpg'): {why}" in message
    assert "perspective_score_hood'" not in message


def test_many_bad_labels_show_the_first_few_and_a_count(tmp_path, no_image_access):
    make_dataset(tmp_path, [f"car_{i:03d}.jpg,x,0.5" for i in range(9)], n=9)
    with pytest.raises(DataError, match=r"has 9 bad label\(s\): line 2 .*line 6 .*; and 4 more"):
        read_dataset(tmp_path)


# --- row problems: reported and excluded ----------------------------------------------------------


def test_clean_data_set(tmp_path):
    dataset = read_dataset(make_dataset(tmp_path), check_images="full", workers=1)
    report = dataset.report
    assert report.is_clean and report.problems == {} and report.excluded == 0
    assert (report.n_rows, report.n_valid) == (12, 12)
    assert dataset.targets == ["perspective_score_hood", "perspective_score_backdoor_left"]
    assert list(dataset.frame.columns) == ["filename", *dataset.targets, "split"]
    assert dataset.image_path("car_000.jpg") == tmp_path / "imgs" / "car_000.jpg"
    assert sum(report.split_counts.values()) == 12
    assert report.label_stats["perspective_score_hood"]["zero_fraction"] == pytest.approx(1 / 12)


def test_missing_file_is_excluded_and_reported(tmp_path):
    make_dataset(tmp_path, [*clean_rows(3), "ghost.jpg,0.5,0.5"], n=3)
    dataset = read_dataset(tmp_path, check_images="none")
    assert dataset.report.problems == {"missing_file": ["line 5 ('ghost.jpg')"]}
    assert dataset.report.excluded == 1
    assert "ghost.jpg" not in set(dataset.frame["filename"])


def test_truncated_and_non_image_files_are_excluded_in_full_mode(tmp_path):
    make_dataset(tmp_path, clean_rows(4), n=4)
    Image.effect_noise((300, 200), 60).convert("RGB").save(tmp_path / "imgs" / "car_001.jpg")
    data = (tmp_path / "imgs" / "car_001.jpg").read_bytes()
    (tmp_path / "imgs" / "car_001.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "imgs" / "car_002.jpg").write_text("not a photo")
    unreadable = read_dataset(tmp_path, check_images="full", workers=1).report.problems["unreadable_image"]
    assert len(unreadable) == 2
    assert unreadable[0].startswith("line 3 ('car_001.jpg'): truncated or corrupt image")
    assert unreadable[1].startswith("line 4 ('car_002.jpg'): not an image")
    # header mode only sees that the text file is no image; none mode sees nothing wrong
    header = read_dataset(tmp_path, check_images="header").report.problems["unreadable_image"]
    assert [entry.split(":")[0] for entry in header] == ["line 4 ('car_002.jpg')"]
    assert read_dataset(tmp_path, check_images="none").report.is_clean


def test_process_pool_gives_the_same_result_as_one_process(tmp_path):
    make_dataset(tmp_path, clean_rows(12), n=12)
    (tmp_path / "imgs" / "car_005.jpg").write_bytes(b"\xff\xd8junk")
    one = read_dataset(tmp_path, workers=1)
    two = read_dataset(tmp_path, workers=2)
    assert one.report.to_dict() == two.report.to_dict()
    assert two.report.n_valid == 11


def test_identical_duplicates_keep_one_copy(tmp_path):
    make_dataset(tmp_path, ["car_000.jpg,0.5,0.25", "car_001.jpg,0.1,0.2", "car_000.jpg,0.50,0.25"], n=2)
    dataset = read_dataset(tmp_path, check_images="none")
    assert dataset.report.problems == {"duplicate": ["line 4 ('car_000.jpg'): same as line 2"]}
    assert sorted(dataset.frame["filename"]) == ["car_000.jpg", "car_001.jpg"]


def test_conflicting_duplicates_exclude_every_copy(tmp_path):
    make_dataset(tmp_path, ["car_000.jpg,0.5,0.25", "car_001.jpg,0.1,0.2", "car_000.jpg,0.5,0.3"], n=2)
    dataset = read_dataset(tmp_path, check_images="none")
    entries = dataset.report.problems["conflicting_duplicate"]
    assert entries == [
        "line 2 ('car_000.jpg'): lines 2, 4 differ in perspective_score_backdoor_left",
        "line 4 ('car_000.jpg'): lines 2, 4 differ in perspective_score_backdoor_left",
    ]
    assert list(dataset.frame["filename"]) == ["car_001.jpg"]
    assert dataset.report.excluded == 2


@pytest.mark.parametrize(
    ("name", "reason"),
    [("/etc/passwd", "absolute path"), ("../car_000.jpg", "contains '..'"), ("..", "contains '..'"),
     ("imgs/car_000.jpg", "path separator"), ("sub\\car_000.jpg", "path separator"), ("", "empty filename")],
)
def test_filenames_that_are_not_bare_names_are_excluded(tmp_path, name, reason):
    make_dataset(tmp_path, [*clean_rows(2), f"{name},0.5,0.5"], n=2)
    dataset = read_dataset(tmp_path, check_images="none")
    [entry] = dataset.report.problems.pop("bad_filename")
    assert entry.startswith(f"line 4 ({name!r}): ") and reason in entry
    assert dataset.report.problems == {}
    assert dataset.report.n_valid == 2


def test_unlisted_files_are_reported_but_nothing_is_excluded(tmp_path):
    make_dataset(tmp_path, clean_rows(3), n=4)
    (tmp_path / "imgs" / ".DS_Store").write_bytes(b"")
    (tmp_path / "imgs" / "subdir").mkdir()
    report = read_dataset(tmp_path, check_images="none").report
    assert report.problems == {"unlisted_file": ["car_003.jpg"]}
    assert report.excluded == 0 and not report.is_clean


def test_other_numeric_columns_are_kept_as_extra_columns(tmp_path):
    header = HEADER + ",visible_fraction_hood,camera,"
    rows = ["car_000.jpg,0.5,0.5,0.3,front,1", "car_001.jpg,0.5,0.5,,rear,2", "car_002.jpg,0.5,0.5,nan,side,3"]
    make_dataset(tmp_path, rows, n=3, header=header)
    dataset = read_dataset(tmp_path, check_images="none")
    assert dataset.extra_columns == ["visible_fraction_hood"]
    assert dataset.frame["visible_fraction_hood"].isna().tolist() == [False, True, True]
    assert list(dataset.frame.columns) == ["filename", *dataset.targets, "visible_fraction_hood", "split"]
    assert dataset.report.notes == ["columns not used (not numeric, or unnamed): camera, (unnamed column 6)"]


def test_targets_argument_picks_other_columns(tmp_path):
    make_dataset(tmp_path, ["car_000.jpg,0.5,0.5,0.3", "car_001.jpg,0.5,0.5,0.7"], n=2,
                 header=HEADER + ",visible_fraction_hood")
    for targets in ("visible_fraction_hood", ["visible_fraction_hood"]):
        dataset = read_dataset(tmp_path, targets=targets, check_images="none")
        assert dataset.targets == ["visible_fraction_hood"]
        assert dataset.extra_columns == ["perspective_score_hood", "perspective_score_backdoor_left"]


def test_summary_counts_and_first_examples(tmp_path):
    rows = [*clean_rows(4), *(f"ghost_{i}.jpg,0.5,0.5" for i in range(8))]
    report = read_dataset(make_dataset(tmp_path, rows, n=4), check_images="none").report
    text = report.summary()
    assert "rows read:      12" in text and "usable rows:    4" in text and "excluded rows:  8" in text
    assert "missing_file: 8" in text
    assert "line 10 ('ghost_4.jpg')" in text and "ghost_5" not in text and "... and 3 more" in text
    assert "perspective_score_hood" in text and "splits:" in text
    assert len(report.problems["missing_file"]) == 8  # the report keeps every entry
    assert json.loads(json.dumps(report.to_dict()))["excluded"] == 8


def test_require_usable(tmp_path):
    make_dataset(tmp_path, ["ghost.jpg,0.5,0.5"], n=0)
    with pytest.raises(DataError, match="no usable rows.*1 missing_file"):
        read_dataset(tmp_path, check_images="none").require_usable()
    one_row = make_dataset(tmp_path / "small", clean_rows(1), n=1)
    with pytest.raises(DataError, match=r"no rows in split (val and test|train and test|train and val)"):
        read_dataset(one_row, check_images="none").require_usable()
    read_dataset(one_row, check_images="none", fractions=(1, 0, 0)).require_usable()


# --- splits -----------------------------------------------------------------------------------


def test_split_fractions_are_roughly_respected():
    counts = Counter(split_of(f"car_{i:05d}.jpg") for i in range(10_000))
    for split, fraction in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(counts[split] / 10_000 - fraction) < 0.015


def test_adding_rows_never_moves_existing_ones(tmp_path):
    before = read_dataset(make_dataset(tmp_path / "a", clean_rows(30), n=30), check_images="none").frame
    after = read_dataset(make_dataset(tmp_path / "b", clean_rows(60), n=60), check_images="none").frame
    merged = before.merge(after, on="filename", suffixes=("_before", "_after"))
    assert len(merged) == 30 and (merged["split_before"] == merged["split_after"]).all()


def test_split_does_not_depend_on_pythons_hash_seed():
    names = [f"car_{i}.jpg" for i in range(50)]
    code = f"from cvcore.data import split_of; print([split_of(n) for n in {names!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert out.strip() == str([split_of(n) for n in names])


def test_bad_fractions_are_a_user_error():
    with pytest.raises(UserError, match="add up to 1"):
        split_of("a.jpg", (0.8, 0.1, 0.2))


# --- the validate command ---------------------------------------------------------------------


def test_validate_clean_data_set(tmp_path, capsys):
    assert main([str(make_dataset(tmp_path, n=20)), "--workers", "1"]) == 0
    assert "usable rows:    20" in capsys.readouterr().out


def test_validate_defects_usable_but_strict_fails(tmp_path, capsys):
    root = make_dataset(tmp_path, [*clean_rows(20), "ghost.jpg,0.5,0.5"], n=20)
    assert main([str(root), "--check", "header"]) == 0
    with pytest.raises(SystemExit) as exit_:
        run(main, [str(root), "--check", "header", "--strict"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: --strict: 1 of 21 rows excluded" in err and "1 missing_file" in err


def test_validate_no_usable_rows_exits_2(tmp_path, capsys):
    root = make_dataset(tmp_path, ["ghost.jpg,0.5,0.5"], n=0)
    with pytest.raises(SystemExit) as exit_:
        run(main, [str(root)])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "missing_file: 1" in captured.out and "error: no usable rows" in captured.err


def test_validate_json_report_keeps_every_problem(tmp_path):
    root = make_dataset(tmp_path, [*clean_rows(20), *(f"ghost_{i}.jpg,0.5,0.5" for i in range(7))], n=20)
    assert main([str(root), "--check", "none", "--json", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["problems"]["missing_file"]) == 7 and report["n_valid"] == 20


def test_validate_targets_and_csv_options(tmp_path, capsys):
    rows = [f"car_{i:03d}.jpg,0.5,0.5,{i / 20}" for i in range(20)]
    make_dataset(tmp_path, rows, n=20, csv_name="x.csv", header=HEADER + ",visible_fraction_hood")
    (tmp_path / "y.csv").write_text("unrelated\n")
    assert main([str(tmp_path), "--csv", "x.csv", "--targets", "visible_fraction_hood", "--check", "none"]) == 0
    out = capsys.readouterr().out
    assert "visible_fraction_hood" in out and "auxiliary columns: perspective_score_hood" in out


def test_validate_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--csv", "--targets", "--strict", "--check", "--workers", "--json", "Exit status"):
        assert option in text


def test_validate_as_a_subprocess_never_shows_a_traceback(tmp_path):
    good = make_dataset(tmp_path / "good", [*clean_rows(20), "ghost.jpg,0.5,0.5"], n=20)
    bad = make_dataset(tmp_path / "bad", ["car_000.jpg,high,0.5"], n=1)
    for root, code in ((good, 0), (bad, 2), (tmp_path / "missing", 2)):
        result = subprocess.run([sys.executable, "-m", "ray_jobs.validate", str(root), "--workers", "1"],
                                capture_output=True, text=True, cwd=REPO)
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: data set folder")
