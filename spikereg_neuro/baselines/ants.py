"""Classical baseline: ANTs SyN through ``antspyx`` (optional: ``pip install antspyx``).

What runs
    ``ants.registration(fixed, moving, type_of_transform="SyN")`` with ANTsPy's defaults for
    that transform (the choice of a user who "just runs SyN"): centre-of-mass initialisation,
    an affine stage (Mattes MI) and a SyN stage (Mattes MI, ``reg_iterations=(40, 20, 0)``,
    i.e. 40 / 20 / 0 iterations at shrink factors 4 / 2 / 1). ``type_of_transform`` and any
    ``ants.registration`` keyword can be overridden (e.g. ``SyNCC``, ``reg_iterations``).

Geometry
    The numpy volumes are wrapped as ANTs images with the pair's affine (voxel -> RAS mm)
    converted the way ITK reads NIfTI: physical space is LPS, so ``origin = diag(-1, -1, 1) @
    t`` and ``direction = diag(-1, -1, 1) @ R``, with ``R`` the affine's column-normalised
    3x3 part and ``spacing`` its column norms. numpy axis ``k`` is ITK index ``k`` (ANTsPy's
    ``from_numpy`` keeps the axis order).

Field conversion (verified in ``tests/test_baselines.py``)
    The forward transforms (``[warp, affine]``) are composed by ``antsApplyTransforms`` into a
    single displacement field on the fixed grid (``apply_transforms(..., compose=...)``): at
    fixed voxel ``x`` (physical point ``p(x)``) it holds ``d(x)`` in LPS mm such that the
    moving image is sampled at ``p(x) + d(x)``: a pull field. As fixed and moving share one
    grid, the voxel displacement is ``u(x) = (direction @ diag(spacing))^-1 d(x)``, channel
    ``k`` along numpy axis ``k``: the project's convention.

Determinism
    ITK's thread count is fixed by ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``, read when ITK
    first starts threads; this module sets it (default 1, i.e. one thread and reproducible
    results) *before* importing ``ants`` unless it is already set. The random seed of the
    metric sampling (default 1; it must be nonzero: ``antsRegistration`` seeds from the clock
    for 0) is passed to ``antsRegistration`` (``--random-seed``) for each call.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from .base import check_field, check_pair_arrays

__all__ = ["ants_available", "AntsSyNRegistrar", "affine_to_ants_geometry", "ants_image",
           "ants_displacement_to_voxels"]

_LPS = np.diag([-1.0, -1.0, 1.0])


def _import_ants(threads: Optional[int] = None):
    if threads is not None:
        os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(int(threads)))
    import ants  # noqa: WPS433 - optional dependency
    return ants


def ants_available() -> Tuple[bool, str]:
    """``(True, version)`` if ``antspyx`` imports, else ``(False, reason)``."""
    try:
        ants = _import_ants(1)
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken binary
        return False, (f"antspyx is not installed or not usable ({exc.__class__.__name__}: {exc}); "
                       "install it with: pip install antspyx")
    return True, str(getattr(ants, "__version__", "unknown"))


def affine_to_ants_geometry(affine: Optional[np.ndarray]) -> Dict[str, Any]:
    """``origin``, ``spacing``, ``direction`` (ITK LPS) of a voxel -> RAS mm affine."""
    if affine is None:
        return {"origin": (0.0, 0.0, 0.0), "spacing": (1.0, 1.0, 1.0), "direction": np.eye(3)}
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {a.shape}")
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine has a zero-length axis: {a}")
    rot = a[:3, :3] / spacing
    return {"origin": tuple(float(v) for v in _LPS @ a[:3, 3]), "spacing": tuple(float(v) for v in spacing),
            "direction": _LPS @ rot}


def ants_image(ants, array: np.ndarray, geometry: Dict[str, Any]):
    """An ANTs image of a numpy volume with the given geometry (float32)."""
    return ants.from_numpy(np.ascontiguousarray(array, dtype=np.float32), origin=geometry["origin"],
                           spacing=geometry["spacing"], direction=np.asarray(geometry["direction"]))


def ants_displacement_to_voxels(disp_lps: np.ndarray, geometry: Dict[str, Any]) -> np.ndarray:
    """``(D, H, W, 3)`` LPS-mm displacement -> ``(3, D, H, W)`` voxel displacement."""
    m = np.asarray(geometry["direction"]) @ np.diag(geometry["spacing"])
    inv = np.linalg.inv(m)
    u = np.einsum("kc,...c->k...", inv, disp_lps.astype(np.float64))
    return u.astype(np.float32)


@contextlib.contextmanager
def _ants_seed(ants, seed: Optional[int]) -> Iterator[None]:
    """Temporarily set ANTsPy's registration seed (``ants.config._random_seed``)."""
    cfg = getattr(ants, "config", None)
    if seed is None or cfg is None or not hasattr(cfg, "_random_seed"):
        yield
        return
    old = cfg._random_seed
    cfg._random_seed = int(seed)
    try:
        yield
    finally:
        cfg._random_seed = old


