"""Scene distributions: the knobs of a random scene where photos from another source would differ."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvcore.errors import UserError

IMAGE_SIZES = ((674, 506), (640, 480), (800, 600), (506, 674), (480, 640))
IMAGE_SIZE_WEIGHTS = (0.5, 0.2, 0.1, 0.1, 0.1)
_PAINTS = (  # colour, weight: roughly the colours of cars on the road
    ((235, 235, 232), 0.24), ((24, 24, 27), 0.19), ((172, 174, 180), 0.15), ((100, 102, 108), 0.13),
    ((160, 24, 26), 0.08), ((32, 64, 140), 0.07), ((22, 32, 70), 0.04), ((40, 88, 52), 0.03),
    ((190, 176, 142), 0.03), ((214, 176, 30), 0.02), ((205, 96, 30), 0.02),
)  # fmt: skip
_SKIES = (  # zenith, horizon
    ((70, 118, 200), (190, 210, 235)), ((150, 154, 164), (206, 206, 212)),
    ((60, 80, 140), (232, 186, 146)), ((110, 150, 205), (225, 228, 232)),
)  # fmt: skip
GROUNDS = ((86, 86, 92), (56, 56, 62), (150, 148, 140), (72, 108, 52), (132, 120, 104), (178, 164, 130))

_Range = tuple[float, float]
_Colour = tuple[int, int, int]


@dataclass(frozen=True)
class SceneDistribution:
    """The knobs of `random_scene` where photos from another source would differ; the defaults are "default".

    Ranges are (low, high) of uniform draws (high exclusive for the JPEG quality); weights are
    probabilities. Each knob replaces a constant without changing which random draws are made, so
    "default" renders exactly what the renderer rendered before the knobs existed.
    """

    fov_deg: _Range = (45.0, 75.0)
    elevation_deg: _Range = (3.0, 50.0)  # low + (high - low) * Beta(*elevation_beta)
    elevation_beta: _Range = (1.6, 3.2)
    close_share: float = 0.28  # shots framing the car's outline larger than the image (most crop it)
    close_framing: _Range = (1.1, 1.8)  # outline extent / half-frame of those shots
    loose_framing: _Range = (0.5, 0.95)  # and of the others
    roll_std_deg: float = 1.5
    style_weights: tuple[float, ...] = (0.35, 0.3, 0.25, 0.1)  # over STYLES
    paints: tuple[tuple[_Colour, float], ...] = _PAINTS  # colour, weight
    paint_jitter: float = 8.0
    skies: tuple[tuple[_Colour, _Colour], ...] = _SKIES  # zenith, horizon; equally likely
    sky_jitter: _Range = (10.0, 8.0)  # zenith, horizon
    ground_jitter: float = 8.0
    ambient: _Range = (0.3, 0.6)
    exposure: _Range = (0.85, 1.15)
    sharp_share: float = 0.4  # shots with a blur radius from `sharp_blur`, the others from `soft_blur`
    sharp_blur: _Range = (0.3, 0.5)
    soft_blur: _Range = (0.5, 1.6)
    jpeg_quality: tuple[int, int] = (60, 96)
    clutter_counts: tuple[float, ...] = (0.3, 0.3, 0.2, 0.12, 0.08)  # P(0, 1, ... clutter objects)


DISTRIBUTIONS: dict[str, SceneDistribution] = {
    "default": SceneDistribution(),
    "shifted": SceneDistribution(
        fov_deg=(60.0, 90.0),  # phone main cameras: wide angle
        elevation_deg=(5.0, 65.0),  # held high, more views from above (mean about 29 degrees)
        elevation_beta=(2.0, 3.0),
        close_share=0.4,
        close_framing=(1.1, 2.0),
        loose_framing=(0.6, 0.98),
        roll_std_deg=3.0,
        style_weights=(0.25, 0.25, 0.38, 0.12),
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
        skies=(  # mostly overcast
            ((150, 154, 164), (206, 206, 212)),
            ((112, 116, 128), (168, 170, 178)),
            ((86, 90, 106), (138, 140, 150)),
            ((60, 80, 140), (232, 186, 146)),
            ((70, 118, 200), (190, 210, 235)),
        ),  # fmt: skip
        sky_jitter=(16.0, 12.0),
        ground_jitter=14.0,
        ambient=(0.45, 0.75),  # diffuse light
        exposure=(0.6, 1.0),
        sharp_share=0.25,
        sharp_blur=(0.3, 0.6),
        soft_blur=(0.6, 2.0),
        jpeg_quality=(30, 75),
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
