"""Rendering a scene into an image with its labels, and random scenes from (seed, index)."""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageFilter

from cvcore.synth.background import Footprint, background, ground_noise
from cvcore.synth.bodies import car_mesh, random_car
from cvcore.synth.camera import blur_scale, outline_points, random_camera
from cvcore.synth.clutter import clutter_mesh, random_clutter, random_others, shadow_casters
from cvcore.synth.distributions import (
    DISTRIBUTIONS,
    IMAGE_SIZE_WEIGHTS,
    IMAGE_SIZES,
    SceneDistribution,
    scene_distribution,
)
from cvcore.synth.geometry import Mesh
from cvcore.synth.labels import compute_labels
from cvcore.synth.looks import random_look
from cvcore.synth.raster import draw_panel_gaps, project, rasterize, shade
from cvcore.synth.scene import Camera, CarShape, Clutter, Example, Look, ParkedCar, Scene


def render_scene(
    car: CarShape,
    camera: Camera,
    *,
    clutter: Sequence[Clutter] = (),
    look: Look = Look(),
    others: Sequence[ParkedCar] = (),
) -> Example:
    """Render one scene and compute every label from the same projection the pixels come from.

    Only `car` is labelled: `others` (other cars) and `clutter` are part id 0, occluding it where
    they stand in front of it.
    """
    mesh = car_mesh(car)
    scenery = [car_mesh(other.car).placed(other.position, other.yaw_deg) for other in others]
    extra = clutter_mesh(clutter)
    scene_mesh = Mesh.concatenate([mesh, *scenery, *([extra] if extra is not None else [])])
    rot = camera.rotation()
    polys, signed_area, cam_pts = project(scene_mesh, camera, rot)
    face_ids = rasterize(polys, signed_area, cam_pts, rot @ scene_mesh.normals.T, camera)
    part_of_face = np.append(scene_mesh.part, 0).astype(np.uint8)  # index -1 -> background
    mask = part_of_face[face_ids]

    eye = np.asarray(camera.position, float)
    colours = shade(scene_mesh, look, eye)
    casters = [
        outline_points(car),
        *(_placed_points(outline_points(o.car), o) for o in others),
        *shadow_casters(clutter),
    ]
    contact = 0.3 + 0.4 * look.ambient
    footprints = [
        Footprint((0.0, 0.0), 0.0, (car.length / 2, car.width / 2), contact),
        *(Footprint(o.position, o.yaw_deg, (o.car.length / 2, o.car.width / 2), contact) for o in others),
    ]
    image = np.where(
        (face_ids >= 0)[..., None],
        np.take(colours, face_ids, axis=0),
        background(camera, rot, look, casters, footprints),
    )
    _texture(image, face_ids, np.append(scene_mesh.texture, 0.0), look.texture_seed)
    draw_panel_gaps(image, mask)
    labels = compute_labels(mesh, np.abs(signed_area[: len(mesh.part)]), mask, eye, car)
    return Example(_photograph(Image.fromarray(image), look), labels, mask, look.jpeg_quality)


def _placed_points(points: np.ndarray, other: ParkedCar) -> np.ndarray:
    yaw = math.radians(other.yaw_deg)
    rot = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    return points @ rot.T + np.array([other.position[0], other.position[1], 0.0])


def _texture(image: np.ndarray, face_ids: np.ndarray, texture: np.ndarray, seed: int) -> None:
    """Modulate the pixels of textured faces (walls, foliage, buildings) with a noise pattern of ~8-pixel grain."""
    if not texture.any():
        return
    amplitude = texture.astype(np.float32)[face_ids]
    rows, cols = np.nonzero(amplitude)
    noise = ground_noise(seed)
    n = len(noise)
    pattern = noise[(rows // 2) % n, (cols // 2) % n] + 0.5 * noise[(cols // 5) % n, (rows // 5) % n]
    factor = np.clip(1 + amplitude[rows, cols] * pattern, 0.3, 1.7)[:, None]
    image[rows, cols] = np.clip(image[rows, cols] * factor, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _shake_kernel(angle_deg: float) -> ImageFilter.Kernel:
    """A 5x5 line of weights along `angle_deg`: a short camera shake."""
    kernel = np.zeros((5, 5))
    a = math.radians(angle_deg)
    for t in np.linspace(-2, 2, 9):
        kernel[round(2 + t * math.sin(a)), round(2 + t * math.cos(a))] += 1
    return ImageFilter.Kernel((5, 5), kernel.ravel().tolist(), scale=float(kernel.sum()))


def _photograph(pil: Image.Image, look: Look) -> Image.Image:
    """What the camera does to the scene: exposure and white balance, defocus, shake and sensor noise."""
    gains = look.exposure * np.asarray(look.white_balance)
    levels = np.arange(256, dtype=float)
    pil = pil.point(np.concatenate([np.clip(levels * g, 0, 255) for g in gains]).astype(np.uint8).tolist())
    if look.blur_radius > 0:
        pil = pil.filter(ImageFilter.BoxBlur(look.blur_radius * blur_scale(*pil.size)))
    if look.motion_blur >= 0:
        pil = pil.filter(_shake_kernel(round(look.motion_blur / 15) * 15))
    if look.noise > 0:
        pil = ImageChops.add(pil, _grain(pil.size, look.noise, look.texture_seed), offset=-128)
    return pil


def _grain(size: tuple[int, int], std: float, seed: int) -> Image.Image:
    """Luminance noise of `std` grey levels around 128: the unit grain from an offset of `seed`, rescaled."""
    dx, dy = seed % 512, (seed // 512) % 512
    scale = std / 32
    lut = np.clip(np.round(128 + (np.arange(256) - 128) * scale), 0, 255).astype(int).tolist()
    return _tiled_grain(size).crop((dx, dy, dx + size[0], dy + size[1])).point(lut).convert("RGB")


@functools.lru_cache(maxsize=8)
def _tiled_grain(size: tuple[int, int]) -> Image.Image:
    """The unit grain tiled over `size` plus 512 pixels each way (room for the offset)."""
    unit = Image.fromarray(np.random.default_rng(0).normal(128, 32, (512, 512)).clip(0, 255).astype(np.uint8))
    tiled = Image.new("L", (size[0] + 512, size[1] + 512))
    for x in range(0, size[0] + 512, 512):
        for y in range(0, size[1] + 512, 512):
            tiled.paste(unit, (x, y))
    return tiled


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
    others = random_others(rng, car, camera, distribution, lambda r: random_car(r, distribution))
    clutter = random_clutter(rng, car, camera, distribution, [o.corners(0.1) for o in others])
    return Scene(car, camera, clutter, random_look(rng, distribution), others)


def render_example(
    seed: int, index: int, *, width: int | None = None, height: int | None = None, distribution: str = "default"
) -> Example:
    """Example `index` of the data set with this `seed` and distribution: depends on nothing else (workers, order).

    Each distribution but "default" draws from its own random stream, so that the same seed does not
    give a shifted twin of every default scene.
    """
    knobs = scene_distribution(distribution)
    key = [seed, index] if distribution == "default" else [seed, index, zlib.crc32(distribution.encode())]
    scene = random_scene(np.random.default_rng(key), width=width, height=height, distribution=knobs)
    return render_scene(scene.car, scene.camera, clutter=scene.clutter, look=scene.look, others=scene.others)
