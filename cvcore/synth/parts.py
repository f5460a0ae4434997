"""Part appearance: lights, grille, plates, mirrors, handles, windows, wheels, roof rails and stickers.

The body (`bodies.py`) gives the panels; this module dresses them as data (`PartLook`) rather than
per-style branches. What tells front from rear and left from right stays tied to the geometry:
white headlights (an amber strip at most) and a grille on the front face, red taillights (a white
reversing strip at most) on the rear, mirrors ahead of the front doors. Every detail lies flat on
its panel (a decal) so that labels stay exact: a light is its own part and is cut out of the
panel's area; plates, grilles, handles, stickers and rims belong to the panel they sit on and add
no area. Mirrors and roof rails stand out of the body and count for no area either.
"""

from __future__ import annotations

import math

import numpy as np

from cvcore.labels import PART_IDS
from cvcore.synth.geometry import MeshBuilder, box_faces, inset, ngon_xz, slab, wall
from cvcore.synth.scene import CarShape, PartLook, Sticker

GLASS = (28, 34, 42)
DARK = (22, 22, 24)
RUBBER = (26, 26, 28)
CHROME = (178, 180, 186)
AMBER = (236, 138, 24)
REVERSING = (226, 226, 222)

# Tables the random part look draws from: (value, weight).
HEADLIGHT_COLOURS = (((215, 218, 225), 0.4), ((236, 240, 250), 0.3), ((226, 222, 196), 0.15), ((190, 196, 206), 0.15))
TAILLIGHT_COLOURS = (((165, 22, 26), 0.35), ((196, 32, 36), 0.25), ((128, 14, 20), 0.2), ((210, 52, 58), 0.1), ((150, 24, 52), 0.1))  # fmt: skip
PLATE_SIZES = (((0.52, 0.11), 0.6), ((0.305, 0.152), 0.3), ((0.44, 0.14), 0.1))  # EU, US, other
PLATE_COLOURS = (((225, 225, 218), 0.75), ((226, 198, 44), 0.15), ((200, 208, 220), 0.1))
SPOKES = ((0, 0.35), (5, 0.35), (6, 0.15), (10, 0.15))
STICKER_PANELS = ("frontdoor", "backdoor")


def _pick(rng: np.random.Generator, table):
    return table[rng.choice(len(table), p=[weight for _, weight in table])][0]


def random_part_look(rng: np.random.Generator, paint, *, roof_rails: float) -> PartLook:
    """Lights, grille, plates, mirrors, handles, rims, rails and stickers within what real cars have."""
    u = rng.uniform
    grille = (DARK, CHROME, tuple(int(c * 0.45) for c in paint))[rng.choice(3, p=[0.6, 0.15, 0.25])]
    stickers = tuple(
        Sticker(
            STICKER_PANELS[rng.integers(2)],
            float(u(0, 1)),
            float(u(0, 1)),
            float(u(0.12, 0.4)),
            tuple(int(c) for c in rng.integers(0, 256, 3)),
            ("left", "right")[rng.integers(2)],
        )
        for _ in range(rng.choice(3, p=[0.8, 0.14, 0.06]))
    )
    return PartLook(
        headlight_height=float(u(0.05, 0.16)),
        headlight_inner=float(u(0.35, 0.72)),
        headlight=_pick(rng, HEADLIGHT_COLOURS),
        indicator=float(u(0.2, 0.4)) if rng.random() < 0.4 else 0.0,
        taillight_height=float(u(0.06, 0.18)),
        taillight_inner=float(u(0.35, 0.8)),
        taillight=_pick(rng, TAILLIGHT_COLOURS),
        reversing_light=float(u(0.15, 0.3)) if rng.random() < 0.4 else 0.0,
        grille_width=float(u(0.3, 0.85)),
        grille_height=float(u(0.06, 0.22)),
        grille=grille,
        grille_bars=int(rng.choice(5, p=[0.6, 0.1, 0.1, 0.1, 0.1])),
        front_plate=bool(rng.random() < 0.8),
        rear_plate=bool(rng.random() < 0.95),
        plate_size=_pick(rng, PLATE_SIZES),
        plate=_pick(rng, PLATE_COLOURS),
        mirror=None if rng.random() < 0.6 else DARK,
        mirror_size=float(u(0.12, 0.2)),
        handles=(DARK, tuple(int(c) for c in paint), CHROME)[rng.choice(3, p=[0.5, 0.35, 0.15])],
        rim_share=float(u(0.55, 0.75)),
        spokes=int(_pick(rng, SPOKES)),
        window_margin=float(u(0.03, 0.08)),
        roof_rails=bool(rng.random() < roof_rails),
        stickers=stickers,
    )


