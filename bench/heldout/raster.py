"""Pinhole camera and a z-buffered triangle rasteriser in numpy, vectorised over triangles.

Triangles are binned by the size of their pixel bounding box; each bin tests all its triangles'
candidate pixel centres at once, and the nearest fragment per pixel wins through one
`np.minimum.at` over a key that packs the quantised depth above the triangle index. Depth is
interpolated as 1/z (exact under perspective); attributes are interpolated perspective-correctly
for the winners only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEAR = 0.05  # metres; triangles with a corner closer than this to the camera plane are not drawn
_DEPTH_SCALE = 1e5  # depth quantum 10 micrometres
_NO_HIT = np.iinfo(np.int64).max
_MAX_CANDIDATES = 1_500_000  # candidate pixels tested per chunk (memory)


@dataclass(frozen=True)
class Camera:
    """Looks from `eye` at `target`, rolled by `roll_deg`; `focal_px` in pixels; principal point at the centre + `shift`."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    focal_px: float
    width: int
    height: int
    roll_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)

    def rotation(self) -> np.ndarray:
        """Rows: the camera's right, down and forward axes in world coordinates."""
        forward = np.asarray(self.target, float) - np.asarray(self.eye, float)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-6:  # looking straight down or up
            right = np.array([0.0, -1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        c, s = math.cos(math.radians(self.roll_deg)), math.sin(math.radians(self.roll_deg))
        return np.stack([c * right + s * down, -s * right + c * down, forward])

    @property
    def principal(self) -> tuple[float, float]:
        return self.width / 2 + self.shift[0], self.height / 2 + self.shift[1]

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, float) - np.asarray(self.eye, float)) @ self.rotation().T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (..., 2) (pixel centres at +0.5) and depth along the view axis (...)."""
        cam = self.to_camera(points)
        depth = cam[..., 2]
        safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
        cx, cy = self.principal
        uv = np.stack([cx + self.focal_px * cam[..., 0] / safe, cy + self.focal_px * cam[..., 1] / safe], -1)
        return uv, depth

    def rays(self, step: int = 1) -> np.ndarray:
        """(height / step, width / step, 3) unit world directions through the centres of step x step pixel blocks."""
        cx, cy = self.principal
        u = (np.arange(0, self.width, step) + step / 2 - cx) / self.focal_px
        v = (np.arange(0, self.height, step) + step / 2 - cy) / self.focal_px
        cam = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), -1)
        world = cam @ self.rotation()
        return world / np.linalg.norm(world, axis=-1, keepdims=True)


def screen_areas(uv: np.ndarray) -> np.ndarray:
    """Signed pixel areas of projected triangles (T, 3, 2)."""
    a, b, c = uv[:, 0], uv[:, 1], uv[:, 2]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


class ZBuffer:
    """Nearest-fragment buffer of triangle indices; `draw` can be called for several batches."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.key = np.full(width * height, _NO_HIT, np.int64)

    def draw(self, uv: np.ndarray, depth: np.ndarray, ids: np.ndarray) -> None:
        """Rasterise triangles (T, 3, 2) with corner depths (T, 3) and indices `ids` (T,) < 2**31."""
        ok = depth.min(1) > NEAR
        uv, depth, ids = uv[ok], depth[ok], ids[ok]
        if len(uv) == 0:
            return
        w, h = self.width, self.height
        lo, hi = uv.min(1), uv.max(1)
        i0 = np.clip(np.ceil(lo[:, 0] - 0.5), 0, w).astype(np.int64)
        i1 = np.clip(np.floor(hi[:, 0] - 0.5), -1, w - 1).astype(np.int64)
        j0 = np.clip(np.ceil(lo[:, 1] - 0.5), 0, h).astype(np.int64)
        j1 = np.clip(np.floor(hi[:, 1] - 0.5), -1, h - 1).astype(np.int64)
        span = np.maximum(i1 - i0, j1 - j0) + 1
        visible = (i1 >= i0) & (j1 >= j0)
        inv_z = 1.0 / depth
        size = 1
        while True:
            chosen = np.flatnonzero(visible & (span <= size) & (span > size // 2))
            chunk = max(1, _MAX_CANDIDATES // (size * size))
            for start in range(0, len(chosen), chunk):
                sel = chosen[start : start + chunk]
                self._draw_bin(uv[sel], inv_z[sel], ids[sel], i0[sel], i1[sel], j0[sel], j1[sel], size)
            if size >= span.max(initial=0):
                break
            size *= 2

    def _draw_bin(self, uv, inv_z, ids, i0, i1, j0, j1, size) -> None:
        steps = np.arange(size, dtype=np.float32) + 0.5
        origin = uv[:, 0]  # edge functions relative to the first corner keep float32 exact enough
        px = (i0 - origin[:, 0]).astype(np.float32)[:, None, None] + steps[None, None, :]
        py = (j0 - origin[:, 1]).astype(np.float32)[:, None, None] + steps[None, :, None]
        rel = (uv - origin[:, None]).astype(np.float32)
        sign = np.sign(screen_areas(uv)).astype(np.float32)
        inside = None
        for p, q in ((1, 2), (2, 0), (0, 1)):
            dx, dy = (rel[:, q, 0] - rel[:, p, 0]) * sign, (rel[:, q, 1] - rel[:, p, 1]) * sign
            edge = dx[:, None, None] * (py - rel[:, p, 1, None, None]) - dy[:, None, None] * (px - rel[:, p, 0, None, None])
            inside = edge >= 0 if inside is None else inside & (edge >= 0)
        t, r, c = np.nonzero(inside & (sign != 0)[:, None, None])
        col, row = i0[t] + c, j0[t] + r
        keep = (col <= i1[t]) & (row <= j1[t])
        t, col, row = t[keep], col[keep], row[keep]
        if len(t) == 0:
            return
        w = _barycentric(uv[t], col + 0.5, row + 0.5)
        b = w / w.sum(-1, keepdims=True)
        frag_depth = 1.0 / np.einsum("fk,fk->f", b, inv_z[t])
        key = (np.minimum(frag_depth * _DEPTH_SCALE, 2**30).astype(np.int64) << 32) | ids[t].astype(np.int64)
        np.minimum.at(self.key, row * self.width + col, key)

    def winners(self) -> np.ndarray:
        """(height, width) index of the triangle seen at each pixel, -1 where none."""
        ids = np.where(self.key == _NO_HIT, -1, self.key & 0xFFFFFFFF)
        return ids.reshape(self.height, self.width)


def _barycentric(tri: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Unnormalised barycentric weights (edge functions) of points in triangles (..., 3, 2); last axis 3."""
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]

    def edge(p, q):
        return (q[..., 0] - p[..., 0]) * (py - p[..., 1]) - (q[..., 1] - p[..., 1]) * (px - p[..., 0])

    return np.stack([edge(b, c), edge(c, a), edge(a, b)], -1)


def perspective_weights(uv: np.ndarray, depth: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Perspective-correct barycentric weights (N, 3) of pixel centres (rows, cols) in their triangles (N, 3, 2)."""
    w = _barycentric(uv, cols + 0.5, rows + 0.5)
    b = w / np.where(np.abs(w.sum(-1)) < 1e-12, 1e-12, w.sum(-1))[:, None]
    b = np.clip(b, 0, 1) / depth
    return b / b.sum(-1, keepdims=True)
