"""Regression metrics for perspective scores, on whole arrays and as sums that add up across workers.

Every number comes from a handful of per-target sums (count, Σ|e|, Σe², Σy, Σy², counts within
each tolerance). `regression_metrics` and the distributed `MetricSums` (one `all_reduce` on one
flat tensor) share that code, so offline and in-training metrics cannot drift apart.

About half of the labels are exactly 0, and a model that always answers 0 already looks good on
MAE; hence the `nonzero` block (only the rows that show the part) and `baseline_metrics`.

Values are plain floats, or None where a metric is undefined (R² of a constant target, anything
over zero rows), so the dicts go straight into JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

METRIC = "val_mae"
"""What the best checkpoint, early stopping and the search go by (lower is better)."""
WITHIN = (0.05, 0.1)
METRIC_KEYS = ("mae", "rmse", "r2", *(f"within_{tol}" for tol in WITHIN))

# Slack for the within-tolerance counts: in binary 0.4 - 0.3 > 0.1, and float32 labels round at
# ~1e-7; neither should decide whether an error of exactly 0.1 counts as within 0.1.
_WITHIN_SLACK = 1e-6
# Σ(y - ȳ)² at or below this fraction of Σy² is rounding noise: the target is constant, R² undefined.
_CONSTANT_RTOL = 1e-9
# Number of sums per target and row subset: count, Σ|e|, Σe², Σy, Σy², one count per tolerance.
_N_SUMS = 5 + len(WITHIN)


def _masked_sums(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-target sums over the rows where `mask` is true: float64, shape (_N_SUMS, T)."""
    weight = mask.to(torch.float64)
    err = (pred - true).abs()
    return torch.stack(
        [
            weight.sum(0),
            (weight * err).sum(0),
            (weight * err**2).sum(0),
            (weight * true).sum(0),
            (weight * true**2).sum(0),
            *((weight * (err <= tol + _WITHIN_SLACK)).sum(0) for tol in WITHIN),
        ]
    )


def _as_float64(x, device: torch.device) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.array(x, dtype=np.float64))  # a copy: arrays from pandas may be read-only
    return x.detach().to(device, torch.float64)


def _value(x: float) -> float | None:
    """A finite float, or None (JSON null) for NaN/inf."""
    x = float(x)
    return x if np.isfinite(x) else None


def _metrics_from_sums(sums: np.ndarray) -> list[dict[str, float | None]]:
    """One metrics dict per target (column of a (_N_SUMS, T) array)."""
    result = []
    for count, abs_err, sq_err, y, y_sq, *within in sums.T:
        if count == 0:
            result.append(dict.fromkeys(METRIC_KEYS))
            continue
        total_ss = y_sq - y * y / count
        r2 = None if total_ss <= _CONSTANT_RTOL * y_sq else _value(1.0 - sq_err / total_ss)
        metrics = {"mae": _value(abs_err / count), "rmse": _value(np.sqrt(sq_err / count)), "r2": r2}
        metrics.update({f"within_{tol}": _value(hits / count) for tol, hits in zip(WITHIN, within)})
        result.append(metrics)
    return result


def _mean_over_targets(per_target: Sequence[dict], keys: Sequence[str] = METRIC_KEYS) -> dict[str, float | None]:
    """Average of each metric over the targets that define it (None if none does)."""
    mean = {}
    for key in keys:
        values = [m[key] for m in per_target if m[key] is not None]
        mean[key] = float(np.mean(values)) if values else None
    return mean


