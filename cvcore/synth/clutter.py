"""Scenery around the car: objects (boxes, poles, bushes, people, trees, walls, buildings) and other cars,
their meshes and random placement. None of it is ever labelled (part id 0)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cvcore.synth.distributions import DISTRIBUTIONS, SceneDistribution, jitter
from cvcore.synth.geometry import Mesh, MeshBuilder, box_faces
from cvcore.synth.scene import Camera, CarShape, Clutter, ParkedCar

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


CLUTTER_KINDS: tuple[str, ...] = ("box", "pole", "bush", "person", "tree", "wall", "building")
_KIND_WEIGHTS = (0.24, 0.14, 0.14, 0.22, 0.12, 0.08, 0.06)
_SKIN = ((232, 196, 170), (198, 150, 112), (140, 96, 66), (88, 60, 44))
_WINDOW = (40, 52, 66)


def clutter_mesh(items: Sequence[Clutter]) -> Mesh | None:
    """Polygons of the clutter objects (part id 0); None when there are none."""
    if not items:
        return None
    b = MeshBuilder()
    for item in items:
        yaw = math.radians(item.yaw_deg)
        rot = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
        origin = np.array([item.position[0], item.position[1], 0.0])
        for piece in _pieces(item):
            b.texture = piece.texture
            inside = piece.inside @ rot.T + origin
            for face in piece.faces:
                b.add(face @ rot.T + origin, 0, piece.colour, inside=inside)
            for face in piece.decals:
                b.decal(face @ rot.T + origin, 0, _WINDOW, on=0, inside=inside, gloss=0.3, lift=0.02)
    return b.build()


def shadow_casters(items: Sequence[Clutter]) -> list[np.ndarray]:
    """Each object's corner points (N, 3): the convex hull of their shadow is the object's."""
    casters = []
    for item in items:
        yaw = math.radians(item.yaw_deg)
        rot = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
        points = np.concatenate([np.concatenate(piece.faces) for piece in _pieces(item)])
        casters.append(points @ rot.T + np.array([item.position[0], item.position[1], 0.0]))
    return casters


@dataclass(frozen=True)
class _Piece:
    """A convex part of an object in its own frame: faces, flat details on them, and a point inside."""

    inside: np.ndarray
    faces: list[np.ndarray]
    colour: tuple[int, int, int]
    texture: float = 0.0
    decals: tuple[np.ndarray, ...] = ()


def _pieces(item: Clutter) -> list[_Piece]:
    """An object's convex pieces standing on z = 0 in its own frame."""
    sx, sy, sz = item.size
    colour = item.colour
    if item.kind == "bush":
        return [_blob((0.0, 0.0, 0.45 * sz), (sx, sy, sz), colour, 0.35)]
    if item.kind == "pole":
        return [_prism(sx / 2, 0.0, sz, colour)]
    if item.kind == "tree":
        trunk = _prism(0.12, 0.0, 0.45 * sz, (82, 62, 44))
        return [trunk, _blob((0.0, 0.0, 0.62 * sz), (sx, sy, 0.65 * sz), colour, 0.4)]
    if item.kind == "person":
        skin = _SKIN[int(abs(item.yaw_deg)) % len(_SKIN)]
        legs = _box((-sy / 2, sy / 2, -0.35 * sx, 0.35 * sx, 0.0, 0.47 * sz), (50, 54, 70))
        torso = _box((-sy / 2, sy / 2, -sx / 2, sx / 2, 0.47 * sz, 0.82 * sz), colour)
        return [legs, torso, _blob((0.0, 0.0, 0.82 * sz), (0.13 * sz, 0.13 * sz, 0.18 * sz), skin, 0.0)]
    if item.kind == "building":
        return [_box((-sx / 2, sx / 2, -sy / 2, sy / 2, 0.0, sz), colour, 0.15, windows=True)]
    return [_box((-sx / 2, sx / 2, -sy / 2, sy / 2, 0.0, sz), colour, 0.25 if item.kind == "wall" else 0.1)]