class AntsSyNRegistrar:
    """ANTs SyN (affine + symmetric diffeomorphic) via antspyx; see the module docstring."""

    name = "ants_syn"

    def __init__(self, type_of_transform: str = "SyN", seed: Optional[int] = 1, threads: int = 1,
                 **registration_kwargs: Any) -> None:
        if seed is not None and int(seed) == 0:
            raise ValueError("ANTs seed must be a nonzero integer (antsRegistration treats 0 as "
                             "'seed from the clock'), or None for a non-reproducible run")
        self.type_of_transform = type_of_transform
        self.seed = None if seed is None else int(seed)
        self.threads = int(threads)
        self.kwargs = dict(registration_kwargs)
        self._ants = None

    def available(self) -> Tuple[bool, str]:
        ok, msg = ants_available()
        return (True, "") if ok else (False, msg)

    def _lib(self):
        if self._ants is None:
            self._ants = _import_ants(self.threads)
        return self._ants

    def register(self, fixed: np.ndarray, moving: np.ndarray,
                 affine: Optional[np.ndarray] = None) -> np.ndarray:
        return self.register_full(fixed, moving, affine)["field"]

    def register_full(self, fixed: np.ndarray, moving: np.ndarray, affine: Optional[np.ndarray] = None,
                      moving_labels: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Field plus, for checks, ANTs' own warped moving image (and warped labels, nearest
        neighbour, if ``moving_labels`` is given)."""
        ants = self._lib()
        f, m = check_pair_arrays(fixed, moving)
        geom = affine_to_ants_geometry(affine)
        fi, mi = ants_image(ants, f, geom), ants_image(ants, m, geom)
        out: Dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="spikereg_ants_") as tmp, _ants_seed(ants, self.seed):
            reg = ants.registration(fi, mi, type_of_transform=self.type_of_transform,
                                    outprefix=str(Path(tmp) / "reg_"), **self.kwargs)
            tx = reg["fwdtransforms"]
            comp = ants.apply_transforms(fi, mi, tx, compose=str(Path(tmp) / "comp_"))
            if not comp or not Path(comp).is_file():
                raise RuntimeError("antsApplyTransforms did not write the composed displacement field")
            disp = ants.image_read(comp).numpy()
            if disp.shape != (*f.shape, 3):
                raise RuntimeError(f"ANTs composed field has shape {disp.shape}, expected {(*f.shape, 3)}")
            out["field"] = check_field(ants_displacement_to_voxels(disp, geom), f.shape, "ANTs SyN")
            out["warped"] = reg["warpedmovout"].numpy()
            if moving_labels is not None:
                li = ants_image(ants, np.asarray(moving_labels, dtype=np.float32), geom)
                wl = ants.apply_transforms(fi, li, tx, interpolator="nearestNeighbor")
                out["warped_labels"] = np.rint(wl.numpy()).astype(np.int64)
        return out

    def info(self) -> Dict[str, Any]:
        ok, version = ants_available()
        return {"antspyx_version": version if ok else None, "type_of_transform": self.type_of_transform,
                "registration_kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.kwargs.items()},
                "seed": self.seed, "itk_threads": os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")}
