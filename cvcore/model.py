"""The regressor and its self-describing checkpoint.

Every backbone is built one way: `timm.create_model(name, num_classes=len(spec.head_outputs))`.
The model takes float images in [0, 1] (NCHW) and normalises them itself, so the normalisation
travels with the weights and no caller can get it wrong. A checkpoint is a directory holding
`model.safetensors` and `model.json`; loading it never unpickles anything.

Two heads. `direct` regresses each target score. `decomposed` predicts, per target part, the
visible fraction and the facing factor (sigmoids) and outputs their product as the score, which is
how the labels are defined; serving can then say *why* a photo fails. A decomposed model trains on
data that hold only the product as well (the factors then get no direct supervision). Optional
segmentation head (`mask_classes > 0`): per-pixel part logits at 1/4 of the input size from the
backbone's stride-8 features, used as dense supervision during pretraining.

Head rows are matched by output name when weights move between models (fine-tuning, export), so a
pretrained head that already predicts `visible_fraction_hood` keeps that row.
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
from cvcore.image import RESIZE_METHOD, preprocess
from cvcore.labels import FACING_PREFIX, SCORE_PREFIX, VISIBLE_FRACTION_PREFIX

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FORMAT_VERSION = 1
HEADS = ("direct", "decomposed")
SEG_HEAD = "seg_head."
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
    head: str = "direct"  # or "decomposed": score = visible fraction x facing (see the module docstring)
    mask_classes: int = 0  # > 0: a segmentation head with this many classes (0 = background)
    prepared_size: int | None = None  # side training's photos were letterboxed to before resizing to image_size (None: image_size)
    resize: str = RESIZE_METHOD  # how prepared pixels were resized to image_size (`cvcore.image.resize_images`)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise CheckpointError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.head == "decomposed":
            odd = [t for t in self.targets if not t.startswith(SCORE_PREFIX)]
            if odd:
                raise CheckpointError(f"a decomposed head needs {SCORE_PREFIX}<part> targets, not {odd}")
        if self.resize != RESIZE_METHOD:
            raise CheckpointError(f"unknown resize {self.resize!r}; this version reproduces {RESIZE_METHOD!r} only")
        if self.prepared_size is not None and (not isinstance(self.prepared_size, int) or self.prepared_size < 1):
            raise CheckpointError(f"prepared_size must be a positive number of pixels, got {self.prepared_size!r}")

    @property
    def factors(self) -> list[str]:
        """Factor outputs of a decomposed head: every target's visible fraction, then every facing."""
        if self.head != "decomposed":
            return []
        parts = [t.removeprefix(SCORE_PREFIX) for t in self.targets]
        return [VISIBLE_FRACTION_PREFIX + p for p in parts] + [FACING_PREFIX + p for p in parts]

    @property
    def outputs(self) -> list[str]:
        """Columns of `PerspectiveModel.forward`: targets, factors, auxiliary outputs."""
        return [*self.targets, *self.factors, *self.aux_targets]

    @property
    def head_outputs(self) -> list[str]:
        """Rows of the linear head: a decomposed head predicts the factors, not the product."""
        return self.outputs[len(self.targets) :] if self.head == "decomposed" else self.outputs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            backbone=data["backbone"],
            targets=list(data["targets"]),
            image_size=int(data["image_size"]),
            aux_targets=list(data.get("aux_targets", [])),
            mean=tuple(data.get("mean", IMAGENET_MEAN)),
            std=tuple(data.get("std", IMAGENET_STD)),
            head=data.get("head", "direct"),
            mask_classes=int(data.get("mask_classes", 0)),
            prepared_size=data.get("prepared_size"),
            resize=data.get("resize", RESIZE_METHOD),
        )


class PerspectiveModel(nn.Module):
    """A timm backbone whose outputs are `spec.outputs`: perspective scores, factors, auxiliary.

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
        self.seg_head: nn.Module | None = None
        if spec.mask_classes > 0:
            self.seg_index, channels = _stride8_feature(net)
            self.seg_head = nn.Sequential(
                nn.Conv2d(channels, 64, 3, padding=1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.Conv2d(64, spec.mask_classes, 1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            )

    def forward(self, images: torch.Tensor, with_masks: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Outputs (N, len(spec.outputs)); with `with_masks`, also part logits (N, classes, H/4, W/4)."""
        x = (images - self.mean) / self.std
        if not with_masks:
            return self._assemble(self.net(x))
        if self.seg_head is None:
            raise ValueError("this model has no segmentation head (spec.mask_classes = 0)")
        final, (features,) = self.net.forward_intermediates(x, indices=[self.seg_index])
        return self._assemble(self.net.forward_head(final)), self.seg_head(features)

    def _assemble(self, raw: torch.Tensor) -> torch.Tensor:
        if self.spec.head == "direct":
            return raw
        n = len(self.spec.targets)
        factors = torch.sigmoid(raw[:, : 2 * n].float()).to(raw.dtype)
        return torch.cat([factors[:, :n] * factors[:, n:], factors, raw[:, 2 * n :]], dim=1)

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Main-target scores in [0, 1]."""
        return self.scores_and_factors(images)[0]

    @torch.no_grad()
    def scores_and_factors(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores in [0, 1] and the factors of a decomposed head (N, len(spec.factors)), empty for a direct one."""
        out = self(images).float()
        n, k = len(self.spec.targets), len(self.spec.factors)
        return out[:, :n].clamp(0.0, 1.0), out[:, n : n + k]


