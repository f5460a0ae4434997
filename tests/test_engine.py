"""Training engine pieces that decide label correctness: flips, augmentation geometry, loss."""

import numpy as np
import pytest
import torch

from cvcore import engine


def test_side_swap_plan_swaps_pairs_and_masks_what_cannot_be_mirrored():
    columns = ["perspective_score_hood", "perspective_score_backdoor_left", "perspective_score_backdoor_right",
               "facing_frontdoor_left", "camera_azimuth", "camera_elevation"]
    source, masked = engine.side_swap_plan(columns)
    assert source == [0, 2, 1, 3, 4, 5]
    assert masked == [False, False, False, True, True, False]


def test_apply_flip_swaps_labels_and_masks_only_flipped_rows():
    plan = engine.side_swap_plan(["hood", "door_left", "door_right", "mirror_left"])
    targets = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    weights = torch.ones(2, 4)
    flipped = torch.tensor([True, False])
    new_targets, new_weights = engine.apply_flip(targets, weights, flipped, plan)
    assert new_targets[0].tolist() == pytest.approx([0.1, 0.3, 0.2, 0.4])
    assert new_weights[0].tolist() == [1, 1, 1, 0]
    assert torch.equal(new_targets[1], targets[1]) and new_weights[1].tolist() == [1, 1, 1, 1]


def _letterboxed(aspect: float, size: int = 64) -> torch.Tensor:
    """A white photo letterboxed into a black square frame, uint8 NCHW."""
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    if aspect >= 1:
        h = round(size / aspect)
        top = (size - h) // 2
        image[..., top : top + h, :] = 255
    else:
        w = round(size * aspect)
        left = (size - w) // 2
        image[..., :, left : left + w] = 255
    return image


@pytest.mark.parametrize("aspect", [1.5, 0.75, 1.0])
def test_augment_geometry_never_pushes_the_photo_out_of_the_frame(aspect):
    """A crop would cut the part and make its label wrong: shifts and flips must keep every pixel."""
    cfg = engine.AugmentConfig(zoom_out=0.0, color_jitter=0.0, blur_prob=0.0, jpeg_prob=0.0, flip=True)
    image = _letterboxed(aspect).repeat(16, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    out, flipped, _ = engine.augment(image, torch.full((16,), aspect), cfg, generator)
    before = image.float().div(255).sum(dim=(1, 2, 3))
    after = out.sum(dim=(1, 2, 3))
    assert torch.allclose(after, before, rtol=0.03)
    assert 0 < flipped.sum() < 16


def test_augment_zoom_out_shrinks_without_losing_the_photo():
    cfg = engine.AugmentConfig(zoom_out=0.3, color_jitter=0.0, blur_prob=0.0, jpeg_prob=0.0, flip=False)
    image = _letterboxed(1.5).repeat(32, 1, 1, 1)
    out = engine.augment(image, torch.full((32,), 1.5), cfg, torch.Generator().manual_seed(1)).images
    # The photo occupies at least (1 - 0.3)^2 of its area and never touches the frame's edge rows/columns
    # unless it already spanned them (the width, at aspect 1.5).
    ratio = out.sum(dim=(1, 2, 3)) / image.float().div(255).sum(dim=(1, 2, 3))
    assert (ratio > 0.45).all() and (ratio < 1.03).all()
    assert out[..., 0, :].max() < 0.6 and out[..., -1, :].max() < 0.6


def test_color_jitter_leaves_the_letterbox_padding_black():
    cfg = engine.AugmentConfig(zoom_out=0.0, color_jitter=0.5, blur_prob=0.0, jpeg_prob=0.0, flip=False)
    image = (_letterboxed(2.0) // 2).repeat(8, 1, 1, 1)
    out = engine.augment(image, torch.full((8,), 2.0), cfg, torch.Generator().manual_seed(2)).images
    top_band = out[..., :8, :]
    assert top_band.abs().max() < 0.02


def test_augment_strength_zero_is_identity():
    image = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out, flipped, _ = engine.augment(image, torch.ones(4), engine.AugmentConfig(strength=0), torch.Generator())
    assert torch.allclose(out, image.float() / 255) and not flipped.any()


def test_loss_ignores_saturated_outputs_and_unknown_labels():
    pred = torch.tensor([[-0.5, 0.5, 1.4]])
    target = torch.tensor([[0.0, float("nan"), 1.0]])
    weight = torch.ones(1, 3)
    for kind in ("mse", "l1", "huber"):
        assert engine.regression_loss(pred, target, weight, kind).item() == 0.0
    pred = torch.tensor([[0.3, 0.5]])
    target = torch.tensor([[0.0, 0.5]])
    assert engine.regression_loss(pred, target, torch.ones(1, 2), "mse").item() == pytest.approx(0.09 / 2)
    assert engine.regression_loss(pred, target, torch.tensor([[0.0, 1.0]]), "l1").item() == 0.0
    with pytest.raises(ValueError, match="unknown loss"):
        engine.regression_loss(pred, target, torch.ones(1, 2), "hinge")


def test_loader_gives_every_rank_the_same_number_of_steps_and_reshuffles():
    images = np.zeros((50, 8, 8, 3), np.uint8)
    labels = np.arange(50, dtype=np.float32)[:, None]
    loader = engine.ArrayLoader(images, labels, np.ones(50, np.float32), 8, shuffle=True, steps=5, seed=3)
    first = [batch[1].flatten().tolist() for batch in loader]
    second = [batch[1].flatten().tolist() for batch in loader]
    assert len(first) == len(second) == 5 and first != second
    assert len({v for batch in first for v in batch}) == 40
    evaluation = engine.ArrayLoader(images, labels, np.ones(50, np.float32), 16, shuffle=False)
    assert sum(len(b[0]) for b in evaluation) == 50


def test_warmup_cosine_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = engine.warmup_cosine(optimizer, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert lrs[-1] < 0.05 and all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"backbone": "resnet_nine"}, "'resnet_nine' is not a timm model name"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"backbone_lr_scale": 0.0}, r"backbone_lr_scale must be in \(0, 10\]"),
        ({"step": engine.StepConfig(loss="hinge")}, "loss must be one of mse, l1, huber"),
    ],
)
def test_train_config_refuses_values_every_run_would_fail_on(change, message):
    from dataclasses import replace

    from cvcore.errors import UserError

    engine.TrainConfig().check()
    with pytest.raises(UserError, match=message):
        replace(engine.TrainConfig(), **change).check("cfg")


def test_the_budget_schedule_ends_where_this_runs_pace_reaches_the_budget():
    """A continuation whose earlier epochs were faster: 60 minutes left at 5 per epoch are 12 more epochs."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = engine.warmup_cosine(optimizer, 0, 10_000)
    engine.fit_schedule_to_budget(scheduler, 100, 40, epochs_done=21, max_epochs=1000, steps_per_epoch=10, minutes_per_epoch=5)
    assert scheduler.lr_lambdas[0].total_steps == (21 + 12) * 10
    engine.fit_schedule_to_budget(scheduler, 100, 40, epochs_done=21, max_epochs=25, steps_per_epoch=10, minutes_per_epoch=5)
    assert scheduler.lr_lambdas[0].total_steps == 25 * 10
