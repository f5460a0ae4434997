"""Rendering a scene into an image with its labels, and random scenes from (seed, index)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from cvcore.synth.background import background
from cvcore.synth.bodies import car_mesh, random_car
from cvcore.synth.camera import blur_scale, random_camera
from cvcore.synth.clutter import clutter_mesh, random_clutter
from cvcore.synth.distributions import (
    DISTRIBUTIONS,
    GROUNDS,
    IMAGE_SIZE_WEIGHTS,
    IMAGE_SIZES,
    SceneDistribution,
    jitter,
    scene_distribution,
)
from cvcore.synth.geometry import Mesh
from cvcore.synth.labels import compute_labels
from cvcore.synth.raster import draw_panel_gaps, project, rasterize, shade
from cvcore.synth.scene import Camera, CarShape, Clutter, Example, Look, Scene


def render_scene(car: CarShape, camera: Camera, *, clutter: Sequence[Clutter] = (), look: Look = Look()) -> Example:
    """Render one scene and compute every label from the same projection the pixels come from."""
    mesh = car_mesh(car)
    extra = clutter_mesh(clutter)
    scene_mesh = Mesh.concatenate(mesh, extra) if extra is not None else mesh
    rot = camera.rotation()
    polys, signed_area, cam_pts = project(scene_mesh, camera, rot)
    face_ids = rasterize(polys, signed_area, cam_pts, rot @ scene_mesh.normals.T, camera)
    part_of_face = np.append(scene_mesh.part, 0).astype(np.uint8)  # index -1 -> background
    mask = part_of_face[face_ids]

    colours = shade(scene_mesh, look)
    image = background(camera, rot, car, clutter, look)
    drawn = face_ids >= 0
    image[drawn] = colours[face_ids[drawn]]
    draw_panel_gaps(image, mask)
    pil = Image.fromarray(image)
    if look.blur_radius > 0:
        pil = pil.filter(ImageFilter.BoxBlur(look.blur_radius * blur_scale(camera.width, camera.height)))

    labels = compute_labels(mesh, np.abs(signed_area[: len(mesh.part)]), mask, np.asarray(camera.position, float), car)
    return Example(pil, labels, mask, look.jpeg_quality)


def random_look(rng: np.random.Generator, distribution: SceneDistribution = DISTRIBUTIONS["default"]) -> Look:
    """Sun, sky, ground, skyline and the photographic degradations of one shot."""
    d = distribution
    zenith, horizon = d.skies[rng.integers(len(d.skies))]
    skyline: tuple[float, ...] = ()
    if rng.random() < 0.6:
        steps = int(rng.integers(24, 120))
        heights = rng.uniform(0.5, 7, steps)
        if rng.random() < 0.5:  # trees: smooth; otherwise buildings: blocky
            heights = (heights + np.roll(heights, 1) + np.roll(heights, -1)) / 3
        skyline = tuple(float(x) for x in heights)
    return Look(
        sun_azimuth=rng.uniform(0, 360),
        sun_elevation=rng.uniform(15, 70),
        ambient=rng.uniform(*d.ambient),
        sky_zenith=jitter(rng, zenith, d.sky_jitter[0]),
        sky_horizon=jitter(rng, horizon, d.sky_jitter[1]),
        ground=jitter(rng, GROUNDS[rng.integers(len(GROUNDS))], d.ground_jitter),
        ground_texture=rng.uniform(0.03, 0.12),
        haze_distance=rng.uniform(60, 250),
        skyline=skyline,
        skyline_colour=jitter(rng, (70, 85, 62) if rng.random() < 0.6 else (120, 118, 120), 15),
        texture_seed=int(rng.integers(2**31)),
        exposure=rng.uniform(*d.exposure),
        blur_radius=rng.uniform(*d.sharp_blur) if rng.random() < d.sharp_share else rng.uniform(*d.soft_blur),
        jpeg_quality=int(rng.integers(*d.jpeg_quality)),
    )


def random_scene(
    rng: np.random.Generator,
    *,
    width: int | None = None,
    height: int | None = None,
    distribution: SceneDistribution = DISTRIBUTIONS["default"],
) -> Scene:
    """A random scene; the same random draws are made whatever size is asked for."""
    size = IMAGE_SIZES[rng.choice(len(IMAGE_SIZES), p=IMAGE_SIZE_WEIGHTS)]
    width, height = width or size[0], height or size[1]
    car = random_car(rng, distribution)
    camera = random_camera(rng, car, width, height, distribution)
    return Scene(car, camera, random_clutter(rng, car, camera, distribution), random_look(rng, distribution))


def render_example(
    seed: int, index: int, *, width: int | None = None, height: int | None = None, distribution: str = "default"
) -> Example:
    """Example `index` of the data set with this `seed` and distribution: depends on nothing else (workers, order).

    Each distribution but "default" (which keeps its original stream) draws from its own random
    stream, so that the same seed does not give a shifted twin of every default scene.
    """
    knobs = scene_distribution(distribution)
    key = [seed, index] if distribution == "default" else [seed, index, zlib.crc32(distribution.encode())]
    scene = random_scene(np.random.default_rng(key), width=width, height=height, distribution=knobs)
    return render_scene(scene.car, scene.camera, clutter=scene.clutter, look=scene.look)
