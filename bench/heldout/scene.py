"""Random held-out scenes: which cars, where the photographer stands, what surrounds the car, the light.

The photographer model is not an orbit at an elevation: the camera stands at a height (mostly eye
level, sometimes crouching or from a wall or balcony), anywhere around the car (the front-left a
little more often), with a 35 mm
equivalent focal length from phone wide (24 mm) to short tele (85 mm), walks back until the car
fills a chosen share of the frame (a quarter of the shots crop it), and tilts and rolls a little.
Around the car: a parking lot, a street with a kerb, a square or a lawn; buildings, another parked
car, bollards, bushes, bins and low walls, some between the camera and the car.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from bench.heldout.geometry import CarDesign, TriMesh, blob_mesh, body_points, box_mesh, car_parts, lathe_mesh, stations
from bench.heldout.parts import NONE
from bench.heldout.raster import Camera
from bench.heldout.render import Footprint, Scene
from bench.heldout.shading import GROUND_KINDS, LIGHT_STYLES, Lighting, Surface

STYLES = {  # body style -> ranges (low, high) of CarDesign fields; rear_overhang sets the wheelbase
    "city": dict(length=(3.5, 3.95), width=(1.62, 1.74), height=(1.45, 1.58), hood_length=(0.72, 0.9), deck_length=(0.06, 0.12),
                 windshield_run=(0.85, 1.0), rear_run=(0.15, 0.28), tail_height=(0.95, 1.05), rear_overhang=(0.5, 0.62)),
    "hatchback": dict(length=(4.0, 4.4), width=(1.74, 1.82), height=(1.42, 1.5), hood_length=(0.9, 1.05), deck_length=(0.08, 0.14),
                      windshield_run=(0.8, 0.95), rear_run=(0.3, 0.45), tail_height=(0.95, 1.02), rear_overhang=(0.65, 0.8)),
    "sedan": dict(length=(4.5, 4.95), width=(1.78, 1.86), height=(1.4, 1.48), hood_length=(1.05, 1.25), deck_length=(0.42, 0.6),
                  windshield_run=(0.75, 0.9), rear_run=(0.5, 0.65), tail_height=(0.86, 0.94), rear_overhang=(0.95, 1.1)),
    "estate": dict(length=(4.6, 4.95), width=(1.78, 1.86), height=(1.45, 1.52), hood_length=(1.0, 1.2), deck_length=(0.06, 0.12),
                   windshield_run=(0.75, 0.9), rear_run=(0.12, 0.22), tail_height=(0.98, 1.05), rear_overhang=(1.0, 1.1)),
    "suv": dict(length=(4.4, 4.85), width=(1.84, 1.95), height=(1.65, 1.78), hood_length=(1.0, 1.2), deck_length=(0.08, 0.14),
                windshield_run=(0.65, 0.8), rear_run=(0.15, 0.25), tail_height=(1.08, 1.18), rear_overhang=(0.85, 1.0)),
    "coupe": dict(length=(4.3, 4.7), width=(1.8, 1.9), height=(1.3, 1.38), hood_length=(1.2, 1.4), deck_length=(0.35, 0.5),
                  windshield_run=(0.85, 1.0), rear_run=(0.7, 0.9), tail_height=(0.84, 0.9), rear_overhang=(0.85, 1.0)),
    "mpv": dict(length=(4.4, 4.8), width=(1.8, 1.9), height=(1.7, 1.85), hood_length=(0.75, 0.9), deck_length=(0.06, 0.1),
                windshield_run=(1.0, 1.15), rear_run=(0.1, 0.18), tail_height=(1.1, 1.2), rear_overhang=(0.8, 0.95)),
}  # fmt: skip
STYLE_WEIGHTS = {"city": 0.12, "hatchback": 0.22, "sedan": 0.2, "estate": 0.1, "suv": 0.22, "coupe": 0.06, "mpv": 0.08}
PAINTS = (  # linear RGB, weight
    ((0.75, 0.75, 0.73), 0.22), ((0.015, 0.015, 0.018), 0.2), ((0.42, 0.43, 0.45), 0.16), ((0.14, 0.15, 0.16), 0.12),
    ((0.42, 0.02, 0.025), 0.08), ((0.03, 0.09, 0.33), 0.07), ((0.02, 0.03, 0.1), 0.04), ((0.04, 0.16, 0.07), 0.03),
    ((0.48, 0.4, 0.28), 0.03), ((0.66, 0.46, 0.02), 0.02), ((0.66, 0.17, 0.02), 0.03),
)  # fmt: skip
SKIES = {  # zenith, horizon, sun strength, ambient, cloudiness, sun elevation (degrees)
    "clear": ((0.12, 0.25, 0.6), (0.6, 0.7, 0.85), (1.6, 2.4), (0.35, 0.55), (0.0, 0.25), (20, 70)),
    "broken": ((0.2, 0.32, 0.6), (0.7, 0.74, 0.8), (1.0, 1.8), (0.5, 0.75), (0.4, 0.7), (20, 65)),
    "overcast": ((0.45, 0.47, 0.5), (0.62, 0.63, 0.65), (0.1, 0.35), (0.9, 1.3), (0.85, 1.0), (25, 60)),
    "dusk": ((0.1, 0.13, 0.3), (0.85, 0.5, 0.3), (0.7, 1.2), (0.35, 0.55), (0.1, 0.5), (4, 14)),
}
SKY_WEIGHTS = (0.35, 0.3, 0.25, 0.1)
GROUND_COLOURS = {"asphalt": (0.09, 0.09, 0.1), "concrete": (0.3, 0.29, 0.27), "grass": (0.06, 0.12, 0.03),
                  "cobbles": (0.2, 0.18, 0.16)}  # fmt: skip
IMAGE_SIZES = ((640, 480), (720, 540), (800, 600), (960, 720), (1024, 768))  # landscape; a quarter are turned
IMAGE_SIZE_WEIGHTS = (0.55, 0.15, 0.15, 0.08, 0.07)


def _pick(rng: np.random.Generator, weighted) -> object:
    items, weights = zip(*weighted)
    return items[rng.choice(len(items), p=np.asarray(weights) / sum(weights))]


def random_car(rng: np.random.Generator) -> CarDesign:
    """A car of a random style, proportions, paint, lights and plates."""
    style = _pick(rng, STYLE_WEIGHTS.items())
    ranges = STYLES[style]
    draws = {name: float(rng.uniform(*span)) for name, span in ranges.items()}
    rear_overhang = draws.pop("rear_overhang")
    length = draws["length"]
    front_overhang = float(rng.uniform(0.18, 0.22)) * length
    wheel_radius = float(rng.uniform(0.29, 0.33) if style not in ("suv", "mpv") else rng.uniform(0.33, 0.38))
    height = draws["height"]
    belt = height * float(rng.uniform(0.6, 0.66))
    paint = np.asarray(_pick(rng, PAINTS)) * rng.uniform(0.9, 1.1, 3)
    two_tone = rng.random() < 0.12
    return CarDesign(
        **draws,
        clearance=float(rng.uniform(0.14, 0.2) if style not in ("suv",) else rng.uniform(0.19, 0.24)),
        belt=belt,
        nose_height=belt - float(rng.uniform(0.12, 0.22)),
        cabin_taper=float(rng.uniform(0.16, 0.3)),
        plan_exponent=float(rng.uniform(3.5, 7.0)),
        section_exponent=float(rng.uniform(3.0, 6.0)),
        wheel_radius=wheel_radius,
        wheelbase=length - front_overhang - rear_overhang,
        front_overhang=front_overhang,
        paint=tuple(float(c) for c in np.clip(paint, 0.005, 0.85)),
        roof_paint=(0.015, 0.015, 0.018) if two_tone else None,
        metallic=float(rng.uniform(0.1, 0.9)),
        front_plate=bool(rng.random() < 0.75),
        light_style=int(rng.integers(len(LIGHT_STYLES))),
    )


def car_surfaces(car: CarDesign, rng: np.random.Generator) -> list[Surface]:
    """Paint, wheels, trim, plates and mirrors of one car, in the order `car_mesh` expects."""
    rim = _pick(rng, (((0.5, 0.5, 0.52), 0.6), ((0.1, 0.1, 0.11), 0.25), ((0.3, 0.25, 0.15), 0.05), ((0.02, 0.02, 0.02), 0.1)))
    plate = (0.75, 0.75, 0.72) if rng.random() < 0.8 else (0.7, 0.6, 0.05)
    mirror = car.paint if rng.random() < 0.7 else (0.02, 0.02, 0.02)
    return [
        Surface("paint", car.paint, car),
        Surface("wheel", rim, car, pattern=int(rng.choice([5, 6, 7, 10]))),
        Surface("trim", (0.015, 0.015, 0.015)),
        Surface("plate", plate),
        Surface("mirror", mirror),
    ]


def car_mesh(car: CarDesign, first_surface: int) -> TriMesh:
    """The car's triangles, its surfaces numbered from `first_surface` (see `car_surfaces`)."""
    s = first_surface
    return car_parts(car, body=s, wheel=s + 1, trim=s + 2, plate=s + 3, mirror=s + 4)


