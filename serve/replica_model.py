"""Where a replica's model comes from and where it runs: a checkpoint on any pyarrow file system,
copied once into a local cache, on CUDA in half precision when the replica was given a GPU.

Training writes checkpoints to `--storage s3://...` on a cluster; replicas on other nodes read
them from there rather than from a path only the head has. Decoding stays on the CPU threads of
the replica either way: only the forward pass moves to the GPU.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

from cvcore.errors import CheckpointError
from cvcore.model import Predictor, load_model

CACHE_DIR = Path(tempfile.gettempdir()) / "carpart-checkpoints"


def is_uri(checkpoint: str) -> bool:
    """`s3://bucket/run/best`, `gs://...`, `file:///...`: anything pyarrow opens by scheme."""
    return "://" in checkpoint


def local_checkpoint(checkpoint: str, cache_dir: Path = CACHE_DIR) -> Path:
    """A local directory holding `checkpoint`: the path itself, or the URI's files copied into
    `cache_dir` the first time (a folder per URI, moved into place whole so that replicas on the
    same node never read half a copy)."""
    if not is_uri(checkpoint):
        return Path(checkpoint)
    from pyarrow import fs

    target = cache_dir / hashlib.sha256(checkpoint.encode()).hexdigest()[:16]
    if target.is_dir():
        return target
    try:
        filesystem, path = fs.FileSystem.from_uri(checkpoint)
        info = filesystem.get_file_info(path)
        if info.type != fs.FileType.Directory:
            raise CheckpointError(f"checkpoint {checkpoint} is not a directory")
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=cache_dir))
        fs.copy_files(path, str(staging), source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())
    except (OSError, ValueError) as err:  # pyarrow's errors for unknown schemes, missing paths, no access
        raise CheckpointError(f"cannot copy checkpoint {checkpoint}: {err}") from None
    try:
        os.rename(staging, target)
    except OSError:  # another replica on this node finished first: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return target


def inference_device(gpu_ids: list) -> tuple[torch.device, torch.dtype]:
    """CUDA in half precision when Ray gave this replica a GPU (and torch can see one), else the CPU
    in float32."""
    if gpu_ids and torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def load_replica_model(checkpoint: str, device: torch.device, dtype: torch.dtype) -> Predictor:
    """The checkpoint's predictor on `device`, its weights in `dtype`."""
    predictor = load_model(local_checkpoint(checkpoint), device=device)
    predictor.model.to(dtype)
    return predictor
