"""Draw a held-out scene and compute its labels.

Labels (the README's definition) for the hood and the back-left door:

    score(P) = visible_fraction(P) * facing(P), rounded to 4 decimals; below 0.02 it becomes 0.

- visible_fraction(P) = pixels whose nearest surface is P in the final image / the exact projected
  area of P's camera-facing triangles on the unbounded image plane (the sum of their screen-space
  triangle areas; P's surface is convex where it faces the camera, so they do not overlap), clipped
  to [0, 1]. Anything drawn in front of P (the car's own mirrors and body, other cars, bollards,
  bushes) and the image border take pixels away.
- facing(P) = max(0, cos of the angle between the unit vector from P's centre (area-weighted
  centroid of all its triangles) to the camera and P's canonical direction (`parts.CANONICAL`)).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageFilter

from bench.heldout.geometry import TriMesh
from bench.heldout.parts import CANONICAL, LABELLED
from bench.heldout.raster import Camera, ZBuffer, perspective_weights, screen_areas
from bench.heldout.shading import Lighting, Noise, Surface, background, light_pixels, shade_surfaces

MIN_SCORE = 0.02


@dataclass(frozen=True)
class Footprint:
    """Where a car stands, for the soft contact shadow under it."""

    centre: tuple[float, float]
    heading_deg: float
    half_length: float
    half_width: float


@dataclass
class Scene:
    """Everything drawn: one mesh (the main car's parts carry label ids), its surfaces, the light, the camera."""

    mesh: TriMesh
    surfaces: list[Surface]
    lighting: Lighting
    camera: Camera
    shadow_casters: np.ndarray  # (T,) bool: triangles that cast the sun shadow on the ground
    footprints: list[Footprint] = field(default_factory=list)


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8, before JPEG
    parts: np.ndarray  # part id of the nearest surface, at the resolution drawn (see `render`'s scale)
    labels: dict[str, dict[str, float]]  # part -> score, visible_fraction, facing
    jpeg_quality: int

    def jpeg_bytes(self) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.image).save(buffer, format="JPEG", quality=self.jpeg_quality)
        return buffer.getvalue()


def part_centre(mesh: TriMesh, pid: int) -> np.ndarray:
    """Area-weighted centroid of all the triangles of part `pid`."""
    mine = mesh.part == pid
    area = mesh.face_areas()[mine]
    return (mesh.corners[mine].mean(1) * area[:, None]).sum(0) / area.sum()


def part_labels(mesh: TriMesh, camera: Camera, parts_map: np.ndarray) -> dict[str, dict[str, float]]:
    """Score, visible fraction and facing of every labelled part (see the module docstring)."""
    eye = np.asarray(camera.eye, float)
    uv, depth = camera.project(mesh.corners)
    area = np.abs(screen_areas(uv))
    towards = np.einsum("td,td->t", mesh.face_normals(), eye - mesh.corners.mean(1)) > 0
    result = {}
    for name, pid in LABELLED.items():
        mine = mesh.part == pid
        if (depth[mine] <= 0).any():
            raise ValueError(f"the camera is inside or behind the {name}: no finite projected area")
        projected = float(area[mine & towards].sum())
        pixels = float((parts_map == pid).sum())
        visible = min(1.0, pixels / projected) if projected > 0 else 0.0
        to_camera = eye - part_centre(mesh, pid)
        to_camera /= np.linalg.norm(to_camera)
        facing = max(0.0, float(to_camera @ CANONICAL[pid]))
        score = round(visible * facing, 4)
        result[name] = {
            "score": 0.0 if score < MIN_SCORE else score,
            "visible_fraction": round(visible, 4),
            "facing": round(facing, 4),
        }
    return result


BACKGROUND_STEP = 2  # the ground and sky are drawn at half resolution: softer, like a lens focused on the car


