"""Evaluation without Ray: the targets a checkpoint and a data set share are scored, raw and prepared
data give the model the same inputs, and metrics.json and the report carry the intake decisions."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cvcore import prepared
from cvcore.errors import CheckpointError
from cvcore.evaluation import EvaluateConfig, evaluate, predict_split
from cvcore.labels import CHALLENGE_TARGETS, score_column
from cvcore.model import ModelSpec, build_model, load_model, save_checkpoint
from ray_jobs import evaluate as evaluate_command
from tests.photos import write_photo_dataset

EVERY_PART = [*CHALLENGE_TARGETS, score_column("windshield")]  # like the shipped backbone: more than the data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Only the two challenge columns, as a customer's data set."""
    return write_photo_dataset(tmp_path_factory.mktemp("customer"), 60, seed=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(1)
    save_checkpoint(directory, build_model(ModelSpec("resnet10t", EVERY_PART, 32, head="decomposed", prepared_size=40)))
    return directory


def test_a_checkpoint_predicting_more_targets_is_scored_on_the_shared_ones(data, checkpoint, tmp_path):
    metrics = evaluate(EvaluateConfig(str(checkpoint), str(data), str(tmp_path), split="train"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["targets"]) == set(CHALLENGE_TARGETS) == set(saved["decisions"]["targets"])
    assert saved["not_in_data"] == [score_column("windshield")] and saved["n"] == metrics["n"] > 30
    decisions = saved["decisions"]["targets"][CHALLENGE_TARGETS[0]]
    assert saved["decisions"]["accept"] == 0.5 and decisions["n_good"] + decisions["n_bad"] == saved["n"]
    page = (tmp_path / "report.html").read_text()
    assert "Intake decisions at the serving threshold 0.5" in page and "false retakes" in page
    assert (tmp_path / "gallery.png").is_file()
    # The predictions scored are the checkpoint's columns for those targets.
    predictor = load_model(checkpoint)
    frame = pd.read_csv(tmp_path / "predictions.csv")
    first = frame["filename"].iloc[0]
    expected = predictor.predict([data / "imgs" / first])[0]
    assert frame[f"pred_{CHALLENGE_TARGETS[1]}"].iloc[0] == pytest.approx(expected[1], abs=1e-5)


def test_a_checkpoint_sharing_no_target_is_refused(data, tmp_path):
    save_checkpoint(tmp_path / "ckpt", build_model(ModelSpec("resnet10t", [score_column("windshield")], 32)))
    with pytest.raises(CheckpointError, match="predicts perspective_score_windshield, and the data have none of them"):
        evaluate(EvaluateConfig(str(tmp_path / "ckpt"), str(data), str(tmp_path / "report")))


def test_raw_and_prepared_data_give_the_model_the_same_inputs(data, checkpoint, tmp_path):
    predictor = load_model(checkpoint)
    prepared.prepare(data, tmp_path / "prepared", size=40)  # the checkpoint's prepared size
    from_raw = predict_split(predictor, data, "train")
    from_prepared = predict_split(predictor, tmp_path / "prepared", "train")
    assert from_raw.filenames == from_prepared.filenames and from_raw.targets == list(CHALLENGE_TARGETS)
    assert np.array_equal(from_raw.images, from_prepared.images)
    assert np.allclose(from_raw.predictions, from_prepared.predictions, atol=1e-6)
    assert np.array_equal(from_raw.labels, from_prepared.labels)


def test_the_command_prints_the_decisions_and_saves_its_config(data, checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    assert evaluate_command.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out), "--split", "train", "--accept", "0.7"]) == 0
    printed = capsys.readouterr().out
    assert "accept/retake at 0.7: agreement" in printed and "not scored, no such column in the data: 1 target(s) (perspective_score_windshield)" in printed
    assert yaml.safe_load((out / "config.yaml").read_text())["accept"] == 0.7
    assert json.loads((out / "metrics.json").read_text())["decisions"]["accept"] == 0.7
    with pytest.raises(SystemExit) as exit_info:
        evaluate_command.run(evaluate_command.main, ["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out), "--accept", "1.5"])
    assert exit_info.value.code == 2 and "error: accept must be in (0, 1], got 1.5" in capsys.readouterr().err