def hull_points(car: CarDesign) -> np.ndarray:
    """A few hundred points of the car's body surface, for framing."""
    s = stations(car)
    xs = np.linspace(-car.half_length, car.half_length, 17)
    return body_points(car, s, xs, around=16).reshape(-1, 3)


def frame_fill(camera: Camera, points: np.ndarray) -> float:
    """How far the points reach from the image centre, as a share of the half frame (1 = the border)."""
    uv, depth = camera.project(points)
    if depth.min() <= 0.3:
        return math.inf
    return float(max(np.abs(uv[:, 0] - camera.width / 2).max() / (camera.width / 2),
                     np.abs(uv[:, 1] - camera.height / 2).max() / (camera.height / 2)))  # fmt: skip


def random_camera(rng: np.random.Generator, car: CarDesign) -> Camera:
    """The photographer (see the module docstring)."""
    width, height = IMAGE_SIZES[rng.choice(len(IMAGE_SIZES), p=IMAGE_SIZE_WEIGHTS)]
    if rng.random() < 0.25:
        width, height = height, width
    focal_mm = _pick(rng, ((rng.uniform(23, 29), 0.6), (rng.uniform(30, 55), 0.25), (rng.uniform(56, 85), 0.15)))
    focal_px = float(focal_mm) / 36 * max(width, height)
    eye_height = _pick(rng, ((rng.uniform(1.3, 1.9), 0.6), (rng.uniform(2.2, 5.5), 0.25), (rng.uniform(0.5, 1.1), 0.15)))
    while True:  # any side, the front-left a little more often (claim photos start there)
        azimuth = rng.uniform(0, 2 * math.pi)
        if rng.random() * 1.3 < 1 + 0.3 * math.cos(azimuth - math.radians(40)):
            break
    framing = rng.uniform(1.05, 1.6) if rng.random() < 0.25 else rng.uniform(0.35, 0.95)
    target = np.array([rng.normal(0, 0.12) * car.length, rng.normal(0, 0.08) * car.width, rng.uniform(0.3, 0.85) * car.height])
    roll = float(np.clip(rng.normal(0, 2.5), -8, 8))
    shift = (float(rng.normal(0, 0.02 * width)), float(rng.normal(0, 0.02 * height)))
    points = hull_points(car)

    def at(distance: float) -> Camera:
        eye = (distance * math.cos(azimuth), distance * math.sin(azimuth), float(eye_height))
        return Camera(eye, tuple(target), focal_px, width, height, roll, shift)

    near, far = car.radius + 0.6, 200.0
    if frame_fill(at(near), points) <= framing:
        return at(near)
    for _ in range(18):
        mid = (near + far) / 2
        near, far = (mid, far) if frame_fill(at(mid), points) > framing else (near, mid)
    return at(far)


