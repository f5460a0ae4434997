"""Per-pixel shading of the held-out scenes: Blinn-Phong, environment reflections, procedural textures.

Every pixel of a surface gets an albedo, a specular strength and exponent, and a reflectivity from
its material; car paint, glass, lights, grille, seams, handles and rims are painted here from the
pixel's position in the object's own frame (nothing of it is geometry). Light is a sun (diffuse +
Blinn-Phong highlight), a hemisphere of sky and ground (ambient), and the reflection of a sky
gradient with clouds (Schlick's Fresnel). The background is a ground plane with a texture (asphalt
with parking lines, concrete slabs, grass, cobbles) under the car's cast shadow, and a cloudy sky.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.heldout.geometry import CarDesign, stations

LIGHT_STYLES = (  # (head-light height, inner edge as share of the half width, tail-light height, tail inner edge, shape exponent)
    (0.10, 0.55, 0.12, 0.55, 6.0),  # rectangular
    (0.16, 0.62, 0.16, 0.62, 2.0),  # round/oval
    (0.06, 0.45, 0.07, 0.35, 8.0),  # thin slits, tail-lights joined across
    (0.12, 0.58, 0.20, 0.70, 3.0),  # tall tail-lights
)
GROUND_KINDS = ("asphalt", "concrete", "grass", "cobbles")


@dataclass(frozen=True)
class Surface:
    """What the shader paints on a mesh's triangles: `kind` picks the material, `colour` is linear RGB."""

    kind: str  # paint, wheel, trim, plate, building, kerb, bollard, bush, wall
    colour: tuple[float, float, float] = (0.5, 0.5, 0.5)
    car: CarDesign | None = None  # for paint: where windows, lights and seams are
    pattern: int = 0  # rim spokes, facade rhythm, ...


@dataclass(frozen=True)
class Lighting:
    """Sun, sky, ground and the photographic treatment of one shot."""

    sun: tuple[float, float, float]  # unit vector towards the sun
    sun_strength: float
    ambient: float
    sky_zenith: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    cloudiness: float
    ground_kind: str
    ground_colour: tuple[float, float, float]
    ground_angle: float  # direction of parking lines and slabs, radians
    haze: float  # metres
    exposure: float
    white_balance: tuple[float, float, float]
    vignette: float
    noise: float
    blur: float  # pixels
    jpeg_quality: int
    texture_seed: int


class Noise:
    """Tileable value noise (a few octaves), sampled bilinearly at any 2-D coordinates."""

    def __init__(self, seed: int, size: int = 128) -> None:
        rng = np.random.default_rng(seed)
        total = np.zeros((size, size))
        for octave, cells in enumerate((4, 8, 16, 32, 64)):
            grid = rng.random((cells, cells)).astype(np.float32)
            tiled = np.tile(grid, (3, 3))
            big = np.asarray(Image.fromarray(tiled).resize((3 * size, 3 * size), Image.BICUBIC))[size : 2 * size, size : 2 * size]
            total += big * 0.55**octave
        total -= total.min()
        table = (total / total.max()).astype(np.float32)
        self.table = np.pad(table, ((0, 1), (0, 1)), mode="wrap").ravel()  # one wrapped row and column: no modulo per tap
        self.size = size

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        s = self.size
        u = np.mod(np.asarray(u, np.float32) * s, s)
        v = np.mod(np.asarray(v, np.float32) * s, s)
        i, j = np.minimum(u.astype(np.int32), s - 1), np.minimum(v.astype(np.int32), s - 1)  # mod can round up to s
        fu, fv = u - i, v - j
        at = j * (s + 1) + i
        t = self.table
        top = t.take(at) * (1 - fu) + t.take(at + 1) * fu
        bottom = t.take(at + s + 1) * (1 - fu) + t.take(at + s + 2) * fu
        return top * (1 - fv) + bottom * fv