def choose_head(choice: str, targets: Sequence[str], columns: Sequence[str], init_spec: ModelSpec | None = None) -> str:
    """Resolve a head setting; "auto" is decomposed when the factors can be learned or inherited:
    the data hold both factors of every target, or the starting checkpoint predicts them."""
    if choice != "auto":
        if choice not in HEADS:
            raise CheckpointError(f"unknown head {choice!r}; choose auto or one of {', '.join(HEADS)}")
        return choice
    if not targets or not all(t.startswith(SCORE_PREFIX) for t in targets):
        return "direct"
    needed = ModelSpec("any", list(targets), 1, head="decomposed").factors
    inherited = init_spec is not None and set(needed) <= set(init_spec.head_outputs)
    return "decomposed" if inherited or set(needed) <= set(columns) else "direct"


def _stride8_feature(net: nn.Module) -> tuple[int, int]:
    """Index (for `forward_intermediates`) and channels of the backbone's deepest stride-8 features."""
    info = getattr(net, "feature_info", None) or []
    candidates = [(i, f["num_chs"]) for i, f in enumerate(info) if f.get("reduction") == 8]
    if not candidates or not hasattr(net, "forward_intermediates"):
        raise CheckpointError(f"{type(net).__name__} offers no stride-8 features for a segmentation head; pick another backbone")
    return candidates[-1]


def build_model(
    spec: ModelSpec,
    *,
    init_from: str | os.PathLike | None = None,
    freeze_backbone: bool = False,
) -> PerspectiveModel:
    """Build the regressor, optionally starting from local weights; nothing comes from a hub.

    `init_from` is one of our checkpoint directories (fine-tuning: same backbone; head rows are kept
    for the outputs both models have) or a weights file in timm/torchvision format (its classifier
    is dropped when its size differs, as timm does).
    """
    kwargs: dict[str, Any] = {"num_classes": len(spec.head_outputs)}
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
        source_spec, weights = load_state(source)
        check_compatible(source_spec, backbone=spec.backbone)
        transfer_weights(source_spec, weights, model)
    if freeze_backbone:
        head = _head_names(net)
        for name, param in net.named_parameters():
            param.requires_grad = name in head
    return model


