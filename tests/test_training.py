"""The training loop without Ray: the training data, the one epoch runner (early stopping, reports,
checkpoints, continuing a run), the continuation state, the run's record."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cvcore import engine, runlog, training
from cvcore.errors import UserError
from cvcore.model import ModelSpec, build_model, load_model, parameter_groups, read_meta, save_checkpoint

TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]


def test_training_state_round_trip_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    state = training.TrainState(epoch=3, step=30, images_seen=960, best_val_mae=0.2)
    training.save_training_state(tmp_path, optimizer, state)
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    assert training.load_training_state(tmp_path, fresh) == state
    assert fresh.param_groups[0]["lr"] == 0.1
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(fresh.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key])
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def test_a_state_saved_before_step_counting_assumes_full_epochs(tmp_path):
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters())
    training.save_training_state(tmp_path, optimizer, training.TrainState(epoch=2))
    document = json.loads((tmp_path / training.STATE_FILE).read_text())
    del document["step"], document["images_seen"]
    (tmp_path / training.STATE_FILE).write_text(json.dumps(document))
    assert training.load_training_state(tmp_path, optimizer, steps_per_epoch=7).step == 14


def test_stop_reason_is_the_time_budget_or_the_patience():
    plan = training.Plan(epochs=10, steps_per_epoch=1, images_per_epoch=1, patience=2, max_minutes=5.0)
    assert training.stop_reason(training.TrainState(stale_epochs=1, minutes=1.0), plan) == ""
    assert "has not improved for 2 epochs" in training.stop_reason(training.TrainState(stale_epochs=2), plan)
    assert "time budget of 5 min" in training.stop_reason(training.TrainState(minutes=5.5), plan)
    assert training.stop_reason(training.TrainState(stale_epochs=9), replace(plan, patience=0)) == ""


def test_augmentation_randomness_depends_on_seed_rank_and_epoch_only():
    draw = lambda *key: torch.rand(4, generator=training.augment_generator(*key))  # noqa: E731
    assert torch.equal(draw(0, 0, 3), draw(0, 0, 3))
    assert not torch.equal(draw(0, 0, 3), draw(0, 0, 4)) and not torch.equal(draw(0, 0, 3), draw(0, 1, 3))


def test_auxiliary_columns_are_chosen_by_name_and_scaled_on_the_training_split():
    assert training.aux_columns("all", ["a", "b"]) == ["a", "b"] == training.aux_columns("a,b", ["a", "b", "c"])
    with pytest.raises(UserError, match=r"auxiliary column\(s\) not in the data: z;"):
        training.aux_columns(["z"], ["a"])
    splits = {"train": {"labels": np.array([[0.5, 10.0], [0.2, 30.0]], np.float32)}, "val": {"labels": np.array([[0.1, 50.0]], np.float32)}}
    training.scale_auxiliary(splits, first=1)
    assert np.allclose(splits["train"]["labels"], [[0.5, 0.0], [0.2, 1.0]])  # targets untouched, aux to [0, 1]
    assert np.allclose(splits["val"]["labels"], [[0.1, 2.0]])  # the training split's scale


def test_fine_tuning_inherits_backbone_size_and_rate_unless_given(tmp_path):
    save_checkpoint(tmp_path / "ck", build_model(ModelSpec("resnet10t", TARGETS, 40)))
    settings = training.inherit_from_checkpoint({"init_from": str(tmp_path / "ck"), "lr": 0.01, "backbone_lr_scale": 1.0})
    assert settings == {"backbone": "resnet10t", "image_size": 40, "lr": 0.01, "backbone_lr_scale": 1.0, "init_from": str(tmp_path / "ck")}
    defaults = training.inherit_from_checkpoint({"init_from": str(tmp_path / "ck")})
    assert defaults["lr"] == training.FINE_TUNE_LR and defaults["backbone_lr_scale"] == training.FINE_TUNE_BACKBONE_LR_SCALE < 1


def test_the_backbone_learns_at_its_scale_of_the_heads_rate():
    model = build_model(ModelSpec("resnet10t", TARGETS, 32, mask_classes=3))
    backbone, heads = parameter_groups(model, 1e-3, 0.1)
    assert backbone["lr"] == pytest.approx(1e-4) and heads["lr"] == 1e-3
    head_ids = {id(p) for p in [*model.net.get_classifier().parameters(), *model.seg_head.parameters()]}
    assert {id(p) for p in heads["params"]} == head_ids
    assert len(backbone["params"]) + len(heads["params"]) == len(list(model.parameters()))
    [single] = parameter_groups(model, 1e-3)
    assert single["lr"] == 1e-3 and len(single["params"]) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def data(tiny_dataset, tmp_path_factory):
    cfg = engine.TrainConfig(backbone="resnet10t", image_size=32, batch_size=16)
    return training.load_training_data(tiny_dataset, tmp_path_factory.mktemp("out"), cfg, TARGETS)


def test_training_data_hold_targets_factors_and_auxiliary_columns(data):
    assert data.targets == TARGETS and data.head == "decomposed"  # the synthetic set has the factors
    labels = data.splits["train"]["labels"]
    assert labels.shape[1] == len(TARGETS) * 3 + len(data.aux) and "camera_azimuth" in data.aux
    assert np.nanmin(labels[:, 6:]) >= 0 and np.nanmax(labels[:, 6:]) <= 1
    assert data.manifest["size"] == 32 and data.splits["train"]["images"].shape[1:] == (32, 32, 3)


def test_the_epoch_runner_reports_checkpoints_and_continues_a_run(data, tmp_path):
    cfg = engine.TrainConfig(backbone="test_resnet", image_size=24, epochs=2, batch_size=16, warmup_epochs=0.5, aux_columns=[])
    hooks = training.DirectoryHooks(tmp_path)
    first = training.train_worker(cfg, data, hooks, torch.device("cpu"))
    assert [r["epoch"] for r in hooks.reports] == [1, 2] and first.epoch == 2 and first.step > 0
    for key in ("val_mae", "val_r2", "val_mae_perspective_score_hood", "train_loss", "images_seen", "lr", "stopped_early"):
        assert key in hooks.reports[0]
    last = tmp_path / "checkpoint_000002"
    assert read_meta(last)["image_size"] == 24 and read_meta(last)["prepared_size"] == 32
    assert load_model(last).predict_arrays(data.splits["val"]["images"][:2]).shape == (2, 2)

    cfg.epochs = 3
    resumed = training.train_worker(cfg, data, hooks, torch.device("cpu"), resume=last)
    assert [r["epoch"] for r in hooks.reports] == [1, 2, 3]  # no epoch redone
    assert resumed.step == first.step * 3 // 2 and resumed.images_seen == first.images_seen * 3 // 2
    assert hooks.reports[2]["images_seen"] == resumed.images_seen


def test_the_time_budget_stops_the_run_and_says_why(data, tmp_path, capsys):
    cfg = engine.TrainConfig(backbone="test_resnet", image_size=16, epochs=4, batch_size=32, max_minutes=1e-6, aux_columns=[])
    hooks = training.DirectoryHooks(tmp_path)
    state = training.train_worker(cfg, data, hooks, torch.device("cpu"))
    assert state.epoch == 1 and [r["stopped_early"] for r in hooks.reports] == [True]
    out = capsys.readouterr().out
    assert "stopping early: the time budget of 1e-06 min is spent" in out
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 1  # one line per epoch


def test_the_run_log_keeps_the_latest_report_of_each_epoch(tmp_path):
    log = runlog.RunLog(tmp_path)
    for epoch, mae in [(1, 0.3), (2, 0.2), (2, 0.25), (3, 0.1)]:
        log.write({"epoch": epoch, "val_mae": mae})
    assert [(h["epoch"], h["val_mae"]) for h in runlog.read_history(tmp_path)] == [(1, 0.3), (2, 0.25), (3, 0.1)]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