def sky(directions: np.ndarray, light: Lighting, noise: Noise) -> np.ndarray:
    """Colour of the sky in unit `directions` (..., 3), clouds and sun glow included; below the horizon, the horizon."""
    up = np.clip(directions[..., 2], 0, 1)
    t = up[..., None] ** 0.45
    colour = np.asarray(light.sky_horizon) * (1 - t) + np.asarray(light.sky_zenith) * t
    lift = up + 0.12
    cloud = noise(directions[..., 0] / lift * 0.35, directions[..., 1] / lift * 0.35)
    cover = np.clip((cloud - (1 - light.cloudiness)) * 3, 0, 1)[..., None] * (up[..., None] > 0)
    cloud_colour = np.asarray(light.sky_horizon) * (0.9 + 0.25 * cloud[..., None])
    colour = colour * (1 - cover) + cloud_colour * cover
    glow = np.clip(directions @ np.asarray(light.sun), 0, 1)
    return colour + light.sun_strength * (0.5 * glow**300 + 0.06 * glow**6)[..., None]


def _ground_albedo(x: np.ndarray, y: np.ndarray, light: Lighting, noise: Noise) -> np.ndarray:
    """Procedural ground texture at world (x, y)."""
    c, s = math.cos(light.ground_angle), math.sin(light.ground_angle)
    u, v = c * x + s * y, -s * x + c * y
    base = np.asarray(light.ground_colour)
    fine = noise(x * 0.9, y * 0.9)
    coarse = noise(x * 0.05 + 0.3, y * 0.05 + 0.7)
    shade = 0.75 + 0.35 * fine * 0.6 + 0.3 * coarse
    if light.ground_kind == "asphalt":
        lines = (np.abs(np.mod(u, 2.6) - 1.3) > 1.24) & (np.mod(v, 14.0) < 5.0)  # parking bay lines
        albedo = base * shade[..., None]
        return np.where(lines[..., None], np.array([0.7, 0.7, 0.66]) * (0.8 + 0.2 * fine[..., None]), albedo)
    if light.ground_kind == "concrete":
        joint = (np.mod(u, 3.0) < 0.03) | (np.mod(v, 3.0) < 0.03)
        albedo = base * (0.85 + 0.25 * coarse + 0.15 * fine)[..., None]
        return np.where(joint[..., None], albedo * 0.5, albedo)
    if light.ground_kind == "grass":
        blades = noise(x * 6.0, y * 6.0)
        return base * (0.6 + 0.5 * blades * fine + 0.3 * coarse)[..., None]
    stones = np.abs(np.sin(u * 9.0) * np.sin(v * 9.0 + np.floor(u * 9.0 / math.pi) * 1.3))
    return base * (0.45 + 0.55 * np.sqrt(stones) * (0.7 + 0.3 * fine))[..., None]


def background(rays: np.ndarray, eye: np.ndarray, light: Lighting, noise: Noise, shadow: np.ndarray,
               occlusion) -> np.ndarray:
    """Linear colour of the ground and sky behind everything, with the cast shadow (H, W) and ambient `occlusion(x, y)`."""
    image = sky(rays, light, noise)
    dz = rays[..., 2]
    hit = dz < -1e-4
    t = np.where(hit, -eye[2] / np.where(hit, dz, -1), 0)
    far = hit & (t > 2000)
    hit &= ~far
    x, y = eye[0] + t * rays[..., 0], eye[1] + t * rays[..., 1]
    albedo = _ground_albedo(x[hit], y[hit], light, noise)
    sun_share = 1 - shadow[hit]
    lit = light.ambient * (0.55 * np.asarray(light.sky_horizon) + 0.45 * np.asarray(light.sky_zenith))
    lit = lit * occlusion(x[hit], y[hit])[:, None] + light.sun_strength * max(light.sun[2], 0) * sun_share[:, None]
    colour = albedo * lit
    fog = (1 - np.exp(-t[hit] / light.haze))[:, None]
    image[hit] = colour * (1 - fog) + np.asarray(light.sky_horizon) * fog
    return image


