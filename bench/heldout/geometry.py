"""Triangle meshes of the held-out scenes: lofted car bodies, lathed wheels, boxes, blobs.

A car body is one smooth closed surface: superellipse cross-sections (y, z) lofted along the car's
length x, their half-width following a superellipse plan view and their top a smoothed side profile
(nose, hood, windshield, roof, rear window, deck), their bottom the sill raised into round wheel
arches. Windows, lights, grille and seams are painted per pixel by the shader (`shading.py`), not
modelled. Parts are assigned per triangle from the triangle's position and normal:

- hood: top-facing triangles (normal mostly +z) ahead of the windshield base;
- back-left door: left-facing triangles (normal mostly +y) between the B pillar and the rear wheel
  arch, from the sill up to the roof edge, its window included (as cvcore's renderer counts it:
  the door's window frame and glass are pixels of the door).

Car coordinates: x forward, y to the car's left, z up, origin on the ground under the car's centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.heldout.parts import BODY, DOOR, HOOD, NONE


@dataclass
class TriMesh:
    """Triangles with per-corner normals, the object's own coordinates (for textures) and ids.

    `surface` indexes the scene's list of surfaces (what the shader paints); `part` is the label id
    (`parts.py`); `cull` drops a triangle whose front faces away from the camera.
    """

    corners: np.ndarray  # (T, 3, 3) world coordinates
    normals: np.ndarray  # (T, 3, 3) unit, per corner
    local: np.ndarray  # (T, 3, 3) coordinates in the object's own frame
    local_normals: np.ndarray  # (T, 3, 3) normals in the object's own frame
    part: np.ndarray  # (T,) int
    surface: np.ndarray  # (T,) int
    cull: np.ndarray  # (T,) bool

    @staticmethod
    def join(meshes: list[TriMesh]) -> TriMesh:
        fields = ("corners", "normals", "local", "local_normals", "part", "surface", "cull")
        return TriMesh(**{name: np.concatenate([getattr(m, name) for m in meshes]) for name in fields})

    def moved(self, rotation_deg: float, offset: tuple[float, float, float]) -> TriMesh:
        """The mesh turned about z and shifted: an object placed in the world (local coordinates kept)."""
        rot = _rot_z(rotation_deg)
        return TriMesh(
            self.corners @ rot.T + np.asarray(offset), self.normals @ rot.T, self.local, self.local_normals,
            self.part, self.surface, self.cull,
        )

    def face_normals(self) -> np.ndarray:
        cross = np.cross(self.corners[:, 1] - self.corners[:, 0], self.corners[:, 2] - self.corners[:, 0])
        return cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-12)

    def face_areas(self) -> np.ndarray:
        cross = np.cross(self.corners[:, 1] - self.corners[:, 0], self.corners[:, 2] - self.corners[:, 0])
        return np.linalg.norm(cross, axis=1) / 2


def _rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def grid_mesh(points: np.ndarray, *, surface: int, part: int = NONE, wrap: bool = True, cull: bool = True) -> TriMesh:
    """Triangulate a (rows, cols, 3) grid of points (columns closed around when `wrap`) with smooth normals.

    The grid must describe a closed solid (first and last rows collapsed to a point or a segment):
    the winding is made outward by the sign of the enclosed volume.
    """
    rows, cols = points.shape[:2]
    c = np.arange(cols if wrap else cols - 1)
    r = np.arange(rows - 1)
    i00 = r[:, None] * cols + c[None, :]
    i01 = r[:, None] * cols + (c[None, :] + 1) % cols
    i10 = i00 + cols
    i11 = i01 + cols
    tris = np.concatenate([np.stack([i00, i10, i11], -1).reshape(-1, 3), np.stack([i00, i11, i01], -1).reshape(-1, 3)])
    flat = points.reshape(-1, 3)
    corners = flat[tris]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    keep = area2 > 1e-10
    tris, corners, cross = tris[keep], corners[keep], cross[keep]
    if np.einsum("td,td->", cross, corners.mean(1) - flat.mean(0)) < 0:  # 3 x the signed volume
        tris, cross = tris[:, ::-1], -cross
    corners = flat[tris]
    vertex_normals = np.zeros_like(flat)
    for k in range(3):
        np.add.at(vertex_normals, tris[:, k], cross)
    vertex_normals /= np.maximum(np.linalg.norm(vertex_normals, axis=1, keepdims=True), 1e-12)
    n = len(tris)
    normals = vertex_normals[tris]
    return TriMesh(corners, normals, corners.copy(), normals.copy(), np.full(n, part), np.full(n, surface), np.full(n, cull))


def _unit_box() -> tuple[np.ndarray, np.ndarray]:
    """Corners (12, 3, 3) of the box [-1, 1]^3 wound outward, and their face normals."""
    corners, normals = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u, v = [a for a in range(3) if a != axis]
            quad = []
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = [0.0, 0.0, 0.0]
                p[axis], p[u], p[v] = sign, du, dv
                quad.append(p)
            quad = np.array(quad)
            normal = np.zeros(3)
            normal[axis] = sign
            for tri in ((0, 1, 2), (0, 2, 3)):
                t = quad[list(tri)]
                if np.dot(np.cross(t[1] - t[0], t[2] - t[0]), normal) < 0:
                    t = t[::-1]
                corners.append(t)
                normals.append(np.repeat(normal[None], 3, 0))
    return np.array(corners), np.array(normals)


_UNIT_BOX = _unit_box()


def box_mesh(size: tuple[float, float, float], *, surface: int, base_z: float = 0.0, cull: bool = True) -> TriMesh:
    """An axis-aligned box centred on the z axis, standing on `base_z`, flat-shaded."""
    unit_corners, unit_normals = _UNIT_BOX
    corners = unit_corners * (np.asarray(size, float) / 2) + np.array([0.0, 0.0, base_z + size[2] / 2])
    n = len(corners)
    return TriMesh(corners, unit_normals.copy(), corners.copy(), unit_normals.copy(), np.full(n, NONE),
                   np.full(n, surface), np.full(n, cull))


def blob_mesh(radii: tuple[float, float, float], *, surface: int, rng: np.random.Generator, lumpiness: float = 0.15,
              rows: int = 12, cols: int = 18) -> TriMesh:
    """A lumpy ellipsoid standing on the ground (a bush, a rock)."""
    theta = np.linspace(0, math.pi, rows)[:, None]
    phi = np.linspace(0, 2 * math.pi, cols, endpoint=False)[None, :]
    bumps = 1 + lumpiness * rng.standard_normal((rows, cols))
    bumps[0], bumps[-1] = bumps[0].mean(), bumps[-1].mean()
    pts = np.stack(
        [radii[0] * np.sin(theta) * np.cos(phi) * bumps, radii[1] * np.sin(theta) * np.sin(phi) * bumps,
         radii[2] * (1 + np.cos(theta) * np.ones_like(phi)) * bumps * 0.5 + 0.0],
        -1,
    )  # fmt: skip
    pts[..., 2] = np.maximum(pts[..., 2], 0.0)
    return grid_mesh(pts, surface=surface)


def lathe_mesh(profile: np.ndarray, *, surface: int, segments: int = 24, part: int = NONE) -> TriMesh:
    """A solid of revolution about the z axis from a (n, 2) profile of (radius, z), both ends closed."""
    phi = np.linspace(0, 2 * math.pi, segments, endpoint=False)
    pts = np.stack(
        [profile[:, :1] * np.cos(phi)[None], profile[:, :1] * np.sin(phi)[None], np.repeat(profile[:, 1:2], segments, 1)], -1
    )
    return grid_mesh(pts, surface=surface, part=part)


# ------------------------------------------------------------------------------------------------
# Cars


@dataclass(frozen=True)
class CarDesign:
    """A car's proportions (metres) and styling; stations along x are derived by `stations`."""

    length: float = 4.5
    width: float = 1.8
    height: float = 1.45
    clearance: float = 0.17
    belt: float = 0.92  # window line height, also the hood's rear edge
    nose_height: float = 0.72  # top of the front face
    tail_height: float = 0.88
    hood_length: float = 1.15  # nose to windshield base
    deck_length: float = 0.45  # tail to rear window base (0.1 for a hatchback/estate tailgate)
    windshield_run: float = 0.75  # horizontal run of the windshield
    rear_run: float = 0.55
    cabin_taper: float = 0.24  # how much narrower (share of width) the roof is than the body
    plan_exponent: float = 5.0  # superellipse exponent of the plan view (higher = boxier corners)
    section_exponent: float = 4.0  # of the cross-sections
    wheel_radius: float = 0.33
    wheelbase: float = 2.7
    front_overhang: float = 0.9
    paint: tuple[float, float, float] = (0.6, 0.6, 0.62)  # linear RGB
    roof_paint: tuple[float, float, float] | None = None  # two-tone roof
    metallic: float = 0.5  # share of environment reflection in the clear coat
    front_plate: bool = True
    light_style: int = 0  # shape family of the head- and tail-lights (the shader's table)

    @property
    def half_length(self) -> float:
        return self.length / 2

    @property
    def centre(self) -> np.ndarray:
        return np.array([0.0, 0.0, self.height / 2])

    @property
    def radius(self) -> float:
        return math.sqrt((self.length / 2) ** 2 + (self.width / 2 + 0.25) ** 2 + (self.height / 2) ** 2)


