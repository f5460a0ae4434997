"""The look of a shot: light (sun, overcast, dusk, artificial), sky, ground, skyline, and the camera's
exposure, white balance, blur, noise and JPEG quality, drawn from tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvcore.synth.distributions import DISTRIBUTIONS, SceneDistribution, jitter
from cvcore.synth.scene import LIGHTS, Look

_Range = tuple[float, float]
_Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Light:
    """Ranges of one kind of light; skies are (zenith, horizon) pairs, equally likely."""

    sun_elevation: _Range
    sun_colours: tuple[tuple[float, float, float], ...]
    ambient: _Range
    shadow: _Range
    skies: tuple[tuple[_Colour, _Colour], ...]
    exposure: float = 1.0
    noise: float = 1.0  # factor on the distribution's sensor noise


LIGHTING: dict[str, Light] = {
    "sun": Light((15, 70), ((1.0, 0.98, 0.94), (1.08, 1.04, 0.96)), (0.3, 0.55), (0.45, 0.7),
                 (((70, 118, 200), (190, 210, 235)), ((110, 150, 205), (225, 228, 232)), ((90, 140, 215), (205, 220, 240)))),
    "overcast": Light((30, 80), ((1.0, 1.0, 1.0),), (0.65, 0.9), (0.0, 0.12),
                      (((150, 154, 164), (206, 206, 212)), ((112, 116, 128), (168, 170, 178)), ((180, 182, 186), (222, 222, 224)))),
    "dusk": Light((2, 12), ((1.25, 0.85, 0.6), (1.2, 0.75, 0.65)), (0.25, 0.45), (0.4, 0.65),
                  (((60, 80, 140), (232, 186, 146)), ((70, 60, 110), (236, 150, 110))), exposure=0.8, noise=2.0),
    "artificial": Light((50, 85), ((1.2, 1.0, 0.72), (1.0, 1.0, 1.05)), (0.2, 0.4), (0.3, 0.6),
                        (((16, 20, 34), (48, 50, 62)), ((30, 30, 36), (70, 66, 60))), exposure=0.85, noise=2.0),
}  # fmt: skip
GROUNDS: tuple[tuple[_Colour, float, float], ...] = (  # colour, texture contrast, share with parking bays
    ((86, 86, 92), 0.06, 0.4), ((56, 56, 62), 0.06, 0.4), ((150, 148, 140), 0.08, 0.2),  # asphalt, concrete
    ((72, 108, 52), 0.16, 0.0), ((132, 120, 104), 0.12, 0.0), ((178, 164, 130), 0.08, 0.0),  # grass, gravel, sand
    ((120, 100, 90), 0.14, 0.0),  # cobbles
)  # fmt: skip


def random_look(rng: np.random.Generator, distribution: SceneDistribution = DISTRIBUTIONS["default"]) -> Look:
    """Light, sky, ground, skyline and the photographic degradations of one shot."""
    d = distribution
    light_name = LIGHTS[rng.choice(len(LIGHTS), p=d.light_weights)]
    light = LIGHTING[light_name]
    zenith, horizon = light.skies[rng.integers(len(light.skies))]
    skyline: tuple[float, ...] = ()
    if rng.random() < 0.7:
        steps = int(rng.integers(24, 120))
        heights = rng.uniform(0.5, 9, steps)
        if rng.random() < 0.5:  # trees: smooth; otherwise buildings: blocky
            heights = (heights + np.roll(heights, 1) + np.roll(heights, -1)) / 3
        skyline = tuple(float(x) for x in heights)
    ground, texture, parking = GROUNDS[rng.integers(len(GROUNDS))]
    warmth = rng.normal(0, 0.06)
    dim = 0.5 if light_name in ("dusk", "artificial") else 1.0
    return Look(
        sun_azimuth=rng.uniform(0, 360),
        sun_elevation=rng.uniform(*light.sun_elevation),
        ambient=rng.uniform(*light.ambient),
        light=light_name,
        sun_colour=light.sun_colours[rng.integers(len(light.sun_colours))],
        shadow=rng.uniform(*light.shadow),
        white_balance=(1 + warmth, 1.0 + rng.normal(0, 0.02), 1 - warmth),
        sky_zenith=jitter(rng, zenith, 10.0),
        sky_horizon=jitter(rng, horizon, 8.0),
        ground=jitter(rng, tuple(int(c * (0.6 + 0.4 * dim)) for c in ground), 8.0),
        ground_texture=texture * rng.uniform(0.5, 1.5),
        parking_bays=rng.uniform(2.3, 2.8) if rng.random() < parking else 0.0,
        parking_yaw=rng.choice([0.0, 90.0]) + rng.normal(0, 10),
        haze_distance=rng.uniform(60, 250),
        skyline=skyline,
        skyline_colour=jitter(rng, (70, 85, 62) if rng.random() < 0.6 else (120, 118, 120), 15),
        texture_seed=int(rng.integers(2**31)),
        exposure=rng.uniform(*d.exposure) * light.exposure,
        blur_radius=rng.uniform(*d.sharp_blur) if rng.random() < d.sharp_share else rng.uniform(*d.soft_blur),
        motion_blur=rng.uniform(0, 180) if rng.random() < d.motion_share else -1.0,
        noise=rng.uniform(*d.noise) * light.noise,
        jpeg_quality=int(rng.integers(*d.jpeg_quality)),
    )
