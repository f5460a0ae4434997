"""Projection, z-buffered rasterisation and flat shading of meshes."""

from __future__ import annotations

import math

import numpy as np

from cvcore.synth.background import sky_colour
from cvcore.synth.geometry import NEAR, Mesh, clip_polygon, polygon_area, shoelace
from cvcore.synth.scene import Camera, Look, direction


def project(mesh: Mesh, camera: Camera, rot: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray, np.ndarray]:
    """Pixel polygons of the camera-facing faces (None for the others) and their signed areas.

    Faces reaching behind the near plane are clipped to it first; the image border does not clip:
    areas are over the unbounded image plane, as the labels need.
    """
    eye = np.asarray(camera.position, float)
    cam = (mesh.vertices - eye) @ rot.T  # (F, K, 3): right, down, depth
    focal, (cx, cy) = camera.focal, camera.principal_point
    facing = np.einsum("fd,fd->f", eye - mesh.vertices[:, 0], mesh.normals) > 1e-9
    depth = cam[..., 2]
    in_front = facing & (depth.min(1) > NEAR)
    safe_depth = np.where(depth > NEAR, depth, 1.0)
    uv = np.stack([focal * cam[..., 0] / safe_depth + cx, focal * cam[..., 1] / safe_depth + cy], -1)
    signed = np.where(in_front, shoelace(uv), 0.0)
    polys: list[np.ndarray | None] = [None] * len(cam)
    for f in np.flatnonzero(in_front):
        polys[f] = uv[f, : mesh.counts[f]]
    for f in np.flatnonzero(facing & ~in_front):
        clipped = clip_polygon(list(cam[f, : mesh.counts[f]]), 2, NEAR, True)
        if clipped:
            c = np.array(clipped)
            polys[f] = np.stack([focal * c[:, 0] / c[:, 2] + cx, focal * c[:, 1] / c[:, 2] + cy], 1)
            signed[f] = polygon_area(polys[f])
    return polys, signed, cam


def rasterize(polys, signed_area, cam_pts, cam_normals, camera: Camera) -> np.ndarray:
    """Z-buffer convex polygons into an (H, W) array of face indices (-1: nothing drawn).

    Per polygon: the span of every row inside its bounding box comes from its edges (a convex
    polygon is the intersection of its edges' half-planes), then one masked write. Depth is kept as
    1/z, which is affine in pixel coordinates over a plane, so it is one broadcast sum per polygon.
    """
    width, height = camera.width, camera.height
    focal, (cx, cy) = camera.focal, camera.principal_point
    inv_depth = np.zeros((height, width), np.float32)
    face_ids = np.full((height, width), -1, np.int32)
    cols = np.arange(width, dtype=np.float64) + 0.5
    rows = np.arange(height, dtype=np.float64) + 0.5
    for f, pts in enumerate(polys):
        if pts is None or signed_area[f] == 0:
            continue
        lo, hi = pts.min(0), pts.max(0)
        x0, x1 = max(0, math.ceil(lo[0] - 0.5)), min(width - 1, math.floor(hi[0] - 0.5))
        y0, y1 = max(0, math.ceil(lo[1] - 0.5)), min(height - 1, math.floor(hi[1] - 0.5))
        if y0 > y1 or x0 > x1:
            continue
        if signed_area[f] < 0:
            pts = pts[::-1]
        ys, xs = rows[y0 : y1 + 1], cols[x0 : x1 + 1]
        # Each edge's x at every row: edges going down bound the span on the right, going up on the left.
        nxt = np.concatenate([pts[1:], pts[:1]])
        dy = nxt[:, 1] - pts[:, 1]
        sloped = np.abs(dy) >= 1e-12
        x_at = pts[sloped, :1] + (ys[None, :] - pts[sloped, 1:]) * ((nxt[sloped, 0] - pts[sloped, 0]) / dy[sloped])[:, None]
        down = dy[sloped] > 0
        right = x_at[down].min(0, initial=np.inf)
        left = x_at[~down].max(0, initial=-np.inf)
        inside = (xs[None, :] >= left[:, None]) & (xs[None, :] <= right[:, None])
        # 1/z on the face's plane n.X = d: (n . ((u - cx)/f, (v - cy)/f, 1)) / d.
        n = cam_normals[:, f]
        d = float(n @ cam_pts[f, 0])
        a, b, c = n[0] / focal / d, n[1] / focal / d, (n[2] - n[0] * cx / focal - n[1] * cy / focal) / d
        depth = (b * ys + c).astype(np.float32)[:, None] + (a * xs).astype(np.float32)[None, :]
        z_view = inv_depth[y0 : y1 + 1, x0 : x1 + 1]
        inside &= depth > z_view
        np.copyto(z_view, depth, where=inside)
        np.copyto(face_ids[y0 : y1 + 1, x0 : x1 + 1], f, where=inside)
    return face_ids


MUD = np.array([96, 80, 58], float)


def shade(mesh: Mesh, look: Look, eye: np.ndarray) -> np.ndarray:
    """Colour per face: Lambert under the sun and the sky, a specular highlight and a mirrored
    environment (sky above the horizon, ground below) on glossy paint and glass, mud towards the
    ground on dirty paint; last row is unused padding (the background)."""
    sun = direction(look.sun_azimuth, look.sun_elevation)
    normals = mesh.normals
    lambert = np.clip(normals @ sun, 0, None)
    sun_light = (1 - look.ambient) * lambert[:, None] * np.asarray(look.sun_colour)[None, :]
    light = look.ambient * (0.8 + 0.2 * normals[:, 2])[:, None] + sun_light
    heights = mesh.vertices[..., 2].mean(1)
    mud = np.clip(mesh.dirt * (1.2 - heights / 0.6), 0, 0.85)[:, None]
    colour = (mesh.colour * (1 - mud) + MUD * mud) * light

    view = eye - mesh.vertices[:, 0]
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    mirrored = 2 * np.einsum("fd,fd->f", normals, view)[:, None] * normals - view
    env = np.where(
        mirrored[:, 2:3] >= 0, sky_colour(look, np.clip(mirrored[:, 2], 0, 1)), np.asarray(look.ground, float) * 0.8
    )
    reflect = np.clip(mesh.gloss + 0.25 * mesh.specular * (1 - mud[:, 0]), 0, 0.6)[:, None]
    colour = colour * (1 - reflect) + env * reflect
    highlight = np.clip(np.einsum("fd,d->f", mirrored, sun), 0, 1) ** 40 * mesh.specular * (1 - look.ambient) * 400
    colour += highlight[:, None] * np.asarray(look.sun_colour)[None, :]
    colour = np.clip(colour, 0, 255).astype(np.uint8)
    return np.vstack([colour, np.zeros((1, 3), np.uint8)])


def draw_panel_gaps(image: np.ndarray, mask: np.ndarray) -> None:
    """Darken pixels where two car parts meet, so doors, hood and fenders read as separate panels."""
    gap = np.zeros(mask.shape, bool)
    horizontal = (mask[:, 1:] != mask[:, :-1]) & (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
    vertical = (mask[1:, :] != mask[:-1, :]) & (mask[1:, :] > 0) & (mask[:-1, :] > 0)
    gap[:, 1:] |= horizontal
    gap[1:, :] |= vertical
    image[gap] = (image[gap] * 0.55).astype(np.uint8)
