"""Label correctness of the held-out benchmark renderer (bench/heldout) on constructed scenes.

Visible fractions compare pixel counts with exact projected areas, so they carry a discretisation
error of about (outline length in pixels / 2) / (area in pixels): for the parts at the sizes used
here (thousands of pixels, outlines of a few hundred) that is under 2 %, hence the tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest


from bench.heldout.dataset import image_name, render_example, write_dataset
from bench.heldout.geometry import CarDesign, box_mesh
from bench.heldout.parts import CANONICAL, DOOR, HOOD
from bench.heldout.raster import Camera
from bench.heldout.render import part_centre, render
from bench.heldout.scene import car_mesh, constructed_scene
from bench.heldout.shading import Surface

CAR = CarDesign()
WIDTH, HEIGHT, FOCAL = 480, 360, 520.0
DISCRETISATION = 0.02


def camera_towards(pid: int, direction: np.ndarray, distance: float = 9.0, **kwargs) -> Camera:
    """A camera `distance` metres from part `pid`'s centre along `direction`, looking at it."""
    centre = part_centre(car_mesh(CAR, 0), pid)
    eye = centre + distance * np.asarray(direction, float) / np.linalg.norm(direction)
    return Camera(tuple(eye), tuple(centre), FOCAL, kwargs.pop("width", WIDTH), HEIGHT, **kwargs)


def labels_of(camera: Camera, **kwargs) -> dict:
    return render(constructed_scene(CAR, camera, **kwargs)).labels


def test_hood_seen_along_its_canonical_direction_scores_one():
    labels = labels_of(camera_towards(HOOD, CANONICAL[HOOD]))["hood"]
    assert labels["facing"] == pytest.approx(1.0, abs=1e-4)
    assert labels["visible_fraction"] == pytest.approx(1.0, abs=DISCRETISATION)
    assert labels["score"] >= 1 - DISCRETISATION


def test_back_left_door_seen_head_on_scores_one_and_from_the_right_zero():
    left = labels_of(camera_towards(DOOR, CANONICAL[DOOR]))["backdoor_left"]
    assert left["score"] >= 1 - DISCRETISATION
    right_side = CANONICAL[DOOR] * np.array([1, -1, 1])
    right = labels_of(camera_towards(DOOR, right_side))["backdoor_left"]
    assert right == {"score": 0.0, "visible_fraction": 0.0, "facing": 0.0}


def test_hood_seen_from_behind_scores_zero():
    behind = labels_of(camera_towards(HOOD, np.array([-1.0, 0.0, 0.3])))["hood"]
    assert behind["facing"] == 0.0 and behind["score"] == 0.0


def test_cropping_half_the_door_out_of_the_frame_halves_its_visible_fraction():
    wide = camera_towards(DOOR, CANONICAL[DOOR])
    full = render(constructed_scene(CAR, wide))
    columns = np.nonzero(full.parts == DOOR)[1]
    cut = int(np.median(columns))  # the frame of `cropped` starts at this column of `wide`
    cropped_width = WIDTH - cut
    shift = (WIDTH / 2 - cut - cropped_width / 2, 0.0)  # the same principal point in absolute pixels
    cropped = render(constructed_scene(CAR, camera_towards(DOOR, CANONICAL[DOOR], width=cropped_width, shift=shift)))
    np.testing.assert_array_equal(cropped.parts, full.parts[:, cut:])
    share_kept = (columns >= cut).mean()
    assert share_kept == pytest.approx(0.5, abs=0.02)  # one column of the door is its only excess
    before, after = full.labels["backdoor_left"], cropped.labels["backdoor_left"]
    assert after["facing"] == before["facing"]
    assert after["visible_fraction"] == pytest.approx(before["visible_fraction"] * share_kept, abs=DISCRETISATION / 2)
    assert after["visible_fraction"] == pytest.approx(0.5, abs=DISCRETISATION + 0.02)


def test_an_occluder_in_front_of_the_door_lowers_its_visible_fraction_not_its_facing():
    camera = camera_towards(DOOR, CANONICAL[DOOR])
    centre, eye = part_centre(car_mesh(CAR, 0), DOOR), np.asarray(camera.eye)
    spot = centre + 0.5 * (eye - centre)
    post = box_mesh((0.4, 0.4, 3.0), surface=0).moved(0.0, (spot[0], spot[1], 0.0))
    clear = labels_of(camera)["backdoor_left"]
    hidden = labels_of(camera, occluders=[(post, Surface("bollard", (0.5, 0.5, 0.5)))])["backdoor_left"]
    assert hidden["facing"] == clear["facing"]
    assert hidden["visible_fraction"] < clear["visible_fraction"] - 0.2
    assert hidden["score"] < clear["score"]


def test_random_examples_are_deterministic_with_labels_in_range():
    for index in range(2):
        first, again = render_example(11, index), render_example(11, index)
        np.testing.assert_array_equal(first.image, again.image)
        assert first.labels == again.labels
        for part in first.labels.values():
            assert all(0.0 <= value <= 1.0 for value in part.values())
            assert part["score"] == 0.0 or part["score"] >= 0.02
            assert part["score"] == pytest.approx(part["visible_fraction"] * part["facing"], abs=2e-4)
        assert 480 <= min(first.image.shape[:2]) and max(first.image.shape[:2]) <= 1024


def test_a_resumed_data_set_equals_one_written_in_one_go(tmp_path):
    labels = write_dataset(tmp_path / "whole", 3, seed=5, workers=1, progress=False).read_text()
    images = tmp_path / "whole" / "imgs"
    first = (images / image_name(0)).read_bytes()
    (images / image_name(1)).unlink()  # never rendered
    (images / image_name(2)).write_bytes(first[: len(first) // 2])  # cut off by a kill
    resumed = write_dataset(tmp_path / "whole", 3, seed=5, workers=1, progress=False, resume=True)
    assert resumed.read_text() == labels
    assert (images / image_name(0)).read_bytes() == first
    assert (images / image_name(2)).read_bytes() == render_example(5, 2).jpeg_bytes()
