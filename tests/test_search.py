"""The search grammar, settings and results without Ray: what a search YAML may say, what every
trial could draw, the fine-tuning space, the summary of finished trials; bad requests end in one
clear error line before Ray starts."""

from __future__ import annotations

import math

import pytest

from cvcore import search, training
from cvcore.errors import UserError
from cvcore.model import ModelSpec, build_model, save_checkpoint
from ray_jobs import tune


def test_the_space_grammar_gives_distributions_constants_and_largest_values():
    request = search.TuneRequest(space={"lr": {"loguniform": [1.0e-4, 1.0e-2]}, "image_size": {"choice": [32, 48]},
                                        "step.loss": "huber", "batch_size": 8})  # fmt: skip
    assert search.parameter_space(request) == {
        "lr": ("loguniform", [1e-4, 1e-2]), "image_size": ("choice", [32, 48]), "step.loss": (None, "huber"), "batch_size": (None, 8)
    }  # fmt: skip
    assert search.largest(request.space, "image_size") == 48 and search.largest(request.space, "epochs") == 20
    assert search.constants(request.space) == {"step": {"loss": "huber"}, "batch_size": 8}
    base = search.data_config(request.space)
    assert base.image_size == 48 and base.step.loss == "huber"


def test_the_default_search_file_is_a_valid_request():
    request = search.load_request(search.DEFAULT_CONFIG)
    assert search.parameter_space(request) and request.search.scheduler == "asha"


def test_fine_tuning_pins_every_trial_to_the_checkpoint_backbone_and_fine_tuning_rates(tmp_path):
    save_checkpoint(tmp_path / "ckpt", build_model(ModelSpec("resnet10t", ["perspective_score_hood"], 32)))
    space = search.fine_tuning_space({"backbone": {"choice": ["resnet18", "resnet10t"]}, "lr": 0.01}, tmp_path / "ckpt")
    assert space == {
        "backbone": "resnet10t", "lr": search.FINE_TUNE_LR_RANGE, "init_from": str((tmp_path / "ckpt").resolve()),
        "backbone_lr_scale": training.FINE_TUNE_BACKBONE_LR_SCALE,
    }  # fmt: skip
    assert search.fine_tuning_space({"backbone_lr_scale": 0.5}, tmp_path / "ckpt")["backbone_lr_scale"] == 0.5


def test_the_summary_ranks_trials_and_says_how_each_ended():
    request = search.TuneRequest(search=search.SearchSettings(max_epochs=3), space={"lr": {"uniform": [0.1, 0.2]}})
    report = lambda epoch, mae, stop=False: {"epoch": epoch, "val_mae": mae, "stopped_early": stop}  # noqa: E731
    trials = [
        search.TrialRecord("a", {"lr": 0.1}, [report(1, 0.3), report(2, 0.2), report(3, 0.25)]),
        search.TrialRecord("b", {"lr": 0.15}, [report(1, 0.4)]),
        search.TrialRecord("c", {"lr": 0.2}, [report(1, 0.1), report(2, 0.15, stop=True)]),
        search.TrialRecord("d", {"lr": 0.12}, [], error="Traceback...\nRuntimeError: out of memory"),
        # resumed: epoch 2 replayed (its first report lost with a killed driver), then epoch 3
        search.TrialRecord("e", {"lr": 0.11}, [report(1, 0.5), report(2, 0.45), report(2, 0.45), report(3, 0.42)]),
    ]
    rows = search.summary_rows(trials, request)
    assert [r["trial_id"] for r in rows] == ["c", "a", "b", "e", "d"]
    assert [r["ended"] for r in rows] == ["trainer", "completed", "asha", "completed", "error"]
    assert rows[3]["last_epoch"] == 3 and rows[3]["best_epoch"] == 3
    assert rows[1]["best_epoch"] == 2 and rows[1]["best_val_mae"] == 0.2 and rows[1]["lr"] == 0.1
    assert math.isnan(rows[4]["best_val_mae"]) and rows[4]["error"] == "RuntimeError: out of memory"


@pytest.mark.parametrize(
    "config_text, flags, message",
    [
        ("space: {backbone: resnet10t, colour: red}", [], "unknown key(s) in space: colour"),
        ("space: {step.lossy: {choice: [mse]}}", [], "unknown key(s) in space.step: lossy"),
        ("space: {lr: {gaussian: [0, 1]}}", [], "space.lr must be a constant or one of"),
        ("space: {lr: {loguniform: [0.0, 1.0e-2]}}", [], "loguniform needs 0 < lo < hi"),
        ("space: {lr: {loguniform: [3e-4, 1.0e-2]}}", [], "write 3.0e-4"),
        ("space: {batch_size: {uniform: [8, 32]}}", [], "space.batch_size must be int"),
        ("space: {step.loss: {choice: [mse, hinge]}}", [], "loss must be one of mse, l1, huber"),
        ("space: {backbone: {choice: [resnet18, resnet_nine]}}", [], "'resnet_nine' is not a timm model"),
        ("space: {epochs: 5}", [], "search.max_epochs"),
        ("search: {samples: 3}\nspace: {lr: 0.001}", [], "unknown key(s) in"),
        ("space: {lr: 0.001}\nextra: 1", [], "unknown key(s) in"),
        ("space: [lr", [], "is not valid YAML"),
        ("space: {head: {choice: [direct, decomposed]}}", [], "space.head must be a constant"),
        ("space: {lr: 0.001}", ["--init-from", "/no/such/checkpoint"], "checkpoint directory not found"),
        ("space: {lr: 0.001}", ["--num-samples", "0"], "num-samples must be at least 1"),
        ("space: {lr: 0.001}", ["--max-epochs", "2", "--grace-period", "3"], "grace-period (3) cannot exceed max-epochs (2)"),
    ],
)
def test_bad_search_requests_are_one_line_errors(tmp_path, cli_error, config_text, flags, message):
    config = tmp_path / "space.yaml"
    config.write_text(config_text)
    err = cli_error(tune.main, ["--data", str(tmp_path), "--output", str(tmp_path / "out"), "--config", str(config), *flags])
    assert message in err




def test_a_constant_only_setting_is_refused_as_a_distribution():
    with pytest.raises(UserError, match="space.init_from must be a constant"):
        search.parameter_space(search.TuneRequest(space={"init_from": {"choice": ["a", "b"]}}))
