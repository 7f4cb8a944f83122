"""Project configuration: one YAML file with ``data``, ``model``, ``train``, ``inference`` and
``augment`` (training-time augmentation, :mod:`spikereg_neuro.data.augment`)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from .data.augment import AugmentConfig
from .data.dataset import DataConfig
from .dataclass_io import DictIO, check_fields, checked_kwargs
from .model.config import ModelConfig

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


@dataclass
class TrainConfig(DictIO):
    """Training hyper-parameters (patch-based, surrogate gradients, AdamW)."""

    _keys_label = "keys in 'train':"

    patch_size: int = 32
    batch_size: int = 2
    steps_per_epoch: int = 200
    epochs: int = 6
    lr: float = 8e-4  # scaled with the neuron threshold (weights 4x larger than at threshold 1)
    lr_schedule: str = "cosine"  # "cosine" (to 0 over epochs x steps_per_epoch) or "constant"
    weight_decay: float = 1e-4
    # step size of learned neuron decays (model.neuron.learn_decays), as a multiple of lr: the
    # decays are stored in 1/4096 units, so 1024 lets Adam move one by up to lr / 4 per step
    # (512 barely moved them, 8192 drove them to 1.0 and cost Dice: docs/experiments.md)
    decay_lr_scale: float = 1024.0
    grad_clip: float = 1.0
    ncc_window: int = 9
    # Gaussian smoothing (voxels) of both images inside the NCC loss; 0: raw images. On noisy
    # images a sub-voxel field raises raw NCC by interpolation blur alone (docs/model.md).
    ncc_sigma: float = 0.0
    # "none": similarity over the whole patch; "labels": only where the fixed patch has a label
    # (> 0), dilated by ncc_mask_dilate voxels, so background noise gives no reason to move.
    ncc_mask: str = "none"
    ncc_mask_dilate: int = 2
    w_smooth: float = 1.0
    w_dice: float = 1.0
    # Supervised term: mean squared endpoint error against the synthetic pairs' true field
    # (needs the embedded synthetic data, which stores each subject's velocity); 0: off.
    w_field: float = 0.0
    w_rate: float = 50.0  # strong enough to keep dec0 (the read-out's input) from falling silent
    rate_band: Tuple[float, float] = (0.05, 0.3)
    min_foreground: float = 0.05
    # Cut the gradient path from iteration k's network input (the moving image warped by the
    # field so far) back into the earlier iterations; the field composition keeps its gradient.
    # Without it the second network's spiking input made the first network's gradients noisier.
    detach_warped: bool = True
    val_pairs: int = 3  # validation pairs scored after each epoch; 0: all
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_fields(self, "train")  # one clear error per mistyped key (``lr: "fast"``, ``epochs: 1.5``)
        self.rate_band = tuple(float(x) for x in self.rate_band)
        if len(self.rate_band) != 2 or not 0 <= self.rate_band[0] < self.rate_band[1] <= 1:
            raise ValueError(f"rate_band must be (low, high) with 0 <= low < high <= 1, got {self.rate_band}")
        if self.ncc_mask not in ("none", "labels"):
            raise ValueError(f"train.ncc_mask must be 'none' or 'labels', got {self.ncc_mask!r}")
        if not self.ncc_sigma >= 0:
            raise ValueError(f"train.ncc_sigma must be >= 0 (voxels), got {self.ncc_sigma}")
        if not self.w_field >= 0:
            raise ValueError(f"train.w_field must be >= 0, got {self.w_field}")
        if self.ncc_mask_dilate < 0:
            raise ValueError("train.ncc_mask_dilate must be >= 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"train.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        for k in ("patch_size", "batch_size", "steps_per_epoch", "epochs", "ncc_window"):
            if getattr(self, k) < 1:
                raise ValueError(f"train.{k} must be >= 1, got {getattr(self, k)}")
        for k in ("val_pairs", "seed"):
            if getattr(self, k) < 0:
                raise ValueError(f"train.{k} must be >= 0, got {getattr(self, k)}")
        inf = float("inf")  # 0 < x < inf is False for NaN and infinities
        if not 0 < self.lr < inf:
            raise ValueError(f"train.lr must be a finite number > 0, got {self.lr}")
        if not 0 < self.decay_lr_scale < inf:
            raise ValueError(f"train.decay_lr_scale must be a finite number > 0, got {self.decay_lr_scale}")
        if not 0 < self.grad_clip < inf:
            raise ValueError(f"train.grad_clip must be a finite number > 0, got {self.grad_clip}")
        for k in ("weight_decay", "w_smooth", "w_dice", "w_rate", "min_foreground"):
            if not 0 <= getattr(self, k) < inf:
                raise ValueError(f"train.{k} must be a finite number >= 0, got {getattr(self, k)}")


#: whole-volume inference up to this many voxels per network call (a 160 x 192 x 224 pair peaked
#: at 5.0 GiB with it, 2.2 GiB at 1.5 M; larger volumes run in as few tiles as fit)
DEFAULT_MAX_VOXELS = 4_500_000


@dataclass
class InferenceConfig(DictIO):
    """How a trained network registers a whole pair.

    ``max_voxels > 0``: each residual iteration runs the network once on the whole (padded)
    volume when it has at most ``max_voxels`` voxels at that iteration's scale, else on the
    fewest overlapping tiles that fit (:func:`spikereg_neuro.tiling.plan_tiles`).
    ``max_voxels = 0``: fixed ``patch_size``^3 tiles at ``stride`` (the patch the network was
    trained on; what calibration and the Lava backend use). ``batch_size``: tiles per call.
    ``symmetric``: register each pair both ways and take the inverse-consistent mean (twice the
    network calls and energy; :func:`spikereg_neuro.inference.register_tensors`).
    """

    _keys_label = "keys in 'inference':"

    patch_size: int = 32
    stride: int = 16
    batch_size: int = 4
    max_voxels: int = DEFAULT_MAX_VOXELS
    symmetric: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "inference")
        if self.patch_size < 1 or self.batch_size < 1 or not 1 <= self.stride <= self.patch_size:
            raise ValueError(f"inference needs patch_size >= 1, batch_size >= 1 and 1 <= stride <= "
                             f"patch_size, got {self.patch_size}, {self.batch_size}, {self.stride}")
        if self.max_voxels < 0:
            raise ValueError(f"inference.max_voxels must be >= 0 (0: fixed tiles), got {self.max_voxels}")

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> "InferenceConfig":
        """The settings a checkpoint records, over the defaults (older checkpoints lack keys).

        A checkpoint that records its patch but no stride tiles at half the patch (the overlap
        every stage assumed before the stride was stored).
        """
        d = ckpt.get("inference")
        if isinstance(d, Mapping) and "stride" not in d and isinstance(d.get("patch_size"), int):
            d = {**d, "stride": max(1, d["patch_size"] // 2)}
        return cls.from_dict(d, "inference")  # a record that is not a mapping is a one-line error

    @property
    def patch3(self) -> List[int]:
        """The tile shape, one entry per axis."""
        return [self.patch_size] * 3

    @property
    def stride3(self) -> List[int]:
        """The tile stride, one entry per axis."""
        return [self.stride] * 3


@dataclass
class Config(DictIO):
    """The whole project configuration: one dataclass per YAML section."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "Config":
        """Each section through its own dataclass's ``from_dict``; unknown sections are errors."""
        given = checked_kwargs(cls, d, "config sections")
        kinds = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                 "inference": InferenceConfig, "augment": AugmentConfig}
        return cls(**{k: kind.from_dict(given.get(k)) for k, kind in kinds.items()})


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading ``1e-3`` (no dot) as the number YAML 1.2 makes it, not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _read_yaml(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        d = yaml.load(path.read_bytes().decode("utf-8"), Loader=_Loader)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a text (UTF-8) YAML file: byte {exc.start} is not UTF-8") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if d is not None and not isinstance(d, dict):
        raise ValueError(f"{path}: top level must be a mapping of sections")
    return d or {}


def overlay(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``over``'s keys replacing its own; mappings (sections, ``model.neuron``)
    are merged key by key, anything else (numbers, lists) replaced whole."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None) -> Config:
    """Read a YAML config over the packaged ``configs/default.yaml``: a partial file changes
    only the keys it names, every other key keeps the packaged value (the one source of
    defaults for configs). Unknown keys are errors."""
    base = _read_yaml(DEFAULT_CONFIG)
    path = Path(path) if path is not None else DEFAULT_CONFIG
    d = overlay(base, _read_yaml(path)) if path.resolve() != DEFAULT_CONFIG.resolve() else base
    try:
        return Config.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
