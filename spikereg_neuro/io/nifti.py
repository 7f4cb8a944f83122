"""NIfTI input/output with the project's conventions.

* Volumes are read as ``float32`` arrays in *voxel order of the (optionally canonical) image*
  together with their 4x4 voxel-to-world affine (mm) and header.
* ``canonical=True`` (the default) reorients with :func:`nibabel.as_closest_canonical`, so
  every array is RAS+ (axis 0 -> Right, 1 -> Anterior, 2 -> Superior) and a registration done
  in voxel space is valid across files stored in different orientations (LAS, LIP, ...).
* Every write is atomic (:mod:`spikereg_neuro.io.atomic`).
* Displacement fields ``(3, D, H, W)`` (voxels, channel ``k`` along axis ``k``, pull warping)
  are stored as 5D NIfTI vector images ``(D, H, W, 1, 3)`` with intent ``VECTOR``.
* ITK / ANTs displacement fields (:func:`save_itk_field`): the same 5D layout, but the vectors
  are millimetres in ITK's LPS physical space (what ``antsApplyTransforms`` reads).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import nibabel as nib
import numpy as np

from .atomic import atomic_write
from .paths import check_input_file

__all__ = [
    "load_volume",
    "load_labels",
    "save_volume",
    "save_field",
    "load_field",
    "check_pair",
    "load_geometry",
    "save_itk_field",
]

PathLike = Union[str, "os.PathLike[str]"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
FIELD_DESCRIP = b"spikereg displacement, voxels, channel k = axis k, pull"
ITK_FIELD_DESCRIP = b"spikereg displacement, ITK: mm, LPS, pull"


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_nifti_name(path: Path) -> None:
    if not str(path).lower().endswith(_NIFTI_SUFFIXES):  # as io.paths.check_outputs (nibabel too)
        raise ValueError(f"NIfTI file name must end with .nii or .nii.gz: {path}")


def _load_image(path: PathLike, canonical: bool, itemsize: int = 4) -> nib.Nifti1Image:
    p = check_input_file(path, "NIfTI")
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises several types for unreadable files
        detail = " ".join(str(exc).split()) or exc.__class__.__name__
        raise ValueError(f"cannot read {p} as NIfTI: {detail}") from exc
    _check_memory(img, p, itemsize)  # before reorienting (which reads the data)
    aff = np.asarray(img.affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        rows = "; ".join(" ".join(f"{x:g}" for x in r) for r in aff[:3]) if aff.shape == (4, 4) else aff.shape
        raise ValueError(f"{p}: the voxel-to-world affine is singular or non-finite ({rows}): "
                         f"the image has no valid geometry")
    if canonical:
        img = nib.as_closest_canonical(img)
    return img


def _available_memory() -> Optional[int]:
    """Bytes of memory available now (Linux ``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _check_memory(img: nib.Nifti1Image, path: PathLike, itemsize: int = 4) -> None:
    """Refuse, before allocating, a header whose voxel count cannot be what the file holds
    (an uncompressed file shorter than its data) or does not fit in the available memory."""
    n = int(np.prod([int(x) for x in img.shape], dtype=np.int64)) if img.shape else 0
    p = Path(path)
    shape = "x".join(str(int(x)) for x in img.shape)
    if str(p).lower().endswith(".nii"):  # header and data in this one uncompressed file
        try:
            offset = int(img.header.get("vox_offset", 0) or 0)
            need = offset + n * np.dtype(img.get_data_dtype()).itemsize
            have = p.stat().st_size
        except (OSError, TypeError, ValueError):
            need, have = 0, 0
        if need > have:
            raise ValueError(f"{p}: the header claims {shape} voxels ({need} bytes with its offset) "
                             f"but the file has {have} bytes (truncated or a forged header)")
    avail = _available_memory()
    want = n * max(int(itemsize), 4)
    if avail is not None and want > avail:
        raise ValueError(f"{p}: the header claims {shape} voxels ({want / 2 ** 30:.1f} GiB in memory), "
                         f"more than the {avail / 2 ** 30:.1f} GiB available")


def _read_data(img: nib.Nifti1Image, path: PathLike, raw: bool = False) -> np.ndarray:
    """The voxel data (float32, or the file's own type with ``raw``); a truncated or corrupt
    file, and complex or RGB data (no one real value per voxel), are a one-line ``ValueError``."""
    dt = np.dtype(img.get_data_dtype())
    if dt.kind not in "biuf":
        what = "complex" if dt.kind == "c" else "RGB / structured" if dt.fields else str(dt)
        raise ValueError(f"{path}: data type {dt} ({what}): expected one real value per voxel")
    try:
        if raw:
            return np.asanyarray(img.dataobj)
        return img.get_fdata(dtype=np.float32)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - EOFError, zlib.error, OSError ("Expected N bytes") ...
        detail = " ".join(str(exc).split()) or exc.__class__.__name__
        raise ValueError(f"cannot read the voxel data of {path} (truncated or corrupt file?): {detail}") from exc


def _squeeze_3d(shape: Tuple[int, ...], path: PathLike) -> Tuple[int, ...]:
    if len(shape) in (3, 4) and 0 in shape[:3]:
        raise ValueError(f"{path}: the volume is empty (shape {tuple(shape)})")
    if len(shape) == 3:
        return shape
    if len(shape) == 4 and shape[3] == 1:
        return shape[:3]
    raise ValueError(
        f"{path}: expected a 3D volume (a trailing 4th dimension of size 1 is allowed), "
        f"got shape {tuple(shape)}"
    )


def load_volume(
    path: PathLike, canonical: bool = True
) -> Tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read a 3D NIfTI volume.

    Returns ``(array, affine, header)``: ``array`` is ``float32`` of shape ``(D, H, W)``
    (scaling slope/intercept applied), ``affine`` the 4x4 voxel-to-world matrix of the
    returned array, ``header`` the header of the (reoriented) image.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an unreadable
    file, a volume that is not 3D (a trailing singleton 4th dimension is accepted and
    dropped) or non-finite values (NaN / inf).
    """
    img = _load_image(path, canonical)
    shape3 = _squeeze_3d(tuple(img.shape), path)
    data = np.asarray(_read_data(img, path)).reshape(shape3)
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise ValueError(f"{path}: {n_bad} non-finite voxel(s) (NaN or inf) in the volume")
    return np.ascontiguousarray(data), np.array(img.affine, dtype=np.float64), img.header


def load_labels(
    path: PathLike, canonical: bool = True
) -> Tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read a 3D integer label map: like :func:`load_volume` but returns ``int64``.

    Integer files are read in their own type (never through float32, so labels above 2^24
    stay exact). Raises ``ValueError`` if any value is not an integer, is negative or does
    not fit int64.
    """
    img = _load_image(path, canonical, itemsize=8)
    shape3 = _squeeze_3d(tuple(img.shape), path)
    raw = np.asarray(_read_data(img, path, raw=True)).reshape(shape3)
    if raw.dtype.kind == "b":
        return raw.astype(np.int64), np.array(img.affine, dtype=np.float64), img.header
    if raw.dtype.kind in "iu":
        if raw.size and raw.min() < 0:
            raise ValueError(f"{path}: label map has negative values")
        if raw.dtype == np.uint64 and raw.size and raw.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{path}: label values above {np.iinfo(np.int64).max} do not fit int64")
        data = raw.astype(np.int64)
    elif raw.dtype.kind == "f":
        n_bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
        if n_bad:
            raise ValueError(f"{path}: {n_bad} non-finite voxel(s) (NaN or inf) in the label map")
        rounded = np.rint(raw)
        if not np.array_equal(rounded, raw):
            raise ValueError(f"{path}: label map has non-integer values")
        if raw.size and rounded.min() < 0:
            raise ValueError(f"{path}: label map has negative values")
        if raw.size and rounded.max() >= 2.0 ** 63:
            raise ValueError(f"{path}: label values of {rounded.max():g} do not fit int64")
        data = rounded.astype(np.int64)
    else:
        raise ValueError(f"{path}: label map has data type {raw.dtype}, expected integers")
    return np.ascontiguousarray(data), np.array(img.affine, dtype=np.float64), img.header


def _default_dtype(array: np.ndarray) -> np.dtype:
    dt = array.dtype
    if dt == np.bool_:
        return np.dtype(np.uint8)
    if dt == np.float64 or dt == np.float16:
        return np.dtype(np.float32)
    if dt in (np.int64, np.uint64):
        if array.size == 0 or (array.min() >= np.iinfo(np.int32).min and array.max() <= np.iinfo(np.int32).max):
            return np.dtype(np.int32)
    return dt


def _check_affine(affine: Any) -> np.ndarray:
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {aff.shape}")
    if not np.all(np.isfinite(aff)):
        raise ValueError("affine has non-finite entries")
    if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine is singular:\n{aff}")
    return aff


def _write_image(path: Path, img: nib.Nifti1Image) -> Path:
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
    return path


def _set_geometry(img: nib.Nifti1Image, affine: np.ndarray, header: Optional[nib.Nifti1Header]) -> None:
    scode = int(header["sform_code"]) if header is not None else 0
    qcode = int(header["qform_code"]) if header is not None else 0
    img.set_sform(affine, code=scode or 2)  # 2 = aligned to another file / template
    # an output on the header's own grid keeps the header's qform when it differs from the sform
    # (e.g. scanner qform + template sform); otherwise the qform is the output's affine
    same_grid = header is not None and scode > 0 and np.allclose(header.get_sform(), affine, atol=1e-6)
    if same_grid and qcode > 0:
        img.set_qform(header.get_qform(), code=qcode)
    else:
        img.set_qform(affine, code=qcode or 2)
    img.header.set_xyzt_units(xyz="mm")


def save_volume(
    path: PathLike,
    array: Any,
    affine: Any,
    header: Optional[nib.Nifti1Header] = None,
    dtype: Any = None,
) -> Path:
    """Write a 3D volume to ``path`` (``.nii`` or ``.nii.gz``) atomically.

    ``dtype`` is the on-disk data type; by default that of ``array`` except
    float64/float16 -> float32, bool -> uint8, int64 -> int32 (when the values fit).
    ``header`` (e.g. from :func:`load_volume`) is copied; its shape/dtype/geometry fields are
    updated from ``array`` and ``affine``. Returns the path.
    """
    p = Path(path)
    _check_nifti_name(p)
    data = _to_numpy(array)
    if data.ndim != 3:
        raise ValueError(f"save_volume expects a 3D array, got shape {data.shape}")
    aff = _check_affine(affine)
    out_dtype = np.dtype(dtype) if dtype is not None else _default_dtype(data)
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise ValueError(f"refusing to write non-finite values (NaN/inf) to {p}")
    # a NIfTI header is copied; another format's (MGH, Analyze) has no sform/qform to keep
    hdr = header.copy() if isinstance(header, nib.Nifti1Header) else None
    kind = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image   # NIfTI-2 stays NIfTI-2
    img = kind(data.astype(out_dtype, copy=False), aff, header=hdr, dtype=out_dtype)
    img.set_data_dtype(out_dtype)
    if hdr is not None:
        # a copied header may carry scaling for another data range: write raw values
        img.header.set_slope_inter(1.0, 0.0)
    _set_geometry(img, aff, hdr)
    return _write_image(p, img)


def save_field(path: PathLike, field: Any, affine: Any) -> Path:
    """Write a displacement field ``(3, D, H, W)`` as a 5D NIfTI vector image.

    On disk: shape ``(D, H, W, 1, 3)``, float32, intent ``VECTOR``; the vectors are stored as
    given (the project's convention: voxels, channel ``k`` along array axis ``k``, pull).
    """
    p = Path(path)
    _check_nifti_name(p)
    f = _to_numpy(field)
    if f.ndim == 5 and f.shape[0] == 1:
        f = f[0]
    if f.ndim != 4 or f.shape[0] != 3:
        raise ValueError(f"field must have shape (3, D, H, W), got {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"refusing to write a field with non-finite values to {p}")
    aff = _check_affine(affine)
    data = np.moveaxis(f.astype(np.float32, copy=False), 0, -1)[:, :, :, None, :]
    img = nib.Nifti1Image(np.ascontiguousarray(data), aff)
    img.header.set_intent("vector", (), name="displacement")
    img.header["descrip"] = FIELD_DESCRIP
    _set_geometry(img, aff, None)
    return _write_image(p, img)


def load_field(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read a field written by :func:`save_field`: returns ``(field (3,D,H,W) float32, affine)``.

    The file is *not* reoriented (reorienting a vector field would also need its
    components permuted/flipped); the affine tells the grid it lives on. Also accepts a 4D
    ``(D, H, W, 3)`` layout.
    """
    img = _load_image(path, canonical=False)
    shape = tuple(img.shape)
    if len(shape) == 5 and shape[3] == 1 and shape[4] == 3:
        data = np.asarray(_read_data(img, path))[:, :, :, 0, :]
    elif len(shape) == 4 and shape[3] == 3:
        data = np.asarray(_read_data(img, path))
    else:
        raise ValueError(f"{path}: not a 3D vector field, shape {shape} (want (D, H, W, 1, 3))")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: field has non-finite values")
    return np.ascontiguousarray(np.moveaxis(data, -1, 0)), np.array(img.affine, dtype=np.float64)


def _shape_affine(obj: Any, what: str) -> Tuple[Tuple[int, ...], np.ndarray]:
    """(3D shape, affine) of a nibabel image, or of a tuple ``(array, affine, ...)``."""
    if hasattr(obj, "affine") and hasattr(obj, "shape"):
        shape, affine = tuple(obj.shape), obj.affine
    elif isinstance(obj, (tuple, list)) and len(obj) >= 2:
        shape, affine = tuple(np.shape(obj[0])), obj[1]
    else:
        raise TypeError(f"{what}: expected a NIfTI image or an (array, affine) tuple, got {type(obj).__name__}")
    if affine is None:
        raise ValueError(f"{what}: image has no affine")
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    return shape, np.asarray(affine, dtype=np.float64)


def check_pair(fixed_img: Any, moving_img: Any, atol: float = 1e-3) -> None:
    """Check that two images share a voxel grid (same 3D shape and affine within ``atol`` mm).

    Accepts nibabel images or ``(array, affine[, header])`` tuples (as returned by
    :func:`load_volume`). Raises ``ValueError`` naming both shapes / affines on mismatch.
    """
    fs, fa = _shape_affine(fixed_img, "fixed")
    ms, ma = _shape_affine(moving_img, "moving")
    if fs != ms:
        raise ValueError(f"shape mismatch: fixed {fs} vs moving {ms}")
    if not np.allclose(fa, ma, atol=atol, rtol=0):
        with np.printoptions(precision=4, suppress=True):
            raise ValueError(
                f"affine mismatch (atol={atol} mm): fixed\n{fa}\nvs moving\n{ma}\n"
                "resample both onto one grid first"
            )


def load_geometry(path: PathLike) -> Tuple[Tuple[int, int, int], np.ndarray, nib.Nifti1Header]:
    """``(shape, affine, header)`` of a 3D NIfTI file *as stored* (not reoriented), without
    reading its voxel data. Same one-line errors as :func:`load_volume` for a missing,
    unreadable, non-3D or geometry-less file."""
    img = _load_image(path, canonical=False)
    shape3 = _squeeze_3d(tuple(int(x) for x in img.shape), path)
    return shape3, np.array(img.affine, dtype=np.float64), img.header  # type: ignore[return-value]


def save_itk_field(path: PathLike, displacement_lps: Any, affine: Any) -> Path:
    """Write an ITK / ANTs displacement field atomically.

    ``displacement_lps`` is ``(X, Y, Z, 3)``: at voxel ``i`` of the grid ``affine`` (voxel ->
    RAS mm, as nibabel), the vector in mm in ITK's LPS physical space from the point to where
    the moving image is sampled (a pull field, like the transforms ANTs writes). On disk:
    ``(X, Y, Z, 1, 3)`` float32, intent ``VECTOR``, sform = qform = ``affine`` (ITK converts
    the grid to LPS itself; the vectors are stored as given, as ANTs stores its warps).
    """
    p = Path(path)
    _check_nifti_name(p)
    d = _to_numpy(displacement_lps)
    if d.ndim != 4 or d.shape[-1] != 3:
        raise ValueError(f"ITK displacement must have shape (X, Y, Z, 3), got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"refusing to write a field with non-finite values to {p}")
    aff = _check_affine(affine)
    data = np.ascontiguousarray(d.astype(np.float32, copy=False)[:, :, :, None, :])
    img = nib.Nifti1Image(data, aff)
    img.header.set_intent("vector", (), name="displacement")
    img.header["descrip"] = ITK_FIELD_DESCRIP
    _set_geometry(img, aff, None)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    return _write_image(p, img)