def _cast_shadow(scene: Scene, blur: float) -> np.ndarray:
    """Share of the sun blocked on the ground at background resolution: the casters flattened along the sun, softened."""
    cam, light = scene.camera, scene.lighting
    sun = np.asarray(light.sun)
    width, height = -(-cam.width // BACKGROUND_STEP), -(-cam.height // BACKGROUND_STEP)
    if sun[2] < 0.05:
        return np.zeros((height, width))
    towards_sun = scene.mesh.face_normals() @ sun > 0  # these alone cover the shadow's outline
    corners = scene.mesh.corners[scene.shadow_casters & towards_sun]
    flat = corners - corners[..., 2:3] / sun[2] * sun
    flat[..., 2] = 0.0
    uv, depth = cam.project(flat)
    uv /= BACKGROUND_STEP
    buffer = ZBuffer(width, height)
    buffer.draw(uv, depth, np.zeros(len(uv), np.int64))
    hard = (buffer.winners() >= 0).astype(np.uint8) * 255
    soft = Image.fromarray(hard).filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(soft, float) / 255 * min(1.0, light.sun_strength / 2)


def _occlusion(footprints: list[Footprint]):
    """Ambient occlusion of the ground around and under the cars, as a function of world (x, y)."""

    def factor(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.ones_like(x)
        for f in footprints:
            c, s = np.cos(np.radians(f.heading_deg)), np.sin(np.radians(f.heading_deg))
            dx, dy = x - f.centre[0], y - f.centre[1]
            u, v = np.abs(c * dx + s * dy), np.abs(-s * dx + c * dy)
            outside = np.hypot(np.maximum(u - f.half_length, 0), np.maximum(v - f.half_width, 0))
            out *= 1 - 0.75 * np.exp(-outside / 0.25)
        return out

    return factor


def _at_scale(scene: Scene, scale: float) -> Scene:
    """The scene seen by a camera with `scale` times the pixels along each side (same field of view)."""
    if scale == 1.0:
        return scene
    full = scene.camera
    return replace(scene, camera=replace(
        full, focal_px=full.focal_px * scale, width=round(full.width * scale), height=round(full.height * scale),
        shift=(full.shift[0] * scale, full.shift[1] * scale)))  # fmt: skip


def _nearest_triangles(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Projected corners, their depths, the triangle seen at each pixel (-1: none) and the part map."""
    cam, mesh = scene.camera, scene.mesh
    eye = np.asarray(cam.eye, float)
    uv, depth = cam.project(mesh.corners)
    towards = np.einsum("td,td->t", mesh.face_normals(), eye - mesh.corners.mean(1)) > 0
    drawn = np.flatnonzero(towards | ~mesh.cull)
    buffer = ZBuffer(cam.width, cam.height)
    buffer.draw(uv[drawn], depth[drawn], drawn)
    winner = buffer.winners()
    return uv, depth, winner, np.where(winner >= 0, mesh.part[np.maximum(winner, 0)], 0)


def labels_only(scene: Scene, scale: float = 1.0) -> dict[str, dict[str, float]]:
    """`render(scene, scale).labels` without shading the photo (a tenth of the work)."""
    scene = _at_scale(scene, scale)
    return part_labels(scene.mesh, scene.camera, _nearest_triangles(scene)[3])


def render(scene: Scene, scale: float = 1.0) -> Rendered:
    """Rasterise, shade, photograph (exposure, white balance, vignetting, noise, blur) and label a scene.

    With `scale` < 1 the scene is drawn (and labelled: fractions do not depend on the pixel size) at
    that share of the camera's width and height, and the photo is then scaled up to its full size, as
    a phone's digital zoom does: a quarter of the pixels to shade at 0.5.
    """
    full = scene.camera
    scene = _at_scale(scene, scale)
    cam, light, mesh = scene.camera, scene.lighting, scene.mesh
    eye = np.asarray(cam.eye, float)
    uv, depth, winner, parts = _nearest_triangles(scene)

    noise = Noise(light.texture_seed)
    shadow = _cast_shadow(scene, 2.5 * cam.width / 800 / BACKGROUND_STEP)
    coarse = background(cam.rays(BACKGROUND_STEP), eye, light, noise, shadow, _occlusion(scene.footprints))
    image = np.stack(
        [np.asarray(Image.fromarray(coarse[..., k].astype(np.float32)).resize((cam.width, cam.height), Image.BILINEAR))
         for k in range(3)], -1,
    )  # fmt: skip
    rows, cols = np.nonzero(winner >= 0)
    tri = winner[rows, cols]
    weights = perspective_weights(uv[tri], depth[tri], rows, cols).astype(np.float32)

    def interpolate(values: np.ndarray) -> np.ndarray:
        return np.einsum("nk,nkd->nd", weights, values.astype(np.float32)[tri])

    position, normal = interpolate(mesh.corners), interpolate(mesh.normals)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    local_n = interpolate(mesh.local_normals)
    local_n /= np.maximum(np.linalg.norm(local_n, axis=1, keepdims=True), 1e-9)
    materials = shade_surfaces(scene.surfaces, mesh.surface[tri], interpolate(mesh.local), local_n, noise)
    image[rows, cols] = light_pixels(*materials, position, normal, eye.astype(np.float32), light, noise)

    image = _photograph(image, light, cam)
    if (cam.width, cam.height) != (full.width, full.height):
        image = np.asarray(Image.fromarray(image).resize((full.width, full.height), Image.BICUBIC))
    return Rendered(image, parts, part_labels(mesh, cam, parts), light.jpeg_quality)


_TONE_STEPS_PER_UNIT = 1024
_TONE_CURVE = ((1 - np.exp(-1.9 * np.arange(5 * _TONE_STEPS_PER_UNIT) / _TONE_STEPS_PER_UNIT)) ** (1 / 2.2)).astype(np.float32)
"""A filmic shoulder and the display gamma, tabulated over linear exposure 0..5."""


def _photograph(linear: np.ndarray, light: Lighting, cam: Camera) -> np.ndarray:
    """Exposure, white balance, vignetting, the tone curve, sensor noise and lens blur: uint8 sRGB-ish."""
    h, w = linear.shape[:2]
    xx = ((np.arange(w, dtype=np.float32) - w / 2) ** 2)[None, :]
    yy = ((np.arange(h, dtype=np.float32) - h / 2) ** 2)[:, None]
    radius2 = (xx + yy) / ((w / 2) ** 2 + (h / 2) ** 2)
    gain = (light.exposure * np.asarray(light.white_balance)).astype(np.float32)
    exposed = linear.astype(np.float32) * gain * (1 - light.vignette * radius2)[..., None]
    toned = _TONE_CURVE[np.clip(exposed * _TONE_STEPS_PER_UNIT, 0, len(_TONE_CURVE) - 1).astype(np.int32)]
    rng = np.random.default_rng(light.texture_seed + 1)
    toned += light.noise * rng.standard_normal((h, w, 1), dtype=np.float32)  # luminance noise
    image = Image.fromarray((np.clip(toned, 0, 1) * 255 + 0.5).astype(np.uint8))
    if light.blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(light.blur * max(w, h) / 800))
    return np.asarray(image)
