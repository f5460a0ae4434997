"""Ray Tune over Ray Train trials on a tiny synthetic set (2 CPUs): ASHA stops trials early, the best
trial's export loads and predicts, the summary matches Tune's own records, an interrupted search
resumes without redoing finished work, and bad requests end in one clear error line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray.train
import yaml
from ray.util.state import list_actors

from cvcore.model import load_model, read_meta
from ray_jobs import prepare, tune

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # Ray's tests run one after another: tests/conftest.py
TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]
SPACE = {
    "backbone": "test_resnet",
    "lr": {"loguniform": [1.0e-4, 1.0e-2]},
    "batch_size": 8,
    "image_size": {"choice": [32, 40]},
    "step.loss": {"choice": ["mse", "huber", "l1"]},
    "augment.strength": {"uniform": [0.0, 1.0]},
    "warmup_epochs": 0.5,
    "aux_columns": [],
}


@pytest.fixture(scope="module")
def prepared_dir(tiny_dataset, tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("prepared")
    prepare.prepare(tiny_dataset, out, size=40, targets=TARGETS)
    return out


def write_config(path: Path, space=SPACE, **search) -> Path:
    path.write_text(yaml.safe_dump({"search": {"seed": 0, **search}, "space": space}))
    return path


def trial_histories(experiment: Path) -> dict[str, list[dict]]:
    """Tune's own record of every trial: the results in each trial folder's result.json."""
    return {
        result.parent.name: [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        for result in experiment.glob("*/result.json")
    }


@pytest.fixture(scope="module")
def searched(prepared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    config = write_config(root / "space.yaml", num_samples=3, max_epochs=3, grace_period=1, reduction_factor=2)
    output = root / "out"
    start = time.perf_counter()
    # 2 CPUs per worker: one trial at a time, so they reach each ASHA rung in a fixed order and,
    # training being seeded, ASHA's decisions repeat from run to run.
    assert tune.main(["--data", str(prepared_dir), "--output", str(output), "--config", str(config), "--cpus-per-worker", "2"]) == 0
    print(f"3 trials took {time.perf_counter() - start:.0f} s")
    return output


def test_asha_stops_trials_early_and_the_summary_matches_the_trials(searched):
    summary = pd.read_csv(searched / tune.SUMMARY_FILE)
    histories = trial_histories(searched / "ray_results" / tune.EXPERIMENT)
    assert len(summary) == 3 and set(summary["trial_id"]) == set(histories)
    assert summary["stopped_early"].any() and (summary.loc[summary["stopped_early"], "ended"] == "asha").all()
    assert (summary["ended"] != "error").all()
    for row in summary.itertuples():
        epochs = [r["epoch"] for r in histories[row.trial_id]]
        assert epochs == list(range(1, len(epochs) + 1))  # a report per epoch, none repeated
        assert row.last_epoch == epochs[-1] <= 3
        assert row.stopped_early == (row.last_epoch < 3)
        assert row.best_val_mae == pytest.approx(min(r["val_mae"] for r in histories[row.trial_id]))
        assert row.lr == pytest.approx(histories[row.trial_id][0]["config"]["lr"])
    assert summary["best_val_mae"].is_monotonic_increasing
    assert summary["last_epoch"].sum() < 3 * 3  # ASHA saved trial-epochs


def test_best_export_loads_predicts_and_describes_its_trial(searched, tiny_dataset):
    summary = pd.read_csv(searched / tune.SUMMARY_FILE)
    best = summary.iloc[0]
    meta = read_meta(searched / "best")
    assert meta["metrics"]["val_mae"] == pytest.approx(best["best_val_mae"])
    assert meta["training_config"]["lr"] == pytest.approx(best["lr"]) and meta["image_size"] == best["image_size"]
    assert meta["targets"] == TARGETS and meta["aux_targets"] == []
    best_config = yaml.safe_load((searched / tune.BEST_CONFIG_FILE).read_text())
    assert best_config["lr"] == pytest.approx(best["lr"]) and best_config["step"]["loss"] == best["step.loss"]
    predictor = load_model(searched / "best")
    scores = predictor.predict(sorted((tiny_dataset / "imgs").glob("car_*.jpg"))[:3])
    assert scores.shape == (3, 2) and ((scores >= 0) & (scores <= 1)).all()
    assert list((searched / "ray_results" / tune.EXPERIMENT).glob("*/events.out.tfevents.*"))


def test_a_second_search_into_the_same_output_is_refused(searched, prepared_dir, cli_error):
    err = cli_error(tune.main, ["--data", str(prepared_dir), "--output", str(searched)])
    assert "already holds another search" in err and "--resume" in err


def test_missing_data_and_requests_too_big_for_the_cluster_are_refused(prepared_dir, tmp_path, cli_error, ray_session):
    config = str(write_config(tmp_path / "space.yaml", num_samples=2, max_epochs=1))
    err = cli_error(tune.main, ["--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "a"), "--config", config])
    assert "nowhere" in err
    err = cli_error(tune.main, ["--data", str(prepared_dir), "--output", str(tmp_path / "b"), "--config", config, "--workers-per-trial", "3"])
    assert "do not fit this cluster" in err
    err = cli_error(tune.main, ["--resume", "--data", str(prepared_dir), "--output", str(tmp_path / "c")])
    assert "no search to resume" in err


def checkpointed_epochs(experiment: Path) -> dict[str, int]:
    """The epoch of each trial's latest checkpoint, from its Train run's own record."""
    return {
        snapshot.parent.parent.name: int(ray.train.Result.from_path(snapshot.parent).metrics["epoch"])
        for snapshot in experiment.glob(f"*/{tune.TRAIN_RUN}/checkpoint_manager_snapshot.json")
    }


def test_an_interrupted_search_resumes_without_redoing_finished_work(prepared_dir, tmp_path, ray_session):
    """Kill the driver as soon as a trial has checkpointed an epoch, then --resume: the same trials
    finish, the interrupted ones from their checkpoints, every epoch trained once and known to Tune."""
    config = write_config(tmp_path / "space.yaml", num_samples=2, max_epochs=2, scheduler="fifo")  # both start at once
    output = tmp_path / "out"
    argv = ["--data", str(prepared_dir), "--output", str(output), "--config", str(config)]
    experiment = output / "ray_results" / tune.EXPERIMENT
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}  # a second driver on this cluster
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "ray_jobs.tune", *argv], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not checkpointed_epochs(experiment):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial checkpointed within 4 minutes"
            time.sleep(0.1)
    finally:
        driver.kill()
        driver.wait()
    # The killed driver's trials train on for a moment: what they checkpoint then never reaches Tune.
    deadline = time.monotonic() + 60
    while list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]):
        assert time.monotonic() < deadline, "the killed driver's Train workers outlived it by a minute"
        time.sleep(0.5)
    before, checkpointed = trial_histories(experiment), checkpointed_epochs(experiment)
    assert not (output / tune.SUMMARY_FILE).exists()

    assert tune.main(["--resume", *argv]) == 0
    summary = pd.read_csv(output / tune.SUMMARY_FILE)
    after = trial_histories(experiment)
    assert len(summary) == 2 and set(before) <= set(summary["trial_id"]) == set(after)
    assert (summary["ended"] == "completed").all()
    for trial_id, history in after.items():
        trained = [r["epoch"] for r in history if not r.get("replayed")]
        assert len(trained) == len(set(trained)) and sorted({r["epoch"] for r in history}) == [1, 2]  # no epoch trained twice
        assert history[: len(before.get(trial_id, []))] == before.get(trial_id, [])
    # No trial had finished when the driver died, so each checkpointed one went on from its checkpoint
    # and first replayed that epoch's report to Tune, which may never have had it.
    assert checkpointed and all(
        any(r.get("replayed") and r["epoch"] == epoch for r in after[trial_id]) for trial_id, epoch in checkpointed.items()
    )
    assert load_model(output / "best").targets == TARGETS
