"""The one place for car-part names and the label columns built from them.

A data set's targets are `perspective_score_<part>`; the two factors of a score (score = visible
fraction x facing, see the README) are `visible_fraction_<part>` and `facing_<part>`. The renderer,
the model's head, the intake verdicts, reports and benchmarks all name parts and columns through
this module, so a new part or a renamed prefix is one edit.
"""

from __future__ import annotations

SCORE_PREFIX = "perspective_score_"
VISIBLE_FRACTION_PREFIX = "visible_fraction_"
FACING_PREFIX = "facing_"
FACTOR_PREFIXES = (VISIBLE_FRACTION_PREFIX, FACING_PREFIX)

SIDES = ("left", "right")
PARTS: tuple[str, ...] = (
    "hood", "windshield", "roof", "rear_window", "trunk", "front", "rear",
    *(f"{part}_{side}" for part in ("frontdoor", "backdoor", "front_fender", "rear_fender") for side in SIDES),
    *(f"wheel_{axle}_{side}" for axle in ("front", "rear") for side in SIDES),
    *(f"{light}_{side}" for light in ("headlight", "taillight") for side in SIDES),
)  # fmt: skip
"""Every part the renderer labels; the mask id of ``PARTS[i]`` is ``i + 1`` (0 = not the car)."""
PART_IDS: dict[str, int] = {part: i + 1 for i, part in enumerate(PARTS)}

CHALLENGE_PARTS: tuple[str, str] = ("hood", "backdoor_left")
"""The parts of the original challenge's CSV."""

CAMERA_COLUMNS: tuple[str, str, str] = ("camera_azimuth", "camera_elevation", "camera_distance")


def score_column(part: str) -> str:
    """`backdoor_left` -> `perspective_score_backdoor_left`."""
    return SCORE_PREFIX + part


def visible_fraction_column(part: str) -> str:
    return VISIBLE_FRACTION_PREFIX + part


def facing_column(part: str) -> str:
    return FACING_PREFIX + part


def part_of(column: str) -> str:
    """`perspective_score_backdoor_left` (or `facing_backdoor_left`, ...) -> `backdoor_left`;
    a name without a known prefix is kept as it is."""
    for prefix in (SCORE_PREFIX, *FACTOR_PREFIXES):
        if column.startswith(prefix):
            return column.removeprefix(prefix)
    return column


def is_score_column(column: str) -> bool:
    return column.startswith(SCORE_PREFIX)


CHALLENGE_TARGETS: tuple[str, str] = tuple(score_column(part) for part in CHALLENGE_PARTS)
"""The two columns of the customer's CSV: `perspective_score_hood`, `perspective_score_backdoor_left`."""
