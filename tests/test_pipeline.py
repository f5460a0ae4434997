"""The main job: what each preset asks of the stages (no Ray), and end to end on the smoke preset:
synthesise → … → serve answers a real HTTP request."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvcore.engine import TrainConfig
from cvcore.labels import CHALLENGE_TARGETS
from cvcore.presets import PRESETS, SHIPPED_BACKBONE, final_training, tune_request
from ray_jobs import pipeline

pytestmark = pytest.mark.xdist_group("ray")  # Ray's tests run one after another: tests/conftest.py


@pytest.mark.slow
def test_smoke_pipeline_runs_every_stage(tmp_path, monkeypatch, ray_session, free_port):
    from ray import serve

    monkeypatch.chdir(tmp_path)
    try:
        result = pipeline.pipeline(None, tmp_path / "run", pipeline.PRESETS["smoke"], port=free_port())
    finally:
        serve.shutdown()
    assert (tmp_path / "data" / "synthetic-120" / "car_imgs_4000.csv").is_file()
    assert set(result["metrics"]["targets"]) == set(CHALLENGE_TARGETS) == set(result["metrics"]["decisions"]["targets"])
    assert (tmp_path / "run" / "report" / "report.html").is_file()
    assert (tmp_path / "run" / "tune" / "tune_summary.csv").is_file()
    assert (tmp_path / "run" / "train" / "best" / "model.safetensors").is_file()
    assert set(result["response"]["scores"]) == set(CHALLENGE_TARGETS)


def test_presets_set_the_search_and_the_final_training():
    request = tune_request(PRESETS["smoke"], list(CHALLENGE_TARGETS), None)
    assert (request.search.num_samples, request.search.max_epochs, request.search.grace_period) == (2, 1, 1)
    assert request.space["backbone"] == "resnet10t" and request.targets == list(CHALLENGE_TARGETS)
    assert "init_from" not in request.space
    best = TrainConfig(backbone="resnet18", epochs=2, lr=1e-3)
    final = final_training(best, PRESETS["small"])
    assert (final.epochs, final.max_minutes, final.backbone, final.lr) == (40, 8, "resnet18", 1e-3)


def test_fine_tuning_pins_every_trial_to_the_pretrained_backbone():
    request = tune_request(PRESETS["small"], list(CHALLENGE_TARGETS), SHIPPED_BACKBONE)
    assert request.space["backbone"] == "regnetx_002" and Path(request.space["init_from"]) == SHIPPED_BACKBONE.resolve()


def test_the_endpoint_is_built_from_the_import_path_a_user_gives():
    """The application's code reaches the pipeline only through the import path `serve run` takes
    (serve.edge, the ingress environment set before Ray starts, is deployment set-up, not the app)."""
    source = Path(pipeline.__file__).read_text()
    assert pipeline.SERVE_APP == "serve.app:build_app"
    assert "from serve.app" not in source and "import serve.app" not in source


def test_ray_data_chatter_stays_in_its_log_and_no_epoch_line_is_folded_away():
    """Both are read when Ray is imported, and stages import Ray (Ray Data with `ray.train`) before
    they start it: `ray_jobs` sets them first, for every stage, unless the user has."""
    code = (
        "import logging, ray_jobs.prepare, ray.train\n"
        "from ray._private import ray_constants\n"
        "levels = {type(h).__name__: h.level for h in logging.getLogger('ray.data').handlers}\n"
        "print(levels['PlainRayHandler'] == logging.WARNING, ray_constants.RAY_DEDUP_LOGS)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_DATA_LOGGING_CONFIG", "RAY_DEDUP_LOGS")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=Path(pipeline.__file__).parents[1])
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]


def test_from_scratch_and_init_from_contradict(capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipeline.main(["--from-scratch", "--init-from", "pretrained/regnetx_002-64"])
    assert exit_info.value.code == 2 and "contradict" in capsys.readouterr().err


def test_settings_come_from_a_yaml_file_and_unknown_keys_are_refused(tmp_path, capsys):
    config = tmp_path / "main.yaml"
    config.write_text("preset: smoke\nfrom_scratch: true\ninit_from: pretrained/regnetx_002-64\n")
    with pytest.raises(SystemExit):
        pipeline.main(["--config", str(config)])
    assert "contradict" in capsys.readouterr().err
    config.write_text("presett: smoke\n")
    with pytest.raises(SystemExit) as exit_info:
        pipeline.run(pipeline.main, ["--config", str(config)])
    assert exit_info.value.code == 2 and "unknown key(s)" in capsys.readouterr().err
