"""Synthetic pretraining: dense labels, the exact flip, the streamed Ray Data source, fine-tuning from it."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from cvcore import engine, training
from cvcore.config import from_dict, run
from cvcore import pretrain as dense
from cvcore.model import ModelSpec, build_model, load_model, read_meta
from cvcore.synth import PARTS, Camera, random_scene, render_scene
from cvcore.presets import SHIPPED_BACKBONE as SHIPPED
from ray_jobs import pretrain as pretrain_job
from ray_jobs import train as train_job

pytestmark = pytest.mark.xdist_group("ray")  # Ray's tests run one after another: tests/conftest.py

BACKBONE = "resnet10t"


def test_dense_labels_cover_every_part_factor_and_pose():
    spec = dense.pretrain_spec(BACKBONE, 32)
    assert spec.targets[:2] == ["perspective_score_hood", "perspective_score_backdoor_left"]
    assert len(spec.targets) == len(PARTS) and len(spec.factors) == 2 * len(PARTS)
    assert spec.aux_targets == dense.POSE_COLUMNS and spec.mask_classes == len(PARTS) + 1
    batch = dense.render_batch(np.arange(4), seed=3, columns=spec.outputs, image_size=32, render_size=(80, 60))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["mask"].shape == (4, 32, 32)
    assert batch["labels"].shape == (4, len(spec.outputs)) and np.allclose(batch["aspect"], 80 / 60)
    labels = batch["labels"]
    n = len(PARTS)
    score, visible, facing = labels[:, :n], labels[:, n : 2 * n], labels[:, 2 * n : 3 * n]
    product = visible * facing
    assert np.allclose(np.where(product < 0.02, 0, product), score, atol=1e-3)  # the labels' own definition
    pose = labels[:, 3 * n :]
    assert pose.min() >= 0 and pose.max() <= 1
    assert batch["mask"].max() <= len(PARTS) and (batch["mask"] > 0).any()
    letterbox_rows = batch["mask"][:, :4]  # 80x60 letterboxed into a square leaves bands at top and bottom
    assert not letterbox_rows.any()


def _mirrored(camera: Camera) -> Camera:
    """The same camera reflected in the car's plane of symmetry (y -> -y)."""
    flip = np.array([1.0, -1.0, 1.0])
    return dataclasses.replace(
        camera,
        position=tuple(np.asarray(camera.position) * flip),
        target=tuple(np.asarray(camera.target) * flip),
        roll_deg=-camera.roll_deg,
        shift=(-camera.shift[0], camera.shift[1]),
    )


@pytest.mark.parametrize("index", [0, 1, 2])
def test_the_flip_is_exact_on_renders(index):
    """A mirrored photo is the photo from the mirrored camera: labels swap sides, mask ids mirror."""
    scene = random_scene(np.random.default_rng([7, index]), width=120, height=90)
    seen = render_scene(scene.car, scene.camera)
    mirrored = render_scene(scene.car, _mirrored(scene.camera))
    spec = dense.pretrain_spec(BACKBONE, 32)
    columns = spec.outputs
    labels = torch.from_numpy(dense.dense_labels(seen.labels, columns))[None]
    expected = torch.from_numpy(dense.dense_labels(mirrored.labels, columns))[None]
    flipped, weights = engine.apply_flip(labels, torch.ones_like(labels), torch.tensor([True]), engine.side_swap_plan(columns))
    known = weights[0] > 0
    assert known.sum() == len(columns) - 1  # only the azimuth's sine is unknown after a flip
    assert torch.allclose(flipped[0][known], expected[0][known], atol=0.03)
    mask = dense.mask_mirror()[torch.from_numpy(np.ascontiguousarray(seen.mask[:, ::-1])).long()]
    agree = (mask.numpy() == mirrored.mask).mean()
    assert agree > 0.99


def test_augment_moves_masks_with_the_pixels():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[:, :, 8:16, 4:12] = 255
    masks = torch.zeros(2, 32, 32, dtype=torch.uint8)
    masks[:, 8:16, 4:12] = 5
    cfg = engine.AugmentConfig(color_jitter=0, blur_prob=0, jpeg_prob=0, zoom_out=0.3)
    out = engine.augment(images, torch.ones(2), cfg, torch.Generator().manual_seed(0), masks)
    bright = out.images.mean(dim=1) > 0.5
    assert torch.equal(bright, out.masks == 5)
    assert set(out.masks.unique().tolist()) <= {0, 5}


