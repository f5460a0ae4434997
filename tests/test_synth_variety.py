"""The training renderer's variety: every body style, other cars, people, shadows, framing, and labels
that stay exact through all of it (other cars never count as the main car, flips stay exact)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from cvcore.labels import PARTS, SIDES
from cvcore.synth import (
    DISTRIBUTIONS,
    PART_IDS,
    STYLES,
    Camera,
    CarShape,
    Clutter,
    Look,
    ParkedCar,
    car_mesh,
    label_stats,
    random_car,
    random_scene,
    render_example,
    render_scene,
)
from cvcore.synth.clutter import rectangles_overlap

CAR = CarShape()
SMALL = dict(width=240, height=180)


def door_camera(**kwargs) -> Camera:
    """Looking at the back-left door from its canonical direction, 8 m away."""
    door = car_mesh(CAR).part_centres[PART_IDS["backdoor_left"]]
    return Camera.orbit(door, 90, 10, 8.0, fov_deg=60, target=CAR.centre, **{"width": 674, "height": 506, **kwargs})


def one_style(style: str):
    weights = tuple(1.0 if name == style else 0.0 for name in STYLES)
    return dataclasses.replace(DISTRIBUTIONS["default"], style_weights=weights)


# ---------------------------------------------------------------------------------------------- bodies


def test_the_styles_are_the_ones_asked_for():
    assert set(STYLES) == {"city_car", "hatchback", "sedan", "estate", "coupe", "suv", "pickup", "van"}
    rng = np.random.default_rng(0)
    assert {random_car(rng).style for _ in range(300)} == set(STYLES)


@pytest.mark.parametrize("style", STYLES)
def test_every_style_renders_with_labels_in_range_and_by_definition(style):
    rng = np.random.default_rng(1)
    for _ in range(2):
        car = random_car(rng, one_style(style))
        assert car.style == style
        for azimuth in (40, 220):
            example = render_scene(car, Camera.orbit(car.centre, azimuth, 20, 3 * car.length, fov_deg=50, **SMALL))
            labels = example.labels
            for part in PARTS:
                score, visible, facing = (
                    labels[f"{p}{part}"] for p in ("perspective_score_", "visible_fraction_", "facing_")
                )
                assert 0 <= score <= 1 and 0 <= visible <= 1 and 0 <= facing <= 1
                assert score == 0 if visible * facing < 0.0199 else score == pytest.approx(visible * facing, abs=2e-4)
            seen = {part for part in PARTS if labels[f"visible_fraction_{part}"] > 0.5}
            side = "left" if azimuth < 180 else "right"
            assert {f"frontdoor_{side}", f"backdoor_{side}"} <= seen


def test_style_proportions_differ_where_they_should():
    rng = np.random.default_rng(2)

    def mean(style, field):
        return np.mean([getattr(random_car(rng, one_style(style)), field) for _ in range(20)])

    assert (
        mean("city_car", "length") < mean("hatchback", "length") < mean("estate", "length") < mean("pickup", "length")
    )
    assert mean("coupe", "height") < mean("sedan", "height") < mean("suv", "height") < mean("van", "height")
    assert mean("pickup", "deck_length") > 3 * mean("estate", "deck_length")


def test_front_and_rear_cues_stay_tied_to_the_geometry():
    """Headlights are white or amber-white, taillights red, whatever else the part look varies."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        look = random_car(rng).details
        r, g, b = look.taillight
        assert r > 120 and r > 2.5 * g and r > 2 * b
        assert min(look.headlight) > 180


# ---------------------------------------------------------------------------------------------- other cars


def test_another_car_in_front_occludes_and_never_counts_as_the_car():
    camera = door_camera()
    door = car_mesh(CAR).part_centres[PART_IDS["backdoor_left"]]
    blocker = ParkedCar(
        CarShape(style="hatchback", length=4.0, front_overhang=0.8, rear_overhang=0.85),
        (float(door[0]) + 1.8, 3.0),
        0.0,
    )
    clear = render_scene(CAR, camera)
    hidden = render_scene(CAR, camera, others=(blocker,))
    assert hidden.labels["visible_fraction_backdoor_left"] < clear.labels["visible_fraction_backdoor_left"] - 0.2
    car_pixels = hidden.mask > 0
    assert np.array_equal(hidden.mask[car_pixels], clear.mask[car_pixels])  # only ever less of the car
    assert car_pixels.sum() < (clear.mask > 0).sum()
    assert hidden.labels["facing_backdoor_left"] == clear.labels["facing_backdoor_left"]


