"""The intake verdict: does a photo show each car part well enough, and if not, what to do.

A claims desk needs more than a score: it needs `accept` or `retake` and a hint the photographer
can act on ("only 43 % of the back-left door is visible — step back and photograph the car's
left rear"). The score alone cannot tell a part that is cut off from one seen at a steep angle
(both give a middling score), so the hint is specific only when the model also predicts the two
factors of the score, `visible_fraction_<part>` and `facing_<part>` (score = visible fraction
times facing, see `cvcore.synth`); otherwise the hint asks for the part whole and head-on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from cvcore.errors import UserError
from cvcore.labels import facing_column, part_of, visible_fraction_column


class Decision(StrEnum):
    ACCEPT = "accept"
    RETAKE = "retake"


class Reason(StrEnum):
    OK = "ok"
    NOT_VISIBLE = "not_visible"
    PARTLY_VISIBLE = "partly_visible"
    WRONG_ANGLE = "wrong_angle"
    POORLY_SHOWN = "poorly_shown"
    """Retake, but without the factors the score cannot say whether the part is cut off or seen
    at an angle."""


@dataclass(frozen=True)
class IntakeThresholds:
    """When a part counts as shown, and which factor to blame when it is not."""

    accept: float = 0.5
    """Score at or above which the part is shown well enough (a whole part seen 45 degrees off
    head-on scores about 0.7)."""
    not_visible: float = 0.05
    """Score (or, with factors, visible fraction) below which the part is not in the picture."""
    visible_fraction: float = 0.8
    """With factors: the fraction of the part that should be in the picture."""
    facing: float = 0.7
    """With factors: the facing (cosine to the head-on direction) that is still fine; 0.7 is 45 degrees."""

    def __post_init__(self) -> None:
        for name in ("accept", "not_visible", "visible_fraction", "facing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"intake threshold {name} must be in [0, 1], got {value}")
        if self.not_visible >= self.accept:
            raise UserError(f"intake threshold not_visible ({self.not_visible}) must be below accept ({self.accept})")
        if self.visible_fraction == 0.0 or self.facing == 0.0:
            raise UserError("intake thresholds visible_fraction and facing must be above 0")


@dataclass(frozen=True)
class PartVerdict:
    """The verdict on one part, as the service returns it."""

    part: str
    """Part name as in the target (`backdoor_left`)."""
    name: str
    """Human name (`back-left door`)."""
    score: float
    decision: Decision
    reason: Reason
    hint: str
    visible_fraction: float | None = None
    facing: float | None = None


_COMPOUNDS = {"frontdoor": ("front", "door"), "backdoor": ("back", "door")}
_SIDES = ("left", "right")
_POSITIONS = ("front", "back", "rear")
_IMPLIED_POSITIONS = {"hood": "front", "windshield": "front", "headlight": "front", "trunk": "rear", "taillight": "rear"}
"""The end of the car to photograph for parts whose name does not say it (cf. the canonical
directions in `cvcore.synth`)."""
_VIEWPOINTS = {"roof": "the car from higher up"}


def _words(part: str) -> tuple[str | None, str | None, list[str]]:
    """Split a part name into (side, position, other words): `wheel_rear_left` -> ("left", "rear", ["wheel"])."""
    words = [w for token in part.lower().split("_") if token for w in _COMPOUNDS.get(token, (token,))]
    side = words.pop() if len(words) > 1 and words[-1] in _SIDES else None
    position = next((w for w in words if w in _POSITIONS), None)
    if position is not None:
        words.remove(position)
    return side, position, words


def human_name(part: str) -> str:
    """`backdoor_left` -> "back-left door", `headlight_right` -> "right headlight", `rear_window`
    -> "rear window", `front` -> "front of the car", an unknown `side_mirror_left` -> "left side mirror"."""
    part = part_of(part)
    side, position, words = _words(part)
    qualifier = "-".join(w for w in (position, side) if w)
    if not words:
        return f"{qualifier} of the car" if qualifier else part
    return " ".join([qualifier, *words] if qualifier else words)


def viewpoint(part: str) -> str:
    """What to photograph to show the part: `backdoor_left` -> "the car's left rear"."""
    part = part_of(part)
    if part in _VIEWPOINTS:
        return _VIEWPOINTS[part]
    side, position, words = _words(part)
    end = "rear" if position == "back" else position or next((_IMPLIED_POSITIONS[w] for w in words if w in _IMPLIED_POSITIONS), None)
    if side and end:
        return f"the car's {side} {end}"
    if side:
        return f"the car's {side} side"
    if end:
        return f"the car's {end}"
    return f"the {human_name(part)}"


def judge_part(
    target: str,
    score: float,
    thresholds: IntakeThresholds = IntakeThresholds(),
    visible_fraction: float | None = None,
    facing: float | None = None,
) -> PartVerdict:
    """Accept or retake one part; reason and hint come from the factors when both are given."""
    part = part_of(target)
    name, where = human_name(part), viewpoint(part)
    has_factors = visible_fraction is not None and facing is not None
    if score >= thresholds.accept:
        reason, hint = Reason.OK, f"the {name} is shown well"
    elif (visible_fraction if has_factors else score) < thresholds.not_visible:
        reason, hint = Reason.NOT_VISIBLE, f"the {name} is not in the picture — photograph {where}"
    elif not has_factors:
        reason = Reason.POORLY_SHOWN
        hint = f"the {name} is not shown well enough — photograph {where}, with the whole {name} in the frame and seen head-on"
    elif visible_fraction / thresholds.visible_fraction <= facing / thresholds.facing:
        reason = Reason.PARTLY_VISIBLE
        hint = f"only {round(visible_fraction * 100)} % of the {name} is visible — step back and photograph {where}"
    else:
        reason = Reason.WRONG_ANGLE
        hint = f"the {name} is seen at a steep angle — photograph {where} more head-on"
    return PartVerdict(
        part=part,
        name=name,
        score=float(score),
        decision=Decision.ACCEPT if reason is Reason.OK else Decision.RETAKE,
        reason=reason,
        hint=hint,
        visible_fraction=None if visible_fraction is None else float(visible_fraction),
        facing=None if facing is None else float(facing),
    )


def judge(
    scores: Mapping[str, float],
    thresholds: IntakeThresholds = IntakeThresholds(),
    factors: Mapping[str, float] | None = None,
) -> dict[str, PartVerdict]:
    """Verdicts keyed like `scores` (target names). `factors` holds model outputs named
    `visible_fraction_<part>` and `facing_<part>`; a part uses them only when both are present."""
    factors = factors or {}
    verdicts = {}
    for target, score in scores.items():
        part = part_of(target)
        visible = factors.get(visible_fraction_column(part))
        facing = factors.get(facing_column(part))
        if visible is None or facing is None:
            visible = facing = None
        verdicts[target] = judge_part(target, score, thresholds, visible, facing)
    return verdicts
