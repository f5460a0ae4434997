"""The renderer behind the default data set: determinism, the customer's layout, and labels that mean what they say."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from cvcore.config import run
from cvcore.errors import UserError
from cvcore.synth import (
    CHALLENGE_TARGETS,
    DISTRIBUTIONS,
    PART_IDS,
    PARTS,
    RENDERER_VERSION,
    Camera,
    CarShape,
    Clutter,
    Look,
    blur_scale,
    car_mesh,
    dataset_is_current,
    extended_columns,
    format_label_stats,
    label_stats,
    random_car,
    random_scene,
    render_example,
    render_scene,
    write_dataset,
)
from ray_jobs.synth import build_parser, main

SMALL = (160, 120)
CAR = CarShape()


def part_centre(part: str, car: CarShape = CAR) -> np.ndarray:
    return car_mesh(car).part_centres[PART_IDS[part]]


def camera_towards(part: str, azimuth: float, elevation: float, *, distance: float = 8.0) -> Camera:
    """A camera `distance` from the part's centre in the given direction, aimed at the car's centre."""
    centre = part_centre(part)
    return Camera.orbit(centre, azimuth, elevation, distance, fov_deg=60, width=674, height=506, target=CAR.centre)


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_and_index_give_identical_bytes_and_labels():
    first, second = render_example(3, 5), render_example(3, 5)
    assert first.jpeg_bytes() == second.jpeg_bytes()
    assert first.labels == second.labels
    assert np.array_equal(first.mask, second.mask)
    assert render_example(4, 5).jpeg_bytes() != first.jpeg_bytes()


def test_requested_size_changes_only_the_size():
    full, small = render_example(0, 2), render_example(0, 2, width=SMALL[0], height=SMALL[1])
    assert small.image.size == SMALL and small.mask.shape == SMALL[::-1]
    assert small.labels["camera_azimuth"] == full.labels["camera_azimuth"]


def test_dataset_bytes_do_not_depend_on_the_number_of_workers(tmp_path):
    one = write_dataset(tmp_path / "one", 6, seed=11, workers=1, progress=False, image_size=SMALL)
    two = write_dataset(tmp_path / "two", 6, seed=11, workers=2, progress=False, image_size=SMALL)
    assert one.read_bytes() == two.read_bytes()
    names = sorted(p.name for p in (one.parent / "imgs").iterdir())
    assert names == sorted(p.name for p in (two.parent / "imgs").iterdir())
    for name in names:
        assert (one.parent / "imgs" / name).read_bytes() == (two.parent / "imgs" / name).read_bytes()


def digest(example) -> dict[str, str]:
    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    return {
        "image": sha(np.asarray(example.image).tobytes()),
        "mask": sha(example.mask.tobytes()),
        "labels": sha(json.dumps(example.labels, sort_keys=True).encode()),
    }


@pytest.mark.parametrize(
    ("seed", "index", "expected"),
    [(0, 0, {"image": "b40d6c099a4d9e39824d1199091ddad661ffb1dc13f9225b6821cc5df749f0a0",
             "mask": "ca638bce0dd1d913380dc2972778a12ba4867cf3c67cf877e6e306b658427622",
             "labels": "812b2147e9a3cdefbc0c495845ee0414630c44b9b26a1b6c9f9bea5fc4e67d28"}),
     (3, 5, {"image": "2619ff33e2947e3f5c7b7762cd801c8b4cd643ac390e624f8494b59619c03700",
             "mask": "f9552a28d8ade1be2ff17b4947332bbe369120a329594c9bfc35018cd01b2427",
             "labels": "3140be091a19bffd6e4dfbd6182d7f0e1e2670a24057466924acbd92f20f62ed"})],
)  # fmt: skip
def test_renders_are_pinned_to_the_renderer_version(seed, index, expected):
    """Hashes of renderer version 2 (800x600 and 674x506). A change to what the renderer draws must bump
    RENDERER_VERSION, because the main job re-renders its data set only when the version changes."""
    example = render_example(seed, index)
    assert RENDERER_VERSION == 2
    assert example.image.size == ((800, 600) if seed == 0 else (674, 506))
    assert digest(example) == expected


def test_shifted_distribution_is_deterministic_and_differs_from_the_default():
    first, second = render_example(2, 4, distribution="shifted"), render_example(2, 4, distribution="shifted")
    assert first.jpeg_bytes() == second.jpeg_bytes() and first.labels == second.labels
    default = render_example(2, 4)
    assert first.labels != default.labels and first.jpeg_bytes() != default.jpeg_bytes()


def test_shifted_distribution_moves_camera_and_colours():
    def scenes(name):
        rng = np.random.default_rng(0)
        return [random_scene(rng, distribution=DISTRIBUTIONS[name]) for _ in range(300)]

    default, shifted = scenes("default"), scenes("shifted")

    def mean(values):
        return float(np.mean(list(values)))

    assert all(60 <= s.camera.fov_deg <= 90 for s in shifted)
    assert mean(s.camera.fov_deg for s in shifted) > mean(s.camera.fov_deg for s in default) + 10
    assert mean(s.look.exposure for s in shifted) < mean(s.look.exposure for s in default) - 0.1
    assert mean(s.look.jpeg_quality for s in shifted) < mean(s.look.jpeg_quality for s in default) - 20
    assert mean(len(s.clutter) for s in shifted) > mean(len(s.clutter) for s in default)

    def saturation(car):
        return max(car.paint) - min(car.paint)

    assert mean(saturation(s.car) for s in shifted) > mean(saturation(s.car) for s in default) + 20


def test_shifted_labels_stay_in_range_with_higher_viewpoints():
    labels = [render_example(5, i, width=160, height=120, distribution="shifted").labels for i in range(16)]
    frame = pd.DataFrame(labels)
    assert frame[[c for c in frame.columns if c.startswith("perspective_score_")]].stack().between(0, 1).all()
    assert frame["camera_elevation"].between(4.5, 65.5).all() and frame["camera_elevation"].mean() > 19


def test_unknown_distribution_is_a_user_error_naming_the_valid_ones(tmp_path):
    with pytest.raises(UserError, match="unknown scene distribution 'sunny'; choose one of: default, shifted"):
        render_example(0, 0, distribution="sunny")
    with pytest.raises(UserError, match="choose one of"):
        write_dataset(tmp_path / "d", 2, progress=False, distribution="sunny")
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------- blur scale


def test_blur_scales_only_below_the_drawn_sizes():
    for size in ((674, 506), (640, 480), (480, 640), (800, 600), (506, 674)):
        assert blur_scale(*size) == 1.0
    assert blur_scale(600, 450) == 0.9375 and blur_scale(160, 120) == 0.25 and blur_scale(80, 60) == 0.125


@pytest.mark.parametrize(("size", "radius"), [((160, 120), 0.4), ((640, 480), 1.6)])
def test_render_scene_blurs_by_the_scaled_radius(size, radius):
    camera = Camera.orbit(CAR.centre, 30, 15, 8, fov_deg=60, width=size[0], height=size[1])
    sharp = render_scene(CAR, camera, look=Look(blur_radius=0.0)).image
    blurred = render_scene(CAR, camera, look=Look(blur_radius=1.6)).image
    assert np.array_equal(np.asarray(blurred), np.asarray(sharp.filter(ImageFilter.BoxBlur(radius))))


# ---------------------------------------------------------------------------------------------- layout


def test_default_layout_is_the_customers(tmp_path):
    csv = write_dataset(tmp_path, 5, seed=1, workers=1, progress=False, image_size=SMALL)
    assert csv == tmp_path / "car_imgs_4000.csv"
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["filename", "perspective_score_hood", "perspective_score_backdoor_left"]
    assert len(frame) == 5 and frame["filename"].is_unique
    for name in frame["filename"]:
        assert "/" not in name
        with Image.open(tmp_path / "imgs" / name) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == SMALL
    assert frame[list(CHALLENGE_TARGETS)].stack().between(0, 1).all()
    assert not (tmp_path / "masks").exists()


def test_default_layout_passes_the_data_contract(tmp_path):
    from cvcore.data import read_dataset

    write_dataset(tmp_path, 5, seed=1, workers=1, progress=False, image_size=SMALL)
    dataset = read_dataset(tmp_path, check_images="full")
    assert dataset.report.is_clean and list(dataset.targets) == list(CHALLENGE_TARGETS)


def test_varied_image_sizes_by_default():
    sizes = {render_example(0, i).image.size for i in range(12)}
    assert (674, 506) in sizes and len(sizes) >= 3
    assert any(h > w for w, h in sizes)


def test_extended_columns_and_csv_name(tmp_path):
    csv = write_dataset(
        tmp_path, 4, seed=2, workers=1, progress=False, extended=True, csv_name="labels.csv", image_size=SMALL
    )
    frame = pd.read_csv(csv)
    assert csv.name == "labels.csv"
    assert list(frame.columns) == ["filename", *extended_columns()]
    for part in PARTS:
        for prefix in ("perspective_score_", "visible_fraction_", "facing_"):
            assert frame[prefix + part].between(0, 1).all()
    assert frame["camera_azimuth"].between(0, 360).all()
    assert frame["camera_elevation"].between(0.0, 75.5).all()
    assert (frame["camera_distance"] > CAR.length / 2).all()


def test_masks_match_the_rendered_examples(tmp_path):
    write_dataset(tmp_path, 3, seed=5, workers=1, progress=False, masks=True, image_size=SMALL)
    ids = json.loads((tmp_path / "masks" / "parts.json").read_text())
    assert {int(k): v for k, v in ids.items()} == {i: p for p, i in PART_IDS.items()}
    for index in range(3):
        mask = np.asarray(Image.open(tmp_path / "masks" / f"car_{index:06d}.png"))
        expected = render_example(5, index, width=SMALL[0], height=SMALL[1]).mask
        assert mask.dtype == np.uint8 and np.array_equal(mask, expected)
        assert mask.max() <= len(PARTS) and (mask > 0).any()


def test_refuses_to_mix_data_sets_unless_overwrite(tmp_path):
    write_dataset(tmp_path, 4, seed=0, workers=1, progress=False, image_size=SMALL)
    write_dataset(tmp_path, 4, seed=0, workers=1, progress=False, image_size=SMALL)  # same set: fine
    with pytest.raises(UserError, match="already holds a different synthetic data set"):
        write_dataset(tmp_path, 3, seed=0, workers=1, progress=False, image_size=SMALL)
    write_dataset(tmp_path, 3, seed=0, workers=1, progress=False, image_size=SMALL, overwrite=True)
    assert len(list((tmp_path / "imgs").iterdir())) == 3


def test_manifest_records_the_distribution_and_another_one_is_a_different_data_set(tmp_path):
    write_dataset(tmp_path, 3, seed=0, workers=1, progress=False, image_size=SMALL, distribution="shifted")
    manifest = json.loads((tmp_path / "synth.json").read_text())
    assert manifest["distribution"] == "shifted"
    first = (tmp_path / "imgs" / "car_000000.jpg").read_bytes()
    with pytest.raises(UserError, match="distribution=shifted"):
        write_dataset(tmp_path, 3, seed=0, workers=1, progress=False, image_size=SMALL)
    write_dataset(tmp_path, 3, seed=0, workers=1, progress=False, image_size=SMALL, overwrite=True)
    assert json.loads((tmp_path / "synth.json").read_text())["distribution"] == "default"
    assert (tmp_path / "imgs" / "car_000000.jpg").read_bytes() != first


def test_a_manifest_from_before_distributions_is_the_default_one(tmp_path):
    write_dataset(tmp_path, 2, seed=0, workers=1, progress=False, image_size=SMALL)
    manifest = json.loads((tmp_path / "synth.json").read_text())
    del manifest["distribution"]
    (tmp_path / "synth.json").write_text(json.dumps(manifest))
    write_dataset(tmp_path, 2, seed=0, workers=1, progress=False, image_size=SMALL)  # same set: fine
    with pytest.raises(UserError, match="already holds a different synthetic data set"):
        write_dataset(tmp_path, 2, seed=0, workers=1, progress=False, image_size=SMALL, distribution="shifted")


def test_a_data_set_from_an_older_renderer_is_not_current_and_is_replaced(tmp_path):
    """What the main job relies on to re-render data/synthetic-N after RENDERER_VERSION changes."""
    request = dict(seed=0, extended=True, image_size=SMALL)
    assert not dataset_is_current(tmp_path, 2, **request)
    write_dataset(tmp_path, 2, workers=1, progress=False, **request)
    assert dataset_is_current(tmp_path, 2, **request)
    assert not dataset_is_current(tmp_path, 3, **request) and not dataset_is_current(tmp_path, 2, seed=1)
    manifest = json.loads((tmp_path / "synth.json").read_text())
    (tmp_path / "synth.json").write_text(json.dumps({**manifest, "version": RENDERER_VERSION - 1}))
    assert not dataset_is_current(tmp_path, 2, **request)
    write_dataset(tmp_path, 2, workers=1, progress=False, overwrite=True, **request)
    assert json.loads((tmp_path / "synth.json").read_text())["version"] == RENDERER_VERSION
    (tmp_path / "car_imgs_4000.csv").unlink()  # interrupted before the CSV
    assert not dataset_is_current(tmp_path, 2, **request)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n": 0}, "positive integer"), ({"n": 2, "seed": -1}, "non-negative"),
     ({"n": 2, "csv_name": "sub/x.csv"}, "bare file name"), ({"n": 2, "workers": 0}, "workers")],
)  # fmt: skip
def test_bad_requests_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        write_dataset(tmp_path, progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------- labels


def test_back_left_door_from_its_canonical_direction_scores_about_one():
    labels = render_scene(CAR, camera_towards("backdoor_left", 90, 10)).labels
    assert labels["facing_backdoor_left"] == pytest.approx(1.0, abs=1e-3)
    assert labels["visible_fraction_backdoor_left"] >= 0.95
    assert labels["perspective_score_backdoor_left"] >= 0.9
    assert labels["perspective_score_hood"] < 0.2  # the hood is seen edge-on from the side


def test_back_left_door_seen_from_the_right_scores_zero():
    example = render_scene(CAR, Camera.orbit(CAR.centre, 270, 10, 9, fov_deg=60, width=674, height=506))
    assert example.labels["perspective_score_backdoor_left"] == 0
    assert example.labels["visible_fraction_backdoor_left"] == 0
    assert not (example.mask == PART_IDS["backdoor_left"]).any()
    assert example.labels["perspective_score_backdoor_right"] >= 0.9


def test_hood_from_its_canonical_direction_and_half_cropped():
    camera = camera_towards("hood", 0, 35)
    full = render_scene(CAR, camera)
    assert full.labels["perspective_score_hood"] >= 0.9
    columns = np.nonzero(full.mask == PART_IDS["hood"])[1]
    cut = float(np.median(columns))  # move the principal point so the left border runs through here
    cropped = render_scene(CAR, Camera(**{**camera.__dict__, "shift": (-cut - 0.5, 0.0)}))
    assert cropped.labels["facing_hood"] == full.labels["facing_hood"]
    assert cropped.labels["perspective_score_hood"] == pytest.approx(
        full.labels["perspective_score_hood"] / 2, abs=0.05
    )


def test_occluder_in_front_of_the_door_reduces_its_visible_fraction():
    camera = camera_towards("backdoor_left", 90, 10)
    door = part_centre("backdoor_left")
    box = Clutter("box", (float(door[0]), CAR.width / 2 + 2.0), (0.8, 0.6, 1.2))
    clear = render_scene(CAR, camera).labels["visible_fraction_backdoor_left"]
    hidden = render_scene(CAR, camera, clutter=(box,)).labels["visible_fraction_backdoor_left"]
    assert 0.05 < hidden < clear - 0.2


def test_scores_follow_their_definition_on_random_examples():
    for index in range(8):
        labels = render_example(9, index, width=337, height=253).labels
        for part in PARTS:
            product = labels[f"visible_fraction_{part}"] * labels[f"facing_{part}"]
            score = labels[f"perspective_score_{part}"]
            assert score == 0 if product < 0.0199 else score == pytest.approx(product, abs=2e-4)


def test_every_part_is_drawn_and_labelled():
    assert PARTS[0] == "hood" and "backdoor_left" in PARTS and len(set(PARTS)) == len(PARTS) == 23
    seen: set[int] = set()
    for azimuth in (30, 150, 210, 330):
        camera = Camera.orbit(CAR.centre, azimuth, 30, 9, fov_deg=60, width=337, height=253)
        seen |= set(np.unique(render_scene(CAR, camera).mask).tolist())
    assert seen == set(range(len(PARTS) + 1))


def test_random_cars_cover_every_style():
    rng = np.random.default_rng(0)
    styles = {random_car(rng).style for _ in range(200)}
    assert styles == {"city_car", "hatchback", "sedan", "estate", "coupe", "suv", "pickup", "van"}


def test_label_stats_and_format():
    frame = pd.DataFrame({"a": [0.0, 0.0, 0.5, 1.0], "b": [1.0, 0.5, 0.0, 0.0]})
    stats = label_stats(frame, ["a", "b"])
    assert stats["targets"]["a"] == {
        "zeros_pct": 50.0,
        "mean": 0.375,
        "std": pytest.approx(0.4146, abs=1e-4),
        "max": 1.0,
    }
    assert stats["correlation"]["pearson"] < -0.8
    text = format_label_stats(stats)
    assert "zeros %" in text and "correlation(a, b)" in text


def test_library_does_not_import_ray():
    code = "import sys, cvcore.synth; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_writes_and_prints_statistics(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d"), "--n", "4", "--workers", "1", "--size", "160x120", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 images" in out and "zeros %" in out and "perspective_score_backdoor_left" in out
    assert len(pd.read_csv(tmp_path / "d" / "car_imgs_4000.csv")) == 4


def test_cli_renders_the_shifted_distribution(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["--out", str(out), "--n", "2", "--workers", "1", "--size", "160x120", "--quiet"]
    assert main([*args, "--distribution", "shifted"]) == 0
    assert json.loads((out / "synth.json").read_text())["distribution"] == "shifted"
    expected = render_example(0, 1, width=160, height=120, distribution="shifted").jpeg_bytes()
    assert (out / "imgs" / "car_000001.jpg").read_bytes() == expected
    assert "--distribution {default,shifted}" in " ".join(build_parser().format_help().split())


def test_cli_unknown_distribution_exits_2_with_the_valid_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(main, ["--out", str(tmp_path / "d"), "--n", "2", "--distribution", "sunny"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown scene distribution 'sunny'; choose one of: default, shifted")
    assert "Traceback" not in err and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--n", "0"], "argument --n: must be a positive integer, got 0"),
     (["--n", "x"], "argument --n: must be an integer, got 'x'"),
     (["--n", "2", "--size", "big"], "argument --size: expected WIDTHxHEIGHT such as 674x506")],
)  # fmt: skip
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_refuses_a_folder_with_another_data_set(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--workers", "1", "--size", "160x120", "--quiet"]
    main([*args, "--n", "2"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(main, [*args, "--n", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and "Traceback" not in err
