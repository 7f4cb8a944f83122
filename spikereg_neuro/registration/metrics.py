"""Registration metrics (numpy-first, Learn2Reg / LUMIR conventions).

Every function accepts numpy arrays or torch tensors (converted with ``.detach().cpu()``).

* Label maps are integer 3D volumes ``(D, H, W)``; leading singleton axes such as the
  ``(1, 1, D, H, W)`` of a torch batch are squeezed away. Label ``0`` is background.
* Displacement fields are ``(3, D, H, W)`` or ``(N, 3, D, H, W)`` in **voxels**; channel ``k``
  moves along spatial axis ``k`` (see :mod:`spikereg_neuro.registration.transform`).

Conventions
-----------
Dice
    Per foreground label; a label absent from the fixed *or* the warped map is ``NaN`` and is
    skipped by :func:`dice_mean` (Learn2Reg).
HD95
    Surface voxels of a mask ``M`` are ``M & ~erode(M)`` with a full 3x3x3 structuring element
    (26-connectivity) and zero outside the volume, so voxels on the volume border count as
    surface. For each surface voxel of ``A`` the Euclidean distance (in mm, using ``spacing``)
    to the nearest surface voxel of ``B`` is computed with
    ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``, and vice versa. HD95 is
    ``max(p95(A->B), p95(B->A))`` — the symmetric robust Hausdorff distance of DeepMind's
    ``surface-distance`` (``compute_robust_hausdorff``) and MONAI (``directed=False``). Unlike
    DeepMind's, the distances are *not* weighted by surfel area (plain voxel counts, like
    MONAI); ``np.percentile`` with linear interpolation. A label empty on either side is NaN.
Endpoint error
    ``|u(x) - u_true(x)|`` (Euclidean, voxels, or mm with ``spacing``) averaged over the voxels of
    ``mask`` (default: all); only defined where the true field is known (synthetic pairs).
Jacobian
    ``J = I + grad(u)`` with central differences (``np.gradient``, one-sided at the border),
    then ``crop`` voxels removed on every border (Learn2Reg uses 2).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "dice_per_label",
    "dice_mean",
    "hd95",
    "hd95_mean",
    "jacobian_determinant",
    "folding_percent",
    "std_log_jacobian",
    "sdlogj_learn2reg",
    "endpoint_error",
]

ArrayLike = Any  # numpy array or torch tensor


# --------------------------------------------------------------------------- input helpers
def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_label_volume(x: ArrayLike, name: str) -> np.ndarray:
    """Integer ``(D, H, W)`` label volume; squeezes leading singleton axes."""
    a = _to_numpy(x, name)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(
            f"{name} must be a 3D label volume (D, H, W) (leading singleton axes allowed), "
            f"got shape {tuple(_to_numpy(x, name).shape)}"
        )
    if a.dtype == bool:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or inf")
        if not np.array_equal(a, np.round(a)):
            raise ValueError(f"{name} must hold integer labels, got non-integer values")
        a = a.astype(np.int64)
    return a


def _label_pair(fixed: ArrayLike, warped: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    f = _as_label_volume(fixed, "fixed_labels")
    w = _as_label_volume(warped, "warped_labels")
    if f.shape != w.shape:
        raise ValueError(f"shape mismatch: fixed_labels {f.shape} vs warped_labels {w.shape}")
    return f, w


def _resolve_labels(
    f: np.ndarray, w: np.ndarray, labels: Iterable[int] | None
) -> list[int]:
    if labels is None:
        present = np.union1d(np.unique(f), np.unique(w))
        return [int(v) for v in present if v > 0]
    out = [int(v) for v in labels]
    if any(v <= 0 for v in out):
        raise ValueError(f"labels must be foreground labels (> 0), got {out}")
    return out


def _as_field(field: ArrayLike) -> np.ndarray:
    """Displacement field as float64 ``(N, 3, D, H, W)``."""
    a = _to_numpy(field, "field")
    if a.ndim == 4:
        a = a[None]
    if a.ndim != 5 or a.shape[1] != 3:
        raise ValueError(
            f"displacement field must have shape (3, D, H, W) or (N, 3, D, H, W), "
            f"got {tuple(a.shape)}"
        )
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"displacement field must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError("displacement field contains NaN or inf")
    return a


def _nanmean(values: Iterable[float]) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or np.all(np.isnan(v)):
        return float("nan")
    return float(np.nanmean(v))


# --------------------------------------------------------------------------- Dice
def dice_per_label(
    fixed_labels: ArrayLike,
    warped_labels: ArrayLike,
    labels: Sequence[int] | None = None,
) -> dict[int, float]:
    """Dice ``2|A&B| / (|A|+|B|)`` for each foreground label.

    ``labels=None`` uses the union of foreground labels present in either map. A label absent
    from ``fixed_labels`` or from ``warped_labels`` gives ``NaN`` (Learn2Reg convention).
    """
    f, w = _label_pair(fixed_labels, warped_labels)
    wanted = _resolve_labels(f, w, labels)
    # one pass: label sizes and overlaps with bincount
    lo = int(min(f.min(), w.min())) if f.size else 0
    hi = int(max(f.max(), w.max())) if f.size else 0
    if lo >= 0 and hi < 2**24:
        fi = f.ravel().astype(np.intp, copy=False)
        wi = w.ravel().astype(np.intp, copy=False)
        k = hi + 1
        pos = {lab: lab for lab in wanted if lab <= hi}
    else:  # negative or huge label values: compact them first
        present, inverse = np.unique(np.concatenate([f.ravel(), w.ravel()]), return_inverse=True)
        fi, wi, k = inverse[: f.size], inverse[f.size :], present.size
        pos = {int(v): i for i, v in enumerate(present)}
    n_f = np.bincount(fi, minlength=k)
    n_w = np.bincount(wi, minlength=k)
    n_both = np.bincount(fi[fi == wi], minlength=k)
    out: dict[int, float] = {}
    for lab in wanted:
        i = pos.get(lab)
        if i is None or n_f[i] == 0 or n_w[i] == 0:
            out[lab] = float("nan")
        else:
            out[lab] = 2.0 * float(n_both[i]) / float(n_f[i] + n_w[i])
    return out


def dice_mean(
    fixed_labels: ArrayLike,
    warped_labels: ArrayLike,
    labels: Sequence[int] | None = None,
) -> float:
    """Mean Dice over foreground labels, NaN labels skipped; NaN if every label is NaN."""
    return _nanmean(dice_per_label(fixed_labels, warped_labels, labels).values())


# --------------------------------------------------------------------------- HD95
_FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def _surface(mask: np.ndarray) -> np.ndarray:
    eroded = ndimage.binary_erosion(mask, structure=_FULL_CONNECTIVITY, border_value=0)
    return mask & ~eroded


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).ravel())
    if len(sp) != 3:
        raise ValueError(f"spacing must have 3 entries (mm per voxel along D, H, W), got {sp}")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing entries must be finite and > 0, got {sp}")
    return sp  # type: ignore[return-value]


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of ``a | b`` plus one voxel (clipped to the volume).

    Exact: every surface voxel lies in the box, and the one-voxel margin (or the true volume
    border) keeps the erosion, hence the surfaces, identical to the uncropped ones.
    """
    idx = np.nonzero(a | b)
    sl = tuple(
        slice(max(int(i.min()) - 1, 0), min(int(i.max()) + 2, n)) for i, n in zip(idx, a.shape)
    )
    return a[sl], b[sl]


