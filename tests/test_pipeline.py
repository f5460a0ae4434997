"""The main job end to end on the smoke preset: synthesise → … → serve answers a real HTTP request."""

import pytest

from ray_jobs import pipeline

pytestmark = pytest.mark.slow


def test_smoke_pipeline_runs_every_stage(tmp_path, monkeypatch, ray_session, free_port):
    from ray import serve

    monkeypatch.chdir(tmp_path)
    try:
        result = pipeline.pipeline(None, tmp_path / "run", pipeline.PRESETS["smoke"], port=free_port())
    finally:
        serve.shutdown()
    assert (tmp_path / "data" / "synthetic-120" / "car_imgs_4000.csv").is_file()
    assert set(result["metrics"]["targets"]) == {"perspective_score_hood", "perspective_score_backdoor_left"}
    assert (tmp_path / "run" / "report" / "report.html").is_file()
    assert (tmp_path / "run" / "tune" / "tune_summary.csv").is_file()
    assert (tmp_path / "run" / "train" / "best" / "model.safetensors").is_file()
    assert set(result["response"]["scores"]) == {"perspective_score_hood", "perspective_score_backdoor_left"}


def test_from_scratch_and_init_from_contradict(capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipeline.main(["--from-scratch", "--init-from", "pretrained/regnetx_002-64"])
    assert exit_info.value.code == 2 and "contradict" in capsys.readouterr().err
