"""World-space geometry for ``register``: any two 3D scans onto one working grid, an optional
affine pre-alignment (ANTs), and the composed transform written on the fixed file's own grid.

Conventions
    * An *affine* maps voxel indices to world millimetres, RAS+ (nibabel's convention).
    * A *world map* ``T`` (4 x 4) is a pull map: the fixed-world point ``x`` takes its value
      from the moving-world point ``T x`` (what ITK / ANTs transforms mean).
    * The *working grid* has the directions of the fixed image's closest-canonical (RAS) grid,
      the model's training spacing and the fixed image's field of view (same centre, extent
      rounded to whole voxels). Along an axis where the fixed spacing already equals the
      model's (within 0.1 %), it is the fixed canonical grid itself.
    * The network's field ``u`` lives on the working grid: voxels, channel ``k`` along working
      axis ``k``, pull.
    * The whole transform at fixed voxel ``i`` (world ``x = A_f i``) is
      ``z = T (x + R_w u(A_w^-1 x))`` with ``R_w`` the working grid's 3 x 3 part and ``u``
      interpolated trilinearly (border values beyond the grid). The moving image is sampled
      once, at its voxel ``A_m^-1 z``.

Sampling (:func:`sample`) follows ITK's rule for the edge: a point within half a voxel of the
image takes the nearest edge value, a point farther out takes ``cval`` (the moving image's
minimum, 0 for labels), so results match ``ants.apply_transforms``.
"""
from __future__ import annotations

import numbers
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
from scipy import ndimage

__all__ = [
    "Grid",
    "model_spacing",
    "working_grid",
    "check_spacing",
    "check_working_grid",
    "sample",
    "resample",
    "overlap_fraction",
    "ants_affine",
    "affine_spacing",
    "compose_to_fixed",
    "from_canonical",
    "canonical_field_to_file",
    "LPS",
]

#: RAS <-> LPS (ITK's physical space) for vectors
LPS = np.diag([-1.0, -1.0, 1.0])
_LPS4 = np.diag([-1.0, -1.0, 1.0, 1.0])