def _box(extent, colour, texture: float = 0.0, *, windows: bool = False) -> _Piece:
    x0, x1, y0, y1, z0, z1 = extent
    builder = MeshBuilder()
    box_faces(builder, extent, 0, (0, 0, 0))
    decals = []
    if windows:  # a grid of windows on the two long sides, a floor every 3 m
        for y in (y0, y1):
            for z in np.arange(z0 + 1.0, z1 - 1.2, 3.0):
                for x in np.arange(x0 + 0.8, x1 - 1.6, 2.6):
                    decals.append(np.array([(x, y, z), (x + 1.4, y, z), (x + 1.4, y, z + 1.4), (x, y, z + 1.4)]))
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2])
    return _Piece(centre, builder.polys, colour, texture, tuple(decals))


def _prism(radius: float, z0: float, z1: float, colour) -> _Piece:
    angles = np.arange(6) * math.pi / 3
    ring = np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)
    sides = [np.array([(*p, z0), (*q, z0), (*q, z1), (*p, z1)]) for p, q in zip(ring, np.roll(ring, -1, 0))]
    return _Piece(np.array([0.0, 0.0, (z0 + z1) / 2]), [*sides, np.array([(*p, z1) for p in ring])], colour)


def _blob(centre, size, colour, texture: float) -> _Piece:
    centre = np.asarray(centre, float)
    pts = _ICOSAHEDRON_VERTICES * np.asarray(size) / 2 + centre
    return _Piece(centre, [pts[list(face)] for face in _ICOSAHEDRON_FACES], colour, texture)


def _draw_item(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, tuple[int, int, int], tuple[float, float]]:
    """Size, colour and (nearest, farthest) distance from the car of a random object of `kind`."""
    u = rng.uniform
    if kind == "box":
        return u([0.4, 0.4, 0.3], [1.6, 1.6, 1.4]), jitter(rng, (120, 100, 80), 40), (0.0, 14.0)
    if kind == "pole":
        w = u(0.08, 0.22)
        return np.array([w, w, u(1.0, 3.5)]), jitter(rng, (90, 90, 95), 35), (0.0, 14.0)
    if kind == "bush":
        return u([0.5, 0.5, 0.4], [1.6, 1.6, 1.3]), jitter(rng, (70, 95, 60), 25), (0.0, 14.0)
    if kind == "person":
        height = u(1.5, 1.95) if rng.random() < 0.85 else u(1.0, 1.4)
        clothes = tuple(int(c) for c in rng.integers(20, 230, 3))
        return np.array([0.26 * height, 0.16 * height, height]), clothes, (0.0, 10.0)
    if kind == "tree":
        crown = u(2.0, 5.0)
        return np.array([crown, crown, u(4.0, 9.0)]), jitter(rng, (58, 92, 48), 20), (4.0, 25.0)
    if kind == "wall":
        return np.array([u(6, 20), u(0.2, 0.4), u(1.0, 3.0)]), jitter(rng, (150, 120, 100), 40), (4.0, 15.0)
    size = np.array([u(8, 25), u(6, 12), u(4, 15)])
    return size, jitter(rng, (170, 160, 150), 45), (14.0, 40.0)