class MetricSums:
    """Running per-target sums, over all rows and over the rows with a true label > 0.

    In distributed evaluation each worker `update`s, then `all_reduce`s (SUM) `as_tensor()` and calls
    `MetricSums.from_tensor(t, targets).compute()`. Sums are float64 so counts stay exact.
    """

    def __init__(self, targets: Sequence[str], device: torch.device | str = "cpu"):
        self.targets = list(targets)
        # [all rows, nonzero rows] x sums x targets
        self._sums = torch.zeros(2, _N_SUMS, len(self.targets), dtype=torch.float64, device=device)

    def update(self, pred, true) -> None:
        """Add a batch of predictions and labels, each (B, T): tensors on any device, or arrays."""
        pred, true = (_as_float64(x, self._sums.device) for x in (pred, true))
        if true.ndim != 2 or true.shape != pred.shape or true.shape[1] != len(self.targets):
            raise ValueError(
                f"expected predictions and labels of shape (N, {len(self.targets)}) for targets "
                f"{self.targets}, got {tuple(pred.shape)} and {tuple(true.shape)}"
            )
        every_row = torch.ones_like(true, dtype=torch.bool)
        self._sums += torch.stack([_masked_sums(pred, true, every_row), _masked_sums(pred, true, true > 0)])

    def as_tensor(self) -> torch.Tensor:
        """All sums as one flat float64 tensor (a copy), ready for a single `all_reduce`."""
        return self._sums.flatten().clone()

    @classmethod
    def from_tensor(cls, flat: torch.Tensor, targets: Sequence[str]) -> MetricSums:
        """Rebuild from a (reduced) `as_tensor()` result."""
        sums = cls(targets, device=flat.device)
        sums._sums += flat.detach().to(torch.float64).reshape(sums._sums.shape)
        return sums

    def compute(self) -> dict:
        """The `regression_metrics` dict for everything added so far."""
        all_rows, nonzero_rows = self._sums.cpu().numpy()
        per_target = _metrics_from_sums(all_rows)
        for metrics, nonzero, n_nonzero in zip(per_target, _metrics_from_sums(nonzero_rows), nonzero_rows[0]):
            metrics["nonzero"] = {"n": int(n_nonzero), **nonzero}
        return {
            "n": int(all_rows[0, 0]) if self.targets else 0,
            "mean": _mean_over_targets(per_target),
            "targets": dict(zip(self.targets, per_target)),
        }


def regression_metrics(y_true, y_pred, targets: Sequence[str]) -> dict:
    """Metrics per target, on all rows and on the rows whose true label is > 0, plus their mean.

    `y_true`, `y_pred`: (N, T) arrays. Returns `{"n", "mean": {mae, rmse, r2, within_0.05,
    within_0.1}, "targets": {name: {mae, ..., "nonzero": {"n", mae, ...}}}}`; the mean averages the
    per-target values (all rows).
    """
    sums = MetricSums(targets)
    sums.update(y_pred, y_true)
    return sums.compute()


def baseline_metrics(y_true, targets: Sequence[str], constant: float = 0.0) -> dict:
    """Metrics of always predicting `constant`; by default the all-zeros model a real model must beat."""
    y_true = np.asarray(y_true, dtype=np.float64)
    return regression_metrics(y_true, np.full_like(y_true, constant), targets)


DECISION_KEYS = ("agreement", "false_retake_rate", "false_accept_rate")


def _share(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None


def decision_metrics(y_true, y_pred, targets: Sequence[str], accept: float) -> dict:
    """The intake decision per target at the serving threshold `accept` (a photo is accepted for a
    part when its score is at or above it; see `cvcore.intake`), scored against the true labels.

    `agreement`: share of photos whose predicted decision equals the true one. `false_retake_rate`:
    of the photos that truly show the part well (true >= accept), the share sent back for a retake.
    `false_accept_rate`: of the photos that do not (true < accept), the share accepted. None where
    there is no such photo. Returns `{"accept", "mean": {...}, "targets": {name: {"n_good", "n_bad", ...}}}`.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    per_target = {}
    for i, target in enumerate(targets):
        good, accepted = y_true[:, i] >= accept, y_pred[:, i] >= accept
        per_target[target] = {
            "n_good": int(good.sum()),
            "n_bad": int((~good).sum()),
            "agreement": _share(good == accepted),
            "false_retake_rate": _share(~accepted[good]),
            "false_accept_rate": _share(accepted[~good]),
        }
    return {"accept": float(accept), "mean": _mean_over_targets(list(per_target.values()), DECISION_KEYS), "targets": per_target}