#: spacing ratio (either way) or anisotropy above which ``register`` warns / refuses
WARN_RATIO = 1.5
ABSURD_RATIO = 10.0
#: working grids outside these sizes are refused
MIN_WORKING_VOXELS = 4
MAX_WORKING_VOXELS = 100_000_000


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: 3D ``shape`` and 4 x 4 voxel -> world (RAS mm) ``affine``."""

    shape: Tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0)

    def matches(self, other: "Grid", atol: float = 1e-3) -> bool:
        """Same shape and affine within ``atol`` mm (the test of :func:`~spikereg_neuro.io.nifti.check_pair`)."""
        return tuple(self.shape) == tuple(other.shape) and bool(
            np.allclose(self.affine, other.affine, atol=atol, rtol=0))

    def describe(self) -> str:
        """``64x72x64 at 2.5x2.5x2.5 mm``."""
        return f"{'x'.join(map(str, self.shape))} at {'x'.join(f'{v:.3g}' for v in self.spacing)} mm"


# ------------------------------------------------------------------------------ spacing
def model_spacing(ckpt: Mapping[str, Any]) -> Tuple[float, str]:
    """The isotropic voxel size (mm) a checkpoint's model was trained at, and where it came from.

    Order: the spacing of the ``--data`` folder it was trained on (``data.spacing_mm``, for
    ``data.kind == "folder"``), the checkpoint's ``data_config.voxel_size_mm`` (what the trainer
    records for the embedded data), its ``config.data.voxel_size_mm``, else the packaged default
    config's ``data.voxel_size_mm``.
    """
    data = ckpt.get("data")
    if isinstance(data, Mapping) and data.get("kind") == "folder" and data.get("spacing_mm") is not None:
        where = "the checkpoint's training folder (data.spacing_mm)"
        return _positive_mm(data["spacing_mm"], where), where
    for where, section in (("the checkpoint's data_config", ckpt.get("data_config")),
                           ("the checkpoint's config (data section)", (ckpt.get("config") or {}).get("data")
                            if isinstance(ckpt.get("config"), Mapping) else None)):
        if isinstance(section, Mapping) and section.get("voxel_size_mm") is not None:
            return _positive_mm(section["voxel_size_mm"], where), where
    from ..config import load_config

    vs = load_config().data.voxel_size_mm
    return _positive_mm(vs, "the packaged config"), ("the packaged default config (data.voxel_size_mm): "
                                                     "the checkpoint records no training spacing")


def _positive_mm(value: Any, where: str) -> float:
    """``value`` (one number or three equal ones, mm) as a float; one-line errors naming ``where``."""
    bad = ValueError(f"{where}: voxel_size_mm {value!r} is not a positive size in mm")
    items = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in items):
        raise bad  # strings ("2.5", "x"), booleans, mappings, nested lists
    v = np.asarray(items, dtype=np.float64)
    if v.size not in (1, 3) or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise bad
    if v.size == 3 and not np.allclose(v, v[0], rtol=1e-3):
        raise ValueError(f"{where}: voxel_size_mm {value!r} is anisotropic; register supports "
                         f"models trained at an isotropic spacing")
    return float(v[0])


def working_grid(fixed_canonical: Grid, spacing_mm: float, rtol: float = 1e-3) -> Grid:
    """The grid the network runs on: ``fixed_canonical``'s directions and field of view at
    ``spacing_mm``; axes whose spacing is already ``spacing_mm`` (within ``rtol``) are kept
    as they are (so a fixed image at the model's spacing is its own working grid)."""
    sp = fixed_canonical.spacing
    shape = np.asarray(fixed_canonical.shape, dtype=np.float64)
    ratio = float(spacing_mm) / sp                      # fixed voxels per working voxel
    keep = np.abs(ratio - 1.0) <= rtol
    ratio = np.where(keep, 1.0, ratio)
    n = np.where(keep, shape, np.maximum(1.0, np.rint(shape / ratio))).astype(np.int64)
    m = np.eye(4)
    m[:3, :3] = np.diag(ratio)
    m[:3, 3] = (shape - 1.0) / 2.0 - (n - 1.0) / 2.0 * ratio   # same centre
    return Grid(tuple(int(x) for x in n), np.asarray(fixed_canonical.affine, dtype=np.float64) @ m)


def _fmt_mm(v: np.ndarray) -> str:
    return "x".join(f"{x:.3g}" for x in v)


def check_spacing(name: str, spacing: np.ndarray, model_mm: float, then: Optional[str] = None) -> Optional[str]:
    """A warning (or ``None``) when an image's voxel size is far from the model's, i.e. a
    ratio either way or an anisotropy above 1.5; a one-line ``ValueError`` above 10.
    ``then`` says what happens to the image (default: it is resampled to the model's spacing)."""
    sp = np.asarray(spacing, dtype=np.float64)
    ratio = sp / float(model_mm)
    finer, coarser = float(1.0 / ratio.min()), float(ratio.max())
    aniso = float(sp.max() / sp.min())
    what = f"{name} voxel size {_fmt_mm(sp)} mm"
    if max(finer, coarser) > ABSURD_RATIO or aniso > ABSURD_RATIO:
        raise ValueError(f"{what} is too far from the {model_mm:g} mm the model was trained at "
                         f"(ratio {max(finer, coarser, aniso):.3g} > {ABSURD_RATIO:g}): resample it first "
                         f"or use a model trained near that spacing")
    notes = []
    if finer > WARN_RATIO:
        notes.append(f"{finer:.2g}x finer than the model's {model_mm:g} mm")
    if coarser > WARN_RATIO:
        notes.append(f"{coarser:.2g}x coarser than the model's {model_mm:g} mm")
    if aniso > WARN_RATIO:
        notes.append(f"anisotropic ({aniso:.2g}:1)")
    if not notes:
        return None
    if then is not None:
        pass
    elif coarser > WARN_RATIO:
        then = f"upsampled to {model_mm:g} mm, the model sees less detail than it was trained on"
    else:
        then = f"registered on a {model_mm:g} mm grid: finer detail is carried along, not aligned"
    return f"{what} is " + ", ".join(notes) + f" ({then})"


def check_working_grid(grid: Grid) -> None:
    """Refuse a working grid too small for the network or too large for memory (one line)."""
    n = int(np.prod(grid.shape))
    if min(grid.shape) < MIN_WORKING_VOXELS:
        raise ValueError(f"the working grid {grid.describe()} has fewer than {MIN_WORKING_VOXELS} voxels "
                         f"along an axis: the fixed image's field of view is too small for the model")
    if n > MAX_WORKING_VOXELS:
        raise ValueError(f"the working grid {grid.describe()} has {n:,} voxels (more than "
                         f"{MAX_WORKING_VOXELS:,}): the fixed image's field of view is too large")


# ------------------------------------------------------------------------------ sampling
def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """4 x 4 affine applied to ``(3, N)`` points."""
    return m[:3, :3] @ pts + m[:3, 3:4]


def sample(data: np.ndarray, coords: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Values of ``data`` at voxel coordinates ``coords`` ``(3, N)`` (``order`` 1 trilinear,
    0 nearest), ITK's edge rule: within half a voxel of the image the edge value, beyond it
    ``cval``. Returns ``(N,)`` in ``data``'s dtype for ``order=0``, float32 otherwise."""
    n = np.asarray(data.shape, dtype=np.float64)[:, None]
    inside = np.all((coords >= -0.5) & (coords <= n - 0.5), axis=0)
    c = np.clip(coords, 0.0, n - 1.0)
    out = ndimage.map_coordinates(data, c, order=order, mode="nearest", prefilter=False,
                                  output=data.dtype if order == 0 else np.float32)
    out[~inside] = cval
    return out


def _voxel_points(shape: Tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    """Voxel indices of rows ``lo:hi`` (along axis 0) of a grid, ``(3, N)`` float64."""
    idx = np.indices((hi - lo, *shape[1:]), dtype=np.float64).reshape(3, -1)
    idx[0] += lo
    return idx


def resample(data: np.ndarray, affine: np.ndarray, grid: Grid, world_map: Optional[np.ndarray] = None,
             order: int = 1, cval: float = 0.0, antialias: bool = True) -> np.ndarray:
    """``data`` (voxel -> world ``affine``) sampled on ``grid`` through the pull ``world_map``
    (identity if ``None``). With ``antialias`` (and ``order`` 1) the image is first smoothed
    along each of its axes by a Gaussian of ``sigma = (step - 1) / 2`` voxels, ``step`` the
    source voxels per grid voxel (the rule the embedded training data were made with)."""
    wm = np.eye(4) if world_map is None else np.asarray(world_map, dtype=np.float64)
    m = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ wm @ np.asarray(grid.affine)
    src = np.asarray(data) if order == 0 else np.asarray(data, dtype=np.float32)
    if antialias and order > 0:
        step = np.linalg.norm(m[:3, :3], axis=1)
        sigma = [max(0.0, (s - 1.0) / 2.0) for s in step]
        if any(s > 0.0 for s in sigma):
            src = ndimage.gaussian_filter(src, sigma=sigma, mode="nearest")
    out = np.empty(int(np.prod(grid.shape)), dtype=np.float32 if order else src.dtype)
    rows = max(1, (1 << 20) // max(1, grid.shape[1] * grid.shape[2]))
    for lo in range(0, grid.shape[0], rows):
        hi = min(grid.shape[0], lo + rows)
        pts = _voxel_points(grid.shape, lo, hi)
        out[lo * grid.shape[1] * grid.shape[2]: hi * grid.shape[1] * grid.shape[2]] = \
            sample(src, _apply(m, pts), order=order, cval=cval)
    return out.reshape(grid.shape)


def overlap_fraction(grid: Grid, moving: Grid, world_map: Optional[np.ndarray] = None) -> float:
    """Fraction of ``grid``'s voxels whose (mapped) world point falls inside ``moving``'s
    field of view (within half a voxel of its edge voxels), on a subsampled grid."""
    wm = np.eye(4) if world_map is None else np.asarray(world_map, dtype=np.float64)
    axes = [np.linspace(0, s - 1, min(int(s), 24)) for s in grid.shape]
    pts = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    q = _apply(np.linalg.inv(moving.affine) @ wm @ grid.affine, pts)
    n = np.asarray(moving.shape, dtype=np.float64)[:, None]
    return float(np.mean(np.all((q >= -0.5) & (q <= n - 0.5), axis=0)))


# ------------------------------------------------------------------------------ affine (ANTs)
#: the fewest voxels per axis :func:`ants_affine` accepts (2 at ANTs' 6x-shrunk coarsest level)
AFFINE_MIN_VOXELS = 12


def affine_spacing(fixed: Grid, model_mm: float, min_voxels: int = 32) -> float:
    """Isotropic spacing of the images the affine stage sees: the model's, finer where the
    fixed field of view would have fewer than ``min_voxels`` voxels along an axis (ANTs'
    coarsest level shrinks 6x), never finer than the fixed image's own finest spacing."""
    fov = float(np.min(np.asarray(fixed.shape) * fixed.spacing))
    return float(max(min(float(model_mm), fov / min_voxels), float(fixed.spacing.min())))


def ants_affine(fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray,
                seed: int = 1, threads: Optional[int] = None) -> np.ndarray:
    """Affine pre-alignment by ``ants.registration(..., type_of_transform="Affine")`` (ANTsPy's
    defaults: centre-of-mass initialisation, Mattes MI, shrink factors 6/4/2/1), seeded.

    Returns the 4 x 4 RAS world pull map ``T`` (fixed world point -> moving world point). ITK's
    ``MatrixOffsetTransformBase`` maps LPS point ``p`` to ``A (p - c) + t + c`` (parameters
    ``A``, ``t``; fixed parameters the centre ``c``); ``T = F M F`` with ``F = diag(-1,-1,1,1)``.
    """
    from ..baselines.ants import _ants_seed, _import_ants, affine_to_ants_geometry, ants_image

    for what, img in (("FIXED", fixed), ("MOVING", moving)):
        if min(img.shape) < AFFINE_MIN_VOXELS:
            raise ValueError(f"the affine stage needs at least {AFFINE_MIN_VOXELS} voxels per axis (ANTs' "
                             f"coarsest level shrinks 6x); {what} has {'x'.join(map(str, img.shape))} at its "
                             "spacing: drop --init affine for so small an image")
    ants = _import_ants(threads)
    fi = ants_image(ants, fixed, affine_to_ants_geometry(fixed_affine))
    mi = ants_image(ants, moving, affine_to_ants_geometry(moving_affine))
    with tempfile.TemporaryDirectory(prefix="spikereg_affine_") as tmp, _ants_seed(ants, seed):
        reg = ants.registration(fi, mi, type_of_transform="Affine", outprefix=str(Path(tmp) / "aff_"))
        mats = [t for t in reg["fwdtransforms"] if str(t).endswith(".mat")]
        if len(mats) != 1:
            raise RuntimeError(f"ANTs affine registration gave transforms {reg['fwdtransforms']}, expected one .mat")
        tx = ants.read_transform(mats[0])
        params = np.asarray(tx.parameters, dtype=np.float64)
        centre = np.asarray(tx.fixed_parameters, dtype=np.float64)
    if params.size != 12 or centre.size != 3 or not np.all(np.isfinite(params)):
        raise RuntimeError(f"unexpected ANTs affine parameters {params} (centre {centre})")
    a, t = params[:9].reshape(3, 3), params[9:]
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + centre - a @ centre
    world = _LPS4 @ m @ _LPS4
    if abs(np.linalg.det(world[:3, :3])) < 1e-6:
        raise ValueError("the affine pre-alignment collapsed (singular matrix): the images may not overlap "
                         "or be too different for an affine registration")
    return world


# ------------------------------------------------------------------------------ composition
def _rows(shape: Tuple[int, ...], budget: int = 1 << 20) -> Iterator[Tuple[int, int]]:
    step = max(1, budget // max(1, int(shape[1]) * int(shape[2])))
    for lo in range(0, int(shape[0]), step):
        yield lo, min(int(shape[0]), lo + step)


def compose_to_fixed(fixed: Grid, work: Grid, field: np.ndarray, world_map: Optional[np.ndarray],
                     moving: Optional[Tuple[np.ndarray, np.ndarray]], moving_cval: float = 0.0,
                     labels: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                     voxel_field: bool = False, itk_field: bool = False) -> Dict[str, np.ndarray]:
    """Apply the whole transform (``world_map`` after the working-grid ``field``) on the fixed
    file's grid ``fixed``, sampling each moving input once.

    ``moving`` and ``labels`` are ``(array, affine)`` or ``None`` (labels: integer indices,
    nearest neighbour, 0 outside). Returns ``warped`` (float32, fixed shape; if ``moving``),
    ``warped_labels`` (if ``labels``), ``voxel`` ``(3, *fixed.shape)`` (the transform as a displacement in fixed
    voxels, channel ``k`` along the fixed file's array axis ``k``) and ``itk``
    ``(*fixed.shape, 3)`` (LPS mm), as asked. Processed in slabs of about 2^20 voxels.
    """
    wm = np.eye(4) if world_map is None else np.asarray(world_map, dtype=np.float64)
    u = np.asarray(field, dtype=np.float32)
    if u.shape != (3, *work.shape):
        raise ValueError(f"field shape {u.shape} does not match the working grid {work.shape}")
    a_f = np.asarray(fixed.affine, dtype=np.float64)
    inv_f, inv_w = np.linalg.inv(a_f), np.linalg.inv(work.affine)
    r_w = np.asarray(work.affine)[:3, :3]
    n_vox = int(np.prod(fixed.shape))
    out: Dict[str, np.ndarray] = {}
    if moving is not None:
        m_data, m_aff = moving
        to_m = np.linalg.inv(m_aff)
        out["warped"] = np.empty(n_vox, np.float32)
    if labels is not None:
        l_data, l_aff = labels
        to_l = np.linalg.inv(l_aff)
        out["warped_labels"] = np.empty(n_vox, l_data.dtype)
    if voxel_field:
        out["voxel"] = np.empty((3, n_vox), np.float32)
    if itk_field:
        out["itk"] = np.empty((n_vox, 3), np.float32)
    plane = int(fixed.shape[1]) * int(fixed.shape[2])
    for lo, hi in _rows(fixed.shape):
        sl = slice(lo * plane, hi * plane)
        idx = _voxel_points(fixed.shape, lo, hi)
        x = _apply(a_f, idx)
        j = _apply(inv_w, x)
        d = np.stack([ndimage.map_coordinates(u[k], j, order=1, mode="nearest", prefilter=False)
                      for k in range(3)]).astype(np.float64)
        z = _apply(wm, x + r_w @ d)
        if moving is not None:
            out["warped"][sl] = sample(m_data, _apply(to_m, z), order=1, cval=moving_cval)
        if labels is not None:
            out["warped_labels"][sl] = sample(l_data, _apply(to_l, z), order=0, cval=0)
        if voxel_field:
            out["voxel"][:, sl] = _apply(inv_f, z) - idx
        if itk_field:
            out["itk"][sl] = (LPS @ (z - x)).T
    res: Dict[str, np.ndarray] = {}
    if moving is not None:
        res["warped"] = out["warped"].reshape(fixed.shape)
    if labels is not None:
        res["warped_labels"] = out["warped_labels"].reshape(fixed.shape)
    if voxel_field:
        res["voxel"] = out["voxel"].reshape(3, *fixed.shape)
    if itk_field:
        res["itk"] = out["itk"].reshape(*fixed.shape, 3)
    return res


# ------------------------------------------------------------------------------ orientation
def _canonical_map(canonical: Grid, original: Grid) -> Tuple[List[int], List[bool]]:
    """For each original array axis ``a``: the canonical axis it is and whether it is flipped
    (the voxel map ``inv(A_c) @ A_o`` is a signed permutation for a reorientation)."""
    t = np.linalg.inv(canonical.affine) @ np.asarray(original.affine, dtype=np.float64)
    lin = np.rint(t[:3, :3])
    if not (np.allclose(t[:3, :3], lin, atol=1e-4) and np.all(np.abs(lin).sum(axis=0) == 1)
            and np.all(np.abs(lin).sum(axis=1) == 1)):
        raise ValueError("internal: the canonical grid is not a reorientation of the file's grid")
    perm = [int(np.argmax(np.abs(lin[:, a]))) for a in range(3)]
    flip = [bool(lin[perm[a], a] < 0) for a in range(3)]
    if [canonical.shape[p] for p in perm] != list(original.shape):
        raise ValueError("internal: canonical and file grids have different sizes")
    return perm, flip


def from_canonical(array: np.ndarray, canonical: Grid, original: Grid) -> np.ndarray:
    """A canonical-grid array (the 3 spatial axes first; trailing axes are kept) in the file's
    own orientation: an exact axis permutation / flip, no interpolation."""
    perm, flip = _canonical_map(canonical, original)
    out = np.transpose(array, perm + list(range(3, array.ndim)))
    for a in range(3):
        if flip[a]:
            out = np.flip(out, axis=a)
    return np.ascontiguousarray(out)


def canonical_field_to_file(field: np.ndarray, canonical: Grid, original: Grid) -> np.ndarray:
    """A ``(3, *canonical.shape)`` voxel field (channel ``k`` along canonical axis ``k``) as
    the same displacement in the file's voxels and array axes (exact: components permuted
    and negated along flipped axes)."""
    perm, flip = _canonical_map(canonical, original)
    comps = [(-1.0 if flip[a] else 1.0) * field[perm[a]] for a in range(3)]
    return from_canonical(np.stack(comps, axis=-1), canonical, original).transpose(3, 0, 1, 2).copy()
