"""Car bodies: a table of body styles, the stations along a car, its labelled mesh, and random cars.

Styles are data (`BODY_STYLES`: ranges of proportions per style), not branches: a new style is a
row. Every style is built from the same stations, so the labelled parts mean the same on all of
them; what marks the front (windshield rake and position, hood, mirrors) stays where it is on a
real car of that style.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cvcore.labels import PART_IDS
from cvcore.synth.distributions import DISTRIBUTIONS, SceneDistribution, jitter
from cvcore.synth.geometry import Mesh, MeshBuilder, across, wall
from cvcore.synth.parts import (
    DARK,
    GLASS,
    front_details,
    lights,
    random_part_look,
    rear_details,
    roof_rails,
    side_details,
    wheel,
)
from cvcore.synth.scene import CarShape

_Range = tuple[float, float]


@dataclass(frozen=True)
class BodyStyle:
    """Ranges (low, high) of one style's proportions, in metres and degrees.

    `notchback`: the rear face reaches up to the deck, taillights on it (sedan, coupé, pickup's bed);
    otherwise a tailgate above the bumper carries them. `rear_glass`: a window behind the rear door.
    """

    length: _Range
    width: _Range
    height: _Range
    belt: _Range
    wheel_radius: _Range
    clearance: _Range
    hood_length: _Range
    windshield_rake: _Range
    rear_rake: _Range
    deck_length: _Range
    nose_drop: _Range
    rear_overhang: _Range = (0.2, 0.24)  # share of the length
    notchback: bool = False
    rear_glass: bool = True
    roof_rails: float = 0.0  # probability


BODY_STYLES: dict[str, BodyStyle] = {
    "city_car": BodyStyle((3.4, 3.9), (1.6, 1.74), (1.46, 1.62), (0.86, 0.96), (0.27, 0.3), (0.12, 0.16),
                          (0.6, 0.85), (28, 36), (66, 82), (0.12, 0.18), (0.08, 0.14)),
    "hatchback": BodyStyle((3.8, 4.4), (1.68, 1.82), (1.42, 1.56), (0.86, 0.98), (0.29, 0.33), (0.13, 0.17),
                           (0.9, 1.15), (26, 34), (50, 70), (0.16, 0.22), (0.08, 0.14)),
    "sedan": BodyStyle((4.3, 5.0), (1.72, 1.9), (1.38, 1.5), (0.84, 0.95), (0.3, 0.34), (0.13, 0.18),
                       (1.1, 1.4), (25, 32), (24, 34), (0.4, 0.65), (0.08, 0.15), notchback=True, rear_glass=False),
    "estate": BodyStyle((4.5, 4.95), (1.76, 1.88), (1.45, 1.56), (0.88, 0.98), (0.31, 0.34), (0.13, 0.17),
                        (1.05, 1.3), (26, 32), (62, 80), (0.14, 0.2), (0.08, 0.14), roof_rails=0.5),
    "coupe": BodyStyle((4.3, 4.8), (1.78, 1.9), (1.28, 1.38), (0.8, 0.88), (0.31, 0.35), (0.11, 0.15),
                       (1.2, 1.5), (24, 29), (20, 26), (0.3, 0.45), (0.08, 0.14), notchback=True, rear_glass=False),
    "suv": BodyStyle((4.3, 4.9), (1.82, 2.0), (1.62, 1.8), (1.0, 1.12), (0.35, 0.39), (0.19, 0.24),
                     (1.1, 1.35), (30, 38), (62, 80), (0.16, 0.22), (0.06, 0.12), roof_rails=0.6),
    "pickup": BodyStyle((5.0, 5.6), (1.85, 2.0), (1.75, 1.9), (1.05, 1.15), (0.36, 0.4), (0.22, 0.28),
                        (1.3, 1.6), (30, 36), (78, 86), (1.5, 1.9), (0.06, 0.12), rear_overhang=(0.22, 0.25),
                        notchback=True, rear_glass=False),
    "van": BodyStyle((4.6, 5.3), (1.85, 2.0), (1.85, 2.1), (0.98, 1.1), (0.32, 0.35), (0.15, 0.2),
                     (0.6, 0.85), (38, 50), (80, 88), (0.16, 0.2), (0.1, 0.16), roof_rails=0.3),
}  # fmt: skip
STYLES: tuple[str, ...] = tuple(BODY_STYLES)

ROOF_COLOURS = ((20, 20, 22), (236, 236, 232), (150, 24, 28))  # two-tone roofs
MUD = (92, 76, 56)

TAIL_DROP = 0.03  # the deck slopes down this much towards the tail


@dataclass(frozen=True)
class Stations:
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


def stations(car: CarShape) -> Stations:
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
    s = Stations(ws, roof_front, roof_rear, rw, wf, wr, arch, fd, bd + 0.52 * (fd - bd), bd)
    problems = [
        (roof_front - roof_rear < 0.2, "roof shorter than 0.2 m (hood, deck or rakes too long)"),
        (not -half + car.chamfer < rw < ws < half - car.chamfer, "hood and deck overlap or miss the corners"),
        (fd - bd < 1.0, "wheelbase too short for two doors"),
        (car.wheel_radius + arch + 0.04 > hood_line(car, ws, rw, wf), "front wheel arches reach the hood"),
        (car.clearance >= car.wheel_radius, "clearance above the axles"),
        (car.style not in BODY_STYLES, f"style must be one of {STYLES}"),
    ]
    for bad, why in problems:
        if bad:
            raise ValueError(f"impossible CarShape: {why}: {car}")
    return s


def hood_line(car: CarShape, windshield_base: float, rear_window_base: float, x: float) -> float:
    """Height of the body's top edge at x: hood sloping to the nose, belt, deck sloping to the tail."""
    half = car.length / 2
    if x > windshield_base:
        return car.belt - car.nose_drop * (x - windshield_base) / (half - windshield_base)
    if x < rear_window_base:
        return car.belt - TAIL_DROP * (rear_window_base - x) / (rear_window_base + half)
    return car.belt


def sill(car: CarShape, arch_radius: float, wheel_x: float | None, x: float) -> float:
    """Lower edge of the body side at x: the clearance, or the wheel arch over the wheel at `wheel_x`."""
    if wheel_x is None:
        return car.clearance
    return car.wheel_radius + math.sqrt(max(0.0, arch_radius**2 - (x - wheel_x) ** 2))


def car_mesh(car: CarShape) -> Mesh:
    """The car as labelled polygons, closed from every viewpoint above the ground."""
    s = stations(car)
    style = BODY_STYLES[car.style]
    half, w2, ch, th = car.length / 2, car.width / 2, car.chamfer, car.tumblehome
    low, belt, top = car.clearance, car.belt, car.height
    nose, tail = belt - car.nose_drop, belt - TAIL_DROP
    ws, rw, rf, rr = s.windshield_base, s.rear_window_base, s.roof_front, s.roof_rear
    paint, ids = car.paint, PART_IDS
    b = MeshBuilder(inside=(0.0, 0.0, (low + belt) / 2))
    b.specular, b.dirt = car.gloss, car.dirt

    def body_top(x: float) -> float:
        return hood_line(car, ws, rw, x)

    # Top: hood and deck (reaching into the bevelled corners), windshield, roof, rear window.
    hood_corner, deck_corner = body_top(half - ch), body_top(-half + ch)
    hood = [(ws, w2, belt), (half - ch, w2, hood_corner), (half, w2 - ch, nose)]
    deck = [(rw, w2, belt), (-half + ch, w2, deck_corner), (-half, w2 - ch, tail)]
    b.add(hood + [(x, -y, z) for x, y, z in reversed(hood)], ids["hood"], paint)
    b.add(deck + [(x, -y, z) for x, y, z in reversed(deck)], ids["trunk"], paint)
    b.add(across(ws, belt, w2, rf, top, w2 - th), ids["windshield"], GLASS, gloss=0.22)
    b.add(across(rf, top, w2 - th, rr, top, w2 - th), ids["roof"], car.roof_paint or paint)
    b.add(across(rw, belt, w2, rr, top, w2 - th), ids["rear_window"], GLASS, gloss=0.22)
    if car.details.roof_rails:
        roof_rails(b, car, rf, rr)

    # Front face; rear face with bumper, and a tailgate above it on hatch styles.
    yi = w2 - ch  # half width of the front and rear faces
    front, rear, bumper = ids["front"], ids["rear"], car.bumper_height
    b.add(wall((half, yi), (half, -yi), low, nose), front, paint)
    lamp_z = front_details(b, car, half, yi, low, nose)
    tail_height = car.details.taillight_height
    if style.notchback:
        b.add(wall((-half, yi), (-half, -yi), low, tail), rear, paint)
        taillight_on, taillight_z = rear, (tail - 0.05 - tail_height, tail - 0.05)
        rear_details(b, car, half, yi, low, rear, low + 0.12)
    else:
        b.add(wall((-half, yi), (-half, -yi), low, bumper), rear, paint)
        b.add(wall((-half, yi), (-half, -yi), bumper, tail), ids["trunk"], paint)
        taillight_on, taillight_z = ids["trunk"], (max(bumper + 0.08, tail - 0.05 - 2.5 * tail_height), tail - 0.05)
        rear_details(b, car, half, yi, low, ids["trunk"], bumper + 0.05)
    geometry = {"half": half, "yi": yi, "lamp_z": lamp_z, "taillight_z": taillight_z, "taillight_on": taillight_on}

    for sy, side in ((1.0, "left"), (-1.0, "right")):
        y, y_face = sy * w2, sy * yi  # the body side; the edge of the front and rear faces
        fender_f, fender_r = ids[f"front_fender_{side}"], ids[f"rear_fender_{side}"]
        door_f, door_b = ids[f"frontdoor_{side}"], ids[f"backdoor_{side}"]

        # Bevelled corners, and the lights that wrap around them.
        b.add(wall((half - ch, y), (half, y_face), low, (hood_corner, nose)), fender_f, paint)
        b.add(wall((-half + ch, y), (-half, y_face), low, (deck_corner, tail)), fender_r, paint)
        lights(b, car, side, sy, geometry)

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
            sills = (sill(car, s.arch_radius, arch, x0), sill(car, s.arch_radius, arch, x1))
            b.add(wall((x0, y), (x1, y), sills, (body_top(x0), body_top(x1))), part, paint)

        green = [(ws, y, belt), (rf, sy * (w2 - th), top), (rr, sy * (w2 - th), top), (rw, y, belt)]
        side_details(b, car, side, sy, s, green, style.rear_glass)

        # Wheels, each with a dark wheel well behind it that stays inside the body.
        b.specular, b.dirt = 0.05, 0.0
        for wheel_x, fender in wheels:
            wheel_id = ids[f"wheel_{'front' if wheel_x == s.wheel_front else 'rear'}_{side}"]
            r, arch = car.wheel_radius, s.arch_radius
            well_x = (max(wheel_x - arch - 0.3, -half + ch + 0.02), min(wheel_x + arch + 0.3, half - ch - 0.02))
            well_top = min(r + arch + 0.15, *(body_top(x) - 0.03 for x in well_x))
            well_y = sy * (w2 - 0.34)
            well = wall((well_x[0], well_y), (well_x[1], well_y), low, well_top)
            b.add(well, fender, DARK, inside=(wheel_x, 0.0, r), counts=False)
            wheel(b, car, wheel_id, wheel_x, sy)
        b.specular, b.dirt = car.gloss, car.dirt
    return b.build()


def random_car(rng: np.random.Generator, distribution: SceneDistribution = DISTRIBUTIONS["default"]) -> CarShape:
    """A car of a random style with proportions drawn inside that style's range (redrawn until consistent)."""
    for _attempt in range(100):
        car = _draw_car(rng, distribution)
        try:
            stations(car)
        except ValueError:
            continue
        return car
    raise RuntimeError("car proportions keep coming out inconsistent; the style ranges need fixing")


def _draw_car(rng: np.random.Generator, distribution: SceneDistribution) -> CarShape:
    style_name = STYLES[rng.choice(len(STYLES), p=distribution.style_weights)]
    style = BODY_STYLES[style_name]
    u = rng.uniform
    paints = distribution.paints
    paint = jitter(rng, paints[rng.choice(len(paints), p=[w for _, w in paints])][0], distribution.paint_jitter)
    length, clearance = u(*style.length), u(*style.clearance)
    rounded = rng.random() < 0.5
    trim = ((30, 30, 32), paint, (178, 180, 186))[rng.choice(3, p=[0.6, 0.3, 0.1])]
    return CarShape(
        style=style_name,
        length=length,
        width=u(*style.width),
        height=u(*style.height),
        clearance=clearance,
        belt=u(*style.belt),
        nose_drop=u(*style.nose_drop) * (1.4 if rounded else 1.0),
        wheel_radius=u(*style.wheel_radius),
        front_overhang=length * u(0.18, 0.21),
        rear_overhang=length * u(*style.rear_overhang),
        hood_length=u(*style.hood_length),
        windshield_rake=u(*style.windshield_rake),
        rear_rake=u(*style.rear_rake),
        deck_length=u(*style.deck_length),
        tumblehome=u(0.14, 0.22) if rounded else u(0.08, 0.14),
        chamfer=u(0.16, 0.3) if rounded else u(0.05, 0.12),
        bumper_height=clearance + u(0.25, 0.35),
        paint=paint,
        trim=trim,
        rim=jitter(rng, (175, 175, 180) if rng.random() < 0.7 else (45, 45, 48), 10),
        roof_paint=ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))] if rng.random() < 0.12 else None,
        gloss=u(0.1, 0.9),
        dirt=u(0.2, 1.0) if rng.random() < 0.25 else 0.0,
        details=random_part_look(rng, paint, roof_rails=style.roof_rails),
    )