def front_details(
    b: MeshBuilder, car: CarShape, half: float, yi: float, low: float, nose: float
) -> tuple[float, float]:
    """Grille, air intake and plate on the front face; returns the headlights' (bottom, top) height."""
    look, front = car.details, PART_IDS["front"]
    lamp_top = nose - 0.04
    lamp_z = (lamp_top - min(look.headlight_height, (nose - low) * 0.3), lamp_top)
    b.decal(wall((half, 0.6 * yi), (half, -0.6 * yi), low + 0.06, low + 0.16), front, DARK, on=front)
    plate_w, plate_h = look.plate_size
    if look.front_plate:
        b.decal(
            wall((half, plate_w / 2), (half, -plate_w / 2), low + 0.19, low + 0.19 + plate_h),
            front,
            look.plate,
            on=front,
        )
    grille_low = max(low + 0.21 + plate_h, lamp_top - look.grille_height - 0.04)
    grille_half = min(look.grille_width, look.headlight_inner - 0.04) * yi
    if grille_low < lamp_top - 0.03:
        b.decal(wall((half, grille_half), (half, -grille_half), grille_low, lamp_top), front, look.grille, on=front)
        for bar in range(look.grille_bars):
            z = grille_low + (bar + 1) * (lamp_top - grille_low) / (look.grille_bars + 1)
            bar_wall = wall((half, grille_half), (half, -grille_half), z - 0.008, z + 0.008)
            b.decal(bar_wall, front, CHROME, on=front, lift=0.01)
    return lamp_z


def rear_details(
    b: MeshBuilder, car: CarShape, half: float, yi: float, low: float, plate_on: int, plate_z: float
) -> None:
    """Plate (on the rear face or the tailgate, `plate_on`) and the dark strip of the rear bumper."""
    look, rear = car.details, PART_IDS["rear"]
    plate_w, plate_h = look.plate_size
    if look.rear_plate:
        b.decal(
            wall((-half, plate_w / 2), (-half, -plate_w / 2), plate_z, plate_z + plate_h),
            plate_on,
            look.plate,
            on=plate_on,
        )
    b.decal(wall((-half, 0.6 * yi), (-half, -0.6 * yi), low + 0.03, low + 0.09), rear, DARK, on=rear)


def lights(b, car: CarShape, side: str, sy: float, geometry: dict) -> None:
    """One side's headlight and taillight: on the front or rear face, wrapping around the bevelled corner."""
    look, half, yi, ch = car.details, geometry["half"], geometry["yi"], car.chamfer
    headlight, taillight = PART_IDS[f"headlight_{side}"], PART_IDS[f"taillight_{side}"]
    fender_f, fender_r = PART_IDS[f"front_fender_{side}"], PART_IDS[f"rear_fender_{side}"]
    edge, wrap = sy * (yi - 0.005), sy * (yi + 0.7 * ch)
    lamp_z, tail_z, tail_on = geometry["lamp_z"], geometry["taillight_z"], geometry["taillight_on"]
    inner = sy * look.headlight_inner * yi
    b.decal(wall((half, inner), (half, edge), *lamp_z), headlight, look.headlight, on=PART_IDS["front"], gloss=0.2)
    b.decal(wall((half, edge), (half - 0.7 * ch, wrap), *lamp_z), headlight, look.headlight, on=fender_f, gloss=0.2)
    if look.indicator:
        strip = (lamp_z[0], lamp_z[0] + look.indicator * (lamp_z[1] - lamp_z[0]))
        b.decal(wall((half, inner), (half, edge), *strip), headlight, AMBER, on=headlight, lift=0.008)
        b.decal(wall((half, edge), (half - 0.7 * ch, wrap), *strip), headlight, AMBER, on=headlight, lift=0.008)
    inner = sy * max(look.taillight_inner * yi, look.plate_size[0] / 2 + 0.03)  # clear of the plate
    b.decal(wall((-half, inner), (-half, edge), *tail_z), taillight, look.taillight, on=tail_on)
    b.decal(wall((-half, edge), (-half + 0.7 * ch, wrap), *tail_z), taillight, look.taillight, on=fender_r)
    if look.reversing_light:
        start = inner + (edge - inner) * (1 - look.reversing_light)
        b.decal(wall((-half, start), (-half, edge), *tail_z), taillight, REVERSING, on=taillight, lift=0.008)