def random_lighting(rng: np.random.Generator) -> Lighting:
    sky_name = _pick(rng, zip(SKIES, SKY_WEIGHTS))
    zenith, horizon, strength, ambient, cloudiness, sun_elev = SKIES[sky_name]
    elevation, azimuth = math.radians(rng.uniform(*sun_elev)), rng.uniform(0, 2 * math.pi)
    sun = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
    ground = GROUND_KINDS[rng.choice(len(GROUND_KINDS), p=[0.45, 0.25, 0.15, 0.15])]
    tint = rng.uniform(0.9, 1.1, 3)

    def jitter(colour) -> tuple[float, float, float]:
        return tuple(float(c) for c in np.asarray(colour) * rng.uniform(0.85, 1.15, 3))

    return Lighting(
        sun=sun,
        sun_strength=float(rng.uniform(*strength)),
        ambient=float(rng.uniform(*ambient)),
        sky_zenith=jitter(zenith),
        sky_horizon=jitter(horizon),
        cloudiness=float(rng.uniform(*cloudiness)),
        ground_kind=ground,
        ground_colour=jitter(GROUND_COLOURS[ground]),
        ground_angle=float(rng.uniform(0, math.pi)),
        haze=float(rng.uniform(80, 400)),
        exposure=float(rng.uniform(0.8, 1.3)),
        white_balance=tuple(float(t) for t in tint / tint.mean()),
        vignette=float(rng.uniform(0.0, 0.35)),
        noise=float(rng.uniform(0.002, 0.018)),
        blur=float(rng.uniform(0.2, 1.1)),
        jpeg_quality=int(rng.integers(68, 96)),
        texture_seed=int(rng.integers(2**31)),
    )


