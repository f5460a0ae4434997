"""The regressor and its self-describing checkpoint.

Every backbone is built one way: `timm.create_model(name, num_classes=len(outputs))`. The model
takes float images in [0, 1] (NCHW) and normalises them itself, so the normalisation travels with
the weights and no caller can get it wrong. A checkpoint is a directory holding `model.safetensors`
and `model.json`; loading it never unpickles anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cvcore.errors import CheckpointError
from cvcore.image import letterbox, load_image

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelSpec:
    """What is needed to rebuild the network; stored in `model.json` beside the weights."""

    backbone: str
    targets: list[str]
    image_size: int
    aux_targets: list[str] = field(default_factory=list)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def outputs(self) -> list[str]:
        return [*self.targets, *self.aux_targets]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            backbone=data["backbone"],
            targets=list(data["targets"]),
            image_size=int(data["image_size"]),
            aux_targets=list(data.get("aux_targets", [])),
            mean=tuple(data.get("mean", IMAGENET_MEAN)),
            std=tuple(data.get("std", IMAGENET_STD)),
        )


class PerspectiveModel(nn.Module):
    """A timm backbone whose outputs are perspective scores (main targets first, auxiliary after).

    `forward` returns raw outputs: training on them keeps gradients alive for the half of the
    labels that are exactly 0 (see `engine.regression_loss`). `scores` clamps them to [0, 1],
    which can only reduce the error.
    """

    def __init__(self, spec: ModelSpec, net: nn.Module):
        super().__init__()
        self.spec = spec
        self.net = net
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Main-target scores in [0, 1]."""
        return self(images)[:, : len(self.spec.targets)].float().clamp(0.0, 1.0)


def build_model(
    spec: ModelSpec,
    *,
    init_from: str | os.PathLike | None = None,
    freeze_backbone: bool = False,
) -> PerspectiveModel:
    """Build the regressor, optionally starting from local weights; nothing comes from a hub.

    `init_from` is one of our checkpoint directories (fine-tuning: same backbone, the head is kept
    only if it predicts the same outputs) or a weights file in timm/torchvision format (its
    classifier is dropped when its size differs, as timm does).
    """
    kwargs: dict[str, Any] = {"num_classes": len(spec.outputs)}
    source = Path(init_from) if init_from is not None else None
    if source is not None and not source.exists():
        raise CheckpointError(f"weights to start from not found: {source}")
    if source is not None and source.is_file():
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(source)})
    try:
        net = timm.create_model(spec.backbone, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise CheckpointError(
                f"unknown backbone {spec.backbone!r}; `timm.list_models()` lists the valid names"
            ) from None
        if source is not None:
            raise CheckpointError(f"cannot load {source} into {spec.backbone}: {err}") from None
        raise
    model = PerspectiveModel(spec, net)
    if source is not None and source.is_dir():
        _load_backbone(model, source)
    if freeze_backbone:
        head = _head_names(net)
        for name, param in net.named_parameters():
            param.requires_grad = name in head
    return model


def _head_names(net: nn.Module) -> set[str]:
    head = {id(p) for p in net.get_classifier().parameters()}
    return {name for name, p in net.named_parameters() if id(p) in head}


def _load_backbone(model: PerspectiveModel, directory: Path) -> None:
    """Fine-tuning start: every weight of our checkpoint but a head made for other outputs."""
    source_spec, weights = load_state(directory)
    check_compatible(source_spec, backbone=model.spec.backbone)
    if source_spec.outputs != model.spec.outputs:
        weights = {k: v for k, v in weights.items() if k not in _head_names(model.net)}
    missing, unexpected = model.net.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - _head_names(model.net):
        raise CheckpointError(f"weights in {directory} do not fit {model.spec.backbone}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def without_aux(model: nn.Module) -> PerspectiveModel:
    """The same network with only the main targets' outputs, as exported for serving."""
    bare = unwrap(model)
    if not bare.spec.aux_targets:
        return bare
    slim = build_model(replace(bare.spec, aux_targets=[]))
    head_names = _head_names(bare.net)
    n = len(bare.spec.targets)
    state = {name: t[:n] if name in head_names else t for name, t in bare.net.state_dict().items()}
    slim.net.load_state_dict(state)
    return slim.train(bare.training)


def unwrap(model: nn.Module) -> PerspectiveModel:
    """The bare model inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, **meta: Any) -> Path:
    """Write `model.safetensors` + `model.json`; `meta` (metrics, config, data hash) must be JSON."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bare = unwrap(model)
    tensors = {name: t.detach().cpu().contiguous() for name, t in bare.net.state_dict().items()}
    save_file(tensors, directory / WEIGHTS_FILE)
    document = {"format_version": FORMAT_VERSION, **asdict(bare.spec), **meta}
    (directory / META_FILE).write_text(json.dumps(document, indent=2, default=_json_default))
    return directory


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's `model.json`, with a clear error when the directory is not a checkpoint."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not meta_path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"{directory} is not a checkpoint: it needs {WEIGHTS_FILE} and {META_FILE}"
            + (" (a tune/train output? use its best/ folder)" if (directory / "best").is_dir() else "")
        )
    try:
        meta = json.loads(meta_path.read_text())
        ModelSpec.from_dict(meta)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{meta_path} is corrupt or not ours: {err}") from None
    return meta


def load_state(directory: str | os.PathLike) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    directory = Path(directory)
    spec = ModelSpec.from_dict(read_meta(directory))
    try:
        weights = load_file(directory / WEIGHTS_FILE)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} is corrupt: {err}") from None
    return spec, weights


