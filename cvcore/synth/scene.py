"""What a scene is made of: the car's proportions, the camera, clutter, the look of the shot, and a rendered example.

Car coordinates are the world: x forward, y to the car's left, z up, origin on the ground under the
car's centre.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


def direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector in car coordinates for an azimuth (from the front towards the left) and elevation."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])


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
