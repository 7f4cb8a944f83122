"""Inference: register a (fixed, moving) pair of any size with a trained SpikeReg network."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import DEFAULT_MODEL, load_network
from .model.policy import residual_registration
from .registration.transform import register_both_ways, warp
from .tiling import count_tiles, plan_tiles, tiled_predict

VolumeLike = Union[np.ndarray, torch.Tensor, str, Path]


#: a volume in [0, 1] whose ``lo_pct`` / ``hi_pct`` percentiles lie at most / at least these
#: values is taken as already on the training scale (the embedded volumes: 0 and 0.966-1.0), so
#: that scale is kept to within 5 %
NORMALIZED_LO_MAX, NORMALIZED_HI_MIN = 0.05, 0.95


def normalize_intensity(x: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Robust min-max to [0, 1]: ``(x - p_lo) / (p_hi - p_lo)`` clipped, at the ``lo_pct`` /
    ``hi_pct`` percentiles. A volume already on that scale (in [0, 1], its low percentile at
    most :data:`NORMALIZED_LO_MAX` and its high one at least :data:`NORMALIZED_HI_MIN`, as the
    training data) is left as it is; one in [0, 1] that uses little of it (a scan divided by
    255 x 3, or by its maximum with one bright voxel) is stretched like any other. A sparse volume
    whose percentiles coincide (e.g. a few bright voxels) falls back to min-max; a constant or
    empty one is a ``ValueError``."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise ValueError("volume is empty: nothing to register")
    if not np.isfinite(x).all():
        raise ValueError("volume contains NaN or inf")
    vmin, vmax = float(x.min()), float(x.max())
    if vmax == vmin:
        raise ValueError(f"volume is constant (every voxel is {vmin:g}): nothing to register")
    lo, hi = (float(v) for v in np.percentile(x, [lo_pct, hi_pct]))
    if vmin >= 0.0 and vmax <= 1.0 and lo <= NORMALIZED_LO_MAX and hi >= NORMALIZED_HI_MIN:
        return x
    if hi <= lo:
        lo, hi = vmin, vmax
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _as_volume(v: VolumeLike, what: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A 3D float32 array (and the affine if it came from a NIfTI file)."""
    if isinstance(v, (str, Path)):
        from .io.nifti import load_volume
        arr, affine, _ = load_volume(v)
        return arr, affine
    arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim != 3:
        raise ValueError(f"{what} must be a 3D volume, got shape {arr.shape}")
    return arr.astype(np.float32), None