def _paint(car: CarDesign, p: np.ndarray, n: np.ndarray, noise: Noise) -> tuple[np.ndarray, ...]:
    """Albedo, specular strength, shininess and reflectivity of a car body's pixels at local points p, normals n."""
    s = stations(car)
    half, w2 = car.half_length, car.width / 2
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    nx, ny, nz = n[:, 0], n[:, 1], n[:, 2]
    k = len(p)
    albedo = np.tile(np.asarray(car.paint, float), (k, 1)) * (0.96 + 0.08 * noise(x * 3, z * 3 + y))[:, None]
    spec, shiny, refl = np.full(k, 0.9), np.full(k, 90.0), np.full(k, 0.05 + 0.12 * car.metallic)

    def paint_as(where, colour, ks, shininess, reflectivity):
        albedo[where] = colour
        spec[where], shiny[where], refl[where] = ks, shininess, reflectivity

    black, glass = np.array([0.02, 0.02, 0.022]), np.array([0.015, 0.02, 0.025])
    rise = (z - car.belt) / max(car.height - car.belt, 0.05)
    cabin = (z > car.belt + 0.02) & (x < s.windshield_base + 0.02) & (x > s.rear_window_base - 0.02)
    if car.roof_paint is not None:
        paint_as(cabin & (nz > 0.8), np.asarray(car.roof_paint), 0.9, 90.0, 0.1)
    side = cabin & (np.abs(ny) > 0.6) & (nz < 0.75)
    front_edge = s.windshield_base - 0.1 - rise * (s.windshield_base - s.roof_front - 0.02)
    rear_edge = s.rear_window_base + 0.12 + rise * (s.roof_rear - s.rear_window_base - 0.05)
    dlo = side & (rise < 0.86) & (x < front_edge) & (x > rear_edge)
    frame = dlo & ((rise > 0.8) | (x > front_edge - 0.025) | (x < rear_edge + 0.025) | (rise < 0.06))
    pillars = dlo & ((np.abs(x - s.pillar_b) < 0.05) | (np.abs(x - s.door_rear - 0.02) < 0.04))
    paint_as(dlo, glass, 1.2, 300.0, 0.35)
    paint_as(frame | pillars, black, 0.5, 40.0, 0.06)
    screen = cabin & (nz < 0.93) & (np.abs(ny) < 0.4)
    paint_as(screen & (nx > 0.12) & (x > s.roof_front - 0.05), glass, 1.2, 300.0, 0.4)
    paint_as(screen & (nx < -0.12) & (x < s.roof_rear + 0.05), glass, 1.2, 300.0, 0.4)

    head_h, head_in, tail_h, tail_in, expo = LIGHT_STYLES[car.light_style]
    lower = z < car.nose_height - 0.03
    front = (x > half - 0.45) & (nx > 0.25) & lower & (nz < 0.7)
    lamp = _lamp(y, z, car.nose_height - 0.05 - head_h / 2, head_h / 2, head_in * w2, w2 * 0.97, expo)
    paint_as(front & lamp, np.array([0.55, 0.57, 0.6]), 1.5, 200.0, 0.5)
    grille = front & (np.abs(y) < head_in * w2 * 0.92) & (z > car.clearance + 0.2) & (z < car.nose_height - 0.06)
    slats = np.mod((z if car.light_style % 2 else z + np.abs(y)) * 40, 1.0) < 0.45
    paint_as(grille, np.where(slats[grille, None], 0.012, 0.06) * np.ones(3), 0.3, 30.0, 0.04)
    intake = front & (np.abs(y) < 0.6 * w2) & (z > car.clearance + 0.05) & (z < car.clearance + 0.15)
    paint_as(intake, black, 0.2, 20.0, 0.02)
    rear = (x < -half + 0.45) & (nx < -0.2) & (z < car.tail_height - 0.02) & (nz < 0.7)
    tail_top = car.tail_height - 0.06
    tail = rear & _lamp(y, z, tail_top - tail_h / 2, tail_h / 2, tail_in * w2, w2 * 0.98, expo)
    paint_as(tail, np.array([0.42, 0.015, 0.02]), 1.4, 200.0, 0.3)
    reverse = tail & (np.abs(y) < tail_in * w2 + 0.08)
    paint_as(reverse, np.array([0.6, 0.6, 0.6]), 1.4, 200.0, 0.3)

    low = z < car.clearance + (0.13 if car.height > 1.6 else 0.06)
    paint_as(low, np.array([0.03, 0.03, 0.03]), 0.2, 10.0, 0.02)
    body_side = (np.abs(ny) > 0.5) & (z < car.belt)
    seams = body_side & (
        (np.abs(x - s.pillar_b) < 0.006) | (np.abs(x - s.door_rear) < 0.006) | (np.abs(x - s.pillar_a_foot) < 0.006)
    )
    handles = body_side & (z > car.belt - 0.13) & (z < car.belt - 0.095) & (
        ((x > s.door_rear + 0.07) & (x < s.door_rear + 0.21)) | ((x > s.pillar_b + 0.07) & (x < s.pillar_b + 0.21))
    )
    paint_as(seams, albedo[seams] * 0.25, 0.2, 20.0, 0.02)
    paint_as(handles, np.array([0.45, 0.45, 0.46]), 1.6, 150.0, 0.5)
    dirt = np.clip(1 - (z - 0.1) / 0.45, 0, 1) * noise(x * 1.5, z * 4) * 0.7
    albedo = albedo * (1 - dirt[:, None]) + np.array([0.16, 0.12, 0.08]) * dirt[:, None]
    return albedo, spec, shiny, refl


