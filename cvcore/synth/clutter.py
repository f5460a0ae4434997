"""Objects standing around the car (boxes, poles, blobs): meshes and random placement."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cvcore.synth.distributions import DISTRIBUTIONS, SceneDistribution, jitter
from cvcore.synth.geometry import Mesh, MeshBuilder, box_faces
from cvcore.synth.scene import Camera, CarShape, Clutter

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
    b = MeshBuilder()
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
    box = MeshBuilder()
    box_faces(box, (-sx / 2, sx / 2, -sy / 2, sy / 2, 0.0, sz), 0, (0, 0, 0))
    return centre, box.polys


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
            size, colour = rng.uniform([0.4, 0.4, 0.3], [1.6, 1.6, 1.4]), jitter(rng, (120, 100, 80), 40)
        elif kind == "pole":
            w = rng.uniform(0.08, 0.22)
            size, colour = np.array([w, w, rng.uniform(1.0, 3.5)]), jitter(rng, (90, 90, 95), 35)
        else:
            size, colour = rng.uniform([0.5, 0.5, 0.4], [1.6, 1.6, 1.3]), jitter(rng, (70, 95, 60), 25)
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
