"""Scene distributions: the knobs of a random scene where photos from another source would differ."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvcore.errors import UserError

IMAGE_SIZES = ((674, 506), (640, 480), (800, 600), (1024, 768), (506, 674), (480, 640), (768, 1024))
IMAGE_SIZE_WEIGHTS = (0.45, 0.15, 0.1, 0.08, 0.1, 0.08, 0.04)
_PAINTS = (  # colour, weight: roughly the colours of cars on the road
    ((235, 235, 232), 0.24), ((24, 24, 27), 0.19), ((172, 174, 180), 0.15), ((100, 102, 108), 0.13),
    ((160, 24, 26), 0.08), ((32, 64, 140), 0.07), ((22, 32, 70), 0.04), ((40, 88, 52), 0.03),
    ((190, 176, 142), 0.03), ((214, 176, 30), 0.02), ((205, 96, 30), 0.02),
)  # fmt: skip

_Range = tuple[float, float]
_Colour = tuple[int, int, int]


@dataclass(frozen=True)
class SceneDistribution:
    """The knobs of `random_scene` where photos from another source would differ; the defaults are "default".

    Ranges are (low, high) of uniform draws (high exclusive for the JPEG quality); weights are
    probabilities. Everything else a scene varies (part looks, materials, backgrounds) is drawn from
    the tables of the module that builds it.
    """

    fov_deg: _Range = (28.0, 80.0)  # horizontal-ish field of view over the longer side: tele to wide
    elevation_deg: _Range = (0.5, 75.0)  # low + (high - low) * Beta(*elevation_beta): ground level to steep
    elevation_beta: _Range = (1.5, 5.2)
    close_share: float = 0.26  # shots framing the car's outline larger than the image (most crop it)
    close_framing: _Range = (1.1, 2.2)  # outline extent / half-frame of those shots
    small_share: float = 0.12  # shots of a small car, down to a tenth of the frame
    small_framing: _Range = (0.1, 0.45)
    loose_framing: _Range = (0.45, 0.95)  # the others
    off_centre: float = 0.8  # share of the room between the car and the border a shot may shift it by
    roll_std_deg: float = 2.5
    style_weights: tuple[float, ...] = (0.1, 0.18, 0.2, 0.1, 0.06, 0.2, 0.06, 0.1)  # over STYLES
    paints: tuple[tuple[_Colour, float], ...] = _PAINTS  # colour, weight
    paint_jitter: float = 8.0
    light_weights: tuple[float, ...] = (0.5, 0.3, 0.1, 0.1)  # over scene.LIGHTS
    exposure: _Range = (0.8, 1.2)
    sharp_share: float = 0.4  # shots with a blur radius from `sharp_blur`, the others from `soft_blur`
    sharp_blur: _Range = (0.0, 0.5)
    soft_blur: _Range = (0.5, 1.8)
    motion_share: float = 0.1  # shots with camera shake
    noise: _Range = (0.0, 6.0)  # sensor noise std (grey levels) in daylight; dim light doubles it
    jpeg_quality: tuple[int, int] = (45, 96)
    clutter_counts: tuple[float, ...] = (0.25, 0.3, 0.2, 0.13, 0.12)  # P(0, 1, ... clutter objects)
    other_car_counts: tuple[float, ...] = (0.55, 0.25, 0.12, 0.08)  # P(0, 1, ... other cars)


DISTRIBUTIONS: dict[str, SceneDistribution] = {
    "default": SceneDistribution(),
    "shifted": SceneDistribution(
        fov_deg=(60.0, 90.0),  # phone main cameras: wide angle
        elevation_deg=(5.0, 65.0),  # held high, more views from above (mean about 29 degrees)
        elevation_beta=(2.0, 3.0),
        close_share=0.4,
        close_framing=(1.1, 2.0),
        small_share=0.05,
        loose_framing=(0.6, 0.98),
        roll_std_deg=3.0,
        style_weights=(0.1, 0.15, 0.15, 0.08, 0.04, 0.3, 0.08, 0.1),
        paints=(  # fewer greys, more saturated colours
            ((240, 240, 238), 0.14),
            ((20, 20, 24), 0.10),
            ((172, 174, 180), 0.08),
            ((100, 102, 108), 0.06),
            ((196, 18, 22), 0.14),
            ((24, 72, 186), 0.12),
            ((18, 30, 90), 0.04),
            ((28, 124, 58), 0.08),
            ((190, 176, 142), 0.02),
            ((236, 194, 16), 0.07),
            ((232, 100, 16), 0.08),
            ((16, 148, 156), 0.04),
            ((104, 36, 136), 0.03),
        ),  # fmt: skip
        paint_jitter=12.0,
        light_weights=(0.25, 0.55, 0.1, 0.1),  # mostly overcast
        exposure=(0.6, 1.0),
        sharp_share=0.25,
        sharp_blur=(0.3, 0.6),
        soft_blur=(0.6, 2.0),
        jpeg_quality=(25, 60),
        clutter_counts=(0.15, 0.25, 0.25, 0.2, 0.15),
    ),
}
"""Named scene distributions: "default" is the embedded data set; "shifted" is another photo source."""


def scene_distribution(name: str) -> SceneDistribution:
    """The registered distribution `name`; a UserError names the valid ones."""
    try:
        return DISTRIBUTIONS[name]
    except KeyError:
        raise UserError(f"unknown scene distribution {name!r}; choose one of: {', '.join(DISTRIBUTIONS)}") from None


def jitter(rng: np.random.Generator, colour, amount: float) -> tuple[int, int, int]:
    """Vary a colour mostly in brightness, a little in hue (so greys stay grey)."""
    shift = rng.normal(0, amount) + rng.normal(0, amount / 3, 3)
    return tuple(int(c) for c in np.clip(np.asarray(colour) + shift, 0, 255))