def _lamp(y, z, centre_z, half_h, inner, outer, exponent) -> np.ndarray:
    """Inside a superellipse lamp in (|y|, z) between `inner` and `outer` of the half width."""
    cy, hy = (inner + outer) / 2, (outer - inner) / 2
    return (np.abs((np.abs(y) - cy) / hy) ** exponent + np.abs((z - centre_z) / half_h) ** exponent) < 1


def _wheel(surface: Surface, p: np.ndarray, n: np.ndarray, car: CarDesign) -> tuple[np.ndarray, ...]:
    """Tyre rubber and a spoked rim on its outer face (local coordinates centred on the wheel, axle along y)."""
    k = len(p)
    radius = np.hypot(p[:, 0], p[:, 2])
    angle = np.arctan2(p[:, 2], p[:, 0])
    face = np.abs(n[:, 1]) > 0.7
    rim = face & (radius < 0.7 * car.wheel_radius)
    spokes = (np.cos(angle * surface.pattern) > 0.2) | (radius < 0.22 * car.wheel_radius) | (radius > 0.6 * car.wheel_radius)
    albedo = np.tile([0.035, 0.035, 0.037], (k, 1))
    albedo[face & ~rim] = 0.05
    metal = rim & spokes
    albedo[metal] = surface.colour
    albedo[rim & ~spokes] = 0.01
    spec = np.where(metal, 1.2, 0.15)
    shiny = np.where(metal, 60.0, 8.0)
    refl = np.where(metal, 0.35, 0.02)
    return albedo, spec, shiny, refl


def _building(surface: Surface, p: np.ndarray, n: np.ndarray, noise: Noise) -> tuple[np.ndarray, ...]:
    along = np.where(np.abs(n[:, 0]) > np.abs(n[:, 1]), p[:, 1], p[:, 0])
    bay, storey = 1.4 + 0.4 * (surface.pattern % 3), 3.0
    window = (np.abs(np.mod(along, bay) / bay - 0.5) < 0.28) & (np.mod(p[:, 2], storey) / storey > 0.35) & (p[:, 2] > 2.5)
    window &= np.abs(n[:, 2]) < 0.5
    albedo = np.asarray(surface.colour) * (0.8 + 0.35 * noise(along * 0.3, p[:, 2] * 0.3))[:, None]
    albedo[window] = np.array([0.03, 0.04, 0.05])
    return albedo, np.where(window, 1.0, 0.05), np.where(window, 200.0, 5.0), np.where(window, 0.3, 0.01)


def _matte(surface: Surface, p: np.ndarray, noise: Noise) -> tuple[np.ndarray, ...]:
    """Trim, plates, kerbs, bollards, bushes and brick walls: textured, mostly matte."""
    k = len(p)
    colour = np.asarray(surface.colour, float)
    grain = noise(p[:, 0] * 2 + p[:, 1] * 2, p[:, 2] * 2)
    albedo = np.tile(colour, (k, 1)) * (0.85 + 0.3 * grain)[:, None]
    spec, shiny, refl = np.full(k, 0.1), np.full(k, 10.0), np.full(k, 0.02)
    if surface.kind == "plate":
        text = (np.abs(p[:, 1]) < 0.2) & (np.abs(p[:, 2] - 0.06) < 0.03) & (np.mod(p[:, 1] * 28, 1.0) < 0.6)
        albedo[text] = 0.02
        albedo[(p[:, 1] > 0.22)] = np.array([0.02, 0.05, 0.35])
        spec[:] = 0.4
    elif surface.kind == "bush":
        leaves = noise(p[:, 0] * 7 + p[:, 2] * 3, p[:, 1] * 7 - p[:, 2] * 5)
        albedo *= (0.35 + 1.1 * leaves**2)[:, None]
    elif surface.kind == "bollard":
        stripe = np.mod(p[:, 2] * 4, 1.0) < 0.5
        if surface.pattern:
            albedo[stripe] = np.array([0.02, 0.02, 0.02])
        spec[:], shiny[:], refl[:] = 0.6, 40.0, 0.08
    elif surface.kind == "wall":
        row = np.floor(p[:, 2] / 0.075)
        along = p[:, 0] + p[:, 1] + 0.11 * np.mod(row, 2)
        mortar = (np.mod(p[:, 2], 0.075) < 0.01) | (np.mod(along, 0.22) < 0.01)
        albedo *= (0.8 + 0.4 * noise(row * 0.37, np.floor(along / 0.22) * 0.29))[:, None]
        albedo[mortar] = np.array([0.45, 0.43, 0.4])
    elif surface.kind == "trim":
        spec[:], shiny[:] = 0.3, 20.0
    return albedo, spec, shiny, refl


