"""prepare → Ray Train (2 workers, CPU) → checkpoint → evaluate, on a tiny synthetic set."""

import json

import numpy as np
import pytest

from cvcore import engine, prepared
from cvcore.errors import CheckpointError, UserError
from cvcore.model import load_model, read_meta
from cvcore.evaluation import EvaluateConfig, evaluate, predict_split
from ray_jobs import prepare, train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # Ray's tests run one after another: tests/conftest.py
TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]


@pytest.fixture(scope="module")
def prepared_dir(tiny_dataset, tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("prepared")
    prepare.prepare(tiny_dataset, out, size=48, targets=TARGETS)
    return out


@pytest.fixture(scope="module")
def trained(prepared_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("train_out")
    cfg = engine.TrainConfig(backbone="resnet10t", image_size=32, epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0.5)
    result = train.train(prepared_dir, output, cfg, num_workers=2, cpus_per_worker=1)
    return output, cfg, result


def test_prepare_skips_and_lists_the_corrupt_image(prepared_dir):
    manifest = prepared.read_manifest(prepared_dir)
    assert [row["filename"] for row in manifest["skipped_images"]] == ["corrupt.jpg"]
    assert sum(manifest["counts"].values()) == 80
    assert manifest["size"] == 48 and manifest["targets"] == ["perspective_score_hood", "perspective_score_backdoor_left"]
    images, labels, aspect, names = prepared.load_split(prepared_dir, "train", manifest["targets"])
    assert images.shape[1:] == (48, 48, 3) and labels.shape == (len(names), 2) and (aspect > 0).all()


def test_prepare_refuses_a_folder_holding_other_data(prepared_dir, tiny_dataset):
    with pytest.raises(UserError, match="another prepared data set"):
        prepare.prepare(tiny_dataset, prepared_dir, size=32)


def test_training_reports_every_epoch_and_loss_goes_down(trained):
    _, cfg, result = trained
    history = result["history"]
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for key in ("val_mae", "val_rmse", "val_r2", "val_within_0.1", "val_mae_perspective_score_hood", "images_per_s", "val_loss"):
        assert key in history[0]


def test_best_checkpoint_is_self_describing_and_predicts(trained, tiny_dataset):
    output, cfg, result = trained
    meta = read_meta(output / "best")
    assert meta["backbone"] == "resnet10t" and meta["image_size"] == 32 and meta["aux_targets"] == []
    assert meta["metrics"]["val_mae"] == pytest.approx(result["best"]["val_mae"])
    assert meta["training_config"]["batch_size"] == 8 and meta["data"]["content_hash"]
    predictor = load_model(output / "best")
    scores = predictor.predict(sorted((tiny_dataset / "imgs").glob("car_*.jpg"))[:3])
    assert scores.shape == (3, 2) and (scores >= 0).all() and (scores <= 1).all()
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))


def test_evaluate_writes_metrics_and_report(trained, prepared_dir, tmp_path):
    output, _, _ = trained
    metrics = evaluate(EvaluateConfig(str(output / "best"), str(prepared_dir), str(tmp_path), split="val"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "val" and saved["n"] == metrics["n"] > 0 and saved["decisions"]["accept"] == 0.5
    assert set(saved["mean"]) >= {"mae", "rmse", "r2"}
    assert set(saved["targets"]) == {"perspective_score_hood", "perspective_score_backdoor_left"}
    assert (tmp_path / "report.html").is_file() and list(tmp_path.glob("*.png"))


def test_checkpoint_for_other_targets_is_refused(trained, prepared_dir, tmp_path):
    output, _, _ = trained
    meta_path = output / "best" / "model.json"
    original = meta_path.read_text()
    try:
        meta = json.loads(original)
        meta["targets"] = ["perspective_score_tailgate", "perspective_score_spoiler"]  # no such parts; as many head rows as before
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="predicts perspective_score_tailgate, perspective_score_spoiler, and the data have none"):
            evaluate(EvaluateConfig(str(output / "best"), str(prepared_dir), str(tmp_path)))
    finally:
        meta_path.write_text(original)


def test_serving_a_raw_photo_reproduces_what_training_and_evaluation_saw(trained, prepared_dir, tiny_dataset):
    """Trained at 32 px on pixels prepared at 48: the checkpoint records it, and the Predictor's
    input from the raw photo is the prepared array resized as training resized it."""
    output, _, _ = trained
    predictor = load_model(output / "best")
    assert predictor.spec.prepared_size == 48 and predictor.image_size == 32
    stored, _, _, names = prepared.load_split(prepared_dir, "val", [])
    as_evaluated = predict_split(predictor, prepared_dir, "val")
    from_photos = predictor.predict([tiny_dataset / "imgs" / name for name in names], batch_size=len(names))
    assert as_evaluated.filenames == names
    assert np.array_equal(np.stack([predictor.preprocess(tiny_dataset / "imgs" / n) for n in names]), as_evaluated.images)
    assert np.allclose(from_photos, as_evaluated.predictions, atol=1e-6)


def test_resuming_a_run_with_another_backbone_is_refused(trained, prepared_dir):
    output, cfg, _ = trained
    other = engine.TrainConfig(backbone="resnet18", image_size=32, epochs=1, batch_size=8)
    with pytest.raises(CheckpointError, match="resnet10t, but resnet18"):
        train.train(prepared_dir, output, other, num_workers=1, cpus_per_worker=1)


def test_workers_that_cannot_fit_the_cluster_are_refused(prepared_dir, tmp_path):
    cfg = engine.TrainConfig(backbone="resnet10t", image_size=32, epochs=1, batch_size=8)
    with pytest.raises(UserError, match="do not fit this cluster"):
        train.train(prepared_dir, tmp_path, cfg, num_workers=3, cpus_per_worker=1)


def test_unknown_target_or_auxiliary_columns_are_refused(prepared_dir, tmp_path):
    cfg = engine.TrainConfig(backbone="resnet10t", image_size=32, epochs=1, batch_size=8)
    with pytest.raises(UserError, match=r"target column\(s\) not in the data: perspective_score_nope;"):
        train.train(prepared_dir, tmp_path, cfg, num_workers=1, cpus_per_worker=1, targets=["perspective_score_nope"])
    cfg.aux_columns = ["camera_tilt"]
    with pytest.raises(UserError, match=r"auxiliary column\(s\) not in the data: camera_tilt;"):
        train.train(prepared_dir, tmp_path, cfg, num_workers=1, cpus_per_worker=1, targets=TARGETS)
