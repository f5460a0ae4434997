"""Metrics on hand-computed cases, the undefined cases (constant target, no nonzero rows), and the
distributed sums against the whole-array metrics."""

import json
import math

import numpy as np
import pytest
import torch

from cvcore.metrics import METRIC_KEYS, MetricSums, baseline_metrics, decision_metrics, regression_metrics

# Target "a": errors 0, 0.1, 0.1, 0.3 (two of them exactly on the 0.1 boundary); "b": perfect.
Y_TRUE = np.array([[0.0, 0.2], [0.0, 0.4], [0.5, 0.6], [1.0, 0.8]])
Y_PRED = np.array([[0.0, 0.2], [0.1, 0.4], [0.4, 0.6], [0.7, 0.8]])


def test_hand_computed_case():
    metrics = regression_metrics(Y_TRUE, Y_PRED, ["a", "b"])
    a = metrics["targets"]["a"]
    assert metrics["n"] == 4
    assert a["mae"] == pytest.approx(0.5 / 4)
    assert a["rmse"] == pytest.approx(math.sqrt(0.11 / 4))
    assert a["r2"] == pytest.approx(1 - 0.11 / 0.6875)  # SST around the mean 0.375
    assert a["within_0.05"] == pytest.approx(0.25)
    assert a["within_0.1"] == pytest.approx(0.75)
    assert a["nonzero"] == pytest.approx(
        {"n": 2, "mae": 0.2, "rmse": math.sqrt(0.05), "r2": 1 - 0.1 / 0.125, "within_0.05": 0.0, "within_0.1": 0.5}
    )
    b = metrics["targets"]["b"]
    assert (b["mae"], b["rmse"], b["r2"], b["within_0.05"]) == pytest.approx((0, 0, 1, 1))
    assert metrics["mean"]["mae"] == pytest.approx((0.125 + 0) / 2)
    assert set(metrics["mean"]) == set(METRIC_KEYS)


def test_boundary_errors_count_as_within():
    # In binary 0.4 - 0.3 > 0.1, and float32 0.1 is not 0.1: both still count as within 0.1.
    true = np.array([[0.3], [0.0]])
    pred = np.array([[0.4], [np.float32(0.1)]])
    assert regression_metrics(true, pred, ["a"])["targets"]["a"]["within_0.1"] == 1.0


def test_constant_and_all_zero_targets_give_none_not_crash():
    true = np.array([[0.0, 0.3], [0.0, 0.3], [0.0, 0.3]])
    pred = np.array([[0.1, 0.2], [0.0, 0.3], [0.2, 0.5]])
    metrics = regression_metrics(true, pred, ["zeros", "constant"])
    zeros, constant = metrics["targets"]["zeros"], metrics["targets"]["constant"]
    assert zeros["r2"] is None and constant["r2"] is None
    assert zeros["mae"] == pytest.approx(0.1)
    assert zeros["nonzero"] == {"n": 0, **dict.fromkeys(METRIC_KEYS)}
    assert constant["nonzero"]["n"] == 3 and constant["nonzero"]["r2"] is None
    assert metrics["mean"]["r2"] is None  # no target defines it
    json.dumps(metrics, allow_nan=False)  # valid JSON: null, never NaN


def test_mean_skips_undefined_values():
    true = np.array([[0.0, 0.2], [0.0, 0.4]])
    metrics = regression_metrics(true, true, ["constant", "varies"])
    assert metrics["mean"]["r2"] == pytest.approx(1.0)


def test_baseline_is_always_zero():
    baseline = baseline_metrics(Y_TRUE, ["a", "b"])
    assert baseline["targets"]["a"]["mae"] == pytest.approx(Y_TRUE[:, 0].mean())
    assert baseline["targets"]["b"]["within_0.1"] == 0.0
    assert baseline_metrics(Y_TRUE, ["a", "b"], constant=0.5)["targets"]["a"]["mae"] == pytest.approx(0.375)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="shape"):
        regression_metrics(Y_TRUE, Y_PRED[:, :1], ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        regression_metrics(Y_TRUE, Y_PRED, ["a"])


def _assert_close(actual, expected, path="metrics"):
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key in expected:
            _assert_close(actual[key], expected[key], f"{path}.{key}")
    elif expected is None or isinstance(expected, int):
        assert actual == expected, path
    else:
        assert actual == pytest.approx(expected, abs=1e-6), path


def test_metric_sums_reduced_across_workers_match_regression_metrics():
    rng = np.random.default_rng(0)
    targets = ["hood", "door", "all_zero"]
    true = rng.random((103, 3)).astype(np.float32)
    true[rng.random(true.shape) < 0.5] = 0
    true[:, 2] = 0
    pred = np.clip(true + rng.normal(0, 0.1, true.shape), 0, 1).astype(np.float32)

    workers = [MetricSums(targets), MetricSums(targets)]
    for start in range(0, len(true), 10):  # batches dealt to the two workers in turn
        batch = np.s_[start : start + 10]
        workers[start // 10 % 2].update(torch.from_numpy(pred[batch]), torch.from_numpy(true[batch]))
    flat = workers[0].as_tensor() + workers[1].as_tensor()  # what all_reduce(SUM) computes
    assert flat.ndim == 1 and flat.dtype == torch.float64

    reduced = MetricSums.from_tensor(flat, targets).compute()
    _assert_close(reduced, regression_metrics(true, pred, targets))


def test_metric_sums_round_trip_and_empty():
    sums = MetricSums(["a", "b"])
    assert sums.compute()["n"] == 0 and sums.compute()["targets"]["a"]["mae"] is None
    sums.update(Y_PRED, Y_TRUE)
    again = MetricSums.from_tensor(sums.as_tensor(), ["a", "b"])
    assert again.compute() == sums.compute() == regression_metrics(Y_TRUE, Y_PRED, ["a", "b"])


def test_decision_metrics_on_a_constructed_case():
    # Target "a": good photos (true >= 0.5) rows 0-2, the model sends row 1 back (a false retake)
    # and accepts row 3 (a false accept). Target "b": no good photo at all, none accepted.
    y_true = np.array([[0.9, 0.1], [0.6, 0.0], [0.5, 0.2], [0.2, 0.0], [0.0, 0.3], [0.4, 0.49]])
    y_pred = np.array([[0.8, 0.0], [0.3, 0.1], [0.55, 0.2], [0.6, 0.0], [0.0, 0.4], [0.1, 0.45]])
    decisions = decision_metrics(y_true, y_pred, ["a", "b"], accept=0.5)
    assert decisions["accept"] == 0.5
    assert decisions["targets"]["a"] == pytest.approx(
        {"n_good": 3, "n_bad": 3, "agreement": 4 / 6, "false_retake_rate": 1 / 3, "false_accept_rate": 1 / 3}
    )
    assert decisions["targets"]["b"] == {"n_good": 0, "n_bad": 6, "agreement": 1.0, "false_retake_rate": None, "false_accept_rate": 0.0}
    assert decisions["mean"] == pytest.approx({"agreement": (4 / 6 + 1) / 2, "false_retake_rate": 1 / 3, "false_accept_rate": 1 / 6})
    json.dumps(decisions)
    # Another threshold moves the decisions: at 0.3 row 1 of "a" is accepted rightly, row 5 (true 0.4,
    # predicted 0.1) becomes the one false retake of four good photos, and "b" has two good photos.
    at_03 = decision_metrics(y_true, y_pred, ["a", "b"], accept=0.3)["targets"]
    assert at_03["a"]["false_retake_rate"] == pytest.approx(1 / 4) and at_03["b"]["n_good"] == 2
