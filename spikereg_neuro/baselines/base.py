"""The interface every registration method of the accuracy benchmark implements.

A *registrar* turns a ``(fixed, moving)`` pair of 3D volumes on one voxel grid into a dense
displacement field in the project's convention (:mod:`spikereg_neuro.registration.transform`):
``(3, D, H, W)`` float32 in **voxels**, channel ``k`` along array axis ``k``, *pull* warping
(``warped(x) = moving(x + u(x))``). Every method is then evaluated the same way
(:func:`spikereg_neuro.evaluate.evaluate_registration`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

__all__ = ["Registrar", "SymmetricRegistrar", "check_pair_arrays", "check_field"]


@runtime_checkable
class Registrar(Protocol):
    """A registration method.

    * ``name``: the key the benchmark reports it under (``identity``, ``voxelmorph``, ...);
    * ``available()``: ``(True, "")`` if it can run here, else ``(False, reason)`` (a missing
      optional package, a missing checkpoint...) so callers can skip it with a message;
    * ``register(fixed, moving, affine=None)``: the displacement field ``(3, D, H, W)`` in
      voxels that pull-warps ``moving`` onto ``fixed``. ``affine`` (4x4 voxel -> RAS mm, shared
      by both volumes) is only used by methods that work in physical space (ANTs);
    * ``info()``: JSON-ready description (parameters, checkpoint) for reports.
    """

    name: str

    def available(self) -> Tuple[bool, str]: ...

    def register(self, fixed: np.ndarray, moving: np.ndarray,
                 affine: Optional[np.ndarray] = None) -> np.ndarray: ...

    def info(self) -> Dict[str, Any]: ...


def check_pair_arrays(fixed: Any, moving: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Both volumes as 3D float32 arrays of one shape (leading singleton axes squeezed)."""
    out = []
    for name, v in (("fixed", fixed), ("moving", moving)):
        a = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        while a.ndim > 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 3:
            raise ValueError(f"{name} must be a 3D volume (D, H, W), got shape {a.shape}")
        a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")
        out.append(a)
    if out[0].shape != out[1].shape:
        raise ValueError(f"fixed {out[0].shape} and moving {out[1].shape} must have the same shape")
    return out[0], out[1]


def check_field(field: np.ndarray, shape: Tuple[int, ...], who: str) -> np.ndarray:
    """Validate a registrar's output: finite float32 ``(3, *shape)``."""
    field = np.asarray(field, dtype=np.float32)
    if field.shape != (3, *shape):
        raise RuntimeError(f"{who} returned a field of shape {field.shape}, expected {(3, *shape)}")
    if not np.isfinite(field).all():
        raise RuntimeError(f"{who} returned a field with NaN or inf")
    return field


class SymmetricRegistrar:
    """A registrar run both ways, the inverse-consistent mean of the two fields
    (:func:`~spikereg_neuro.registration.transform.symmetric_field`): twice the work, and a bias
    both directions share cancels. Everything else (``name``, ``available``, ``load``, the
    checkpoint) is the wrapped registrar's; ``info()`` adds ``"symmetric": True``."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __getattr__(self, key: str) -> Any:
        try:
            base = self.__dict__["base"]
        except KeyError:        # not built yet (copy, pickle): no recursion, a plain AttributeError
            raise AttributeError(key) from None
        return getattr(base, key)

    def register(self, fixed: np.ndarray, moving: np.ndarray, affine: Optional[np.ndarray] = None) -> np.ndarray:
        import torch

        from ..registration.transform import register_both_ways

        def one_way(f: np.ndarray, m: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(self.base.register(f, m, affine), np.float32))[None]

        return register_both_ways(one_way, fixed, moving)[0].numpy()

    def info(self) -> Dict[str, Any]:
        return {**self.base.info(), "symmetric": True}
