"""The regressor and its checkpoint: self-describing, loads without pickle, refuses what does not fit."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cvcore.errors import CheckpointError
from cvcore.model import (
    ModelSpec,
    build_model,
    check_compatible,
    choose_head,
    for_serving,
    load_model,
    read_meta,
    save_checkpoint,
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
    slim = for_serving(model)
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
    save_checkpoint(tmp_path / "ckpt", for_serving(model))
    predictor = load_model(tmp_path / "ckpt")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    image.save(tmp_path / "car.png")
    from_file, from_pil = predictor.predict([tmp_path / "car.png"]), predictor.predict([image])
    assert from_file.shape == (1, 2) and np.allclose(from_file, from_pil, atol=1e-6)
    assert predictor.predict([]).shape == (0, 2)


def test_a_train_output_folder_loads_its_best_checkpoint(tmp_path, model):
    save_checkpoint(tmp_path / "best", for_serving(model))
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
    meta["backbone"] = "no_such_net"  # refused when model.json is read, before any network is built
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="backbone 'no_such_net' is not a timm architecture name"):
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


def test_decomposed_head_outputs_the_product_of_its_factors(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(BACKBONE, TARGETS, 32, aux_targets=["camera_elevation"], head="decomposed")
    assert spec.factors == [
        "visible_fraction_hood", "visible_fraction_backdoor_left", "facing_hood", "facing_backdoor_left"
    ]  # fmt: skip
    assert spec.head_outputs == [*spec.factors, "camera_elevation"]
    model = build_model(spec).eval()
    assert model.net.get_classifier().out_features == 5
    out = model(_batch())
    assert out.shape == (3, len(spec.outputs)) == (3, 7)
    visible, facing = out[:, 2:4], out[:, 4:6]
    assert torch.allclose(out[:, :2], visible * facing) and visible.min() > 0 and facing.max() < 1
    save_checkpoint(tmp_path, for_serving(model))
    predictor = load_model(tmp_path)
    assert predictor.factors == spec.factors and predictor.spec.aux_targets == []
    arrays = (_batch().permute(0, 2, 3, 1) * 255).byte().numpy()
    scores, factors = predictor.explain_arrays(arrays)
    assert np.allclose(scores, factors[:, :2] * factors[:, 2:], atol=1e-6)
    with pytest.raises(CheckpointError, match="decomposed head needs"):
        ModelSpec(BACKBONE, ["hood_angle"], 32, head="decomposed")


def test_segmentation_head_predicts_part_logits_at_a_quarter_of_the_input():
    model = build_model(ModelSpec(BACKBONE, TARGETS, 64, mask_classes=24)).eval()
    images = _batch(2, 64)
    out, masks = model(images, with_masks=True)
    assert out.shape == (2, 2) and masks.shape == (2, 24, 16, 16)
    assert torch.allclose(out, model(images), atol=1e-6)  # the same outputs with or without masks
    with pytest.raises(ValueError, match="no segmentation head"):
        build_model(ModelSpec(BACKBONE, TARGETS, 64))(_batch(1, 64), with_masks=True)


def test_fine_tuning_keeps_head_rows_by_output_name_and_drops_the_segmentation_head(tmp_path):
    torch.manual_seed(0)
    wide = ["perspective_score_trunk", *TARGETS]
    pretrained = build_model(ModelSpec(BACKBONE, wide, 32, aux_targets=["pose_elevation"], head="decomposed", mask_classes=24))
    save_checkpoint(tmp_path, pretrained, half=True)
    assert all(t.dtype == torch.float16 for t in load_file(tmp_path / "model.safetensors").values() if t.is_floating_point())
    tuned = build_model(ModelSpec(BACKBONE, TARGETS, 32, head="decomposed"), init_from=tmp_path).eval()
    assert tuned.seg_head is None
    source_rows = pretrained.spec.head_outputs
    weight, source_weight = tuned.net.get_classifier().weight, pretrained.net.get_classifier().weight
    for i, name in enumerate(tuned.spec.head_outputs):
        assert torch.allclose(weight[i], source_weight[source_rows.index(name)].half().float())
    images = _batch()
    assert torch.allclose(tuned(images)[:, :2], pretrained.eval()(images)[:, 1:3], atol=2e-2)  # float16 storage


def test_auto_head_is_decomposed_when_the_factors_can_be_learned_or_inherited():
    factors = ["visible_fraction_hood", "visible_fraction_backdoor_left", "facing_hood", "facing_backdoor_left"]
    assert choose_head("auto", TARGETS, TARGETS) == "direct"
    assert choose_head("auto", TARGETS, [*TARGETS, *factors]) == "decomposed"
    pretrained = ModelSpec(BACKBONE, ["perspective_score_trunk", *TARGETS], 32, head="decomposed")
    assert choose_head("auto", TARGETS, TARGETS, pretrained) == "decomposed"
    assert choose_head("auto", ["hood_angle"], ["hood_angle"], pretrained) == "direct"
    assert choose_head("direct", TARGETS, [*TARGETS, *factors]) == "direct"
    with pytest.raises(CheckpointError, match="unknown head"):
        choose_head("both", TARGETS, TARGETS)