def parameter_groups(model: PerspectiveModel, lr: float, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer groups: the backbone's trainable weights at `lr * backbone_lr_scale`, the heads
    (outputs, segmentation) at `lr`. One group when the scale is 1."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if backbone_lr_scale == 1.0:
        return [{"params": [p for _, p in trainable], "lr": lr}]
    head = {f"net.{name}" for name in _head_names(model.net)}
    backbone, heads = [], []
    for name, p in trainable:
        (backbone if name.startswith("net.") and name not in head else heads).append(p)
    return [{"params": backbone, "lr": lr * backbone_lr_scale}, {"params": heads, "lr": lr}]


def _head_names(net: nn.Module) -> set[str]:
    head = {id(p) for p in net.get_classifier().parameters()}
    return {name for name, p in net.named_parameters() if id(p) in head}


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """All weights of a model as saved: the timm network's names, the segmentation head under `seg_head.`."""
    bare = unwrap(model)
    state = dict(bare.net.state_dict())
    if bare.seg_head is not None:
        state.update({SEG_HEAD + k: v for k, v in bare.seg_head.state_dict().items()})
    return state


def load_weights(model: PerspectiveModel, weights: dict[str, torch.Tensor]) -> None:
    """Load a full state saved by `model_state` (strict: every tensor must fit)."""
    net = {k: v for k, v in weights.items() if not k.startswith(SEG_HEAD)}
    seg = {k.removeprefix(SEG_HEAD): v for k, v in weights.items() if k.startswith(SEG_HEAD)}
    model.net.load_state_dict(net)
    if model.seg_head is not None or seg:
        if model.seg_head is None:
            raise RuntimeError("the weights hold a segmentation head, the model has none")
        model.seg_head.load_state_dict(seg)


def transfer_weights(source_spec: ModelSpec, weights: dict[str, torch.Tensor], model: PerspectiveModel) -> None:
    """Fine-tuning start or export: the backbone whole, head rows by output name, the segmentation
    head only if both have it. Rows the source lacks keep their fresh initialisation."""
    target = model_state(model)
    head = _head_names(model.net)
    source_rows = {name: i for i, name in enumerate(source_spec.head_outputs)}
    taken = []
    for name, tensor in target.items():
        if name in head:
            rows = tensor.detach().clone()
            for i, output in enumerate(model.spec.head_outputs):
                if output in source_rows and name in weights:
                    rows[i] = weights[name][source_rows[output]].to(rows.dtype)
            target[name] = rows
        elif name in weights:
            if weights[name].shape != tensor.shape:
                raise CheckpointError(f"weight {name} has shape {tuple(weights[name].shape)}, {model.spec.backbone} needs {tuple(tensor.shape)}")
            target[name] = weights[name]
            taken.append(name)
    missing = [n for n in target if n not in head and n not in weights and not n.startswith(SEG_HEAD)]
    if missing:
        raise CheckpointError(f"the weights do not fit {model.spec.backbone}: missing {missing[:3]}")
    load_weights(model, target)


def for_serving(model: nn.Module) -> PerspectiveModel:
    """The same network with the targets and their factors only: no auxiliary or segmentation head."""
    bare = unwrap(model)
    if not bare.spec.aux_targets and bare.seg_head is None:
        return bare
    slim = build_model(replace(bare.spec, aux_targets=[], mask_classes=0))
    transfer_weights(bare.spec, model_state(bare), slim)
    return slim.train(bare.training)


def unwrap(model: nn.Module) -> PerspectiveModel:
    """The bare model inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, *, half: bool = False, **meta: Any) -> Path:
    """Write `model.safetensors` + `model.json`; `meta` (metrics, config, data hash) must be JSON.

    `half` stores floating-point weights as float16 (half the size, for the shipped backbone);
    loading casts them back to the model's float32.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bare = unwrap(model)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model_state(bare).items()}
    if half:
        tensors = {name: t.half() if t.is_floating_point() else t for name, t in tensors.items()}
    save_file(tensors, directory / WEIGHTS_FILE)
    document = {"format_version": FORMAT_VERSION, **asdict(bare.spec), **meta}
    (directory / META_FILE).write_text(json.dumps(document, indent=2, default=_json_default))
    return directory


MAX_IMAGE_SIZE = 1024
"""Largest input side a checkpoint may ask for: above it one upload's tensor alone is tens of MB."""


def check_meta(meta: dict[str, Any]) -> None:
    """Refuse a model.json that could make loading do more than build a known network: the backbone
    must be a plain timm architecture name (a `hf-hub:` or `local-dir:` prefix, or any path, makes
    timm read configurations from the hub or the file system), image size, mean and std in range.
    Raises `CheckpointError` naming the field."""
    backbone = meta.get("backbone")
    if not isinstance(backbone, str) or any(c in backbone for c in ":/\\") or not timm.is_model(backbone):
        raise CheckpointError(f"backbone {backbone!r} is not a timm architecture name (no hub or path prefixes)")
    size = meta.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= MAX_IMAGE_SIZE:
        raise CheckpointError(f"image_size {size!r} is not a whole number of pixels in [16, {MAX_IMAGE_SIZE}]")
    for name, low, high in (("mean", 0.0, 1.0), ("std", 1e-3, 1.0)):
        value = meta.get(name, IMAGENET_MEAN if name == "mean" else IMAGENET_STD)
        if not (
            isinstance(value, list | tuple)
            and len(value) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) and low <= v <= high for v in value)
        ):
            raise CheckpointError(f"{name} {value!r} must be 3 numbers in [{low:g}, {high:g}]")


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
        check_meta(meta)
        ModelSpec.from_dict(meta)
    except CheckpointError as err:
        raise CheckpointError(f"{meta_path}: {err}") from None
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
        load_weights(model, weights)
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
        """What training saw: `cvcore.image.preprocess` with the prepared size and resize the
        checkpoint records. A uint8 (S, S, 3) array at the input size is taken as preprocessed;
        any other array is a photo."""
        size = self.spec.image_size
        if isinstance(image, np.ndarray) and image.shape == (size, size, 3) and image.dtype == np.uint8:
            return image
        return preprocess(image, size, prepared_size=self.spec.prepared_size, resize=self.spec.resize)

    @property
    def factors(self) -> list[str]:
        """Names of the factor outputs (`visible_fraction_<part>`, `facing_<part>`); empty for a direct head."""
        return list(self.spec.factors)

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Scores for a uint8 batch (N, S, S, 3) already preprocessed."""
        return self.explain_arrays(batch)[0]

    @torch.no_grad()
    def explain_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (N, len(targets)) and factors (N, len(factors)) for a preprocessed uint8 batch."""
        images = torch.tensor(batch, device=self.device)  # a copy: batches may be read-only views
        dtype = next(self.model.parameters()).dtype  # float16 for a replica on a GPU (serve.replica_model)
        images = images.permute(0, 3, 1, 2).to(dtype).div_(255.0)
        scores, factors = self.model.scores_and_factors(images)
        return scores.cpu().numpy(), factors.cpu().numpy()

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