def test_a_training_step_with_masks_lowers_the_loss():
    torch.manual_seed(0)
    spec = dense.pretrain_spec(BACKBONE, 32)
    batch = dense.render_batch(np.arange(8), seed=1, columns=spec.outputs, image_size=32, render_size=(80, 60))
    model = build_model(spec)
    tensors = tuple(torch.from_numpy(batch[k]) for k in ("image", "labels", "aspect", "mask"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = engine.warmup_cosine(optimizer, 0, 100)
    masks = engine.MaskSupervision(0.3, dense.mask_mirror())
    args = (optimizer, scheduler, dense.output_weights(spec, 0.1), engine.side_swap_plan(spec.outputs),
            engine.AugmentConfig(strength=0), engine.StepConfig(), torch.device("cpu"), torch.Generator())  # fmt: skip
    first = engine.train_one_epoch(model, [tensors], *args, masks)["train_loss"]
    for _ in range(15):
        last = engine.train_one_epoch(model, [tensors], *args, masks)["train_loss"]
    assert last < 0.7 * first


TINY = dict(backbone="test_resnet", image_size=32, render_width=64, render_height=48, batch_size=8, images_per_epoch=8, val_images=8, warmup_images=8)


def stream_from(cfg: dense.PretrainConfig, start: int):
    """The render stream a Ray Data source gives a single worker, from image `start` on."""
    spec = dense.pretrain_spec(cfg.backbone, cfg.image_size)
    for first in range(start, cfg.images, cfg.batch_size):
        yield dense.render_batch(np.arange(first, first + cfg.batch_size), seed=cfg.seed, columns=spec.outputs,
                                 image_size=cfg.image_size, render_size=(cfg.render_width, cfg.render_height))  # fmt: skip


def test_a_pretraining_continues_with_its_optimizer_schedule_and_stream_position(tmp_path):
    """Without Ray: two epochs, then a continuation from the last checkpoint to three; images_seen goes on."""
    cfg = dense.PretrainConfig(**TINY, images=16)
    spec = dense.pretrain_spec(cfg.backbone, cfg.image_size)
    val = dense.render_batch(np.arange(8), seed=99, columns=spec.outputs, image_size=32, render_size=(64, 48))
    hooks = training.DirectoryHooks(tmp_path)
    first = dense.pretrain_worker(cfg, stream_from(cfg, 0), val, hooks, torch.device("cpu"))
    assert first.images_seen == 16 and first.step == 2
    last = dense.resume_point(tmp_path / "checkpoint_000002")
    assert read_meta(last)["images_seen"] == 16 and training.has_training_state(last)
    more = dataclasses.replace(cfg, images=24)
    resumed = dense.pretrain_worker(more, stream_from(more, 16), val, hooks, torch.device("cpu"), resume=last)
    assert [(r["epoch"], r["images_seen"]) for r in hooks.reports] == [(1, 8), (2, 16), (3, 24)]
    assert resumed.step == 3 and resumed.images_seen == 24


def test_replay_trains_on_recent_renders_again_and_counts_each_render_once(tmp_path):
    """replay=2: each rendered batch is followed by two drawn from the last ones; epochs, images_seen and
    the stream position count renders, the schedule counts optimizer steps."""
    batches = [(torch.full((1,), i),) for i in range(6)]
    drawn = [int(batch[0]) for batch in dense.replayed(iter(batches), 2, 2, seed=0)]
    groups = [drawn[i : i + 3] for i in range(0, len(drawn), 3)]
    assert [g[0] for g in groups] == list(range(6)) and all(set(g[1:]) <= {i - 1, i} - {-1} for i, g in enumerate(groups))
    assert len({tuple(g[1:]) for g in groups}) > 1  # drawn, not a fixed pattern

    cfg = dense.PretrainConfig(**TINY, images=16, replay=2, replay_window=16)
    spec = dense.pretrain_spec(cfg.backbone, cfg.image_size)
    val = dense.render_batch(np.arange(8), seed=99, columns=spec.outputs, image_size=32, render_size=(64, 48))
    rendered = []

    def counted(stream):
        for batch in stream:
            rendered.append(len(batch["image"]))
            yield batch

    hooks = training.DirectoryHooks(tmp_path)
    first = dense.pretrain_worker(cfg, counted(stream_from(cfg, 0)), val, hooks, torch.device("cpu"))
    assert sum(rendered) == 16 and first.images_seen == 16 and first.step == 6
    assert [(r["epoch"], r["images_seen"]) for r in hooks.reports] == [(1, 8), (2, 16)]
    more = dataclasses.replace(cfg, images=24)
    resumed = dense.pretrain_worker(more, counted(stream_from(more, 16)), val, hooks, torch.device("cpu"),
                                    resume=dense.resume_point(tmp_path / "checkpoint_000002"))  # fmt: skip
    assert sum(rendered) == 24 and resumed.images_seen == 24 and resumed.step == 9


@pytest.mark.slow
def test_the_shipped_backbone_continues_from_the_images_it_has_seen(tmp_path):
    """The shipped form (float16 weights + model.json, no optimizer state) still continues: weights and stream position."""
    seen = dense.images_seen(SHIPPED)
    assert seen == read_meta(SHIPPED)["metrics"]["images_seen"] > 0
    cfg = dense.PretrainConfig(**{**TINY, "backbone": "regnetx_002", "image_size": 64, "render_width": 160, "render_height": 120}, images=seen + 8)
    spec = dense.pretrain_spec(cfg.backbone, cfg.image_size)
    val = dense.render_batch(np.arange(16), seed=99, columns=spec.outputs, image_size=64, render_size=(160, 120))
    hooks = training.DirectoryHooks(tmp_path)
    state = dense.pretrain_worker(cfg, stream_from(cfg, seen), val, hooks, torch.device("cpu"), resume=SHIPPED)
    assert state.images_seen == seen + 8 and [r["images_seen"] for r in hooks.reports] == [seen + 8]
    assert hooks.reports[0]["val_mae"] < 0.25  # the shipped weights (0.19 on these 16 renders), not a fresh network (0.32)


@pytest.fixture(scope="module")
def pretrained(ray_session, tmp_path_factory):
    """A tiny pretraining run on the streamed source (Ray Data renders, Ray Train consumes)."""
    output = tmp_path_factory.mktemp("pretrain")
    cfg = dense.PretrainConfig(
        backbone=BACKBONE, image_size=32, render_width=64, render_height=48, batch_size=16,
        images=96, images_per_epoch=32, val_images=16, warmup_images=16,
    )  # fmt: skip
    result = pretrain_job.pretrain(output, cfg, cpus_per_worker=1, render_cpus=0.5)
    return output, result


def test_pretraining_streams_renders_and_exports_a_self_describing_checkpoint(pretrained):
    output, result = pretrained
    history = result["history"]
    assert [h["images_seen"] for h in history] == [32, 64, 96]  # every streamed image seen once
    assert all(0 <= h["data_wait_share"] <= 1 for h in history)
    meta = read_meta(output / "best")
    assert meta["backbone"] == BACKBONE and meta["head"] == "decomposed" and meta["mask_classes"] == len(PARTS) + 1
    assert meta["metrics"]["images_seen"] in (32, 64, 96) and meta["pretrain_config"]["images"] == 96
    predictor = load_model(output / "best")
    scores, factors = predictor.explain_arrays(np.zeros((1, 32, 32, 3), np.uint8))
    assert scores.shape == (1, len(PARTS)) and factors.shape == (1, 2 * len(PARTS))


@pytest.mark.slow
def test_pretraining_continues_a_run_directory_where_it_stopped(pretrained, tmp_path):
    output, result = pretrained
    best = output / "best"
    assert training.has_training_state(best) and read_meta(best)["images_seen"] == result["best"]["images_seen"]
    assert (output / "config.yaml").is_file()
    cfg = dense.PretrainConfig(
        backbone=BACKBONE, image_size=32, render_width=64, render_height=48, batch_size=16,
        images=128, images_per_epoch=32, val_images=16, warmup_images=16,
    )  # fmt: skip
    resumed = pretrain_job.pretrain(tmp_path, cfg, cpus_per_worker=1, render_cpus=0.5, resume_from=str(output))
    assert [(h["epoch"], h["images_seen"]) for h in resumed["history"]] == [(4, 128)]  # the 96 seen are not rendered again


def test_pretraining_refuses_a_split_that_starves_the_renderer(ray_session, tmp_path):
    with pytest.raises(Exception, match="stream would stall"):
        pretrain_job.pretrain(tmp_path, dense.PretrainConfig(images=8), cpus_per_worker=2, render_cpus=0.5)


def test_fine_tuning_from_the_pretrained_checkpoint_keeps_its_factor_rows(pretrained, tiny_dataset, tmp_path):
    output, _ = pretrained
    settings = training.inherit_from_checkpoint({"init_from": str(output / "best")})
    assert settings["backbone"] == BACKBONE and settings["image_size"] == 32
    cfg = engine.TrainConfig(**{**settings, "epochs": 1, "batch_size": 16, "aux_columns": []})
    result = train_job.train(tiny_dataset, tmp_path, cfg, cpus_per_worker=1, targets=["perspective_score_hood", "perspective_score_backdoor_left"])
    assert result["history"]
    meta = json.loads((tmp_path / "best" / "model.json").read_text())
    assert meta["head"] == "decomposed" and meta["mask_classes"] == 0 and meta["aux_targets"] == []
    assert meta["training_config"]["init_from"] == str(output / "best")
    assert load_model(tmp_path / "best").factors == [
        "visible_fraction_hood", "visible_fraction_backdoor_left", "facing_hood", "facing_backdoor_left"
    ]  # fmt: skip


def test_the_shipped_backbone_loads_fits_the_current_code_and_knows_the_current_renders():
    """The shipped backbone must have been pretrained on what today's renderer draws: scored again on the
    first of its own held-out renders, drawn now, it matches the validation MAE its model.json records.
    A renderer change without continuing the backbone fails here (pretrained/README.md)."""
    meta = read_meta(SHIPPED)
    spec = dense.pretrain_spec(meta["backbone"], meta["image_size"])
    assert meta["targets"] == spec.targets and meta["aux_targets"] == spec.aux_targets and meta["head"] == "decomposed"
    assert (SHIPPED / "model.safetensors").stat().st_size < 8 * 2**20  # a few MB
    cfg = from_dict(dense.PretrainConfig, {**meta["pretrain_config"], "val_images": 96})
    val = dense.validation_set(cfg)
    scores = load_model(SHIPPED).predict_arrays(val["image"])
    mae = np.abs(scores[:, :2] - val["labels"][:, :2]).mean()
    zeros = np.abs(val["labels"][:, :2]).mean()
    assert mae < meta["metrics"]["val_mae"] + 0.03, f"MAE {mae:.3f} on today's renders, {meta['metrics']['val_mae']:.3f} when pretrained"
    assert mae < 0.75 * zeros  # far from a fresh network (worse than all zeros)
    tuned = build_model(ModelSpec(meta["backbone"], ["perspective_score_hood"], 64, head="decomposed"), init_from=SHIPPED)
    assert tuned.spec.factors == ["visible_fraction_hood", "facing_hood"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--render-size", "160-120"], "expected WIDTHxHEIGHT"),
        (["--render-size", "8x8"], "between 16 and 4096 pixels"),
        (["--render-cpus", "0"], "must be in (0, 64]"),
        (["--images", "0"], "must be a positive integer"),
        (["--replay", "-1"], "must be a non-negative integer"),
        (["--replay-window", "0"], "must be a positive integer"),
        (["--backbone", "no_such_net"], "is not a timm model name"),
        (["--resume-from", "/no/such/run"], "nothing to resume in /no/such/run"),
        (["--resume-from", str(SHIPPED), "--images", "1000"], "raise --images to go on"),
    ],
)
def test_bad_pretraining_requests_exit_2_with_a_message(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run(pretrain_job.main, ["--output", str(tmp_path), *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