def _clear(spot: np.ndarray, reach: float, eye: np.ndarray, blocked: list[tuple[np.ndarray, float, float]]) -> bool:
    """Whether an object of radius `reach` at `spot` keeps off the camera and the boxes (centre, half x, half y)."""
    if np.linalg.norm(spot - eye[:2]) < reach + 0.6:
        return False
    return all(abs(spot[0] - c[0]) > hx + reach or abs(spot[1] - c[1]) > hy + reach for c, hx, hy in blocked)


def _street_object(kind: str, rng: np.random.Generator) -> tuple[Surface, TriMesh, float]:
    """A bollard, bush, bin or low wall at the origin: its surface, mesh and footprint radius."""
    if kind == "bollard":
        r, h = rng.uniform(0.05, 0.12), rng.uniform(0.7, 1.1)
        profile = np.array([(0.0, h + r * 0.5), (r * 0.7, h + r * 0.35), (r, h), (r, 0.0), (0.0, 0.0)])
        colour = (0.5, 0.5, 0.5) if rng.random() < 0.6 else (0.6, 0.45, 0.02)
        return Surface("bollard", colour, pattern=int(rng.random() < 0.4)), lathe_mesh(profile, surface=0, segments=14), r
    if kind == "bush":
        radii = tuple(rng.uniform([0.35, 0.35, 0.5], [1.0, 1.0, 1.4]))
        return Surface("bush", (0.06, 0.16, 0.04)), blob_mesh(radii, surface=0, rng=rng), max(radii[:2])
    if kind == "bin":
        size = tuple(rng.uniform([0.5, 0.5, 0.9], [0.8, 0.8, 1.3]))
        colour = (0.05, 0.12, 0.05) if rng.random() < 0.5 else (0.12, 0.12, 0.13)
        return Surface("trim", colour), box_mesh(size, surface=0), 0.5
    size = (rng.uniform(1.5, 5.0), 0.25, rng.uniform(0.4, 1.0))
    colour = (0.35, 0.12, 0.07) if rng.random() < 0.7 else (0.4, 0.38, 0.35)
    return Surface("wall", colour), box_mesh(size, surface=0), size[0] / 2


