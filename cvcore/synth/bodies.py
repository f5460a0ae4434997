"""Car bodies: stations along the car derived from its proportions, the labelled mesh, and random cars per style."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cvcore.labels import PART_IDS
from cvcore.synth.distributions import DISTRIBUTIONS, SceneDistribution, jitter
from cvcore.synth.geometry import Mesh, MeshBuilder, across, box_faces, inset, ngon_xz, slab, wall
from cvcore.synth.scene import CarShape

STYLES: tuple[str, ...] = ("sedan", "hatchback", "suv", "van")

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
        (car.style not in STYLES, f"style must be one of {STYLES}"),
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
    half, w2, ch, th = car.length / 2, car.width / 2, car.chamfer, car.tumblehome
    low, belt, top = car.clearance, car.belt, car.height
    nose, tail = belt - car.nose_drop, belt - TAIL_DROP
    ws, rw, rf, rr = s.windshield_base, s.rear_window_base, s.roof_front, s.roof_rear
    paint, glass, dark, rubber, plate = car.paint, (28, 34, 42), (22, 22, 24), (26, 26, 28), (225, 225, 218)
    ids = PART_IDS
    b = MeshBuilder(inside=(0.0, 0.0, (low + belt) / 2))

    def body_top(x: float) -> float:
        return hood_line(car, ws, rw, x)

    # Top: hood and deck (reaching into the bevelled corners), windshield, roof, rear window.
    hood_corner, deck_corner = body_top(half - ch), body_top(-half + ch)
    hood = [(ws, w2, belt), (half - ch, w2, hood_corner), (half, w2 - ch, nose)]
    deck = [(rw, w2, belt), (-half + ch, w2, deck_corner), (-half, w2 - ch, tail)]
    b.add(hood + [(x, -y, z) for x, y, z in reversed(hood)], ids["hood"], paint)
    b.add(deck + [(x, -y, z) for x, y, z in reversed(deck)], ids["trunk"], paint)
    b.add(across(ws, belt, w2, rf, top, w2 - th), ids["windshield"], glass, gloss=0.22)
    b.add(across(rf, top, w2 - th, rr, top, w2 - th), ids["roof"], paint)
    b.add(across(rw, belt, w2, rr, top, w2 - th), ids["rear_window"], glass, gloss=0.22)

    # Front face with grille, air intake and plate; rear face with bumper, and a tailgate unless a sedan.
    yi = w2 - ch  # half width of the front and rear faces
    front, rear, bumper = ids["front"], ids["rear"], car.bumper_height
    lamp_z = (nose - 0.04 - min(0.13, (nose - low) * 0.3), nose - 0.04)
    b.add(wall((half, yi), (half, -yi), low, nose), front, paint)
    b.decal(wall((half, 0.55 * yi), (half, -0.55 * yi), *lamp_z), front, dark, on=front)
    b.decal(wall((half, 0.6 * yi), (half, -0.6 * yi), low + 0.06, low + 0.16), front, dark, on=front)
    b.decal(wall((half, 0.26), (half, -0.26), low + 0.19, low + 0.3), front, plate, on=front)
    if car.style == "sedan":
        b.add(wall((-half, yi), (-half, -yi), low, tail), rear, paint)
        taillight_on, taillight_z = rear, (tail - 0.05 - (lamp_z[1] - lamp_z[0]), tail - 0.05)
    else:
        b.add(wall((-half, yi), (-half, -yi), low, bumper), rear, paint)
        b.add(wall((-half, yi), (-half, -yi), bumper, tail), ids["trunk"], paint)
        taillight_on, taillight_z = ids["trunk"], (bumper + 0.08, tail - 0.05)
    b.decal(wall((-half, 0.26), (-half, -0.26), low + 0.12, low + 0.23), rear, plate, on=rear)
    b.decal(wall((-half, 0.6 * yi), (-half, -0.6 * yi), low + 0.03, low + 0.09), rear, dark, on=rear)

    for sy, side in ((1.0, "left"), (-1.0, "right")):
        y, y_face = sy * w2, sy * yi  # the body side; the edge of the front and rear faces
        fender_f, fender_r = ids[f"front_fender_{side}"], ids[f"rear_fender_{side}"]
        door_f, door_b = ids[f"frontdoor_{side}"], ids[f"backdoor_{side}"]
        headlight, taillight = ids[f"headlight_{side}"], ids[f"taillight_{side}"]

        # Bevelled corners, and the lights that wrap around them.
        b.add(wall((half - ch, y), (half, y_face), low, (hood_corner, nose)), fender_f, paint)
        b.add(wall((-half + ch, y), (-half, y_face), low, (deck_corner, tail)), fender_r, paint)
        edge, wrap = sy * (yi - 0.005), sy * (yi + 0.7 * ch)
        lamp, red = (215, 218, 225), (165, 22, 26)
        b.decal(wall((half, sy * 0.6 * yi), (half, edge), *lamp_z), headlight, lamp, on=front, gloss=0.2)
        b.decal(wall((half, edge), (half - 0.7 * ch, wrap), *lamp_z), headlight, lamp, on=fender_f, gloss=0.2)
        inner = sy * (0.62 * yi if car.style == "sedan" else yi - 0.16)
        b.decal(wall((-half, inner), (-half, edge), *taillight_z), taillight, red, on=taillight_on)
        b.decal(wall((-half, edge), (-half + 0.7 * ch, wrap), *taillight_z), taillight, red, on=fender_r)

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

        # Door handles, and the mirror (part of the front door, adds no area).
        for door, rear_edge in ((door_f, s.pillar_b), (door_b, s.backdoor_rear)):
            b.decal(wall((rear_edge + 0.07, y), (rear_edge + 0.22, y), belt - 0.14, belt - 0.1), door, dark, on=door)
        mx = min(ws, s.frontdoor_front) - 0.04
        mirror = (mx - 0.16, mx, sy * w2, sy * (w2 + 0.17), belt + 0.03, belt + 0.15)
        box_faces(b, mirror, door_f, paint, counts=False, skip_side=-sy)

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
            piece = slab(green, lo, hi)
            if not piece:
                continue
            b.add(piece, part, car.trim)
            pane = inset(np.array([(p[0], p[2]) for p in piece]), 0.05) if window else None
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
            well = wall((well_x[0], well_y), (well_x[1], well_y), low, well_top)
            b.add(well, fender, dark, inside=(wheel_x, 0.0, r), counts=False)
            y_out, y_in = sy * (w2 - 0.03), sy * (w2 - 0.25)
            hub = (wheel_x, sy * (w2 - 0.14), r)
            outer = ngon_xz(wheel_x, y_out, r, r, 12, -math.pi / 2)
            inner = ngon_xz(wheel_x, y_in, r, r, 12, -math.pi / 2)
            b.add(outer, wheel, rubber, inside=hub)
            b.decal(ngon_xz(wheel_x, y_out, r, 0.64 * r, 10), wheel, car.rim, on=wheel, inside=hub)
            hub_cap = tuple(int(c * 0.55) for c in car.rim)
            b.decal(ngon_xz(wheel_x, y_out, r, 0.2 * r, 6), wheel, hub_cap, on=wheel, inside=hub, lift=0.01)
            b.add(inner, wheel, rubber, inside=hub)
            for i in range(12):
                j = (i + 1) % 12
                b.add([outer[i], outer[j], inner[j], inner[i]], wheel, rubber, inside=hub)
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
    paint = jitter(rng, paints[rng.choice(len(paints), p=[w for _, w in paints])][0], distribution.paint_jitter)
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
        rim=jitter(rng, (175, 175, 180) if rng.random() < 0.7 else (45, 45, 48), 10),
        **dims,
    )