def _hd_percentile(a: np.ndarray, b: np.ndarray, spacing, percentile: float) -> float:
    a, b = _crop_to_union(a, b)
    sa, sb = _surface(a), _surface(b)
    # distance of every voxel to the nearest surface voxel of the other mask
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    d_ab = dist_to_b[sa]
    d_ba = dist_to_a[sb]
    return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def hd95(
    fixed_labels: ArrayLike,
    warped_labels: ArrayLike,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    labels: Sequence[int] | None = None,
    percentile: float = 95.0,
) -> dict[int, float]:
    """95th-percentile symmetric surface Hausdorff distance in mm, per foreground label.

    ``max(p95(d(surf A -> surf B)), p95(d(surf B -> surf A)))`` with ``spacing`` in mm per
    voxel along (D, H, W); see the module docstring for the exact surface definition.
    ``percentile=100`` gives the plain Hausdorff distance. A label empty on either side: NaN.
    """
    f, w = _label_pair(fixed_labels, warped_labels)
    sp = _check_spacing(spacing)
    if not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    out: dict[int, float] = {}
    for lab in _resolve_labels(f, w, labels):
        a = f == lab
        b = w == lab
        if not a.any() or not b.any():
            out[lab] = float("nan")
        else:
            out[lab] = _hd_percentile(a, b, sp, float(percentile))
    return out


