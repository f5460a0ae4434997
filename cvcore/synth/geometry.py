"""Convex planar polygons with a part id and a material, and the polygon helpers the meshes are built from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from cvcore.labels import PARTS

NEAR = 0.05  # metres; polygons are clipped to this depth


@dataclass(frozen=True)
class Mesh:
    """Convex planar polygons, padded to a common vertex count by repeating each one's last vertex.

    Area bookkeeping per face: it adds its projected area to part `area_add` (0: to none) and
    removes it from part `area_sub` (a light cut out of the panel it is stuck on). `part_centres`
    are area-weighted over the same faces. The material per face: base colour, `gloss` (share of
    the sky it mirrors, glass), `specular` (strength of the sun's highlight, paint), `dirt` (mud
    towards the ground) and `texture` (contrast of a noise pattern drawn over it).
    """

    vertices: np.ndarray  # (F, K, 3)
    counts: np.ndarray  # (F,) real vertex count
    normals: np.ndarray  # (F, 3) unit, outward
    part: np.ndarray  # (F,) part id, 0 = not the car
    area_add: np.ndarray  # (F,)
    area_sub: np.ndarray  # (F,)
    colour: np.ndarray  # (F, 3) base colour 0-255
    gloss: np.ndarray  # (F,)
    specular: np.ndarray  # (F,)
    dirt: np.ndarray  # (F,)
    texture: np.ndarray  # (F,)
    part_centres: np.ndarray  # (len(PARTS) + 1, 3)

    _FACE_COLUMNS = (
        "counts",
        "normals",
        "part",
        "area_add",
        "area_sub",
        "colour",
        "gloss",
        "specular",
        "dirt",
        "texture",
    )

    @staticmethod
    def concatenate(meshes: Sequence[Mesh]) -> Mesh:
        """All meshes' faces; part centres are the first one's (the car)."""
        k = max(m.vertices.shape[1] for m in meshes)
        padded = [
            np.concatenate([m.vertices, np.repeat(m.vertices[:, -1:], k - m.vertices.shape[1], 1)], 1) for m in meshes
        ]
        joined = {name: np.concatenate([getattr(m, name) for m in meshes]) for name in Mesh._FACE_COLUMNS}
        return Mesh(vertices=np.concatenate(padded), part_centres=meshes[0].part_centres, **joined)

    def placed(self, position: Sequence[float], yaw_deg: float) -> Mesh:
        """This mesh turned by `yaw_deg` about the vertical and moved to `position` (x, y) on the
        ground, with its labels removed: another car is scenery, not the car the labels are about."""
        yaw = math.radians(yaw_deg)
        rot = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
        zeros = np.zeros_like(self.part)
        return replace(
            self,
            vertices=self.vertices @ rot.T + np.array([position[0], position[1], 0.0]),
            normals=self.normals @ rot.T,
            part=zeros,
            area_add=zeros,
            area_sub=zeros,
            part_centres=np.zeros_like(self.part_centres),
        )


class MeshBuilder:
    """Collects polygons; `build` orients each one outward using a point known to be inside its solid.

    `specular`, `dirt` and `texture` are the material of the faces added from then on.
    """

    def __init__(self, inside: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        self.inside = inside  # default point inside the solid
        self.specular = self.dirt = self.texture = 0.0
        self.polys: list[np.ndarray] = []
        self.insides: list[Sequence[float]] = []
        self.lifts: list[float] = []
        self.rows: list[tuple] = []

    def add(self, verts, part: int, colour, *, inside=None, counts: bool = True, gloss: float = 0.0) -> None:
        """Add a face of `part`; it adds its area to the part unless `counts` is False."""
        self._append(verts, inside, 0.0, (part, part if counts else 0, 0, tuple(colour), gloss))

    def decal(self, verts, part: int, colour, *, on: int, inside=None, gloss: float = 0.0, lift: float = 0.005) -> None:
        """Add a detail lying on a face of part `on`, lifted off it so it wins the depth test.

        A detail of the same part adds no area (the panel under it already counts); a detail of
        another part (a light) counts for its own part and is cut out of the panel's area.
        """
        own = part != on
        self._append(verts, inside, lift, (part, part if own else 0, on if own else 0, tuple(colour), gloss))

    def _append(self, verts, inside, lift: float, row: tuple) -> None:
        self.polys.append(np.asarray(verts, float))
        self.insides.append(self.inside if inside is None else inside)
        self.lifts.append(lift)
        self.rows.append((*row, self.specular, self.dirt, self.texture))

    def build(self) -> Mesh:
        counts = np.array([len(p) for p in self.polys])
        k = counts.max()
        verts = np.empty((len(self.polys), k, 3))
        for face, poly in zip(verts, self.polys):
            face[: len(poly)] = poly
            face[len(poly) :] = poly[-1]
        newell = _newell_vectors(verts)
        areas = np.linalg.norm(newell, axis=1) / 2
        normals = newell / areas[:, None] / 2
        centroids = verts.sum(1) / counts[:, None] - verts[:, -1] * ((k - counts) / counts)[:, None]
        flip = np.einsum("fd,fd->f", normals, centroids - np.asarray(self.insides, float)) < 0
        normals[flip] *= -1
        slot = np.arange(k)[None, :]
        order = np.where(flip[:, None] & (slot < counts[:, None]), counts[:, None] - 1 - slot, slot)
        order = np.where(flip[:, None] & (slot >= counts[:, None]), 0, order)
        verts = (
            np.take_along_axis(verts, order[..., None], 1) + np.asarray(self.lifts)[:, None, None] * normals[:, None]
        )
        part, add, sub, colour, *material = (np.array(col) for col in zip(*self.rows))
        centres = np.zeros((len(PARTS) + 1, 3))
        for pid in range(1, len(PARTS) + 1):
            sel = add == pid
            if sel.any():
                centres[pid] = (centroids[sel] * areas[sel, None]).sum(0) / areas[sel].sum()
        gloss, specular, dirt, texture = (column.astype(float) for column in material)
        return Mesh(
            verts, counts, normals, part, add, sub, colour.astype(float), gloss, specular, dirt, texture, centres
        )


def _newell_vectors(v: np.ndarray) -> np.ndarray:
    """Area-weighted normals (length = 2 x area) of padded planar polygons (F, K, 3)."""
    nxt = np.roll(v, -1, 1)
    a, b = v - nxt, v + nxt
    return np.stack([(a[..., 1] * b[..., 2]).sum(1), (a[..., 2] * b[..., 0]).sum(1), (a[..., 0] * b[..., 1]).sum(1)], 1)


def clip_polygon(poly: Sequence[np.ndarray], axis: int, bound: float, keep_above: bool) -> list[np.ndarray]:
    """Sutherland-Hodgman: the part of a convex polygon on one side of the plane coordinate[axis] = bound."""
    out: list[np.ndarray] = []
    for i, p in enumerate(poly):
        q = poly[(i + 1) % len(poly)]
        p_in = (p[axis] >= bound) if keep_above else (p[axis] <= bound)
        q_in = (q[axis] >= bound) if keep_above else (q[axis] <= bound)
        if p_in:
            out.append(p)
        if p_in != q_in:
            out.append(p + (bound - p[axis]) / (q[axis] - p[axis]) * (q - p))
    deduped = [p for i, p in enumerate(out) if np.linalg.norm(p - out[i - 1]) > 1e-9] if out else []
    return deduped if len(deduped) >= 3 else []


def slab(poly, lo: float, hi: float) -> list[np.ndarray]:
    """The part of a convex polygon with lo <= x <= hi."""
    poly = [np.asarray(p, float) for p in poly]
    poly = clip_polygon(poly, 0, lo, True)
    return clip_polygon(poly, 0, hi, False) if poly else []


def shoelace(uv: np.ndarray) -> np.ndarray:
    """Signed areas of padded 2D polygons (..., K, 2); padding (repeated last vertex) adds nothing."""
    x, y = uv[..., 0], uv[..., 1]
    return 0.5 * (x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1)


def polygon_area(p: np.ndarray) -> float:
    return float(shoelace(np.asarray(p, float)))


def inset(poly2d: np.ndarray, margin: float) -> np.ndarray | None:
    """Shrink a convex 2D polygon by moving every edge inwards by `margin`; None if nothing is left."""
    p = np.asarray(poly2d, float)
    if polygon_area(p) < 0:
        p = p[::-1]
    edges = np.roll(p, -1, 0) - p
    normals = np.stack([-edges[:, 1], edges[:, 0]], 1) / np.linalg.norm(edges, axis=1)[:, None]  # inward (CCW)
    offsets = (normals * p).sum(1) + margin
    # Corner i moves to where the shifted edges i - 1 and i meet (Cramer's rule, all corners at once).
    a, b = np.roll(normals, 1, 0), normals
    det = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    keep = np.abs(det) >= 1e-9
    oa, ob = np.roll(offsets, 1)[keep], offsets[keep]
    a, b, det = a[keep], b[keep], det[keep]
    out = np.stack([(oa * b[:, 1] - ob * a[:, 1]) / det, (a[:, 0] * ob - b[:, 0] * oa) / det], 1)
    if len(out) < 3 or polygon_area(out) < margin**2:
        return None
    inside = (out @ normals.T - (normals * p).sum(1)[None, :] >= margin * 0.999).all()
    return out if inside else None


def wall(p, q, z0, z1) -> list[tuple[float, float, float]]:
    """Vertical quad over the ground segment p -> q ((x, y) points) from height z0 to z1.

    A height may be a pair (at p, at q) for a sloping edge.
    """
    (b0, b1), (t0, t1) = (z if isinstance(z, tuple) else (z, z) for z in (z0, z1))
    return [(p[0], p[1], b0), (q[0], q[1], b1), (q[0], q[1], t1), (p[0], p[1], t0)]


def across(x0: float, z0: float, half0: float, x1: float, z1: float, half1: float) -> list[tuple[float, float, float]]:
    """Symmetric trapezoid spanning the car's width: edge at (x0, z0) of half width half0 to the one at x1."""
    return [(x0, half0, z0), (x0, -half0, z0), (x1, -half1, z1), (x1, half1, z1)]


