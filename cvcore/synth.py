"""Procedural car renderer: the embedded default data set, with labels that are exact by construction.

Why: the real challenge data (photos + hand-made perspective scores) cannot ship with the project,
yet every stage needs a data set in the customer's format to run end to end. Rendering cars
ourselves also gives labels with a precise definition, part masks, and as many images as wanted.

Scene. A low-poly car (sedan, hatchback, SUV or van, randomised proportions and colours) stands on
a ground plane under a sky; 0-4 clutter objects (boxes, poles, blobs) stand around it and sometimes
in front of it. A pinhole camera at any azimuth, elevation 3-50 degrees, varied distance, field of
view and aim (so that about a fifth of the images crop the car), looks at it. A z-buffered
rasteriser in numpy draws flat Lambert-shaded polygons; the image is then blurred a little and,
when written, JPEG-compressed at a random quality.

Scene distributions (``DISTRIBUTIONS``, a ``SceneDistribution`` each) set what a photo source
changes. "default", described above, is the embedded data set, tuned to the real data's label
statistics. "shifted" is another source for fine-tuning on data never seen in pretraining: wide-angle
phone lenses (60-90 instead of 45-75 degrees field of view), higher viewpoints (elevation 5-65,
mean about 29 instead of 19 degrees), more close-ups and crops, more SUVs, more saturated paints,
mostly overcast and darker light, more blur and JPEG compression (quality 30-74 instead of 60-95),
and more clutter (0-4 objects, about 2 on average); it draws from its own random stream.

Coordinates: car coordinates are the world: x forward, y to the car's left, z up, origin on the
ground under the car's centre. Azimuth is measured from the front towards the left (0 = camera in
front of the car, 90 = on its left), elevation above the horizontal, both seen from the centre of
the car's bounding box (``camera_azimuth``, ``camera_elevation``, ``camera_distance``).

Labels, for every part P (``PARTS``):

    score(P) = visible_fraction(P) * facing(P), rounded to 4 decimals; below 0.02 it becomes 0.

- ``visible_fraction(P)``: pixels of P in the final image (after occlusion by anything, including
  the car itself, and after cropping by the image border), divided by the projected area of P's
  camera-facing faces on the unbounded image plane, computed analytically from polygon areas;
  clipped to [0, 1]. Details that only decorate a part (door handles, rims, window glass, mirrors,
  wheel wells) do not add to its area; lights cut their area out of the panel they sit on.
- ``facing(P)``: max(0, cos of the angle between the unit vector from P's centre (area-weighted
  centroid of its faces) to the camera and P's canonical viewing direction below).

Canonical viewing directions, as (azimuth, elevation) in degrees; ``_right`` parts mirror their
``_left`` twin (negated azimuth, i.e. negated y). They are the directions a photographer would
choose to show the part best:

    hood (0, 35)                 windshield (0, 30)          roof (0, 90): straight from above
    rear_window (180, 30)        trunk (180, 35)             front (0, 10)      rear (180, 10)
    frontdoor_left (90, 10)      backdoor_left (90, 10)      wheel_*_left (90, 5)
    front_fender_left (60, 10)   rear_fender_left (120, 10)  three-quarter views
    headlight_left (25, 10)      taillight_left (155, 10)    the corner the light wraps around

Entry points: ``render_example`` (one random example from (seed, index), for streaming),
``render_scene`` (an explicit car, camera, clutter and look), ``write_dataset`` (the customer's
layout, in parallel, deterministic) and ``label_stats`` / ``format_label_stats``.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from tqdm import tqdm

from cvcore.data import DEFAULT_CSV, FILENAME_COLUMN, IMAGE_DIR
from cvcore.errors import UserError
from cvcore.labels import (
    CHALLENGE_PARTS,
    CHALLENGE_TARGETS,
    PART_IDS,
    PARTS,
    CAMERA_COLUMNS,
    SIDES,
    facing_column,
    score_column,
    visible_fraction_column,
)

RENDERER_VERSION = 1

STYLES: tuple[str, ...] = ("sedan", "hatchback", "suv", "van")
MANIFEST_NAME = "synth.json"
MASK_DIR = "masks"
MIN_SCORE = 0.02

_CANONICAL_LEFT = {  # (azimuth, elevation) in degrees; see the module docstring
    "hood": (0, 35), "windshield": (0, 30), "roof": (0, 90), "rear_window": (180, 30),
    "trunk": (180, 35), "front": (0, 10), "rear": (180, 10),
    "frontdoor_left": (90, 10), "backdoor_left": (90, 10),
    "front_fender_left": (60, 10), "rear_fender_left": (120, 10),
    "wheel_front_left": (90, 5), "wheel_rear_left": (90, 5),
    "headlight_left": (25, 10), "taillight_left": (155, 10),
}  # fmt: skip


def direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector in car coordinates for an azimuth (from the front towards the left) and elevation."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])


def _canonical_directions() -> np.ndarray:
    table = np.zeros((len(PARTS) + 1, 3))
    for part, (az, el) in _CANONICAL_LEFT.items():
        table[PART_IDS[part]] = direction(az, el)
        if part.endswith("_left"):
            table[PART_IDS[part.removesuffix("_left") + "_right"]] = direction(-az, el)
    return table


CANONICAL_DIRECTIONS: np.ndarray = _canonical_directions()
"""(len(PARTS) + 1, 3) unit vectors indexed by part id (row 0 unused)."""


def extended_columns() -> list[str]:
    """Label columns of an extended CSV, in order: the challenge targets first."""
    scores = list(CHALLENGE_TARGETS) + [score_column(p) for p in PARTS if p not in CHALLENGE_PARTS]
    return [
        *scores,
        *(visible_fraction_column(p) for p in PARTS),
        *(facing_column(p) for p in PARTS),
        *CAMERA_COLUMNS,
    ]


# ----------------------------------------------------------------------------------------------
# Scene description


@dataclass(frozen=True)
class CarShape:
    """Proportions (metres, degrees) and colours of one car; stations along x are derived from them."""

    style: str = "sedan"
    length: float = 4.6
    width: float = 1.8
    height: float = 1.45
    clearance: float = 0.15
    belt: float = 0.9  # height of the hood's rear edge and the window sills
    nose_drop: float = 0.12  # how much lower the hood's front edge is
    wheel_radius: float = 0.32
    front_overhang: float = 0.9
    rear_overhang: float = 1.0
    hood_length: float = 1.25
    windshield_rake: float = 28.0  # angle above the horizontal
    rear_rake: float = 30.0
    deck_length: float = 0.5  # trunk lid (sedan) or the strip behind the tailgate glass
    tumblehome: float = 0.14  # how far the roof edge sits inside the body side
    chamfer: float = 0.12  # plan-view bevel of the four corners
    bumper_height: float = 0.45  # top of the rear bumper; tailgate above it (not for sedans)
    paint: tuple[int, int, int] = (170, 172, 178)
    trim: tuple[int, int, int] = (30, 30, 32)  # pillars and window frames
    rim: tuple[int, int, int] = (175, 175, 180)

    @property
    def centre(self) -> np.ndarray:
        """Centre of the bounding box: the point azimuth, elevation and distance refer to."""
        return np.array([0.0, 0.0, self.height / 2])

    @property
    def radius(self) -> float:
        """Radius of the bounding sphere around `centre` (framing, clutter placement)."""
        return float(math.hypot(self.length / 2, self.width / 2 + 0.2, self.height / 2))


@dataclass(frozen=True)
class Camera:
    """Pinhole camera; `fov_deg` spans the longer image side, `shift` moves the principal point (pixels)."""

    position: tuple[float, float, float]
    target: tuple[float, float, float]
    fov_deg: float
    width: int
    height: int
    roll_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def orbit(
        cls,
        centre: Sequence[float],
        azimuth_deg: float,
        elevation_deg: float,
        distance: float,
        *,
        fov_deg: float,
        width: int,
        height: int,
        target: Sequence[float] | None = None,
        roll_deg: float = 0.0,
        shift: tuple[float, float] = (0.0, 0.0),
    ) -> Camera:
        """A camera `distance` from `centre` in the given direction, looking at `target` (default: centre)."""
        centre = np.asarray(centre, float)
        position = centre + distance * direction(azimuth_deg, elevation_deg)
        aim = centre if target is None else np.asarray(target, float)
        return cls(tuple(position), tuple(aim), fov_deg, width, height, roll_deg, shift)

    @property
    def focal(self) -> float:
        return max(self.width, self.height) / 2 / math.tan(math.radians(self.fov_deg) / 2)

    @property
    def principal_point(self) -> tuple[float, float]:
        return self.width / 2 + self.shift[0], self.height / 2 + self.shift[1]

    def rotation(self) -> np.ndarray:
        """Rows: image right, image down, viewing direction, in car coordinates."""
        forward = np.asarray(self.target, float) - np.asarray(self.position, float)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-6:
            raise ValueError("camera looks straight up or down; its roll is undefined")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        roll = math.radians(self.roll_deg)
        right, down = math.cos(roll) * right + math.sin(roll) * down, math.cos(roll) * down - math.sin(roll) * right
        return np.stack([right, down, forward])


@dataclass(frozen=True)
class Clutter:
    """An object standing on the ground: ``kind`` is "box", "pole" or "blob"."""

    kind: str
    position: tuple[float, float]
    size: tuple[float, float, float]  # extent along its own x and y, and height
    yaw_deg: float = 0.0
    colour: tuple[int, int, int] = (120, 100, 80)

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.size[0], self.size[1]) / 2


@dataclass(frozen=True)
class Look:
    """Light, background and photographic degradations; the default is a plain, sharp daylight shot."""

    sun_azimuth: float = 45.0
    sun_elevation: float = 45.0
    ambient: float = 0.45
    sky_zenith: tuple[int, int, int] = (80, 125, 200)
    sky_horizon: tuple[int, int, int] = (195, 212, 232)
    ground: tuple[int, int, int] = (90, 90, 94)
    ground_texture: float = 0.08  # contrast of the ground's noise
    haze_distance: float = 120.0  # metres over which the ground fades into the horizon colour
    skyline: tuple[float, ...] = ()  # heights (degrees) of a tree or building line around the horizon
    skyline_colour: tuple[int, int, int] = (60, 75, 55)
    texture_seed: int = 0
    exposure: float = 1.0
    blur_radius: float = 0.0  # pixels of a 640x480 or larger image; smaller ones scale it (`blur_scale`)
    jpeg_quality: int = 92


@dataclass(frozen=True)
class Scene:
    """Everything `render_scene` needs; `random_scene` draws one."""

    car: CarShape
    camera: Camera
    clutter: tuple[Clutter, ...] = ()
    look: Look = field(default_factory=Look)


@dataclass
class Example:
    """One rendered example: the RGB image, every label column, and the per-pixel part ids."""

    image: Image.Image
    labels: dict[str, float]
    mask: np.ndarray  # uint8 (H, W): PART_IDS, 0 = not the car
    jpeg_quality: int = 92

    def jpeg_bytes(self) -> bytes:
        """The image as written to a data set (JPEG at this example's quality)."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="JPEG", quality=self.jpeg_quality)
        return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Geometry: convex planar polygons with a part id and a material


@dataclass(frozen=True)
class Mesh:
    """Convex planar polygons, padded to a common vertex count by repeating each one's last vertex.

    Area bookkeeping per face: it adds its projected area to part `area_add` (0: to none) and
    removes it from part `area_sub` (a light cut out of the panel it is stuck on). `part_centres`
    are area-weighted over the same faces.
    """

    vertices: np.ndarray  # (F, K, 3)
    counts: np.ndarray  # (F,) real vertex count
    normals: np.ndarray  # (F, 3) unit, outward
    part: np.ndarray  # (F,) part id, 0 = not the car
    area_add: np.ndarray  # (F,)
    area_sub: np.ndarray  # (F,)
    colour: np.ndarray  # (F, 3) base colour 0-255
    gloss: np.ndarray  # (F,) share of sky reflection (glass)
    part_centres: np.ndarray  # (len(PARTS) + 1, 3)

    @staticmethod
    def concatenate(first: Mesh, second: Mesh) -> Mesh:
        """Both meshes' faces; part centres are the first one's (the car)."""
        k = max(first.vertices.shape[1], second.vertices.shape[1])
        padded = [
            np.concatenate([m.vertices, np.repeat(m.vertices[:, -1:], k - m.vertices.shape[1], 1)], 1)
            for m in (first, second)
        ]
        columns = ("counts", "normals", "part", "area_add", "area_sub", "colour", "gloss")
        joined = {name: np.concatenate([getattr(first, name), getattr(second, name)]) for name in columns}
        return Mesh(vertices=np.concatenate(padded), part_centres=first.part_centres, **joined)


class _MeshBuilder:
    """Collects polygons; `build` orients each one outward using a point known to be inside its solid."""

    def __init__(self, inside: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        self.inside = inside  # default point inside the solid
        self.polys: list[np.ndarray] = []
        self.insides: list[Sequence[float]] = []
        self.lifts: list[float] = []
        self.rows: list[tuple[int, int, int, tuple[float, float, float], float]] = []

    def add(self, verts, part: int, colour, *, inside=None, counts: bool = True, gloss: float = 0.0) -> None:
        """Add a face of `part`; it adds its area to the part unless `counts` is False."""
        self.polys.append(np.asarray(verts, float))
        self.insides.append(self.inside if inside is None else inside)
        self.lifts.append(0.0)
        self.rows.append((part, part if counts else 0, 0, tuple(colour), gloss))

    def decal(self, verts, part: int, colour, *, on: int, inside=None, gloss: float = 0.0, lift: float = 0.005) -> None:
        """Add a detail lying on a face of part `on`, lifted off it so it wins the depth test.

        A detail of the same part adds no area (the panel under it already counts); a detail of
        another part (a light) counts for its own part and is cut out of the panel's area.
        """
        self.polys.append(np.asarray(verts, float))
        self.insides.append(self.inside if inside is None else inside)
        self.lifts.append(lift)
        own = part != on
        self.rows.append((part, part if own else 0, on if own else 0, tuple(colour), gloss))

    def build(self) -> Mesh:
        counts = np.array([len(p) for p in self.polys])
        k = counts.max()
        verts = np.stack([np.concatenate([p, np.repeat(p[-1:], k - len(p), 0)]) for p in self.polys])
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
        part, add, sub, colour, gloss = (np.array(col) for col in zip(*self.rows))
        centres = np.zeros((len(PARTS) + 1, 3))
        for pid in range(1, len(PARTS) + 1):
            sel = add == pid
            if sel.any():
                centres[pid] = (centroids[sel] * areas[sel, None]).sum(0) / areas[sel].sum()
        return Mesh(verts, counts, normals, part, add, sub, colour.astype(float), gloss.astype(float), centres)


def _newell_vectors(v: np.ndarray) -> np.ndarray:
    """Area-weighted normals (length = 2 x area) of padded planar polygons (F, K, 3)."""
    nxt = np.roll(v, -1, 1)
    a, b = v - nxt, v + nxt
    return np.stack([(a[..., 1] * b[..., 2]).sum(1), (a[..., 2] * b[..., 0]).sum(1), (a[..., 0] * b[..., 1]).sum(1)], 1)


def _clip(poly: Sequence[np.ndarray], axis: int, bound: float, keep_above: bool) -> list[np.ndarray]:
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


def _slab(poly, lo: float, hi: float) -> list[np.ndarray]:
    """The part of a convex polygon with lo <= x <= hi."""
    poly = [np.asarray(p, float) for p in poly]
    poly = _clip(poly, 0, lo, True)
    return _clip(poly, 0, hi, False) if poly else []


def _shoelace(uv: np.ndarray) -> np.ndarray:
    """Signed areas of padded 2D polygons (..., K, 2); padding (repeated last vertex) adds nothing."""
    x, y = uv[..., 0], uv[..., 1]
    return 0.5 * (x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1)


def _signed_area(p: np.ndarray) -> float:
    return float(_shoelace(np.asarray(p, float)))


def _inset(poly2d: np.ndarray, margin: float) -> np.ndarray | None:
    """Shrink a convex 2D polygon by moving every edge inwards by `margin`; None if nothing is left."""
    p = np.asarray(poly2d, float)
    if _signed_area(p) < 0:
        p = p[::-1]
    edges = np.roll(p, -1, 0) - p
    normals = np.stack([-edges[:, 1], edges[:, 0]], 1) / np.linalg.norm(edges, axis=1)[:, None]  # inward (CCW)
    offsets = (normals * p).sum(1) + margin
    out = []
    for i in range(len(p)):
        a = np.stack([normals[i - 1], normals[i]])
        if abs(np.linalg.det(a)) < 1e-9:
            continue
        out.append(np.linalg.solve(a, [offsets[i - 1], offsets[i]]))
    out = np.array(out)
    if len(out) < 3 or _signed_area(out) < margin**2:
        return None
    inside = all((normals @ q - (normals * p).sum(1) >= margin * 0.999).all() for q in out)
    return out if inside else None


def _wall(p, q, z0, z1) -> list[tuple[float, float, float]]:
    """Vertical quad over the ground segment p -> q ((x, y) points) from height z0 to z1.

    A height may be a pair (at p, at q) for a sloping edge.
    """
    (b0, b1), (t0, t1) = (z if isinstance(z, tuple) else (z, z) for z in (z0, z1))
    return [(p[0], p[1], b0), (q[0], q[1], b1), (q[0], q[1], t1), (p[0], p[1], t0)]


def _across(x0: float, z0: float, half0: float, x1: float, z1: float, half1: float) -> list[tuple[float, float, float]]:
    """Symmetric trapezoid spanning the car's width: edge at (x0, z0) of half width half0 to the one at x1."""
    return [(x0, half0, z0), (x0, -half0, z0), (x1, -half1, z1), (x1, half1, z1)]


def _ngon_xz(cx, y, cz, radius, n, phase=0.0):
    """Regular n-gon in the plane y = const (wheels)."""
    a = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([cx + radius * np.cos(a), np.full(n, y), cz + radius * np.sin(a)], 1)


_TAIL_DROP = 0.03  # the deck slopes down this much towards the tail


@dataclass(frozen=True)
class _Stations:
    """x positions along the car derived from a `CarShape`."""

    windshield_base: float
    roof_front: float
    roof_rear: float
    rear_window_base: float
    wheel_front: float
    wheel_rear: float
    arch_radius: float
    frontdoor_front: float
    pillar_b: float
    backdoor_rear: float


def _stations(car: CarShape) -> _Stations:
    """Derive the stations; proportions that cannot be built into a closed car raise ValueError."""
    half = car.length / 2
    ws = half - car.hood_length
    rw = -half + car.deck_length
    rise = car.height - car.belt
    roof_front = ws - rise / math.tan(math.radians(car.windshield_rake))
    roof_rear = rw + rise / math.tan(math.radians(car.rear_rake))
    wf, wr = half - car.front_overhang, -half + car.rear_overhang
    arch = 1.12 * car.wheel_radius
    fd, bd = wf - arch - 0.05, wr + arch + 0.04
    s = _Stations(ws, roof_front, roof_rear, rw, wf, wr, arch, fd, bd + 0.52 * (fd - bd), bd)
    problems = [
        (roof_front - roof_rear < 0.2, "roof shorter than 0.2 m (hood, deck or rakes too long)"),
        (not -half + car.chamfer < rw < ws < half - car.chamfer, "hood and deck overlap or miss the corners"),
        (fd - bd < 1.0, "wheelbase too short for two doors"),
        (car.wheel_radius + arch + 0.04 > _hood_line(car, ws, rw, wf), "front wheel arches reach the hood"),
        (car.clearance >= car.wheel_radius, "clearance above the axles"),
        (car.style not in STYLES, f"style must be one of {STYLES}"),
    ]
    for bad, why in problems:
        if bad:
            raise ValueError(f"impossible CarShape: {why}: {car}")
    return s


def _hood_line(car: CarShape, windshield_base: float, rear_window_base: float, x: float) -> float:
    """Height of the body's top edge at x: hood sloping to the nose, belt, deck sloping to the tail."""
    half = car.length / 2
    if x > windshield_base:
        return car.belt - car.nose_drop * (x - windshield_base) / (half - windshield_base)
    if x < rear_window_base:
        return car.belt - _TAIL_DROP * (rear_window_base - x) / (rear_window_base + half)
    return car.belt


def _sill(car: CarShape, arch_radius: float, wheel_x: float | None, x: float) -> float:
    """Lower edge of the body side at x: the clearance, or the wheel arch over the wheel at `wheel_x`."""
    if wheel_x is None:
        return car.clearance
    return car.wheel_radius + math.sqrt(max(0.0, arch_radius**2 - (x - wheel_x) ** 2))


def car_mesh(car: CarShape) -> Mesh:
    """The car as labelled polygons, closed from every viewpoint above the ground."""
    s = _stations(car)
    half, w2, ch, th = car.length / 2, car.width / 2, car.chamfer, car.tumblehome
    low, belt, top = car.clearance, car.belt, car.height
    nose, tail = belt - car.nose_drop, belt - _TAIL_DROP
    ws, rw, rf, rr = s.windshield_base, s.rear_window_base, s.roof_front, s.roof_rear
    paint, glass, dark, rubber, plate = car.paint, (28, 34, 42), (22, 22, 24), (26, 26, 28), (225, 225, 218)
    ids = PART_IDS
    b = _MeshBuilder(inside=(0.0, 0.0, (low + belt) / 2))

    def body_top(x: float) -> float:
        return _hood_line(car, ws, rw, x)

    # Top: hood and deck (reaching into the bevelled corners), windshield, roof, rear window.
    hood_corner, deck_corner = body_top(half - ch), body_top(-half + ch)
    hood = [(ws, w2, belt), (half - ch, w2, hood_corner), (half, w2 - ch, nose)]
    deck = [(rw, w2, belt), (-half + ch, w2, deck_corner), (-half, w2 - ch, tail)]
    b.add(hood + [(x, -y, z) for x, y, z in reversed(hood)], ids["hood"], paint)
    b.add(deck + [(x, -y, z) for x, y, z in reversed(deck)], ids["trunk"], paint)
    b.add(_across(ws, belt, w2, rf, top, w2 - th), ids["windshield"], glass, gloss=0.22)
    b.add(_across(rf, top, w2 - th, rr, top, w2 - th), ids["roof"], paint)
    b.add(_across(rw, belt, w2, rr, top, w2 - th), ids["rear_window"], glass, gloss=0.22)

    # Front face with grille, air intake and plate; rear face with bumper, and a tailgate unless a sedan.
    yi = w2 - ch  # half width of the front and rear faces
    front, rear, bumper = ids["front"], ids["rear"], car.bumper_height
    lamp_z = (nose - 0.04 - min(0.13, (nose - low) * 0.3), nose - 0.04)
    b.add(_wall((half, yi), (half, -yi), low, nose), front, paint)
    b.decal(_wall((half, 0.55 * yi), (half, -0.55 * yi), *lamp_z), front, dark, on=front)
    b.decal(_wall((half, 0.6 * yi), (half, -0.6 * yi), low + 0.06, low + 0.16), front, dark, on=front)
    b.decal(_wall((half, 0.26), (half, -0.26), low + 0.19, low + 0.3), front, plate, on=front)
    if car.style == "sedan":
        b.add(_wall((-half, yi), (-half, -yi), low, tail), rear, paint)
        taillight_on, taillight_z = rear, (tail - 0.05 - (lamp_z[1] - lamp_z[0]), tail - 0.05)
    else:
        b.add(_wall((-half, yi), (-half, -yi), low, bumper), rear, paint)
        b.add(_wall((-half, yi), (-half, -yi), bumper, tail), ids["trunk"], paint)
        taillight_on, taillight_z = ids["trunk"], (bumper + 0.08, tail - 0.05)
    b.decal(_wall((-half, 0.26), (-half, -0.26), low + 0.12, low + 0.23), rear, plate, on=rear)
    b.decal(_wall((-half, 0.6 * yi), (-half, -0.6 * yi), low + 0.03, low + 0.09), rear, dark, on=rear)

    for sy, side in ((1.0, "left"), (-1.0, "right")):
        y, y_face = sy * w2, sy * yi  # the body side; the edge of the front and rear faces
        fender_f, fender_r = ids[f"front_fender_{side}"], ids[f"rear_fender_{side}"]
        door_f, door_b = ids[f"frontdoor_{side}"], ids[f"backdoor_{side}"]
        headlight, taillight = ids[f"headlight_{side}"], ids[f"taillight_{side}"]

        # Bevelled corners, and the lights that wrap around them.
        b.add(_wall((half - ch, y), (half, y_face), low, (hood_corner, nose)), fender_f, paint)
        b.add(_wall((-half + ch, y), (-half, y_face), low, (deck_corner, tail)), fender_r, paint)
        edge, wrap = sy * (yi - 0.005), sy * (yi + 0.7 * ch)
        lamp, red = (215, 218, 225), (165, 22, 26)
        b.decal(_wall((half, sy * 0.6 * yi), (half, edge), *lamp_z), headlight, lamp, on=front, gloss=0.2)
        b.decal(_wall((half, edge), (half - 0.7 * ch, wrap), *lamp_z), headlight, lamp, on=fender_f, gloss=0.2)
        inner = sy * (0.62 * yi if car.style == "sedan" else yi - 0.16)
        b.decal(_wall((-half, inner), (-half, edge), *taillight_z), taillight, red, on=taillight_on)
        b.decal(_wall((-half, edge), (-half + 0.7 * ch, wrap), *taillight_z), taillight, red, on=fender_r)

        # Lower body side in vertical strips; strips over a wheel follow its arch.
        wheels = ((s.wheel_front, fender_f), (s.wheel_rear, fender_r))
        arch_x = [x + s.arch_radius * math.cos(t) for x, _ in wheels for t in np.linspace(0, math.pi, 9)]
        xs = sorted({-half + ch, half - ch, ws, rw, s.frontdoor_front, s.pillar_b, s.backdoor_rear, *arch_x})
        xs = [x for x in xs if -half + ch <= x <= half - ch]
        for x0, x1 in zip(xs[:-1], xs[1:]):
            mid = (x0 + x1) / 2
            if mid > s.frontdoor_front:
                part = fender_f
            elif mid > s.pillar_b:
                part = door_f
            else:
                part = door_b if mid > s.backdoor_rear else fender_r
            arch = next((x for x, _ in wheels if abs(mid - x) < s.arch_radius), None)
            sill = (_sill(car, s.arch_radius, arch, x0), _sill(car, s.arch_radius, arch, x1))
            b.add(_wall((x0, y), (x1, y), sill, (body_top(x0), body_top(x1))), part, paint)

        # Door handles, and the mirror (part of the front door, adds no area).
        for door, rear_edge in ((door_f, s.pillar_b), (door_b, s.backdoor_rear)):
            b.decal(_wall((rear_edge + 0.07, y), (rear_edge + 0.22, y), belt - 0.14, belt - 0.1), door, dark, on=door)
        mx = min(ws, s.frontdoor_front) - 0.04
        mirror = (mx - 0.16, mx, sy * w2, sy * (w2 + 0.17), belt + 0.03, belt + 0.15)
        _box_faces(b, mirror, door_f, paint, counts=False, skip_side=-sy)

        # Window line: the greenhouse side, split at the doors; glass inset into each door's piece.
        slope = th / (top - belt)
        green = [(ws, y, belt), (rf, sy * (w2 - th), top), (rr, sy * (w2 - th), top), (rw, y, belt)]
        pieces = (
            (s.frontdoor_front, half, fender_f, False),
            (s.pillar_b, s.frontdoor_front, door_f, True),
            (s.backdoor_rear, s.pillar_b, door_b, True),
            (-half, s.backdoor_rear, fender_r, car.style != "sedan"),
        )
        for lo, hi, part, window in pieces:
            piece = _slab(green, lo, hi)
            if not piece:
                continue
            b.add(piece, part, car.trim)
            pane = _inset(np.array([(p[0], p[2]) for p in piece]), 0.05) if window else None
            if pane is not None:
                b.decal([(x, sy * (w2 - slope * (z - belt)), z) for x, z in pane], part, glass, on=part, gloss=0.22)

        # Wheels: wheel well behind, tyre disk, rim and hub decals, tread, inner disk.
        for wheel_x, fender in wheels:
            wheel = ids[f"wheel_{'front' if wheel_x == s.wheel_front else 'rear'}_{side}"]
            r, arch = car.wheel_radius, s.arch_radius
            # The well stays inside the body: below the hood line, within the corners, above the sill.
            well_x = (max(wheel_x - arch - 0.3, -half + ch + 0.02), min(wheel_x + arch + 0.3, half - ch - 0.02))
            well_top = min(r + arch + 0.15, *(body_top(x) - 0.03 for x in well_x))
            well_y = sy * (w2 - 0.34)
            well = _wall((well_x[0], well_y), (well_x[1], well_y), low, well_top)
            b.add(well, fender, dark, inside=(wheel_x, 0.0, r), counts=False)
            y_out, y_in = sy * (w2 - 0.03), sy * (w2 - 0.25)
            hub = (wheel_x, sy * (w2 - 0.14), r)
            outer = _ngon_xz(wheel_x, y_out, r, r, 12, -math.pi / 2)
            inner = _ngon_xz(wheel_x, y_in, r, r, 12, -math.pi / 2)
            b.add(outer, wheel, rubber, inside=hub)
            b.decal(_ngon_xz(wheel_x, y_out, r, 0.64 * r, 10), wheel, car.rim, on=wheel, inside=hub)
            hub_cap = tuple(int(c * 0.55) for c in car.rim)
            b.decal(_ngon_xz(wheel_x, y_out, r, 0.2 * r, 6), wheel, hub_cap, on=wheel, inside=hub, lift=0.01)
            b.add(inner, wheel, rubber, inside=hub)
            for i in range(12):
                j = (i + 1) % 12
                b.add([outer[i], outer[j], inner[j], inner[i]], wheel, rubber, inside=hub)
    return b.build()


def _box_faces(b: _MeshBuilder, box, part: int, colour, *, counts: bool = True, skip_side: float = 0.0) -> None:
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


_ICO_T = (1 + 5**0.5) / 2
_ICOSAHEDRON_VERTICES = np.array([
    (-1, _ICO_T, 0), (1, _ICO_T, 0), (-1, -_ICO_T, 0), (1, -_ICO_T, 0), (0, -1, _ICO_T), (0, 1, _ICO_T),
    (0, -1, -_ICO_T), (0, 1, -_ICO_T), (_ICO_T, 0, -1), (_ICO_T, 0, 1), (-_ICO_T, 0, -1), (-_ICO_T, 0, 1),
]) / math.hypot(1, _ICO_T)  # fmt: skip
_ICOSAHEDRON_FACES = (
    (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
    (7, 1, 8),
    (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1),
)  # fmt: skip


def clutter_mesh(items: Sequence[Clutter]) -> Mesh | None:
    """Polygons of the clutter objects (part id 0); None when there are none."""
    if not items:
        return None
    b = _MeshBuilder()
    for item in items:
        yaw = math.radians(item.yaw_deg)
        rot = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
        origin = np.array([item.position[0], item.position[1], 0.0])
        centre, faces = _clutter_faces(item.kind, *item.size)
        for face in faces:
            b.add(face @ rot.T + origin, 0, item.colour, inside=centre @ rot.T + origin)
    return b.build()


def _clutter_faces(kind: str, sx: float, sy: float, sz: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """An object's faces in its own frame (standing on z = 0), and a point inside it."""
    if kind == "blob":
        centre = np.array([0.0, 0.0, 0.45 * sz])
        pts = _ICOSAHEDRON_VERTICES * np.array([sx, sy, sz]) / 2 + centre
        return centre, [pts[list(face)] for face in _ICOSAHEDRON_FACES]
    centre = np.array([0.0, 0.0, sz / 2])
    if kind == "pole":
        angles = np.arange(6) * math.pi / 3
        ring = np.stack([sx / 2 * np.cos(angles), sy / 2 * np.sin(angles)], 1)
        sides = [np.array([(*p, 0), (*q, 0), (*q, sz), (*p, sz)]) for p, q in zip(ring, np.roll(ring, -1, 0))]
        return centre, [*sides, np.array([(*p, sz) for p in ring])]
    box = _MeshBuilder()
    _box_faces(box, (-sx / 2, sx / 2, -sy / 2, sy / 2, 0.0, sz), 0, (0, 0, 0))
    return centre, box.polys


# ----------------------------------------------------------------------------------------------
# Rendering


_NEAR = 0.05  # metres; polygons are clipped to this depth


def render_scene(car: CarShape, camera: Camera, *, clutter: Sequence[Clutter] = (), look: Look = Look()) -> Example:
    """Render one scene and compute every label from the same projection the pixels come from."""
    mesh = car_mesh(car)
    extra = clutter_mesh(clutter)
    scene_mesh = Mesh.concatenate(mesh, extra) if extra is not None else mesh
    rot = camera.rotation()
    polys, signed_area, cam_pts = _project(scene_mesh, camera, rot)
    face_ids = _rasterize(polys, signed_area, cam_pts, rot @ scene_mesh.normals.T, camera)
    part_of_face = np.append(scene_mesh.part, 0).astype(np.uint8)  # index -1 -> background
    mask = part_of_face[face_ids]

    colours = _shade(scene_mesh, look)
    image = _background(camera, rot, car, clutter, look)
    drawn = face_ids >= 0
    image[drawn] = colours[face_ids[drawn]]
    _draw_panel_gaps(image, mask)
    pil = Image.fromarray(image)
    if look.blur_radius > 0:
        pil = pil.filter(ImageFilter.BoxBlur(look.blur_radius * blur_scale(camera.width, camera.height)))

    labels = _labels(mesh, np.abs(signed_area[: len(mesh.part)]), mask, np.asarray(camera.position, float), car)
    return Example(pil, labels, mask, look.jpeg_quality)


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


def _project(mesh: Mesh, camera: Camera, rot: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray, np.ndarray]:
    """Pixel polygons of the camera-facing faces (None for the others) and their signed areas.

    Faces reaching behind the near plane are clipped to it first; the image border does not clip:
    areas are over the unbounded image plane, as the labels need.
    """
    eye = np.asarray(camera.position, float)
    cam = (mesh.vertices - eye) @ rot.T  # (F, K, 3): right, down, depth
    focal, (cx, cy) = camera.focal, camera.principal_point
    facing = np.einsum("fd,fd->f", eye - mesh.vertices[:, 0], mesh.normals) > 1e-9
    depth = cam[..., 2]
    in_front = facing & (depth.min(1) > _NEAR)
    safe_depth = np.where(depth > _NEAR, depth, 1.0)
    uv = np.stack([focal * cam[..., 0] / safe_depth + cx, focal * cam[..., 1] / safe_depth + cy], -1)
    signed = np.where(in_front, _shoelace(uv), 0.0)
    polys: list[np.ndarray | None] = [None] * len(cam)
    for f in np.flatnonzero(in_front):
        polys[f] = uv[f, : mesh.counts[f]]
    for f in np.flatnonzero(facing & ~in_front):
        clipped = _clip(list(cam[f, : mesh.counts[f]]), 2, _NEAR, True)
        if clipped:
            c = np.array(clipped)
            polys[f] = np.stack([focal * c[:, 0] / c[:, 2] + cx, focal * c[:, 1] / c[:, 2] + cy], 1)
            signed[f] = _signed_area(polys[f])
    return polys, signed, cam


def _rasterize(polys, signed_area, cam_pts, cam_normals, camera: Camera) -> np.ndarray:
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
        left, right = np.full(len(ys), -np.inf), np.full(len(ys), np.inf)
        for (px, py), (qx, qy) in zip(pts, np.roll(pts, -1, 0)):
            dy = qy - py
            if abs(dy) < 1e-12:
                continue
            x_at = px + (ys - py) * ((qx - px) / dy)
            if dy > 0:
                np.minimum(right, x_at, out=right)
            else:
                np.maximum(left, x_at, out=left)
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


def _sky_colour(look: Look, up: np.ndarray) -> np.ndarray:
    """Sky colour for ray directions with z component `up` (>= 0)."""
    t = np.sqrt(np.clip(up, 0, 1))[..., None]
    return np.asarray(look.sky_horizon, float) * (1 - t) + np.asarray(look.sky_zenith, float) * t


def _shade(mesh: Mesh, look: Look) -> np.ndarray:
    """Flat Lambert colour per face, glass mixing in the sky it reflects; last row is unused padding."""
    sun = direction(look.sun_azimuth, look.sun_elevation)
    lambert = np.clip(mesh.normals @ sun, 0, None)
    light = look.ambient * (0.8 + 0.2 * mesh.normals[:, 2]) + (1 - look.ambient) * lambert
    colour = mesh.colour * light[:, None]
    sky = _sky_colour(look, np.clip(mesh.normals[:, 2], 0, 1))
    colour = colour * (1 - mesh.gloss[:, None]) + sky * mesh.gloss[:, None]
    colour = np.clip(colour * look.exposure, 0, 255).astype(np.uint8)
    return np.vstack([colour, np.zeros((1, 3), np.uint8)])


def _background(camera: Camera, rot: np.ndarray, car: CarShape, clutter: Sequence[Clutter], look: Look) -> np.ndarray:
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

    lut = (_sky_colour(look, np.linspace(0, 1, 1024)) * look.exposure).clip(0, 255).astype(np.uint8)
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


def _draw_panel_gaps(image: np.ndarray, mask: np.ndarray) -> None:
    """Darken pixels where two car parts meet, so doors, hood and fenders read as separate panels."""
    gap = np.zeros(mask.shape, bool)
    horizontal = (mask[:, 1:] != mask[:, :-1]) & (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
    vertical = (mask[1:, :] != mask[:-1, :]) & (mask[1:, :] > 0) & (mask[:-1, :] > 0)
    gap[:, 1:] |= horizontal
    gap[1:, :] |= vertical
    image[gap] = (image[gap] * 0.55).astype(np.uint8)


def _labels(mesh: Mesh, face_area: np.ndarray, mask: np.ndarray, eye: np.ndarray, car: CarShape) -> dict[str, float]:
    """Every label column: scores, visible fractions, facing values and the camera's polar position."""
    n_parts = len(PARTS) + 1
    area = np.bincount(mesh.area_add, face_area, n_parts) - np.bincount(mesh.area_sub, face_area, n_parts)
    area[0] = 0
    pixels = np.bincount(mask.ravel(), minlength=n_parts).astype(float)
    visible = np.where(area > 0, np.clip(pixels / np.maximum(area, 1e-9), 0, 1), 0.0)
    to_camera = eye - mesh.part_centres
    to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
    facing = np.clip(np.einsum("pd,pd->p", to_camera, CANONICAL_DIRECTIONS), 0, None)
    score = np.round(visible * facing, 4)
    score[score < MIN_SCORE] = 0.0

    rel = eye - car.centre
    distance = float(np.linalg.norm(rel))
    labels: dict[str, float] = {}
    for part, pid in PART_IDS.items():
        labels[score_column(part)] = float(score[pid])
        labels[visible_fraction_column(part)] = round(float(visible[pid]), 4)
        labels[facing_column(part)] = round(float(facing[pid]), 4)
    labels["camera_azimuth"] = round(math.degrees(math.atan2(rel[1], rel[0])) % 360.0, 4)
    labels["camera_elevation"] = round(math.degrees(math.asin(rel[2] / distance)), 4)
    labels["camera_distance"] = round(distance, 4)
    return {column: labels[column] for column in extended_columns()}


# ----------------------------------------------------------------------------------------------
# Random scenes


IMAGE_SIZES = ((674, 506), (640, 480), (800, 600), (506, 674), (480, 640))
_IMAGE_SIZE_WEIGHTS = (0.5, 0.2, 0.1, 0.1, 0.1)
_PAINTS = (  # colour, weight: roughly the colours of cars on the road
    ((235, 235, 232), 0.24), ((24, 24, 27), 0.19), ((172, 174, 180), 0.15), ((100, 102, 108), 0.13),
    ((160, 24, 26), 0.08), ((32, 64, 140), 0.07), ((22, 32, 70), 0.04), ((40, 88, 52), 0.03),
    ((190, 176, 142), 0.03), ((214, 176, 30), 0.02), ((205, 96, 30), 0.02),
)  # fmt: skip
_SKIES = (  # zenith, horizon
    ((70, 118, 200), (190, 210, 235)), ((150, 154, 164), (206, 206, 212)),
    ((60, 80, 140), (232, 186, 146)), ((110, 150, 205), (225, 228, 232)),
)  # fmt: skip
_GROUNDS = ((86, 86, 92), (56, 56, 62), (150, 148, 140), (72, 108, 52), (132, 120, 104), (178, 164, 130))

_Range = tuple[float, float]
_Colour = tuple[int, int, int]


@dataclass(frozen=True)
class SceneDistribution:
    """The knobs of `random_scene` where photos from another source would differ; the defaults are "default".

    Ranges are (low, high) of uniform draws (high exclusive for the JPEG quality); weights are
    probabilities. Each knob replaces a constant without changing which random draws are made, so
    "default" renders exactly what the renderer rendered before the knobs existed.
    """

    fov_deg: _Range = (45.0, 75.0)
    elevation_deg: _Range = (3.0, 50.0)  # low + (high - low) * Beta(*elevation_beta)
    elevation_beta: _Range = (1.6, 3.2)
    close_share: float = 0.28  # shots framing the car's outline larger than the image (most crop it)
    close_framing: _Range = (1.1, 1.8)  # outline extent / half-frame of those shots
    loose_framing: _Range = (0.5, 0.95)  # and of the others
    roll_std_deg: float = 1.5
    style_weights: tuple[float, ...] = (0.35, 0.3, 0.25, 0.1)  # over STYLES
    paints: tuple[tuple[_Colour, float], ...] = _PAINTS  # colour, weight
    paint_jitter: float = 8.0
    skies: tuple[tuple[_Colour, _Colour], ...] = _SKIES  # zenith, horizon; equally likely
    sky_jitter: _Range = (10.0, 8.0)  # zenith, horizon
    ground_jitter: float = 8.0
    ambient: _Range = (0.3, 0.6)
    exposure: _Range = (0.85, 1.15)
    sharp_share: float = 0.4  # shots with a blur radius from `sharp_blur`, the others from `soft_blur`
    sharp_blur: _Range = (0.3, 0.5)
    soft_blur: _Range = (0.5, 1.6)
    jpeg_quality: tuple[int, int] = (60, 96)
    clutter_counts: tuple[float, ...] = (0.3, 0.3, 0.2, 0.12, 0.08)  # P(0, 1, ... clutter objects)


DISTRIBUTIONS: dict[str, SceneDistribution] = {
    "default": SceneDistribution(),
    "shifted": SceneDistribution(
        fov_deg=(60.0, 90.0),  # phone main cameras: wide angle
        elevation_deg=(5.0, 65.0),  # held high, more views from above (mean about 29 degrees)
        elevation_beta=(2.0, 3.0),
        close_share=0.4,
        close_framing=(1.1, 2.0),
        loose_framing=(0.6, 0.98),
        roll_std_deg=3.0,
        style_weights=(0.25, 0.25, 0.38, 0.12),
        paints=(  # fewer greys, more saturated colours
            ((240, 240, 238), 0.14), ((20, 20, 24), 0.10), ((172, 174, 180), 0.08), ((100, 102, 108), 0.06),
            ((196, 18, 22), 0.14), ((24, 72, 186), 0.12), ((18, 30, 90), 0.04), ((28, 124, 58), 0.08),
            ((190, 176, 142), 0.02), ((236, 194, 16), 0.07), ((232, 100, 16), 0.08), ((16, 148, 156), 0.04),
            ((104, 36, 136), 0.03),
        ),  # fmt: skip
        paint_jitter=12.0,
        skies=(  # mostly overcast
            ((150, 154, 164), (206, 206, 212)), ((112, 116, 128), (168, 170, 178)),
            ((86, 90, 106), (138, 140, 150)), ((60, 80, 140), (232, 186, 146)),
            ((70, 118, 200), (190, 210, 235)),
        ),  # fmt: skip
        sky_jitter=(16.0, 12.0),
        ground_jitter=14.0,
        ambient=(0.45, 0.75),  # diffuse light
        exposure=(0.6, 1.0),
        sharp_share=0.25,
        sharp_blur=(0.3, 0.6),
        soft_blur=(0.6, 2.0),
        jpeg_quality=(30, 75),
        clutter_counts=(0.15, 0.25, 0.25, 0.2, 0.15),
    ),
}
"""Named scene distributions: "default" is the embedded data set; "shifted" is another photo source."""


def scene_distribution(name: str) -> SceneDistribution:
    """The registered distribution `name`; a UserError names the valid ones."""
    try:
        return DISTRIBUTIONS[name]
    except KeyError:
        raise UserError(f"unknown scene distribution {name!r}; choose one of: {', '.join(DISTRIBUTIONS)}") from None


def _jitter(rng: np.random.Generator, colour, amount: float) -> tuple[int, int, int]:
    """Vary a colour mostly in brightness, a little in hue (so greys stay grey)."""
    shift = rng.normal(0, amount) + rng.normal(0, amount / 3, 3)
    return tuple(int(c) for c in np.clip(np.asarray(colour) + shift, 0, 255))


def random_car(rng: np.random.Generator, distribution: SceneDistribution = DISTRIBUTIONS["default"]) -> CarShape:
    """A car of a random style with proportions drawn inside that style's range (redrawn until consistent)."""
    for _attempt in range(100):
        car = _draw_car(rng, distribution)
        try:
            _stations(car)
        except ValueError:
            continue
        return car
    raise RuntimeError("car proportions keep coming out inconsistent; the style ranges need fixing")


def _draw_car(rng: np.random.Generator, distribution: SceneDistribution) -> CarShape:
    style = STYLES[rng.choice(len(STYLES), p=distribution.style_weights)]
    u = rng.uniform
    if style == "sedan":
        length, height, belt, r = u(4.3, 5.0), u(1.38, 1.5), u(0.84, 0.95), u(0.3, 0.34)
        dims = dict(
            width=u(1.72, 1.9),
            clearance=u(0.13, 0.18),
            hood_length=u(1.1, 1.4),
            windshield_rake=u(25, 32),
            rear_rake=u(24, 34),
            deck_length=u(0.4, 0.65),
            nose_drop=u(0.08, 0.15),
        )
    elif style == "hatchback":
        length, height, belt, r = u(3.8, 4.4), u(1.42, 1.56), u(0.86, 0.98), u(0.29, 0.33)
        dims = dict(
            width=u(1.68, 1.82),
            clearance=u(0.13, 0.17),
            hood_length=u(0.9, 1.15),
            windshield_rake=u(26, 34),
            rear_rake=u(50, 70),
            deck_length=u(0.16, 0.22),
            nose_drop=u(0.08, 0.14),
        )
    elif style == "suv":
        length, height, belt, r = u(4.3, 4.9), u(1.62, 1.8), u(1.0, 1.12), u(0.35, 0.39)
        dims = dict(
            width=u(1.82, 2.0),
            clearance=u(0.19, 0.24),
            hood_length=u(1.1, 1.35),
            windshield_rake=u(30, 38),
            rear_rake=u(62, 80),
            deck_length=u(0.16, 0.22),
            nose_drop=u(0.06, 0.12),
        )
    else:
        length, height, belt, r = u(4.6, 5.3), u(1.85, 2.1), u(0.98, 1.1), u(0.32, 0.35)
        dims = dict(
            width=u(1.85, 2.0),
            clearance=u(0.15, 0.2),
            hood_length=u(0.6, 0.85),
            windshield_rake=u(38, 50),
            rear_rake=u(80, 88),
            deck_length=u(0.16, 0.2),
            nose_drop=u(0.1, 0.16),
        )
    paints = distribution.paints
    paint = _jitter(rng, paints[rng.choice(len(paints), p=[w for _, w in paints])][0], distribution.paint_jitter)
    return CarShape(
        style=style,
        length=length,
        height=height,
        belt=belt,
        wheel_radius=r,
        front_overhang=length * u(0.18, 0.21),
        rear_overhang=length * u(0.2, 0.24),
        tumblehome=u(0.1, 0.18),
        chamfer=u(0.07, 0.14),
        bumper_height=dims["clearance"] + u(0.25, 0.35),
        paint=paint,
        trim=(30, 30, 32) if rng.random() < 0.6 else paint,
        rim=_jitter(rng, (175, 175, 180) if rng.random() < 0.7 else (45, 45, 48), 10),
        **dims,
    )


def random_camera(
    rng: np.random.Generator,
    car: CarShape,
    width: int,
    height: int,
    distribution: SceneDistribution = DISTRIBUTIONS["default"],
) -> Camera:
    """Where photographers stand: any azimuth, mostly eye-level elevations, framing from loose to cropped.

    Azimuth density is 1 + 0.2 cos(a - 45) + 0.1 cos(2a) + 0.4 cos(4a): views along the car's axes
    (front, sides, rear) and the front-left three-quarter view are preferred. With the default
    elevation 3 + 47 Beta(1.6, 3.2) degrees (mean about 19), this was tuned (by reweighting an
    extended data set) so that both challenge targets land near the real data (4000 images, seed 0:
    51.8 / 51.5 % zeros, mean 0.289 / 0.286, std 0.373 / 0.370). By default 28 % of the shots frame
    the car's outline larger than the image, so that about a fifth of the images (21 %) really crop
    the car.
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
    framing = rng.uniform(*d.close_framing) if rng.random() < d.close_share else rng.uniform(*d.loose_framing)
    target = car.centre * np.array([1, 1, 0.8]) + rng.normal(0, 1, 3) * np.array([0.05, 0.05, 0.02]) * car.length
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

    # Bisect the distance at which the car's outline fills `framing` of the half-frame.
    outline = _outline_points(car)
    near, far = car.radius + 0.6, 200.0
    if _frame_fill(camera_at(near), outline) <= framing:
        return camera_at(near)
    for _ in range(16):
        mid = (near + far) / 2
        near, far = (mid, far) if _frame_fill(camera_at(mid), outline) > framing else (near, mid)
    return camera_at(far)


def _outline_points(car: CarShape) -> np.ndarray:
    """Corners of the lower body and of the roof: a cheap stand-in for the car's silhouette."""
    s = _stations(car)
    half, w2, roof = car.length / 2, car.width / 2, car.width / 2 - car.tumblehome
    lower = [(x, y, z) for x in (-half, half) for y in (-w2, w2) for z in (0.0, car.belt)]
    upper = [(x, y, car.height) for x in (s.roof_front, s.roof_rear) for y in (-roof, roof)]
    return np.array(lower + upper)


def _frame_fill(camera: Camera, points: np.ndarray) -> float:
    """Largest |offset from the image centre| of the points, as a share of the half-frame (1 = touches the border)."""
    cam = (points - np.asarray(camera.position)) @ camera.rotation().T
    if cam[:, 2].min() <= _NEAR:
        return math.inf
    u = camera.focal * cam[:, 0] / cam[:, 2] / (camera.width / 2)
    v = camera.focal * cam[:, 1] / cam[:, 2] / (camera.height / 2)
    return float(max(np.abs(u).max(), np.abs(v).max()))


def random_clutter(
    rng: np.random.Generator,
    car: CarShape,
    camera: Camera,
    distribution: SceneDistribution = DISTRIBUTIONS["default"],
) -> tuple[Clutter, ...]:
    """A few objects around the car (by default 0-4); some stand between the camera and the car."""
    eye = np.asarray(camera.position)[:2]
    items = []
    counts = distribution.clutter_counts
    for _ in range(rng.choice(len(counts), p=counts)):
        kind = ("box", "pole", "blob")[rng.choice(3, p=[0.45, 0.3, 0.25])]
        if kind == "box":
            size, colour = rng.uniform([0.4, 0.4, 0.3], [1.6, 1.6, 1.4]), _jitter(rng, (120, 100, 80), 40)
        elif kind == "pole":
            w = rng.uniform(0.08, 0.22)
            size, colour = np.array([w, w, rng.uniform(1.0, 3.5)]), _jitter(rng, (90, 90, 95), 35)
        else:
            size, colour = rng.uniform([0.5, 0.5, 0.4], [1.6, 1.6, 1.3]), _jitter(rng, (70, 95, 60), 25)
        for _attempt in range(10):  # give up on this object if it keeps landing on the car or the camera
            if rng.random() < 0.4:  # in the line of sight to a random point of the car
                aim = rng.uniform(-0.5, 0.5, 2) * np.array([car.length, car.width])
                spot = aim + rng.uniform(0.3, 0.8) * (eye - aim) + rng.normal(0, 0.4, 2)
            else:
                angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(car.radius + 0.5, 14)
                spot = radius * np.array([math.cos(angle), math.sin(angle)])
            item = Clutter(
                kind,
                (float(spot[0]), float(spot[1])),
                tuple(float(v) for v in size),
                float(rng.uniform(0, 180)),
                colour,
            )
            reach = item.footprint_radius + 0.15
            clear_of_car = abs(spot[0]) > car.length / 2 + reach or abs(spot[1]) > car.width / 2 + reach
            if clear_of_car and np.linalg.norm(spot - eye) > reach + 0.45:
                items.append(item)
                break
    return tuple(items)


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
        sky_zenith=_jitter(rng, zenith, d.sky_jitter[0]),
        sky_horizon=_jitter(rng, horizon, d.sky_jitter[1]),
        ground=_jitter(rng, _GROUNDS[rng.integers(len(_GROUNDS))], d.ground_jitter),
        ground_texture=rng.uniform(0.03, 0.12),
        haze_distance=rng.uniform(60, 250),
        skyline=skyline,
        skyline_colour=_jitter(rng, (70, 85, 62) if rng.random() < 0.6 else (120, 118, 120), 15),
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
    size = IMAGE_SIZES[rng.choice(len(IMAGE_SIZES), p=_IMAGE_SIZE_WEIGHTS)]
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


# ----------------------------------------------------------------------------------------------
# Data sets


def image_name(index: int, n: int) -> str:
    """File name of image `index` inside imgs/ (zero-padded so names sort in index order)."""
    return f"car_{index:0{max(6, len(str(n - 1)))}d}.jpg"


def write_dataset(
    out_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    workers: int | None = None,
    extended: bool = False,
    masks: bool = False,
    progress: bool = True,
    csv_name: str = DEFAULT_CSV,
    image_size: tuple[int, int] | None = None,
    overwrite: bool = False,
    distribution: str = "default",
) -> Path:
    """Render `n` examples into `out_dir` in the customer's layout (imgs/ + CSV); returns the CSV path.

    `distribution` names the scene distribution (`DISTRIBUTIONS`). The bytes depend only on
    (seed, index, distribution) of each image, so any number of `workers` (processes, default: all
    CPUs) writes the same data set. The CSV is written last: a data set without its CSV is an
    interrupted one. `image_size` (width, height) replaces the varied sizes, e.g. for small, fast
    test sets. `out_dir` must be empty, hold the same data set (it is rewritten), or `overwrite`
    must be set (imgs/, masks/ and the CSVs named there are removed first).
    """
    _check_request(n, seed, workers, csv_name, image_size, distribution)
    out = Path(out_dir)
    manifest = {
        "generator": "cvcore.synth",
        "version": RENDERER_VERSION,
        "n": n,
        "seed": seed,
        "extended": extended,
        "masks": masks,
        "csv_name": csv_name,
        "image_size": list(image_size) if image_size else None,
        "distribution": distribution,
    }
    _prepare_output(out, manifest, overwrite)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    if masks:
        (out / MASK_DIR).mkdir(exist_ok=True)
        (out / MASK_DIR / "parts.json").write_text(
            json.dumps({str(i): p for p, i in PART_IDS.items()}, indent=2) + "\n"
        )

    workers = min(workers or os.cpu_count() or 1, n)
    chunk = max(1, min(32, n // (workers * 8)))
    jobs = [
        (str(out), seed, n, range(start, min(start + chunk, n)), masks, image_size, distribution)
        for start in range(0, n, chunk)
    ]
    rows: list[dict[str, float | str]] = []
    with tqdm(total=n, desc="rendering", unit="img", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for done in pool.map(_render_chunk, jobs):
                    rows.extend(done)
                    bar.update(len(done))
        else:
            for job in jobs:
                done = _render_chunk(job)
                rows.extend(done)
                bar.update(len(done))

    columns = [FILENAME_COLUMN, *(extended_columns() if extended else CHALLENGE_TARGETS)]
    frame = pd.DataFrame(rows)[columns]
    csv_path = out / csv_name
    frame.to_csv(csv_path, index=False)
    return csv_path


def _check_request(
    n: int, seed: int, workers: int | None, csv_name: str, image_size: tuple[int, int] | None, distribution: str
) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise UserError(f"the number of images must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"the seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers <= 0):
        raise UserError(f"workers must be a positive integer, got {workers!r}")
    if Path(csv_name).name != csv_name or not csv_name.endswith(".csv"):
        raise UserError(f"the CSV name must be a bare file name ending in .csv, got {csv_name!r}")
    if image_size is not None and not (len(image_size) == 2 and all(16 <= int(side) <= 4096 for side in image_size)):
        raise UserError(f"image_size must be (width, height) with sides of 16 to 4096 pixels, got {image_size!r}")
    scene_distribution(distribution)


def _prepare_output(out: Path, manifest: dict, overwrite: bool) -> None:
    """Refuse to mix a new data set into a folder holding another one, unless told to replace it."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if not out.exists():
        return
    old_path = out / MANIFEST_NAME
    try:
        old = json.loads(old_path.read_text()) if old_path.exists() else None
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict):
        old.setdefault("distribution", "default")  # written before there was a choice
    holds_data = old_path.exists() or (out / IMAGE_DIR).exists() or any(out.glob("*.csv"))
    if not holds_data or old == manifest:
        return
    if not overwrite:
        what = f"a different synthetic data set ({_describe(old)})" if old else "a data set"
        raise UserError(f"{out} already holds {what}; choose another folder or pass --overwrite to replace it")
    for folder in (IMAGE_DIR, MASK_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)
    for name in {manifest["csv_name"], (old or {}).get("csv_name")} - {None}:
        (out / name).unlink(missing_ok=True)
    old_path.unlink(missing_ok=True)


def _describe(manifest: dict) -> str:
    keys = ("n", "seed", "distribution", "extended", "masks", "csv_name", "image_size")
    return ", ".join(f"{key}={manifest.get(key)}" for key in keys)


def _render_chunk(
    job: tuple[str, int, int, range, bool, tuple[int, int] | None, str],
) -> list[dict[str, float | str]]:
    """Render and write a run of images (worker side); returns their CSV rows."""
    out_dir, seed, n, indices, with_masks, size, distribution = job
    out = Path(out_dir)
    rows = []
    for index in indices:
        example = render_example(
            seed, index, width=size and size[0], height=size and size[1], distribution=distribution
        )
        name = image_name(index, n)
        (out / IMAGE_DIR / name).write_bytes(example.jpeg_bytes())
        if with_masks:
            Image.fromarray(example.mask).save(out / MASK_DIR / (Path(name).stem + ".png"))
        rows.append({FILENAME_COLUMN: name, **example.labels})
    return rows


# ----------------------------------------------------------------------------------------------
# Label statistics


def label_stats(frame: pd.DataFrame, targets: Sequence[str]) -> dict:
    """Per target: share of exact zeros (%), mean, std, max; and the correlation of the first two targets.

    These are the numbers the synthetic set is tuned to share with the real challenge data.
    """
    stats: dict = {"n": len(frame), "targets": {}}
    for target in targets:
        values = frame[target].to_numpy(float)
        stats["targets"][target] = {
            "zeros_pct": float(100 * np.mean(values == 0)),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "max": float(values.max()),
        }
    if len(targets) >= 2:
        a, b = frame[targets[0]].to_numpy(float), frame[targets[1]].to_numpy(float)
        corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        stats["correlation"] = {"targets": [targets[0], targets[1]], "pearson": corr}
    return stats


def format_label_stats(stats: dict) -> str:
    """`label_stats` as a small table."""
    width = max(len("target"), *(len(t) for t in stats["targets"]))
    lines = [
        f"label statistics over {stats['n']} images",
        f"{'target':<{width}}  {'zeros %':>7}  {'mean':>6}  {'std':>6}  {'max':>6}",
    ]
    for target, s in stats["targets"].items():
        lines.append(f"{target:<{width}}  {s['zeros_pct']:7.1f}  {s['mean']:6.3f}  {s['std']:6.3f}  {s['max']:6.3f}")
    if "correlation" in stats:
        a, b = stats["correlation"]["targets"]
        lines.append(f"correlation({a}, {b}) = {stats['correlation']['pearson']:.3f}")
    return "\n".join(lines)
