"""Checkpoints: weights plus the config they were made with, validated on load."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from .config import InferenceConfig
from .io.atomic import atomic_write
from .io.hashing import file_sha256  # noqa: F401  (re-exported: callers import it from here)
from .io.safe_load import safe_torch_load, verify_shipped
from .model.config import ModelConfig
from .model.unet import SpikeRegUNet

FORMAT = "spikereg-neuro/checkpoint"
FORMAT_VERSION = 1
DEFAULT_MODEL = Path(__file__).parent / "models" / "default.pt"


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes (independent of the file's
    container, so a checkpoint can be checked after loading)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, net: SpikeRegUNet, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``net`` (state + model config + the weights' sha256) and ``extra`` (training
    state, metrics) atomically."""
    state = net.state_dict()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": net.cfg.to_dict(),
        "state_dict": state,
        **(extra or {}),
        "weights_sha256": weights_sha256(state),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


def _is_shipped(path: Path) -> bool:
    try:
        return path.resolve() == DEFAULT_MODEL.resolve()
    except OSError:
        return False


def read_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Load and validate a checkpoint's dictionary (clear errors for anything else).

    Loading never runs code from the file (``weights_only=True``; a file that needs unsafe
    unpickling is a ``ValueError``). The shipped default model is checked against the sha256
    in ``models/default.json`` first (once per process); any checkpoint that records
    ``weights_sha256`` (all written by this version) is checked against it: a corrupted or
    edited file is an error, not another field. The records commands read are checked too
    (:func:`_check_records`): a damaged one is an error naming the file and key.
    """
    path = Path(path)
    if path.is_file() and _is_shipped(path):
        verify_shipped(path)  # before unpickling anything from it
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a spikereg-neuro checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format version {ckpt.get('format_version')}, "
                         f"this spikereg-neuro reads version {FORMAT_VERSION}")
    _check_records(path, ckpt)
    want = ckpt.get("weights_sha256")
    if want is not None and weights_sha256(ckpt["state_dict"]) != want:
        raise ValueError(f"{path}: the weights do not match the sha256 recorded in the checkpoint "
                         "(the file is corrupt or was edited)")
    return ckpt


#: records every checkpoint holds (mappings), and those it may hold that readers take as mappings
_REQUIRED_RECORDS = ("model_config", "state_dict")
_MAPPING_RECORDS = ("inference", "config", "data_config", "data")


def _check_records(path: Path, ckpt: Mapping[str, Any]) -> None:
    """The records the commands read: ``model_config`` (a valid model config) and
    ``state_dict`` (a mapping of tensors) present, the optional ones mappings, the
    ``inference`` settings, the ``data_config`` and the model's voxel size valid; else a one-line
    ``ValueError`` naming the file and key."""
    for key in _REQUIRED_RECORDS:
        if key not in ckpt:
            raise ValueError(f"{path}: the checkpoint has no '{key}' (the file is damaged or was edited)")
    for key in (*_REQUIRED_RECORDS, *_MAPPING_RECORDS):
        v = ckpt.get(key)
        if not isinstance(v, Mapping) and (v is not None or key in _REQUIRED_RECORDS):
            raise ValueError(f"{path}: the checkpoint's '{key}' must be a mapping, got {type(v).__name__}")
    if not all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values()):
        raise ValueError(f"{path}: its state_dict is not a mapping of tensors")
    def data_config() -> None:
        from .data.dataset import DataConfig
        if ckpt.get("data_config") is not None:
            DataConfig.from_dict(ckpt["data_config"])

    def spacing() -> None:
        from .registration.world import model_spacing
        model_spacing(ckpt)

    for key, check in (("model_config", lambda: ModelConfig.from_stored(ckpt["model_config"])),
                       ("inference", lambda: InferenceConfig.from_checkpoint(ckpt)),
                       ("data_config", data_config), ("voxel size", spacing)):
        try:
            check()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: the checkpoint's {key} is invalid: {exc}") from None


def load_network(path: str | Path, expect: Optional[ModelConfig] = None) -> tuple[SpikeRegUNet, Dict[str, Any]]:
    """Build the network a checkpoint describes and load its weights.

    If ``expect`` is given, the checkpoint's model config must equal it (a checkpoint from
    another config is an error naming the differing fields).
    """
    ckpt = read_checkpoint(path)
    cfg = ModelConfig.from_stored(ckpt["model_config"])
    if expect is not None and cfg.to_dict() != expect.to_dict():
        a, b = cfg.to_dict(), expect.to_dict()
        diff = {k: (a[k], b[k]) for k in a if a[k] != b.get(k)}
        raise ValueError(f"checkpoint {path} was made with another model config; differing fields "
                         f"(checkpoint, expected): {diff}")
    net = SpikeRegUNet(cfg)
    try:
        net.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path} does not match its own model config: {exc}") from exc
    net.eval()
    return net, ckpt


def strip_for_release(src: str | Path, dst: str | Path) -> Dict[str, Any]:
    """Copy a training checkpoint without optimizer/scheduler/RNG state (what is shipped).

    Returns the kept metadata (epoch, best validation Dice, configs, history).
    """
    ckpt = read_checkpoint(src)
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "rng")}
    keep["train_summary"] = {"source": Path(src).name, "sha256_source": file_sha256(src),
                             "epoch": ckpt.get("epoch"), "best_val_dice": ckpt.get("best_val_dice"),
                             "history": ckpt.get("history", [])}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dst) as tmp:
        torch.save(keep, tmp)
    return keep["train_summary"]
