"""What a scene is made of: the car's proportions, the camera, clutter, the look of the shot, and a rendered example.

Car coordinates are the world: x forward, y to the car's left, z up, origin on the ground under the
car's centre.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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
    bumper_height: float = 0.45  # top of the rear bumper; tailgate above it (hatch styles)
    paint: tuple[int, int, int] = (170, 172, 178)
    trim: tuple[int, int, int] = (30, 30, 32)  # pillars and window frames
    rim: tuple[int, int, int] = (175, 175, 180)
    roof_paint: tuple[int, int, int] | None = None  # two-tone: the roof's colour (None: the paint)
    gloss: float = 0.35  # specular strength of the paint: 0 matt, 1 metallic clear coat
    dirt: float = 0.0  # 0 clean .. 1 muddy sills
    details: PartLook = field(default_factory=lambda: PartLook())

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

    def mirrored(self) -> Camera:
        """This camera reflected in the car's plane of symmetry (y -> -y): its photo is this one's, flipped."""
        flip = np.array([1.0, -1.0, 1.0])
        return replace(
            self,
            position=tuple(np.asarray(self.position) * flip),
            target=tuple(np.asarray(self.target) * flip),
            roll_deg=-self.roll_deg,
            shift=(-self.shift[0], self.shift[1]),
        )

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
    """An object standing on the ground: ``kind`` is one of `cvcore.synth.clutter.CLUTTER_KINDS`."""

    kind: str
    position: tuple[float, float]
    size: tuple[float, float, float]  # extent along its own x and y, and height
    yaw_deg: float = 0.0
    colour: tuple[int, int, int] = (120, 100, 80)

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.size[0], self.size[1]) / 2


@dataclass(frozen=True)
class PartLook:
    """How the car's parts look, whatever its body. The cues of front and rear stay tied to the
    geometry: white lights (an amber strip at most) and a grille in front, red lights behind.

    Heights and sizes in metres; `*_inner` is where a light's inner edge sits, as a share of the half
    width of the front or rear face.
    """

    headlight_height: float = 0.09
    headlight_inner: float = 0.55
    headlight: tuple[int, int, int] = (215, 218, 225)
    indicator: float = 0.0  # share of the headlight's height that is an amber strip (bottom)
    taillight_height: float = 0.09
    taillight_inner: float = 0.62
    taillight: tuple[int, int, int] = (165, 22, 26)
    reversing_light: float = 0.0  # share of the taillight's width that is white (outer end)
    grille_width: float = 0.55  # share of the front face's half width
    grille_height: float = 0.13
    grille: tuple[int, int, int] = (22, 22, 24)
    grille_bars: int = 0  # bright horizontal bars across the grille
    front_plate: bool = True
    rear_plate: bool = True
    plate_size: tuple[float, float] = (0.52, 0.11)
    plate: tuple[int, int, int] = (225, 225, 218)
    mirror: tuple[int, int, int] | None = None  # None: the paint
    mirror_size: float = 0.16
    handles: tuple[int, int, int] = (22, 22, 24)
    rim_share: float = 0.64  # rim radius / tyre radius
    spokes: int = 0  # dark gaps between spokes (0: a plain disc)
    window_margin: float = 0.05  # width of the frame around the side windows
    roof_rails: bool = False
    stickers: tuple[Sticker, ...] = ()


@dataclass(frozen=True)
class Sticker:
    """A decal on a side panel: it changes the panel's look, not its area or its part."""

    part: str  # "frontdoor" or "backdoor"
    x: float  # 0..1 across the free area of the door, from its rear edge
    z: float  # 0..1 up the free area of the door
    size: float  # metres
    colour: tuple[int, int, int]
    side: str = "left"


@dataclass(frozen=True)
class ParkedCar:
    """Another car in the scene: never labelled, it only occludes the main car and casts shadows."""

    car: CarShape
    position: tuple[float, float]
    yaw_deg: float = 0.0

    def corners(self, margin: float = 0.0) -> np.ndarray:
        """Its footprint (4, 2) on the ground, grown by `margin`, for placement checks."""
        yaw = math.radians(self.yaw_deg)
        rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
        half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [
            self.car.length / 2 + margin,
            self.car.width / 2 + 0.2 + margin,
        ]
        return half @ rot.T + np.asarray(self.position)


LIGHTS: tuple[str, ...] = ("sun", "overcast", "dusk", "artificial")


@dataclass(frozen=True)
class Look:
    """Light, background and photographic degradations; the default is a plain, sharp daylight shot."""

    sun_azimuth: float = 45.0
    sun_elevation: float = 45.0
    ambient: float = 0.45
    light: str = "sun"  # one of LIGHTS; "sun" and "dusk" cast sharp shadows
    sun_colour: tuple[float, float, float] = (1.0, 1.0, 1.0)  # tint of the direct light
    shadow: float = 0.55  # how much the cast shadow darkens the ground
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)  # camera gains per channel
    sky_zenith: tuple[int, int, int] = (80, 125, 200)
    sky_horizon: tuple[int, int, int] = (195, 212, 232)
    ground: tuple[int, int, int] = (90, 90, 94)
    ground_texture: float = 0.08  # contrast of the ground's noise
    parking_bays: float = 0.0  # width (metres) of painted parking bays; 0 for none
    parking_yaw: float = 0.0  # direction of the bay lines (degrees)
    haze_distance: float = 120.0  # metres over which the ground fades into the horizon colour
    skyline: tuple[float, ...] = ()  # heights (degrees) of a tree or building line around the horizon
    skyline_colour: tuple[int, int, int] = (60, 75, 55)
    texture_seed: int = 0
    exposure: float = 1.0
    blur_radius: float = 0.0  # pixels of a 640x480 or larger image; smaller ones scale it (`blur_scale`)
    motion_blur: float = -1.0  # direction (degrees) of a short camera shake; negative for none
    noise: float = 0.0  # std of the sensor's luminance noise (grey levels)
    jpeg_quality: int = 92


@dataclass(frozen=True)
class Scene:
    """Everything `render_scene` needs; `random_scene` draws one."""

    car: CarShape
    camera: Camera
    clutter: tuple[Clutter, ...] = ()
    look: Look = field(default_factory=Look)
    others: tuple[ParkedCar, ...] = ()


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