def register_tensors(
    predict_patch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scales: Sequence[int],
    fixed: torch.Tensor,
    moving: torch.Tensor,
    patch: Sequence[int],
    stride: Sequence[int],
    batch_size: int = 4,
    progress: Optional[Callable[[int], None]] = None,
    integration_steps: int = 0,
    max_voxels: int = 0,
    multiple: int = 8,
    symmetric: bool = False,
) -> torch.Tensor:
    """Residual coarse-to-fine registration of whole ``(1, 1, D, H, W)`` volumes.

    ``symmetric``: the pair is registered both ways (twice the network calls) and the result is
    :func:`~spikereg_neuro.registration.transform.symmetric_field` of the two fields.

    ``max_voxels = 0``: each iteration tiles its (downsampled) volume with ``patch`` tiles at
    ``stride``; volumes are zero-padded to a multiple of the coarsest scale. ``max_voxels > 0``:
    volumes are zero-padded to a multiple of ``multiple x`` the coarsest scale (``multiple``:
    the network's size multiple, 2 ** stride-2 levels: 8 for the packaged network) and each iteration runs the network
    once on the whole volume when it has at most ``max_voxels`` voxels, else on the tiles of
    :func:`~spikereg_neuro.tiling.plan_tiles`, as many per call as ``max_voxels`` holds (so a
    call never has more voxels than that). The field is cropped back. With
    ``integration_steps > 0`` the prediction of an iteration is a velocity field, integrated over
    the whole volume (the model's ``integration_steps``). ``progress(n)`` is called after each
    network call on ``n`` patches (a whole volume counts as one). Returns ``(1, 3, D, H, W)``.
    """
    if symmetric:
        def one_way(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return register_tensors(predict_patch, scales, a, b, patch, stride, batch_size, progress,
                                    integration_steps, max_voxels, multiple)
        return register_both_ways(one_way, fixed, moving)
    size = fixed.shape[2:]
    padded = _padded_shape(size, scales, max_voxels, multiple)
    pads = []
    for n, p in reversed(list(zip(size, padded))):
        pads += [0, p - n]
    ft, mt = F.pad(fixed, pads), F.pad(moving, pads)

    def predict(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p, s, per_call = _call_plan(a.shape[2:], patch, stride, batch_size, max_voxels, multiple)
        if p is None:
            out = predict_patch(a, b)
            if progress is not None:
                progress(1)
            return out
        return tiled_predict(predict_patch, a, b, p, s, per_call, progress=progress)

    u, _ = residual_registration(predict, ft, mt, scales, integration_steps=integration_steps)
    return u[..., :size[0], :size[1], :size[2]]


def _padded_shape(shape: Sequence[int], scales: Sequence[int], max_voxels: int, multiple: int) -> list:
    """The full-resolution size :func:`register_tensors` pads to: a multiple of the coarsest
    scale (fixed tiles) or of ``multiple x`` it (whole volumes, every scale a multiple of 8)."""
    k = max(scales) * (multiple if max_voxels else 1)
    return [-(-int(n) // k) * k for n in shape]


def _call_plan(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int], batch_size: int,
               max_voxels: int, multiple: int):
    """How one iteration's volume of ``shape`` runs: ``(None, None, 1)`` for one whole-volume
    call, else ``(patch, stride, tiles per call)`` (planned tiles: as many per call as
    ``max_voxels`` holds, so a call never has more voxels than that)."""
    if not max_voxels:
        return list(patch), list(stride), batch_size
    p, s = plan_tiles(shape, max_voxels, multiple)
    if list(p) == [int(n) for n in shape]:
        return None, None, 1
    return p, s, max(1, max_voxels // math.prod(p))


def count_calls(shape: Sequence[int], scales: Sequence[int], patch: Sequence[int],
                stride: Sequence[int], max_voxels: int = 0, multiple: int = 8, symmetric: bool = False) -> int:
    """Network calls (patches; a whole volume counts as one) of :func:`register_tensors`."""
    if symmetric:
        return 2 * count_calls(shape, scales, patch, stride, max_voxels, multiple)
    total = 0
    for sc in scales:
        sz = [n // sc for n in _padded_shape(shape, scales, max_voxels, multiple)]
        p, s, _ = _call_plan(sz, patch, stride, 1, max_voxels, multiple)
        total += 1 if p is None else count_tiles(sz, p, s)
    return total


class SpikeRegInference:
    """Register volume pairs with a trained network (default: the shipped model).

    >>> reg = SpikeRegInference()                      # shipped default model
    >>> field = reg.register(fixed, moving)            # (3, D, H, W) in voxels
    >>> warped = reg.apply_deformation(moving, field)
    """

    def __init__(self, checkpoint: Union[str, Path, None] = None, device: str = "cpu",
                 patch_size: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None,
                 batch_size: Optional[int] = None, progress: bool = False,
                 max_voxels: Optional[int] = None, symmetric: Optional[bool] = None) -> None:
        """``patch_size``/``stride``/``batch_size``/``max_voxels``/``symmetric`` override the
        checkpoint's inference settings (:class:`~spikereg_neuro.config.InferenceConfig`): by
        default whole volumes up to ``max_voxels`` voxels per call; fixed tiles with
        ``max_voxels=0`` or when ``patch_size``/``stride`` are given without ``max_voxels``
        (per-patch profiling); ``symmetric``: register both ways (:func:`register_tensors`)."""
        from .config import InferenceConfig

        path = Path(checkpoint) if checkpoint is not None else DEFAULT_MODEL
        if checkpoint is None and not path.is_file():
            raise FileNotFoundError(f"the shipped default model is missing ({path}); pass a checkpoint")
        self.checkpoint_path = path
        self.net, ckpt = load_network(path)
        self.device = torch.device(device)
        self.net.to(self.device)
        inf = InferenceConfig.from_checkpoint(ckpt)
        p = patch_size or inf.patch_size
        s = stride or (inf.stride if patch_size is None else None)
        self.patch = [int(p)] * 3 if np.isscalar(p) else [int(x) for x in p]
        s = s if s is not None else [max(1, x // 2) for x in self.patch]
        self.stride = [int(s)] * 3 if np.isscalar(s) else [int(x) for x in s]
        m = self.net.cfg.downsampling
        if any(x % m for x in self.patch):
            raise ValueError(f"patch size {self.patch} must be divisible by {m}")
        self.batch_size = int(batch_size if batch_size is not None else inf.batch_size)
        if max_voxels is None:
            max_voxels = 0 if (patch_size is not None or stride is not None) else inf.max_voxels
        self.max_voxels = int(max_voxels)
        if self.batch_size < 1 or self.max_voxels < 0:
            raise ValueError(f"batch_size must be >= 1 and max_voxels >= 0, got {self.batch_size}, {self.max_voxels}")
        self.multiple = m
        self.symmetric = bool(inf.symmetric if symmetric is None else symmetric)
        self.progress = progress
        self.meta = {k: ckpt.get(k) for k in ("best_val_dice", "data", "data_config", "config", "train_summary")}
        self.activity: Dict[str, np.ndarray] = {}
        self.num_neurons: Dict[str, int] = {}

    # ------------------------------------------------------------------------------------------
    def _predict(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        out = self.net(fixed, moving)
        for k, v in self.net.activity.items():  # accumulate activity over patches/iterations
            prev = self.activity.get(k)
            v = v.cpu().numpy()
            self.activity[k] = v if prev is None else prev + v
            self.num_neurons[k] = self.num_neurons.get(k, 0) + self.net.num_neurons[k] * fixed.shape[0]
        return out

    @torch.inference_mode()
    def register(self, fixed: VolumeLike, moving: VolumeLike) -> np.ndarray:
        """Displacement field ``(3, D, H, W)`` in voxels that warps ``moving`` onto ``fixed``."""
        f, fa = _as_volume(fixed, "fixed")
        m, ma = _as_volume(moving, "moving")
        if f.shape != m.shape:
            raise ValueError(f"fixed {f.shape} and moving {m.shape} must have the same shape")
        if fa is not None and ma is not None and not np.allclose(fa, ma, atol=1e-3):
            raise ValueError(f"fixed and moving affines differ:\n{fa}\n{ma}\nresample to a common grid first")
        f, m = normalize_intensity(f), normalize_intensity(m)
        ft = torch.from_numpy(f)[None, None].to(self.device)
        mt = torch.from_numpy(m)[None, None].to(self.device)
        self.activity, self.num_neurons = {}, {}
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            total = count_calls(f.shape, self.net.cfg.scales, self.patch, self.stride,
                                self.max_voxels, self.multiple, self.symmetric)
            bar = tqdm(total=total, desc="register", unit="call" if self.max_voxels else "patch", leave=False)
        u = register_tensors(self._predict, self.net.cfg.scales, ft, mt, self.patch, self.stride,
                             self.batch_size, progress=bar.update if bar is not None else None,
                             integration_steps=self.net.cfg.integration_steps,
                             max_voxels=self.max_voxels, multiple=self.multiple, symmetric=self.symmetric)
        if bar is not None:
            bar.close()
        return u[0].cpu().numpy().astype(np.float32)

    @staticmethod
    def apply_deformation(moving: VolumeLike, field: np.ndarray, labels: bool = False) -> np.ndarray:
        """Pull-warp ``moving`` with ``field`` (trilinear; nearest for ``labels=True``)."""
        m, _ = _as_volume(moving, "moving")
        field = np.asarray(field, dtype=np.float32)
        if field.shape != (3, *m.shape):
            raise ValueError(f"field shape {field.shape} does not match volume {m.shape} (expected (3, D, H, W))")
        if not np.isfinite(field).all():
            raise ValueError("field contains NaN or inf")
        mt = torch.from_numpy(m)[None, None]
        ut = torch.from_numpy(field)[None]
        out = warp(mt, ut, mode="nearest" if labels else "bilinear")
        return out[0, 0].numpy().astype(m.dtype if not labels else np.int32)