def test_another_car_behind_changes_no_label_and_no_mask_pixel():
    camera = door_camera()
    behind = ParkedCar(CarShape(style="van", length=5.0, hood_length=0.7, windshield_rake=44, rear_rake=84, deck_length=0.18,
                                height=2.0, belt=1.0, width=1.9, front_overhang=1.0, rear_overhang=1.1), (-1.0, -4.0), 180.0)  # fmt: skip
    clear = render_scene(CAR, camera)
    with_other = render_scene(CAR, camera, others=(behind,))
    assert np.array_equal(with_other.mask, clear.mask)
    assert with_other.labels == clear.labels
    assert not np.array_equal(np.asarray(with_other.image), np.asarray(clear.image))  # it is drawn, though


def test_random_scenes_place_other_cars_and_objects_without_overlap():
    rng = np.random.default_rng(4)
    scenes = [random_scene(rng, **SMALL) for _ in range(150)]
    assert sum(bool(s.others) for s in scenes) > 30
    kinds = {item.kind for s in scenes for item in s.clutter}
    assert {"person", "tree", "wall", "building", "bush"} <= kinds
    main = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * 0.5
    for scene in scenes:
        footprint = main * [scene.car.length, scene.car.width]
        footprints = [other.corners() for other in scene.others]
        for i, other in enumerate(footprints):
            assert not rectangles_overlap(other, footprint)
            assert not any(rectangles_overlap(other, later) for later in footprints[i + 1 :])


# ---------------------------------------------------------------------------------------------- flips


def twin(part: str) -> str:
    left, right = SIDES
    if part.endswith(f"_{left}"):
        return part.removesuffix(left) + right
    return part.removesuffix(right) + left if part.endswith(f"_{right}") else part


@pytest.mark.parametrize("index", range(4))
def test_a_mirrored_camera_swaps_the_sides_exactly(index):
    """Whatever the car's look (stickers on one side included), its geometry is symmetric: the photo from
    the mirrored camera is the mirrored photo, labels with their sides swapped."""
    scene = random_scene(np.random.default_rng([11, index]), width=200, height=150)
    seen = render_scene(scene.car, scene.camera, look=scene.look)
    flipped = render_scene(scene.car, scene.camera.mirrored(), look=scene.look)
    for part in PARTS:
        for prefix in ("visible_fraction_", "facing_"):
            assert flipped.labels[prefix + twin(part)] == pytest.approx(seen.labels[prefix + part], abs=0.03)
    ids = np.arange(len(PARTS) + 1)
    ids[1:] = [PART_IDS[twin(part)] for part in PARTS]
    assert (ids[seen.mask[:, ::-1]] == flipped.mask).mean() > 0.99


# ---------------------------------------------------------------------------------------------- light and camera


def ground_pixel(camera: Camera, point) -> tuple[int, int]:
    cam = camera.rotation() @ (np.asarray(point, float) - np.asarray(camera.position))
    cx, cy = camera.principal_point
    return int(cy + camera.focal * cam[1] / cam[2]), int(cx + camera.focal * cam[0] / cam[2])


def test_the_sun_casts_the_cars_shadow_away_from_it():
    camera = Camera.orbit(CAR.centre, 60, 35, 12, fov_deg=60, width=674, height=506)
    sun_ahead = Look(sun_azimuth=0, sun_elevation=30, shadow=0.6)
    lit, unlit = (
        render_scene(CAR, camera, look=sun_ahead),
        render_scene(CAR, camera, look=dataclasses.replace(sun_ahead, shadow=0.0)),
    )
    behind = ground_pixel(camera, (-CAR.length / 2 - 1.0, 0.0, 0.0))  # in the shadow of a sun in front
    ahead = ground_pixel(camera, (CAR.length / 2 + 1.5, 0.0, 0.0))
    brightness = lambda image, px: float(np.asarray(image.image, float)[px].mean())  # noqa: E731
    assert brightness(lit, behind) < 0.85 * brightness(unlit, behind)
    assert brightness(lit, ahead) == pytest.approx(brightness(unlit, ahead), abs=2)
    assert lit.labels == unlit.labels