def rectangles_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex polygons (N, 2) overlap: no edge normal of either separates them."""
    for poly in (a, b):
        edges = np.roll(poly, -1, 0) - poly
        for normal in np.stack([-edges[:, 1], edges[:, 0]], 1):
            pa, pb = a @ normal, b @ normal
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def _footprint(position, size, yaw_deg: float, margin: float) -> np.ndarray:
    yaw = math.radians(yaw_deg)
    rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * (np.asarray(size[:2]) / 2 + margin)
    return half @ rot.T + np.asarray(position)


def _eye_square(camera: Camera, margin: float = 0.45) -> np.ndarray:
    x, y = camera.position[0], camera.position[1]
    return np.array(
        [(x - margin, y - margin), (x + margin, y - margin), (x + margin, y + margin), (x - margin, y + margin)]
    )


def random_clutter(
    rng: np.random.Generator,
    car: CarShape,
    camera: Camera,
    distribution: SceneDistribution = DISTRIBUTIONS["default"],
    occupied: Sequence[np.ndarray] = (),
) -> tuple[Clutter, ...]:
    """A few objects around the car: boxes, poles, bushes, people, trees, walls, buildings; some stand
    between the camera and the car. None overlaps the car, the `occupied` footprints or the camera."""
    eye = np.asarray(camera.position)[:2]
    taken = [_footprint((0, 0), (car.length, car.width + 0.4), 0.0, 0.15), _eye_square(camera), *occupied]
    items = []
    counts = distribution.clutter_counts
    for _ in range(rng.choice(len(counts), p=counts)):
        kind = CLUTTER_KINDS[rng.choice(len(CLUTTER_KINDS), p=_KIND_WEIGHTS)]
        size, colour, (nearest, farthest) = _draw_item(rng, kind)
        for _attempt in range(10):  # give up on this object if it keeps landing on something
            if rng.random() < 0.4 and nearest == 0:  # in the line of sight to a random point of the car
                aim = rng.uniform(-0.5, 0.5, 2) * np.array([car.length, car.width])
                spot = aim + rng.uniform(0.3, 0.8) * (eye - aim) + rng.normal(0, 0.4, 2)
            else:
                angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(max(nearest, car.radius + 0.5), farthest)
                spot = radius * np.array([math.cos(angle), math.sin(angle)])
            yaw = float(rng.uniform(0, 180))
            footprint = _footprint(spot, size, yaw, 0.0)
            if not any(rectangles_overlap(footprint, other) for other in taken):
                items.append(
                    Clutter(kind, (float(spot[0]), float(spot[1])), tuple(float(v) for v in size), yaw, colour)
                )
                taken.append(footprint)
                break
    return tuple(items)


def random_others(
    rng: np.random.Generator, car: CarShape, camera: Camera, distribution: SceneDistribution, draw_car
) -> tuple[ParkedCar, ...]:
    """Other cars (drawn by `draw_car(rng)`): parked beside or in a row with the car, anywhere around,
    or between the camera and the car. They never overlap the car, each other or the camera."""
    eye = np.asarray(camera.position)[:2]
    taken = [_footprint((0, 0), (car.length, car.width + 0.4), 0.0, 0.3), _eye_square(camera, 0.6)]
    others: list[ParkedCar] = []
    counts = distribution.other_car_counts
    for _ in range(rng.choice(len(counts), p=counts)):
        other = draw_car(rng)
        for _attempt in range(10):
            where = rng.random()
            if where < 0.35:  # parked beside, the same way round or the other
                side = rng.choice([-1.0, 1.0])
                spot = np.array([rng.uniform(-1, 1), side * (car.width / 2 + other.width / 2 + rng.uniform(0.5, 1.8))])
                yaw = float(rng.choice([0.0, 180.0]) + rng.normal(0, 3))
            elif where < 0.55:  # in a row, ahead or behind
                spot = np.array(
                    [
                        rng.choice([-1.0, 1.0]) * (car.length / 2 + other.length / 2 + rng.uniform(0.6, 3)),
                        rng.normal(0, 0.3),
                    ]
                )
                yaw = float(rng.normal(0, 4))
            elif where < 0.85:
                angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(6, 25)
                spot, yaw = radius * np.array([math.cos(angle), math.sin(angle)]), float(rng.uniform(0, 360))
            else:  # between the camera and the car
                spot, yaw = rng.uniform(0.35, 0.75) * eye + rng.normal(0, 0.8, 2), float(rng.uniform(0, 360))
            placed = ParkedCar(other, (float(spot[0]), float(spot[1])), yaw)
            footprint = placed.corners(0.1)
            if not any(rectangles_overlap(footprint, t) for t in taken):
                others.append(placed)
                taken.append(footprint)
                break
    return tuple(others)