def ngon_xz(cx, y, cz, radius, n, phase=0.0):
    """Regular n-gon in the plane y = const (wheels)."""
    a = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([cx + radius * np.cos(a), np.full(n, y), cz + radius * np.sin(a)], 1)


def box_faces(b: MeshBuilder, box, part: int, colour, *, counts: bool = True, skip_side: float = 0.0) -> None:
    """Axis-aligned box (x0, x1, y0, y1, z0, z1) without its bottom; `skip_side` drops the +y (1) or -y (-1) face."""
    x0, x1, y0, y1, z0, z1 = box
    ylo, yhi = min(y0, y1), max(y0, y1)
    centre = ((x0 + x1) / 2, (ylo + yhi) / 2, (z0 + z1) / 2)
    faces = [
        ([(x0, ylo, z1), (x1, ylo, z1), (x1, yhi, z1), (x0, yhi, z1)], 0),
        ([(x0, ylo, z0), (x1, ylo, z0), (x1, ylo, z1), (x0, ylo, z1)], -1),
        ([(x0, yhi, z0), (x1, yhi, z0), (x1, yhi, z1), (x0, yhi, z1)], 1),
        ([(x0, ylo, z0), (x0, yhi, z0), (x0, yhi, z1), (x0, ylo, z1)], 0),
        ([(x1, ylo, z0), (x1, yhi, z0), (x1, yhi, z1), (x1, ylo, z1)], 0),
    ]
    for verts, ydir in faces:
        if skip_side and ydir == skip_side:
            continue
        b.add(verts, part, colour, inside=centre, counts=counts)
