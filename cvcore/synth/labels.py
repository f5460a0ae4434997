"""The labels of a render (see the package docstring for their definition) and label statistics of a data set."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cvcore.labels import (
    CAMERA_COLUMNS,
    CHALLENGE_PARTS,
    CHALLENGE_TARGETS,
    PART_IDS,
    PARTS,
    facing_column,
    score_column,
    visible_fraction_column,
)
from cvcore.synth.geometry import Mesh
from cvcore.synth.scene import CarShape, direction

MIN_SCORE = 0.02

_CANONICAL_LEFT = {  # (azimuth, elevation) in degrees; see the module docstring
    "hood": (0, 35), "windshield": (0, 30), "roof": (0, 90), "rear_window": (180, 30),
    "trunk": (180, 35), "front": (0, 10), "rear": (180, 10),
    "frontdoor_left": (90, 10), "backdoor_left": (90, 10),
    "front_fender_left": (60, 10), "rear_fender_left": (120, 10),
    "wheel_front_left": (90, 5), "wheel_rear_left": (90, 5),
    "headlight_left": (25, 10), "taillight_left": (155, 10),
}  # fmt: skip


def _canonical_directions() -> np.ndarray:
    table = np.zeros((len(PARTS) + 1, 3))
    for part, (az, el) in _CANONICAL_LEFT.items():
        table[PART_IDS[part]] = direction(az, el)
        if part.endswith("_left"):
            table[PART_IDS[part.removesuffix("_left") + "_right"]] = direction(-az, el)
    return table


CANONICAL_DIRECTIONS: np.ndarray = _canonical_directions()
"""(len(PARTS) + 1, 3) unit vectors indexed by part id (row 0 unused)."""


def extended_columns() -> list[str]:
    """Label columns of an extended CSV, in order: the challenge targets first."""
    scores = list(CHALLENGE_TARGETS) + [score_column(p) for p in PARTS if p not in CHALLENGE_PARTS]
    return [
        *scores,
        *(visible_fraction_column(p) for p in PARTS),
        *(facing_column(p) for p in PARTS),
        *CAMERA_COLUMNS,
    ]


def compute_labels(
    mesh: Mesh, face_area: np.ndarray, mask: np.ndarray, eye: np.ndarray, car: CarShape
) -> dict[str, float]:
    """Every label column: scores, visible fractions, facing values and the camera's polar position."""
    n_parts = len(PARTS) + 1
    area = np.bincount(mesh.area_add, face_area, n_parts) - np.bincount(mesh.area_sub, face_area, n_parts)
    area[0] = 0
    pixels = np.bincount(mask.ravel(), minlength=n_parts).astype(float)
    visible = np.where(area > 0, np.clip(pixels / np.maximum(area, 1e-9), 0, 1), 0.0)
    to_camera = eye - mesh.part_centres
    to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
    facing = np.clip(np.einsum("pd,pd->p", to_camera, CANONICAL_DIRECTIONS), 0, None)
    score = np.round(visible * facing, 4)
    score[score < MIN_SCORE] = 0.0

    rel = eye - car.centre
    distance = float(np.linalg.norm(rel))
    labels: dict[str, float] = {}
    for part, pid in PART_IDS.items():
        labels[score_column(part)] = float(score[pid])
        labels[visible_fraction_column(part)] = round(float(visible[pid]), 4)
        labels[facing_column(part)] = round(float(facing[pid]), 4)
    labels["camera_azimuth"] = round(math.degrees(math.atan2(rel[1], rel[0])) % 360.0, 4)
    labels["camera_elevation"] = round(math.degrees(math.asin(rel[2] / distance)), 4)
    labels["camera_distance"] = round(distance, 4)
    return {column: labels[column] for column in extended_columns()}


def label_stats(frame: pd.DataFrame, targets: Sequence[str]) -> dict:
    """Per target: share of exact zeros (%), mean, std, max; and the correlation of the first two targets.

    These are the numbers the synthetic set is tuned to share with the real challenge data.
    """
    stats: dict = {"n": len(frame), "targets": {}}
    for target in targets:
        values = frame[target].to_numpy(float)
        stats["targets"][target] = {
            "zeros_pct": float(100 * np.mean(values == 0)),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "max": float(values.max()),
        }
    if len(targets) >= 2:
        a, b = frame[targets[0]].to_numpy(float), frame[targets[1]].to_numpy(float)
        corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        stats["correlation"] = {"targets": [targets[0], targets[1]], "pearson": corr}
    return stats


def format_label_stats(stats: dict) -> str:
    """`label_stats` as a small table."""
    width = max(len("target"), *(len(t) for t in stats["targets"]))
    lines = [
        f"label statistics over {stats['n']} images",
        f"{'target':<{width}}  {'zeros %':>7}  {'mean':>6}  {'std':>6}  {'max':>6}",
    ]
    for target, s in stats["targets"].items():
        lines.append(f"{target:<{width}}  {s['zeros_pct']:7.1f}  {s['mean']:6.3f}  {s['std']:6.3f}  {s['max']:6.3f}")
    if "correlation" in stats:
        a, b = stats["correlation"]["targets"]
        lines.append(f"correlation({a}, {b}) = {stats['correlation']['pearson']:.3f}")
    return "\n".join(lines)