def random_scene(rng: np.random.Generator) -> Scene:
    """Car, photographer, surroundings and light of one held-out photo."""
    car = random_car(rng)
    camera = random_camera(rng, car)
    eye = np.asarray(camera.eye)
    surfaces = car_surfaces(car, rng)
    meshes = [car_mesh(car, 0)]
    casters = [np.ones(len(meshes[0].part), bool)]
    footprints = [Footprint((0.0, 0.0), 0.0, car.half_length, car.width / 2)]
    blocked = [(np.zeros(2), car.half_length + 0.1, car.width / 2 + 0.1)]

    def add(mesh: TriMesh, casts: bool) -> None:
        mesh.part[:] = NONE
        meshes.append(mesh)
        casters.append(np.full(len(mesh.part), casts))

    if rng.random() < 0.35:  # another car, parked beside, ahead or behind
        other = random_car(rng)
        if rng.random() < 0.7:
            spot = np.array([rng.uniform(-1.5, 1.5), rng.choice([-1, 1]) * ((car.width + other.width) / 2 + rng.uniform(0.5, 1.6))])
        else:
            spot = np.array([rng.choice([-1, 1]) * ((car.length + other.length) / 2 + rng.uniform(0.8, 3)), rng.normal(0, 0.4)])
        heading = float(rng.choice([0.0, 180.0]) + rng.normal(0, 3))
        if _clear(spot, other.radius, eye, []):
            first = len(surfaces)
            surfaces += car_surfaces(other, rng)
            add(car_mesh(other, first).moved(heading, (spot[0], spot[1], 0.0)), True)
            footprints.append(Footprint((float(spot[0]), float(spot[1])), heading, other.half_length, other.width / 2))
            blocked.append((spot, other.half_length + 0.1, other.width / 2 + 0.1))
    for _ in range(rng.choice(4, p=[0.35, 0.3, 0.2, 0.15])):  # things around the car, some in the way
        kind = _pick(rng, (("bollard", 0.35), ("bush", 0.3), ("bin", 0.15), ("wall", 0.2)))
        surface, mesh, reach = _street_object(kind, rng)
        mesh.surface[:] = len(surfaces)
        for _attempt in range(8):
            if rng.random() < 0.4:
                aim = rng.uniform(-0.5, 0.5, 2) * np.array([car.length, car.width])
                spot = aim + rng.uniform(0.3, 0.85) * (eye[:2] - aim)
            else:
                angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(car.radius + 0.5, 12)
                spot = radius * np.array([math.cos(angle), math.sin(angle)])
            if _clear(spot, reach, eye, blocked):
                surfaces.append(surface)
                add(mesh.moved(float(rng.uniform(0, 180)), (spot[0], spot[1], 0.0)), True)
                blocked.append((spot, reach, reach))
                break
    if rng.random() < 0.45:  # a kerb along the car
        side = rng.choice([-1, 1]) * (car.width / 2 + rng.uniform(0.6, 2.5))
        kerb = box_mesh((60.0, 0.3, 0.14), surface=len(surfaces))
        if abs(eye[1] - side) > 0.5:
            surfaces.append(Surface("kerb", (0.4, 0.39, 0.37)))
            add(kerb.moved(float(rng.normal(0, 2)), (0.0, side, 0.0)), False)
    reach_eye = float(np.linalg.norm(eye[:2]))
    for _ in range(rng.integers(0, 7)):  # buildings far enough behind everything
        distance = rng.uniform(max(14.0, reach_eye + 8), 70)
        angle = rng.uniform(0, 2 * math.pi)
        size = tuple(rng.uniform([6, 6, 4], [30, 14, 25]))
        facade = _pick(rng, (((0.5, 0.45, 0.38), 0.4), ((0.6, 0.6, 0.58), 0.3), ((0.35, 0.15, 0.1), 0.3)))
        colour = tuple(float(c) for c in np.asarray(facade) * rng.uniform(0.8, 1.1))
        surfaces.append(Surface("building", colour, pattern=int(rng.integers(3))))
        building = box_mesh(size, surface=len(surfaces) - 1)
        heading = math.degrees(angle) + 90 + rng.normal(0, 10)
        add(building.moved(heading, (distance * math.cos(angle), distance * math.sin(angle), 0.0)), False)
    mesh = TriMesh.join(meshes)
    mesh.part[: len(meshes[0].part)] = meshes[0].part
    return Scene(mesh, surfaces, random_lighting(rng), camera, np.concatenate(casters), footprints)


def constructed_scene(car: CarDesign, camera: Camera, *, lighting: Lighting | None = None,
                      occluders: list[tuple[TriMesh, Surface]] = ()) -> Scene:
    """A scene with exactly this car, camera and occluders (for tests): neutral light, no other objects."""
    rng = np.random.default_rng(0)
    light = lighting or replace(random_lighting(rng), blur=0.0, noise=0.0, vignette=0.0)
    surfaces = car_surfaces(car, rng)
    meshes = [car_mesh(car, 0)]
    for mesh, surface in occluders:
        mesh.part[:] = NONE
        mesh.surface[:] = len(surfaces)
        surfaces.append(surface)
        meshes.append(mesh)
    mesh = TriMesh.join(meshes)
    casters = np.zeros(len(mesh.part), bool)
    return Scene(mesh, surfaces, light, camera, casters, [Footprint((0.0, 0.0), 0.0, car.half_length, car.width / 2)])