@dataclass(frozen=True)
class Stations:
    """x positions along the car: wheels, arches, windshield and rear window bases, roof, pillars."""

    wheel_front: float
    wheel_rear: float
    arch: float  # arch radius
    windshield_base: float
    roof_front: float
    roof_rear: float
    rear_window_base: float
    pillar_b: float  # front edge of the back door
    door_rear: float  # rear edge of the back door (C pillar foot, ahead of the rear arch)
    pillar_a_foot: float  # front edge of the front door


def stations(car: CarDesign) -> Stations:
    half = car.half_length
    wf = half - car.front_overhang
    wr = wf - car.wheelbase
    arch = car.wheel_radius * 1.16
    ws = half - car.hood_length
    rf = ws - car.windshield_run
    rw = -half + car.deck_length
    rr = rw + car.rear_run
    door_rear = wr + arch + 0.06
    a_foot = min(wf - arch - 0.06, ws - 0.05)
    pillar_b = door_rear + 0.5 * (a_foot - door_rear)
    if not (rr < rf - 0.3 and door_rear < pillar_b - 0.5 and -half + 0.3 < wr and wf < half - 0.3):
        raise ValueError(f"impossible car design: {car}")
    return Stations(wf, wr, arch, ws, rf, rr, rw, pillar_b, door_rear, a_foot)