def hd95_mean(
    fixed_labels: ArrayLike,
    warped_labels: ArrayLike,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    labels: Sequence[int] | None = None,
    percentile: float = 95.0,
) -> float:
    """Mean of :func:`hd95` over labels, NaN labels skipped; NaN if every label is NaN."""
    return _nanmean(hd95(fixed_labels, warped_labels, spacing, labels, percentile).values())


# --------------------------------------------------------------------------- Jacobian
def jacobian_determinant(field: ArrayLike, crop: int = 2) -> np.ndarray:
    """Determinant of ``I + grad(u)`` per voxel (central differences), border-cropped.

    ``field`` is ``(3, D, H, W)`` -> returns ``(D-2c, H-2c, W-2c)``; ``(N, 3, D, H, W)`` ->
    returns ``(N, D-2c, H-2c, W-2c)``. ``crop`` voxels are removed on every border
    (Learn2Reg: 2), which also drops the one-sided differences at the border.
    """
    u = _as_field(field)
    squeeze = getattr(field, "ndim", np.ndim(field)) == 4
    crop = int(crop)
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    spatial = u.shape[2:]
    if any(s < 2 for s in spatial):
        raise ValueError(f"field needs at least 2 voxels along each axis, got {spatial}")
    if any(s - 2 * crop < 1 for s in spatial):
        raise ValueError(f"crop={crop} leaves no voxel of a field of spatial shape {spatial}")
    sl = (slice(crop, -crop),) * 3 if crop else (slice(None),) * 3
    dets = []
    for n in range(u.shape[0]):
        # j[i][k] = d u_i / d x_k + delta_ik, cropped
        j = [
            [g[sl] + (1.0 if i == k else 0.0) for k, g in enumerate(np.gradient(u[n, i]))]
            for i in range(3)
        ]
        dets.append(
            j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
            - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
        )
    det = np.stack(dets, axis=0)
    return det[0] if squeeze else det


def folding_percent(field: ArrayLike, crop: int = 2) -> float:
    """Percentage (0-100) of voxels with ``det J <= 0`` (pooled over the batch)."""
    det = jacobian_determinant(field, crop=crop)
    return float(100.0 * np.mean(det <= 0))


def std_log_jacobian(field: ArrayLike, crop: int = 2) -> float:
    """Plain ``std(log J)`` over the voxels with ``J > 0`` (folded voxels are excluded).

    NaN if no voxel has a positive determinant. Compare with :func:`sdlogj_learn2reg`.
    """
    det = jacobian_determinant(field, crop=crop)
    pos = det[det > 0]
    if pos.size == 0:
        return float("nan")
    return float(np.std(np.log(pos)))


def sdlogj_learn2reg(field: ArrayLike, crop: int = 2) -> float:
    """Learn2Reg's SDlogJ: ``std(log(clip(J + 3, 1e-9, 1e9)))`` over all cropped voxels.

    The ``+ 3`` is Learn2Reg's own (it keeps folded voxels finite); the value is therefore
    not the plain :func:`std_log_jacobian`.
    """
    det = jacobian_determinant(field, crop=crop)
    return float(np.std(np.log(np.clip(det + 3.0, 1e-9, 1e9))))


def endpoint_error(field: ArrayLike, true_field: ArrayLike, mask: Optional[ArrayLike] = None,
                   spacing: Optional[Sequence[float]] = None) -> float:
    """Mean endpoint error ``|u - u_true|`` over ``mask`` (voxels; mm with ``spacing``).

    Both fields are ``(3, D, H, W)`` pull displacements in voxels. ``mask`` is a boolean
    ``(D, H, W)`` volume (e.g. the fixed image's labelled voxels); an empty mask gives NaN.
    """
    u, t = _as_field(field), _as_field(true_field)
    if u.shape != t.shape:
        raise ValueError(f"field {tuple(u.shape)} and true field {tuple(t.shape)} differ in shape")
    d = u - t
    if spacing is not None:
        d = d * np.asarray(_check_spacing(spacing), dtype=np.float64).reshape(1, 3, 1, 1, 1)
    err = np.sqrt((d ** 2).sum(axis=1))        # (N, D, H, W)
    if mask is None:
        return float(err.mean())
    m = _as_label_volume(mask, "mask") > 0
    if m.shape != err.shape[1:]:
        raise ValueError(f"mask {tuple(m.shape)} does not match the field's grid {tuple(err.shape[1:])}")
    if not m.any():
        return float("nan")
    return float(err[:, m].mean())