def side_details(b: MeshBuilder, car: CarShape, side: str, sy: float, s, green: list, rear_glass: bool) -> None:
    """Door handles, stickers, the mirror, and the greenhouse side split at the doors with glass in it."""
    look, w2, belt, top = car.details, car.width / 2, car.belt, car.height
    y = sy * w2
    ids = PART_IDS
    fender_f, fender_r = ids[f"front_fender_{side}"], ids[f"rear_fender_{side}"]
    door_f, door_b = ids[f"frontdoor_{side}"], ids[f"backdoor_{side}"]
    doors = {"frontdoor": (door_f, s.pillar_b, s.frontdoor_front), "backdoor": (door_b, s.backdoor_rear, s.pillar_b)}
    for door, rear_edge, _ in doors.values():
        b.decal(
            wall((rear_edge + 0.07, y), (rear_edge + 0.22, y), belt - 0.14, belt - 0.1), door, look.handles, on=door
        )
    for sticker in look.stickers:
        if sticker.side != side:
            continue
        door, lo, hi = doors[sticker.part]
        size = min(sticker.size, hi - lo - 0.2, belt - car.clearance - 0.35)
        if size < 0.05:
            continue
        x0 = lo + 0.1 + sticker.x * (hi - lo - 0.2 - size)
        z0 = car.clearance + 0.12 + sticker.z * (belt - car.clearance - 0.35 - size)
        b.decal(wall((x0, y), (x0 + size, y), z0, z0 + size), door, sticker.colour, on=door)
    mx = min(s.windshield_base, s.frontdoor_front) - 0.04
    mirror = (mx - look.mirror_size, mx, sy * w2, sy * (w2 + 0.17), belt + 0.03, belt + 0.15)
    box_faces(b, mirror, door_f, look.mirror or car.paint, counts=False, skip_side=-sy)

    slope = car.tumblehome / (top - belt)
    pieces = (
        (s.frontdoor_front, car.length / 2, fender_f, False),
        (s.pillar_b, s.frontdoor_front, door_f, True),
        (s.backdoor_rear, s.pillar_b, door_b, True),
        (-car.length / 2, s.backdoor_rear, fender_r, rear_glass),
    )
    for lo, hi, part, window in pieces:
        piece = slab(green, lo, hi)
        if not piece:
            continue
        b.add(piece, part, car.trim)
        pane = inset(np.array([(p[0], p[2]) for p in piece]), look.window_margin) if window else None
        if pane is not None:
            b.decal([(x, sy * (w2 - slope * (z - belt)), z) for x, z in pane], part, GLASS, on=part, gloss=0.22)


def wheel(b: MeshBuilder, car: CarShape, wheel_id: int, wheel_x: float, sy: float) -> None:
    """Tyre disk, rim (with dark gaps between spokes) and hub decals, tread, inner disk."""
    look, w2, r = car.details, car.width / 2, car.wheel_radius
    y_out, y_in = sy * (w2 - 0.03), sy * (w2 - 0.25)
    hub = (wheel_x, sy * (w2 - 0.14), r)
    outer = ngon_xz(wheel_x, y_out, r, r, 12, -math.pi / 2)
    inner = ngon_xz(wheel_x, y_in, r, r, 12, -math.pi / 2)
    b.add(outer, wheel_id, RUBBER, inside=hub)
    rim_r = look.rim_share * r
    b.decal(ngon_xz(wheel_x, y_out, r, rim_r, 10), wheel_id, car.rim, on=wheel_id, inside=hub)
    hub_cap = tuple(int(c * 0.55) for c in car.rim)
    for spoke in range(look.spokes):
        a0, a1 = (spoke + 0.25) * 2 * math.pi / look.spokes, (spoke + 0.75) * 2 * math.pi / look.spokes
        gap = [
            (wheel_x + f * rim_r * math.cos(a), y_out, r + f * rim_r * math.sin(a))
            for f, a in ((0.35, a0), (0.85, a0), (0.85, a1), (0.35, a1))
        ]
        b.decal(gap, wheel_id, DARK, on=wheel_id, inside=hub, lift=0.008)
    b.decal(ngon_xz(wheel_x, y_out, r, 0.2 * r, 6), wheel_id, hub_cap, on=wheel_id, inside=hub, lift=0.01)
    b.add(inner, wheel_id, RUBBER, inside=hub)
    for i in range(12):
        j = (i + 1) % 12
        b.add([outer[i], outer[j], inner[j], inner[i]], wheel_id, RUBBER, inside=hub)


def roof_rails(b: MeshBuilder, car: CarShape, roof_front: float, roof_rear: float) -> None:
    """Two bars along the roof's edges (part of the roof, no area)."""
    y = car.width / 2 - car.tumblehome - 0.1
    for sy in (1.0, -1.0):
        rail = (roof_rear + 0.08, roof_front - 0.08, sy * (y - 0.04), sy * y, car.height, car.height + 0.06)
        box_faces(b, rail, PART_IDS["roof"], DARK, counts=False)
