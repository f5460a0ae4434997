"""The regressor and its checkpoint: self-describing, loads without pickle, refuses what does not fit."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from cvcore.errors import CheckpointError
from cvcore.model import (
    ModelSpec,
    build_model,
    check_compatible,
    load_model,
    read_meta,
    save_checkpoint,
    without_aux,
)

TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]
BACKBONE = "resnet10t"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelSpec(BACKBONE, TARGETS, 32, aux_targets=["camera_elevation"])).eval()


def _batch(n=3, size=32):
    return torch.rand(n, 3, size, size)


def test_outputs_cover_main_and_auxiliary_targets_and_scores_are_bounded(model):
    raw = model(_batch())
    assert raw.shape == (3, 3)
    scores = model.scores(_batch() * 10 - 5)
    assert scores.shape == (3, 2) and scores.min() >= 0 and scores.max() <= 1


def test_checkpoint_round_trip_predicts_the_same(tmp_path, model):
    slim = without_aux(model)
    images = _batch()
    assert torch.allclose(slim.scores(images), model.scores(images), atol=1e-6)
    save_checkpoint(tmp_path, slim, metrics={"val_mae": 0.1})
    meta = read_meta(tmp_path)
    assert meta["backbone"] == BACKBONE and meta["targets"] == TARGETS and meta["image_size"] == 32
    assert meta["aux_targets"] == [] and meta["metrics"] == {"val_mae": 0.1}
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3
    predictor = load_model(tmp_path)
    arrays = (images.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    expected = slim.scores(torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255).numpy()
    assert np.allclose(predictor.predict(list(arrays)), expected, atol=1e-6)


def test_predict_takes_files_and_pil_images(tmp_path, model):
    save_checkpoint(tmp_path / "ckpt", without_aux(model))
    predictor = load_model(tmp_path / "ckpt")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    image.save(tmp_path / "car.png")
    from_file, from_pil = predictor.predict([tmp_path / "car.png"]), predictor.predict([image])
    assert from_file.shape == (1, 2) and np.allclose(from_file, from_pil, atol=1e-6)
    assert predictor.predict([]).shape == (0, 2)


def test_a_train_output_folder_loads_its_best_checkpoint(tmp_path, model):
    save_checkpoint(tmp_path / "best", without_aux(model))
    assert load_model(tmp_path).targets == TARGETS


def test_missing_or_corrupt_checkpoints_are_refused_clearly(tmp_path, model):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="needs model.safetensors and model.json"):
        load_model(tmp_path / "empty")
    save_checkpoint(tmp_path / "bad_json", model)
    (tmp_path / "bad_json" / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "bad_json")
    save_checkpoint(tmp_path / "bad_weights", model)
    (tmp_path / "bad_weights" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "bad_weights")


def test_weights_that_do_not_fit_the_description_are_refused(tmp_path, model):
    save_checkpoint(tmp_path, model)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["targets"] = ["perspective_score_hood"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path)
    meta["backbone"] = "no_such_net"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown backbone"):
        load_model(tmp_path)


def test_check_compatible_names_both_sides():
    spec = ModelSpec(BACKBONE, TARGETS, 32)
    check_compatible(spec, backbone=BACKBONE, targets=TARGETS)
    with pytest.raises(CheckpointError, match="resnet10t, but resnet18"):
        check_compatible(spec, backbone="resnet18")
    with pytest.raises(CheckpointError, match="predicts"):
        check_compatible(spec, targets=["perspective_score_hood"])


def test_pretrained_weights_come_from_a_local_file_and_the_head_is_swapped(tmp_path):
    torch.manual_seed(1)
    imagenet_like = timm.create_model(BACKBONE, num_classes=10)
    save_file({k: v.contiguous() for k, v in imagenet_like.state_dict().items()}, tmp_path / "weights.safetensors")
    model = build_model(ModelSpec(BACKBONE, TARGETS, 32), init_from=tmp_path / "weights.safetensors")
    stem = "conv1.0.weight"
    assert torch.equal(model.net.state_dict()[stem], imagenet_like.state_dict()[stem])
    assert model.net.get_classifier().out_features == 2
    with pytest.raises(CheckpointError, match="not found"):
        build_model(ModelSpec(BACKBONE, TARGETS, 32), init_from=tmp_path / "missing.pth")


def test_fine_tuning_starts_from_our_checkpoint_with_a_new_head(tmp_path, model):
    save_checkpoint(tmp_path, model)
    tuned = build_model(ModelSpec(BACKBONE, ["perspective_score_trunk"], 32), init_from=tmp_path)
    stem = "conv1.0.weight"
    assert torch.equal(tuned.net.state_dict()[stem], model.net.state_dict()[stem])
    assert tuned.net.get_classifier().out_features == 1
    same = build_model(model.spec, init_from=tmp_path)
    assert torch.equal(same.net.get_classifier().weight, model.net.get_classifier().weight)
    with pytest.raises(CheckpointError, match="resnet10t, but resnet18"):
        build_model(ModelSpec("resnet18", TARGETS, 32), init_from=tmp_path)


def test_freeze_backbone_trains_only_the_head():
    model = build_model(ModelSpec(BACKBONE, TARGETS, 32), freeze_backbone=True)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("net.fc.") for name in trainable)