def _smooth(values: np.ndarray, xs: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a profile sampled at sorted `xs` (non-uniform), edges held."""
    grid = np.linspace(xs[0], xs[-1], 600)
    step = grid[1] - grid[0]
    fine = np.interp(grid, xs, values)
    k = max(1, int(3 * sigma / step))
    kernel = np.exp(-0.5 * (np.arange(-k, k + 1) * step / sigma) ** 2)
    padded = np.concatenate([np.full(k, fine[0]), fine, np.full(k, fine[-1])])
    smooth = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    return np.interp(xs, grid, smooth)


def top_profile(car: CarDesign, s: Stations, xs: np.ndarray) -> np.ndarray:
    """Height of the car's top at each x: nose, hood, windshield, roof, rear window, deck, tail."""
    half = car.half_length
    crown = 0.03 * car.height
    control_x = [-half, s.rear_window_base, s.roof_rear, (s.roof_rear + s.roof_front) / 2, s.roof_front, s.windshield_base, half]
    control_z = [car.tail_height - 0.05, car.tail_height, car.height - crown, car.height, car.height - crown,
                 car.belt - 0.02, car.nose_height]  # fmt: skip
    hard = np.interp(xs, control_x, control_z)
    return _smooth(hard, xs, 0.07)


def bottom_profile(car: CarDesign, s: Stations, xs: np.ndarray) -> np.ndarray:
    """Height of the body's underside at each x: the sill, lifted at the ends and into the wheel arches."""
    half = car.half_length
    z = np.full_like(xs, car.clearance)
    ends = np.clip((np.abs(xs) - (half - 0.35)) / 0.35, 0, 1)
    z = z + 0.12 * ends**2
    for wheel in (s.wheel_front, s.wheel_rear):
        inside = np.abs(xs - wheel) < s.arch
        arch_z = car.wheel_radius + np.sqrt(np.maximum(s.arch**2 - (xs - wheel) ** 2, 0))
        z = np.where(inside, np.maximum(z, arch_z), z)
    return z


def body_stations(car: CarDesign, s: Stations) -> np.ndarray:
    """x of every cross-section: dense at the ends and arches, and exactly on every part boundary."""
    half = car.half_length
    u = np.linspace(-1, 1, 44)
    ends = half * np.sign(u) * (1 - (1 - np.abs(u)) ** 1.6)  # denser towards the nose and tail
    arches = [w + s.arch * np.cos(np.linspace(0, math.pi, 13)) for w in (s.wheel_front, s.wheel_rear)]
    edges = [w + sign * (s.arch + 0.004) for w in (s.wheel_front, s.wheel_rear) for sign in (-1, 1)]
    keys = [s.windshield_base, s.pillar_b, s.door_rear, s.roof_front, s.roof_rear, s.rear_window_base, s.pillar_a_foot]
    xs = np.unique(np.round(np.concatenate([ends, *arches, edges, keys, np.linspace(s.door_rear, s.pillar_b, 6)]), 5))
    return xs[(xs >= -half) & (xs <= half)]


def _section_angles(n: int) -> np.ndarray:
    """Angles around a cross-section, denser where the superellipse turns its corners."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return t - 0.18 * np.sin(4 * t) / 4


def body_points(car: CarDesign, s: Stations, xs: np.ndarray, around: int = 48) -> np.ndarray:
    """(len(xs), around, 3) points of the lofted body surface."""
    half = car.half_length
    u = np.clip(np.abs(xs) / half, 0, 1)
    u[np.isclose(u, 1.0, atol=1e-4)] = 1.0  # the end sections collapse to a point: the surface is closed
    plan = (car.width / 2) * (1 - u**car.plan_exponent) ** (1 / car.plan_exponent)
    top, bottom = top_profile(car, s, xs), bottom_profile(car, s, xs)
    end_round = (1 - u**10) ** 0.1  # the very ends also shrink vertically: a rounded nose and tail
    mid = (top + bottom) / 2
    half_h = (top - bottom) / 2 * end_round
    t = _section_angles(around)
    c, sn = np.cos(t), np.sin(t)
    e = 2 / car.section_exponent
    y = plan[:, None] * np.sign(c) * np.abs(c) ** e
    z = mid[:, None] + half_h[:, None] * np.sign(sn) * np.abs(sn) ** e
    # Above the window line the section narrows towards the roof: the greenhouse.
    start = car.belt - 0.06  # a shoulder that turns in smoothly (a crease would cut the triangles in a sawtooth)
    rise = np.clip((z - start) / max(car.height - start, 0.05), 0, 1)
    y = y * (1 - car.cabin_taper * rise**2)
    x = np.repeat(xs[:, None], around, 1)
    return np.stack([x, y, z], -1)


def label_body(mesh: TriMesh, car: CarDesign, s: Stations) -> None:
    """Set the part id of every body triangle (see the module docstring)."""
    n = mesh.face_normals()
    centre = mesh.corners.mean(1)
    top_facing = n[:, 2] >= np.maximum(np.abs(n[:, 0]), np.abs(n[:, 1]))
    left_facing = n[:, 1] >= np.maximum(np.abs(n[:, 0]), np.abs(n[:, 2]))
    hood = top_facing & (centre[:, 0] > s.windshield_base)
    door = left_facing & (centre[:, 0] > s.door_rear) & (centre[:, 0] < s.pillar_b)
    mesh.part[:] = np.where(hood, HOOD, np.where(door, DOOR, BODY))


def car_body(car: CarDesign, surface: int) -> TriMesh:
    s = stations(car)
    mesh = grid_mesh(body_points(car, s, body_stations(car, s)), surface=surface, part=BODY)
    label_body(mesh, car, s)
    return mesh


def wheel_mesh(car: CarDesign, surface: int) -> TriMesh:
    """A tyre with rounded shoulders, axis along y, centred at the origin (placed by `car_parts`)."""
    r, w = car.wheel_radius, 0.21
    k = np.linspace(0, math.pi / 2, 5)
    shoulder = 0.05
    outer = [(r - shoulder + shoulder * math.cos(a), w / 2 - shoulder + shoulder * math.sin(a)) for a in k[::-1]]
    profile = [(0.0, w / 2 + 0.005), (0.62 * r, w / 2 + 0.01), (0.7 * r, w / 2 - 0.005)] + outer
    profile = profile + [(rr, -zz) for rr, zz in reversed(profile)]
    mesh = lathe_mesh(np.array(profile), surface=surface, segments=28, part=BODY)
    turn = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # z axis -> y axis
    mesh.corners = mesh.corners @ turn.T
    mesh.normals = mesh.normals @ turn.T
    mesh.local, mesh.local_normals = mesh.corners.copy(), mesh.normals.copy()
    return mesh


def car_parts(car: CarDesign, *, body: int, wheel: int, trim: int, plate: int, mirror: int) -> TriMesh:
    """The whole car in its own coordinates: body, four wheels, wheel wells, mirrors, plates."""
    s = stations(car)
    pieces = [car_body(car, body)]
    tyre = wheel_mesh(car, wheel)
    for x in (s.wheel_front, s.wheel_rear):
        for side in (1.0, -1.0):
            y = side * (car.width / 2 - 0.13)
            placed = tyre.moved(0.0 if side > 0 else 180.0, (x, y, car.wheel_radius))
            placed.local = placed.corners - np.array([x, y, car.wheel_radius])  # wheel-centred, axle along y
            placed.local_normals = placed.normals.copy()
            pieces.append(placed)
            well = box_mesh((2 * s.arch, 0.04, s.arch + 0.05), surface=trim, cull=False)
            pieces.append(well.moved(0.0, (x, side * (car.width / 2 - 0.3), car.wheel_radius)))
    for side in (1.0, -1.0):  # wing mirrors: a small lofted pod on a stalk near the A-pillar foot
        pod = blob_mesh((0.11, 0.09, 0.12), surface=mirror, rng=np.random.default_rng(5), lumpiness=0.0, rows=8, cols=12)
        x = s.windshield_base - 0.12
        y = side * (car.width / 2 * (1 - 0.05) + 0.06)
        pieces.append(pod.moved(0.0, (x, y, car.belt + 0.02)))
    half = car.half_length
    for x_end, present in ((half, car.front_plate), (-half, True)):
        if not present:
            continue
        sign = 1.0 if x_end > 0 else -1.0
        face_z = car.clearance + 0.2
        tip = _surface_x_at_centre(car, s, face_z, sign)
        panel = box_mesh((0.02, 0.52, 0.12), surface=plate)
        pieces.append(panel.moved(0.0, (tip + sign * 0.012, 0.0, face_z - 0.06)))
    whole = TriMesh.join(pieces)
    whole.part[whole.part == NONE] = BODY  # wells, mirrors, plates: the car, but no labelled part
    return whole


def _surface_x_at_centre(car: CarDesign, s: Stations, z: float, sign: float) -> float:
    """How far the body reaches along x (towards `sign`) at height z on the centre line."""
    xs = np.linspace(0, sign * car.half_length, 200)
    top, bottom = top_profile(car, s, xs), bottom_profile(car, s, xs)
    u = np.abs(xs) / car.half_length
    half_h = (top - bottom) / 2 * (1 - u**10) ** 0.1
    inside = np.abs(z - (top + bottom) / 2) <= half_h
    return float(xs[inside][-1]) if inside.any() else sign * (car.half_length - 0.1)
