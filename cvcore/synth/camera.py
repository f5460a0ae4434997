"""Where photographers stand (random cameras framing the car) and how image size scales the blur."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from cvcore.synth.bodies import stations
from cvcore.synth.distributions import DISTRIBUTIONS, SceneDistribution
from cvcore.synth.geometry import NEAR
from cvcore.synth.scene import Camera, CarShape

BLUR_REFERENCE_DIAGONAL = 800.0
"""Diagonal (pixels) of 640x480, the smallest of `IMAGE_SIZES`: `Look.blur_radius` is meant for these sizes."""


def blur_scale(width: int, height: int) -> float:
    """Factor on `Look.blur_radius` for an image of this size: min(1, diagonal / 800).

    A radius in pixels blurs a small render (e.g. 160x120 for low-resolution pretraining) much more,
    relative to its content, than a photo-sized one; scaling it with the diagonal keeps a small render
    looking like a shrunk photo. At the drawn sizes (640x480 and up) the radius is used as it is, so
    the default data set's images do not change.
    """
    return min(1.0, math.hypot(width, height) / BLUR_REFERENCE_DIAGONAL)


def random_camera(
    rng: np.random.Generator,
    car: CarShape,
    width: int,
    height: int,
    distribution: SceneDistribution = DISTRIBUTIONS["default"],
) -> Camera:
    """Where photographers stand: any azimuth, ground level to steep views from above, framing from a car a
    tenth of the frame wide to close-ups that cut it at the border, often off-centre.

    Azimuth density is 1 + 0.2 cos(a - 45) + 0.1 cos(2a) + 0.4 cos(4a): views along the car's axes
    (front, sides, rear) and the front-left three-quarter view are preferred. The default elevation
    0.5 + 74.5 Beta(1.5, 5.2) degrees (mean about 17, 4 % above 40) keeps both challenge targets near
    the real data's label statistics (see bench/RESULTS.md). About a quarter of the shots frame the
    car's outline larger than the image (most of them crop it).
    """
    while True:
        azimuth = rng.uniform(0, 360)
        a = math.radians(azimuth)
        density = 1 + 0.2 * math.cos(a - math.pi / 4) + 0.1 * math.cos(2 * a) + 0.4 * math.cos(4 * a)
        if rng.random() * 1.7 < density:
            break
    d = distribution
    low, high = d.elevation_deg
    elevation = low + (high - low) * rng.beta(*d.elevation_beta)
    fov = rng.uniform(*d.fov_deg)
    kind = rng.random()
    if kind < d.close_share:
        framing = rng.uniform(*d.close_framing)
    elif kind < d.close_share + d.small_share:
        framing = rng.uniform(*d.small_framing)
    else:
        framing = rng.uniform(*d.loose_framing)
    target = car.centre * np.array([1, 1, 0.8]) + rng.normal(0, 1, 3) * np.array([0.05, 0.05, 0.02]) * car.length
    off_centre = rng.uniform(-1, 1, 2) * d.off_centre
    roll = rng.normal(0, d.roll_std_deg)

    def camera_at(distance: float) -> Camera:
        return Camera.orbit(
            car.centre,
            azimuth,
            elevation,
            distance,
            fov_deg=fov,
            width=width,
            height=height,
            target=target,
            roll_deg=roll,
        )

    # Bisect the distance at which the car's outline fills `framing` of the half-frame, then move
    # the principal point by up to `off_centre` of the room left between the car and the border.
    outline = outline_points(car)
    near, far = car.radius + 0.6, 200.0
    if frame_fill(camera_at(near), outline) > framing:
        for _ in range(16):
            mid = (near + far) / 2
            near, far = (mid, far) if frame_fill(camera_at(mid), outline) > framing else (near, mid)
        near = far
    camera = camera_at(near)
    fill = frame_fill(camera, outline, per_axis=True)
    room = np.maximum(1 - np.asarray(fill), 0.15) * np.array([width / 2, height / 2])
    return replace(camera, shift=tuple(float(v) for v in off_centre * room))


def outline_points(car: CarShape) -> np.ndarray:
    """Corners of the lower body and of the roof: a cheap stand-in for the car's silhouette."""
    s = stations(car)
    half, w2, roof = car.length / 2, car.width / 2, car.width / 2 - car.tumblehome
    lower = [(x, y, z) for x in (-half, half) for y in (-w2, w2) for z in (0.0, car.belt)]
    upper = [(x, y, car.height) for x in (s.roof_front, s.roof_rear) for y in (-roof, roof)]
    return np.array(lower + upper)


def frame_fill(camera: Camera, points: np.ndarray, *, per_axis: bool = False):
    """Largest |offset from the image centre| of the points, as a share of the half-frame (1 = touches the
    border); with `per_axis`, the (horizontal, vertical) pair."""
    cam = (points - np.asarray(camera.position)) @ camera.rotation().T
    if cam[:, 2].min() <= NEAR:
        return (math.inf, math.inf) if per_axis else math.inf
    u = camera.focal * cam[:, 0] / cam[:, 2] / (camera.width / 2)
    v = camera.focal * cam[:, 1] / cam[:, 2] / (camera.height / 2)
    fill = (float(np.abs(u).max()), float(np.abs(v).max()))
    return fill if per_axis else max(fill)