def load_checkpoint_model(directory: str | os.PathLike) -> PerspectiveModel:
    spec, weights = load_state(directory)
    model = build_model(spec)
    try:
        model.net.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(
            f"weights in {directory} do not fit {spec.backbone} with outputs {spec.outputs}: "
            f"{str(err).splitlines()[0]}"
        ) from None
    return model


def check_compatible(spec: ModelSpec, *, backbone: str | None = None, targets: Sequence[str] | None = None) -> None:
    """Refuse a checkpoint made for another backbone or other targets, naming both sides."""
    if backbone is not None and spec.backbone != backbone:
        raise CheckpointError(f"checkpoint is a {spec.backbone}, but {backbone} was asked for")
    if targets is not None and list(spec.targets) != list(targets):
        raise CheckpointError(f"checkpoint predicts {spec.targets}, but the data has targets {list(targets)}")


class Predictor:
    """Scores images outside Ray: `load_model(dir).predict([...])`."""

    def __init__(self, model: PerspectiveModel, meta: dict[str, Any], device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.spec = model.spec

    @property
    def targets(self) -> list[str]:
        return list(self.spec.targets)

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    def preprocess(self, image: str | os.PathLike | bytes | Image.Image | np.ndarray) -> np.ndarray:
        """The same preprocessing as training's: decode, EXIF-transpose, RGB, letterbox."""
        size = self.spec.image_size
        if isinstance(image, np.ndarray):
            if image.shape != (size, size, 3) or image.dtype != np.uint8:
                raise ValueError(f"arrays must be preprocessed uint8 ({size}, {size}, 3), got {image.dtype} {image.shape}")
            return image
        if isinstance(image, Image.Image):
            return letterbox(image.convert("RGB"), size)
        return load_image(image, size)

    @torch.no_grad()
    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Scores for a uint8 batch (N, S, S, 3) already preprocessed."""
        images = torch.tensor(batch, device=self.device)  # a copy: batches may be read-only views
        images = images.permute(0, 3, 1, 2).float().div_(255.0)
        return self.model.scores(images).cpu().numpy()

    def predict(self, images: Iterable[Any], batch_size: int = 32) -> np.ndarray:
        """Scores (N, len(targets)) for paths, bytes, PIL images or preprocessed arrays."""
        arrays = [self.preprocess(image) for image in images]
        if not arrays:
            return np.zeros((0, len(self.targets)), dtype=np.float32)
        return np.concatenate(
            [self.predict_arrays(np.stack(arrays[i : i + batch_size])) for i in range(0, len(arrays), batch_size)]
        )


def load_model(checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Predictor:
    """Load a checkpoint directory (or a train/tune output holding `best/`) for prediction."""
    directory = Path(checkpoint_dir)
    if not (directory / META_FILE).is_file() and (directory / "best" / META_FILE).is_file():
        directory = directory / "best"
    return Predictor(load_checkpoint_model(directory), read_meta(directory), device)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