def shade_surfaces(surfaces: list[Surface], index: np.ndarray, local: np.ndarray, local_n: np.ndarray,
                   noise: Noise) -> tuple[np.ndarray, ...]:
    """Material of each pixel: albedo (N, 3), specular strength, shininess, reflectivity (N,)."""
    k = len(index)
    albedo, spec, shiny, refl = np.zeros((k, 3)), np.zeros(k), np.ones(k), np.zeros(k)
    for number in np.unique(index):
        where = index == number
        surface = surfaces[number]
        p, n = local[where], local_n[where]
        if surface.kind == "paint":
            values = _paint(surface.car, p, n, noise)
        elif surface.kind == "wheel":
            values = _wheel(surface, p, n, surface.car)
        elif surface.kind == "mirror":
            values = (np.tile(np.asarray(surface.colour), (len(p), 1)), np.full(len(p), 0.9), np.full(len(p), 90.0),
                      np.full(len(p), 0.12))  # fmt: skip
        elif surface.kind == "building":
            values = _building(surface, p, n, noise)
        else:
            values = _matte(surface, p, noise)
        albedo[where], spec[where], shiny[where], refl[where] = values
    return albedo, spec, shiny, refl


def light_pixels(albedo, spec, shiny, refl, position, normal, eye, light: Lighting, noise: Noise) -> np.ndarray:
    """Blinn-Phong sun + hemisphere ambient + Fresnel-weighted sky reflection, linear RGB (N, 3)."""
    def f32(values) -> np.ndarray:
        return np.asarray(values, np.float32)

    albedo, spec, shiny, refl = f32(albedo), f32(spec), f32(shiny), f32(refl)
    view = eye - position
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    facing = np.einsum("nd,nd->n", normal, view)
    normal = np.where(facing[:, None] < 0, normal - 2 * facing[:, None] * view, normal)  # silhouette normals
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    cos_v = np.clip(np.einsum("nd,nd->n", normal, view), 0, 1)
    sun = f32(light.sun)
    cos_l = np.clip(normal @ sun, 0, 1)
    half = view + sun
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    highlight = np.clip(np.einsum("nd,nd->n", normal, half), 0, 1) ** shiny * (cos_l > 0)
    up = (normal[:, 2:3] + 1) / 2
    hemisphere = light.ambient * (f32(light.sky_zenith) * up + f32(light.ground_colour) * 0.6 * (1 - up))
    occlusion = np.clip(0.55 + position[:, 2:3] * 0.9, 0, 1)  # darker near the ground
    reflected = view - 2 * cos_v[:, None] * normal
    reflected = -reflected
    ground = f32(light.ground_colour) * (light.ambient * 0.5 + light.sun_strength * 0.3 * max(light.sun[2], 0))
    skyward = np.clip((reflected[:, 2:3] + 0.2) / 0.3, 0, 1)  # a soft reflected horizon: the mesh's facets stay hidden
    env = sky(reflected, light, noise) * skyward + ground * (1 - skyward)
    fresnel = refl + (1 - refl) * (1 - cos_v) ** 5 * np.minimum(refl * 4, 1)
    diffuse = albedo * (hemisphere * occlusion + light.sun_strength * cos_l[:, None])
    specular = (spec * highlight * light.sun_strength)[:, None] * np.ones(3, np.float32)
    return diffuse * (1 - fresnel[:, None]) + specular + env * fresnel[:, None]
