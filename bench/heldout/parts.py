"""Label ids of the held-out renderer's per-pixel part map, and the two labelled parts' definitions.

Only the challenge's two parts are labelled; every other pixel of the main car is BODY, anything
else NONE. The canonical viewing directions are the README's label definition (car coordinates:
x forward, y to the car's left, z up).
"""

from __future__ import annotations

import math

import numpy as np

NONE, BODY, HOOD, DOOR = 0, 1, 2, 3
LABELLED = {"hood": HOOD, "backdoor_left": DOOR}
"""Part name (cvcore.labels.CHALLENGE_PARTS) -> id in the part map."""

CANONICAL = {
    HOOD: np.array([math.cos(math.radians(35)), 0.0, math.sin(math.radians(35))]),
    DOOR: np.array([0.0, math.cos(math.radians(10)), math.sin(math.radians(10))]),
}
"""Part id -> the unit direction from which the part is best seen."""