def test_people_in_front_occlude_like_any_object():
    camera = door_camera()
    door = car_mesh(CAR).part_centres[PART_IDS["backdoor_left"]]
    person = Clutter("person", (float(door[0]), CAR.width / 2 + 1.5), (0.45, 0.28, 1.8))
    clear = render_scene(CAR, camera).labels["visible_fraction_backdoor_left"]
    hidden = render_scene(CAR, camera, clutter=(person,)).labels["visible_fraction_backdoor_left"]
    assert 0.1 < hidden < clear - 0.1


def test_framing_runs_from_a_tenth_of_the_frame_to_cropping_close_ups_at_any_height():
    rng = np.random.default_rng(6)
    scenes = [random_scene(rng, **SMALL) for _ in range(300)]
    elevations = np.array(
        [
            np.degrees(
                np.arcsin(
                    (s.camera.position[2] - s.car.centre[2])
                    / np.linalg.norm(np.asarray(s.camera.position) - s.car.centre)
                )
            )
            for s in scenes
        ]
    )
    assert elevations.min() < 3 and elevations.max() > 45
    shifts = np.array([abs(s.camera.shift[0]) / s.camera.width for s in scenes])
    assert (shifts > 0.1).mean() > 0.1  # off-centre
    fovs = np.array([s.camera.fov_deg for s in scenes])
    assert fovs.min() < 35 and fovs.max() > 75
    looks = [s.look for s in scenes]
    assert {look.light for look in looks} == {"sun", "overcast", "dusk", "artificial"}
    assert any(look.motion_blur >= 0 for look in looks) and any(look.noise > 3 for look in looks)


def test_small_and_cropped_cars_both_occur():
    labels = pd.DataFrame([render_example(7, i, **SMALL).labels for i in range(40)])
    assert (labels["camera_distance"] > 20).any()  # a car a small share of the frame
    assert (labels["camera_distance"] < 6).any()  # a close-up


@pytest.mark.slow
def test_label_statistics_stay_near_the_challenges():
    """A sample of the default set (its first 160 images, small): the full set's figures are in bench/RESULTS.md."""
    frame = pd.DataFrame([render_example(0, i, width=160, height=120).labels for i in range(160)])
    stats = label_stats(frame, ["perspective_score_hood", "perspective_score_backdoor_left"])["targets"]
    for target in stats.values():
        assert 35 <= target["zeros_pct"] <= 68
        assert 0.18 <= target["mean"] <= 0.4
        assert 0.28 <= target["std"] <= 0.45


def test_lights_are_never_covered_by_plates_or_grilles():
    """Seen from straight ahead and behind, both headlights and both taillights show whole, whatever their size."""
    rng = np.random.default_rng(8)
    narrow = random_car(rng, one_style("city_car"))
    widest_plate = dataclasses.replace(
        narrow.details, taillight_inner=0.35, headlight_inner=0.35, plate_size=(0.52, 0.11)
    )
    worst = dataclasses.replace(
        narrow, width=1.6, chamfer=0.11, details=widest_plate
    )  # lights reach furthest in, plates widest
    mesh = car_mesh(worst)
    for side in SIDES:
        light = mesh.part == PART_IDS[f"taillight_{side}"]
        assert np.abs(mesh.vertices[light][..., 1]).min() > 0.52 / 2
    for car in [worst, *(random_car(rng) for _ in range(12))]:
        for azimuth, lights in ((0, "headlight"), (180, "taillight")):
            camera = Camera.orbit(car.centre, azimuth, 8, 2.2 * car.length, fov_deg=50, width=674, height=506)
            labels = render_scene(car, camera).labels
            for side in SIDES:
                assert labels[f"visible_fraction_{lights}_{side}"] > 0.85, (car.style, car.details, lights, side)
