"""Sky, skyline and textured ground with shadows, traced per pixel."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from cvcore.synth.scene import Camera, CarShape, Clutter, Look, direction


def sky_colour(look: Look, up: np.ndarray) -> np.ndarray:
    """Sky colour for ray directions with z component `up` (>= 0)."""
    t = np.sqrt(np.clip(up, 0, 1))[..., None]
    return np.asarray(look.sky_horizon, float) * (1 - t) + np.asarray(look.sky_zenith, float) * t


def background(camera: Camera, rot: np.ndarray, car: CarShape, clutter: Sequence[Clutter], look: Look) -> np.ndarray:
    """Sky, skyline and textured ground with soft contact shadows, traced per pixel at half resolution.

    The horizon lands exactly where the camera puts it because every pixel's ray is intersected
    with the ground plane z = 0.
    """
    scale = 2
    w, h = (camera.width + scale - 1) // scale, (camera.height + scale - 1) // scale
    cx, cy = camera.principal_point
    u = (((np.arange(w) + 0.5) * scale - cx) / camera.focal).astype(np.float32)
    v = (((np.arange(h) + 0.5) * scale - cy) / camera.focal).astype(np.float32)
    rot32 = rot.astype(np.float32)
    dirs = (u[None, :, None] * rot32[0] + v[:, None, None] * rot32[1] + rot32[2]).reshape(-1, 3)  # not normalised
    dirs /= np.sqrt((dirs * dirs).sum(1))[:, None]
    up = dirs[:, 2]

    lut = (sky_colour(look, np.linspace(0, 1, 1024)) * look.exposure).clip(0, 255).astype(np.uint8)
    out = lut[(np.clip(up, 0, 1) * 1023).astype(np.int64)]
    if look.skyline:
        sky = np.flatnonzero(up >= 0)
        azimuth = np.arctan2(dirs[sky, 1], dirs[sky, 0])
        idx = ((azimuth + math.pi) / (2 * math.pi) * len(look.skyline)).astype(np.int64) % len(look.skyline)
        heights = np.sin(np.radians(np.asarray(look.skyline, np.float32)))[idx]
        out[sky[up[sky] < heights]] = (np.asarray(look.skyline_colour) * look.exposure).clip(0, 255).astype(np.uint8)

    ground = np.flatnonzero(up < -1e-4)
    eye = np.asarray(camera.position, np.float32)
    t = -eye[2] / up[ground]
    gx, gy = eye[0] + t * dirs[ground, 0], eye[1] + t * dirs[ground, 1]
    noise = _ground_noise(look.texture_seed)
    n = len(noise)
    # Texture fades with distance, where one pixel would cover many noise cells (and alias).
    # The noise varies over ~4 cells: blotches of ~10 cm (fine) and ~70 cm (coarse).
    fine = noise[(gx * 40).astype(np.int64) % n, (gy * 40).astype(np.int64) % n] * np.exp(-t / 12)
    coarse = noise[(gy * 6).astype(np.int64) % n, (gx * 6).astype(np.int64) % n] * np.exp(-t / 60)
    shade = (1 + look.ground_texture * (0.5 * fine + coarse)) * _shadow_factor(gx, gy, car, clutter, look)
    haze = 1 - np.exp(-t / look.haze_distance)
    colour = np.asarray(look.ground, np.float32) * (shade * (1 - haze))[:, None]
    colour += np.asarray(look.sky_horizon, np.float32) * haze[:, None]
    out[ground] = (colour * look.exposure).clip(0, 255).astype(np.uint8)
    half_res = Image.fromarray(out.reshape(h, w, 3))
    return np.array(half_res.resize((camera.width, camera.height), Image.BILINEAR))


def _ground_noise(seed: int) -> np.ndarray:
    """Smooth periodic noise (256 x 256 cells, unit std): random values on a coarse grid, interpolated."""
    coarse = np.random.default_rng(seed).normal(size=(64, 64)).astype(np.float32)
    tiled = np.tile(coarse, (2, 2))  # interpolate across the wrap-around too
    # Only the middle of the 4x upscale: what a 512 x 512 resize cropped to [128:384] gave, 5x faster.
    # It is stored with that crop's row stride because numpy's float32 sum (in std) depends on the
    # memory layout; the noise, hence every image, stays bit-identical.
    smooth = np.empty((256, 512), np.float32)[:, :256]
    smooth[...] = Image.fromarray(tiled, mode="F").resize((256, 256), Image.BILINEAR, box=(32, 32, 96, 96))
    return smooth / smooth.std()


def _shadow_factor(gx, gy, car: CarShape, clutter: Sequence[Clutter], look: Look) -> np.ndarray:
    """Darkening of the ground under the car and the clutter (soft-edged footprints, shifted away from the sun)."""
    sun = direction(look.sun_azimuth, look.sun_elevation)
    shift = -sun[:2] / max(sun[2], 0.3) * 0.25
    factor = np.ones_like(gx)

    def footprint(x, y, half_x, half_y, strength, softness):
        outside = np.maximum(np.abs(x) - half_x, np.abs(y) - half_y)
        return 1 - strength * np.clip(0.5 - outside / softness, 0, 1)

    factor *= footprint(
        gx - shift[0] * car.height, gy - shift[1] * car.height, car.length / 2, car.width / 2, 0.55, 0.5
    )
    for item in clutter:
        yaw = math.radians(item.yaw_deg)
        dx = gx - item.position[0] - shift[0] * item.size[2]
        dy = gy - item.position[1] - shift[1] * item.size[2]
        lx, ly = math.cos(yaw) * dx + math.sin(yaw) * dy, -math.sin(yaw) * dx + math.cos(yaw) * dy
        factor *= footprint(lx, ly, item.size[0] / 2, item.size[1] / 2, 0.4, 0.3)
    return factor
