"""Sky, skyline, textured ground (asphalt, grass, parking bays) with cast and contact shadows, traced per pixel."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cvcore.synth.geometry import NEAR, clip_polygon
from cvcore.synth.scene import Camera, Look, direction


def sky_colour(look: Look, up: np.ndarray) -> np.ndarray:
    """Sky colour for ray directions with z component `up` (>= 0)."""
    t = np.sqrt(np.clip(up, 0, 1))[..., None]
    return np.asarray(look.sky_horizon, float) * (1 - t) + np.asarray(look.sky_zenith, float) * t


def background(
    camera: Camera, rot: np.ndarray, look: Look, casters: Sequence[np.ndarray], footprints: Sequence[Footprint]
) -> np.ndarray:
    """Sky, skyline and textured ground with cast and contact shadows, traced per pixel at half resolution.

    The horizon lands exactly where the camera puts it because every pixel's ray is intersected
    with the ground plane z = 0. `casters` are point sets (N, 3) whose convex hulls cast the sun's
    shadows; `footprints` darken the ground right under the cars.
    """
    scale = 2
    w, h = (camera.width + scale - 1) // scale, (camera.height + scale - 1) // scale
    cx, cy = camera.principal_point
    u = (((np.arange(w) + 0.5) * scale - cx) / camera.focal).astype(np.float32)
    v = (((np.arange(h) + 0.5) * scale - cy) / camera.focal).astype(np.float32)
    # Ray directions per pixel, one (h, w) array per axis (not normalised: `norm` is their length).
    r32 = rot.astype(np.float32)
    rx, ry, rz = (u[None, :] * r32[0, i] + (v * r32[1, i] + r32[2, i])[:, None] for i in range(3))
    norm = np.sqrt(rx * rx + ry * ry + rz * rz)
    up = (rz / norm).ravel()

    lut = sky_colour(look, np.linspace(0, 1, 1024)).clip(0, 255).astype(np.uint8)
    out = lut[(np.clip(up, 0, 1) * 1023).astype(np.int64)]
    if look.skyline:
        sky = np.flatnonzero(up >= 0)
        azimuth = np.arctan2(ry.ravel()[sky], rx.ravel()[sky])
        idx = ((azimuth + math.pi) / (2 * math.pi) * len(look.skyline)).astype(np.int64) % len(look.skyline)
        heights = np.sin(np.radians(np.asarray(look.skyline, np.float32)))[idx]
        out[sky[up[sky] < heights]] = np.asarray(look.skyline_colour).clip(0, 255).astype(np.uint8)

    ground = np.flatnonzero(up < -1e-4)
    eye = np.asarray(camera.position, np.float32)
    reach = -eye[2] / rz.ravel()[ground]  # ray parameter where it meets z = 0
    gx, gy = eye[0] + reach * rx.ravel()[ground], eye[1] + reach * ry.ravel()[ground]
    t = reach * norm.ravel()[ground]  # distance
    noise = ground_noise(look.texture_seed)
    n = len(noise)
    # Texture fades with distance, where one pixel would cover many noise cells (and alias).
    # The noise varies over ~4 cells: blotches of ~10 cm (fine) and ~70 cm (coarse).
    fine = noise[(gx * 40).astype(np.int64) % n, (gy * 40).astype(np.int64) % n] * np.exp(-t / 12)
    coarse = noise[(gy * 6).astype(np.int64) % n, (gx * 6).astype(np.int64) % n] * np.exp(-t / 60)
    shade = 1 + look.ground_texture * (0.5 * fine + coarse)
    for footprint in footprints:
        shade *= footprint.darkening(gx, gy)
    haze = 1 - np.exp(-t / look.haze_distance)
    shade *= 1 - haze
    # Light on the ground: the sun's colour where it is lit, the sky's grey in the cast shadow.
    shadowed = look.shadow * _cast_shadow(camera, rot, look, casters, (w, h), scale).ravel()[ground]
    sun = np.asarray(look.sun_colour, np.float32)
    albedo = np.asarray(look.ground, np.float32)
    colour = (shade[:, None] * (albedo * sun)) - (shade * shadowed)[:, None] * (albedo * (sun - 0.45))
    colour += haze[:, None] * np.asarray(look.sky_horizon, np.float32)
    if look.parking_bays:
        yaw = math.radians(look.parking_yaw)
        along, across = math.cos(yaw) * gx + math.sin(yaw) * gy, -math.sin(yaw) * gx + math.cos(yaw) * gy
        lines = ((across % look.parking_bays) < 0.12) & (np.abs(along) < 2.5) | (np.abs(np.abs(along) - 2.5) < 0.06)
        colour[lines] *= 2.4
    out[ground] = colour.clip(0, 255).astype(np.uint8)
    half_res = Image.fromarray(out.reshape(h, w, 3))
    return np.array(half_res.resize((camera.width, camera.height), Image.BILINEAR))


@dataclass(frozen=True)
class Footprint:
    """A car's rectangle on the ground: the soft contact shadow right under it (light blocked from the sky)."""

    position: tuple[float, float]
    yaw_deg: float
    half_size: tuple[float, float]
    strength: float

    def darkening(self, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        yaw = math.radians(self.yaw_deg)
        dx, dy = gx - self.position[0], gy - self.position[1]
        lx, ly = math.cos(yaw) * dx + math.sin(yaw) * dy, -math.sin(yaw) * dx + math.cos(yaw) * dy
        outside = np.maximum(np.abs(lx) - self.half_size[0], np.abs(ly) - self.half_size[1])
        return 1 - self.strength * np.clip(0.5 - outside / 0.5, 0, 1)


def _cast_shadow(camera: Camera, rot: np.ndarray, look: Look, casters, size: tuple[int, int], scale: int) -> np.ndarray:
    """Share of each half-resolution pixel's ground point that lies in a sun shadow (0..1, soft edges).

    Each caster's shadow is the convex hull of its points pushed along the sun's rays onto the ground.
    """
    mask = Image.new("L", size, 0)
    if look.shadow <= 0 or not casters:
        return np.zeros(size[::-1], np.float32)
    sun = direction(look.sun_azimuth, max(look.sun_elevation, 2.0))
    draw = ImageDraw.Draw(mask)
    eye = np.asarray(camera.position, float)
    cx, cy = camera.principal_point
    for points in casters:
        on_ground = points[:, :2] - points[:, 2:3] / sun[2] * sun[:2]
        hull = _convex_hull(on_ground)
        cam = (np.column_stack([hull, np.zeros(len(hull))]) - eye) @ rot.T
        if cam[:, 2].min() <= NEAR:
            clipped = clip_polygon(list(cam), 2, NEAR, True)
            if not clipped:
                continue
            cam = np.array(clipped)
        uv = np.column_stack([camera.focal * cam[:, 0] / cam[:, 2] + cx, camera.focal * cam[:, 1] / cam[:, 2] + cy])
        draw.polygon([(float(a), float(b)) for a, b in uv / scale], fill=255)
    mask = mask.filter(ImageFilter.BoxBlur(1.5))
    return np.asarray(mask, np.float32) / 255


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain: the convex hull of 2D points, counter-clockwise."""
    pts = sorted(set(map(tuple, np.round(points, 4))))
    if len(pts) < 3:
        return np.array(pts)

    def half(sequence):
        chain: list = []
        for p in sequence:
            while (
                len(chain) >= 2
                and (chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1])
                - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0])
                <= 0
            ):
                chain.pop()
            chain.append(p)
        return chain[:-1]

    return np.array(half(pts) + half(reversed(pts)))


@functools.lru_cache(maxsize=4)
def ground_noise(seed: int) -> np.ndarray:
    """Smooth periodic noise (256 x 256 cells, unit std): random values on a coarse grid, interpolated."""
    coarse = np.random.default_rng(seed).normal(size=(64, 64)).astype(np.float32)
    tiled = np.tile(coarse, (2, 2))  # interpolate across the wrap-around too
    # Only the middle of the 4x upscale: what a 512 x 512 resize cropped to [128:384] gave, 5x faster.
    # It is stored with that crop's row stride because numpy's float32 sum (in std) depends on the
    # memory layout; the noise, hence every image, stays bit-identical.
    smooth = np.empty((256, 512), np.float32)[:, :256]
    smooth[...] = Image.fromarray(tiled, mode="F").resize((256, 256), Image.BILINEAR, box=(32, 32, 96, 96))
    return smooth / smooth.std()
