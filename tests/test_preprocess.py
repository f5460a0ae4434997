"""One preprocessing path: what training saw (prepared pixels resized to the model's size) is what
`Predictor` gives a raw photo, whatever form the photo comes in, and old checkpoints keep theirs."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cvcore import prepared
from cvcore.errors import CheckpointError, ImageError
from cvcore.image import decode_image, load_image, preprocess, resize_images
from cvcore.model import ModelSpec, build_model, load_model, save_checkpoint
from tests.photos import write_photo_dataset

TARGETS = ["perspective_score_hood", "perspective_score_backdoor_left"]
PREPARED_SIZE, MODEL_SIZE = 48, 32


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_dataset(tmp_path_factory.mktemp("photos"), 40, seed=5)


@pytest.fixture(scope="module")
def prepared_dir(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepared.prepare(photos, out, size=PREPARED_SIZE)
    return out


def _checkpoint(directory, **spec):
    torch.manual_seed(0)
    save_checkpoint(directory, build_model(ModelSpec("resnet10t", TARGETS, MODEL_SIZE, **spec)))
    return load_model(directory)


def test_every_form_of_a_photo_gets_the_same_input(photos):
    path = sorted((photos / "imgs").glob("*.jpg"))[1]
    from_file = preprocess(path, MODEL_SIZE, prepared_size=PREPARED_SIZE)
    assert from_file.shape == (MODEL_SIZE, MODEL_SIZE, 3) and from_file.dtype == np.uint8
    assert np.array_equal(preprocess(path.read_bytes(), MODEL_SIZE, prepared_size=PREPARED_SIZE), from_file)
    decoded = decode_image(path, draft_size=PREPARED_SIZE)
    assert np.array_equal(preprocess(decoded, MODEL_SIZE, prepared_size=PREPARED_SIZE), from_file)
    assert np.array_equal(preprocess(np.asarray(decoded), MODEL_SIZE, prepared_size=PREPARED_SIZE), from_file)
    # The two steps: letterbox at the prepared size, then training's resize.
    assert np.array_equal(from_file, resize_images(load_image(path, PREPARED_SIZE)[None], MODEL_SIZE)[0])
    # Letterboxing straight to the model's size is another input (what serving did before).
    assert not np.array_equal(from_file, load_image(path, MODEL_SIZE))


def test_raw_photos_through_the_predictor_equal_the_prepared_arrays_of_evaluation(photos, prepared_dir, tmp_path):
    predictor = _checkpoint(tmp_path / "ckpt", prepared_size=PREPARED_SIZE)
    stored, _, _, names = prepared.load_split(prepared_dir, "train", [])
    as_trained = resize_images(stored, MODEL_SIZE)  # what the training loader hands the model
    paths = [photos / "imgs" / name for name in names]
    assert np.array_equal(np.stack([predictor.preprocess(p) for p in paths]), as_trained)
    assert np.array_equal(np.stack([predictor.preprocess(p.read_bytes()) for p in paths]), as_trained)
    from_photos = predictor.predict(paths, batch_size=len(paths))
    assert np.array_equal(from_photos, predictor.predict_arrays(as_trained))
    # A stored array at the prepared size is a photo too: it takes the same resize.
    assert np.array_equal(predictor.preprocess(stored[0]), as_trained[0])


def test_a_checkpoint_without_a_prepared_size_letterboxes_to_its_input_size(photos, tmp_path):
    _checkpoint(tmp_path / "old")
    meta_path = tmp_path / "old" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["prepared_size"], meta["resize"]  # as written before the sizes were recorded
    meta_path.write_text(json.dumps(meta))
    predictor = load_model(tmp_path / "old")
    path = sorted((photos / "imgs").glob("*.jpg"))[1]
    assert np.array_equal(predictor.preprocess(path), load_image(path, MODEL_SIZE))
    meta["resize"] = "nearest"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown resize 'nearest'"):
        load_model(tmp_path / "old")


def test_bad_input_is_an_image_error():
    with pytest.raises(ImageError, match="uint8"):
        preprocess(np.zeros((8, 8), np.float32), MODEL_SIZE)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    with pytest.raises(ImageError, match="truncated or corrupt|not an image"):
        preprocess(buffer.getvalue()[:20], MODEL_SIZE)
