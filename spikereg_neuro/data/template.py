"""The embedded anatomy: MNI ICBM152 2009a (symmetric) as shipped inside nilearn's wheel.

nilearn (>= 0.10) installs three 1 mm files under ``nilearn/datasets/data/``:
``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz`` (skull-stripped T1 and grey /
white-matter probability maps, 197x233x189, RAS). They are found through the installed
package; nothing is ever downloaded.

:func:`build_template` resamples them to an isotropic voxel size and a fixed array shape
centred on the brain and derives a label map with 18 foreground labels:

* **brain mask (1 mm)**: ``T1 > 0`` (the template is skull-stripped; every voxel whose
  GM + WM probability is >= 0.5 lies inside it).
* **tissue probabilities (1 mm)**, inside the mask: ``p_GM``, ``p_WM`` (divided by
  ``p_GM + p_WM`` where that sum exceeds 1) and ``p_CSF = 1 - p_GM - p_WM``; outside the
  mask ``p_background = 1``. So *CSF = brain-mask voxels where neither GM nor WM dominates*:
  after resampling, a voxel is CSF when ``p_CSF >= max(p_GM, p_WM)`` and ``p_CSF >
  p_background`` (ties go to the lower class in the order background, CSF, GM, WM).
* **resampling**: each map is low-pass filtered (Gaussian, sigma = (factor - 1) / 2 source
  voxels, the usual anti-aliasing rule) and linearly interpolated onto the target grid
  (``scipy.ndimage.affine_transform``, order 1), i.e. probabilities are averaged over the
  target voxel; the tissue class is the argmax of the 4 resampled probabilities and the
  target brain mask is ``class != background``.
* **hemisphere**: world x of the voxel centre (MNI, RAS+): ``x < 0`` -> left, ``x >= 0`` ->
  right.
* **zone**: world y of the voxel centre against thirds of the brain's y extent (the 1 mm
  mask's voxel centres, ``y_min .. y_max``): posterior ``y < y_min + e/3``, middle up to
  ``y_min + 2e/3``, anterior above (``e = y_max - y_min``).
* **label** = ``1 + 6 * tissue + 3 * hemisphere + zone`` with tissue CSF=0, GM=1, WM=2,
  hemisphere L=0, R=1, zone posterior=0, middle=1, anterior=2 (see :data:`LABEL_NAMES`);
  background is 0.

The T1 image is divided by the 99.5th percentile of the 1 mm brain voxels and clipped to
[0, 1] before resampling (background stays 0).

The target grid has axes parallel to the MNI axes (RAS+), spacing ``voxel_size`` and its
centre voxel ``(shape - 1) / 2`` at the centre of the brain's bounding box, so
``Template.affine`` maps voxel indices of the returned arrays to MNI millimetres.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = [
    "Template",
    "LABEL_NAMES",
    "TISSUES",
    "HEMISPHERES",
    "ZONES",
    "TEMPLATE_FILES",
    "template_paths",
    "build_template",
    "label_value",
]

TISSUES: Tuple[str, ...] = ("CSF", "GM", "WM")
HEMISPHERES: Tuple[str, ...] = ("L", "R")
ZONES: Tuple[str, ...] = ("posterior", "middle", "anterior")


def label_value(tissue: str, hemisphere: str, zone: str) -> int:
    """Label value of a (tissue, hemisphere, zone) triple, e.g. ``("GM", "L", "anterior")``."""
    return 1 + 6 * TISSUES.index(tissue) + 3 * HEMISPHERES.index(hemisphere) + ZONES.index(zone)


#: foreground label value -> name such as ``"GM_L_anterior"`` (background 0 is not listed)
LABEL_NAMES: Dict[int, str] = {
    label_value(t, h, z): f"{t}_{h}_{z}" for t in TISSUES for h in HEMISPHERES for z in ZONES
}

TEMPLATE_FILES: Dict[str, str] = {
    key: f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz" for key in ("t1", "gm", "wm")
}


@dataclass
class Template:
    """Template on a target grid. Arrays are ``(D, H, W)`` in RAS+ voxel order.

    ``image`` float32 in [0, 1]; ``labels`` uint8 (0 background, 1..18, see
    :data:`LABEL_NAMES`); ``mask`` bool brain mask (``labels > 0``); ``affine`` 4x4
    voxel-to-MNI-mm; ``voxel_size`` (3,) mm.
    """

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    voxel_size: Tuple[float, float, float]

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]

    @property
    def label_names(self) -> Dict[int, str]:
        return dict(LABEL_NAMES)


def _nilearn_data_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "nilearn is not installed: the MNI ICBM152 2009a template ships inside its wheel "
            "(pip install 'nilearn>=0.10')"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def template_paths() -> Dict[str, Path]:
    """Paths of the 1 mm template files (``t1``, ``gm``, ``wm``) inside the installed nilearn."""
    data_dir = _nilearn_data_dir()
    paths = {key: data_dir / name for key, name in TEMPLATE_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            "MNI ICBM152 2009a template file(s) missing from the installed nilearn package: "
            + ", ".join(missing)
            + " (nilearn >= 0.10 ships them; this project never downloads them)"
        )
    return paths


def _as_voxel_size(voxel_size: Union[float, Sequence[float]]) -> Tuple[float, float, float]:
    if np.isscalar(voxel_size):
        vs = (float(voxel_size),) * 3  # type: ignore[arg-type]
    else:
        vs = tuple(float(v) for v in voxel_size)  # type: ignore[union-attr]
    if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
        raise ValueError(f"voxel_size must be a positive number or 3 positive numbers, got {voxel_size!r}")
    return vs  # type: ignore[return-value]


def _as_shape(shape: Sequence[int]) -> Tuple[int, int, int]:
    sh = tuple(int(s) for s in shape)
    if len(sh) != 3 or any(s < 2 for s in sh) or any(s != float(t) for s, t in zip(sh, shape)):
        raise ValueError(f"shape must be 3 integers >= 2, got {tuple(shape)!r}")
    return sh  # type: ignore[return-value]


def _load_source() -> Dict[str, np.ndarray]:
    """1 mm arrays: normalised T1, tissue probabilities; affine; brain extent.

    Not memoised on purpose: the 1 mm arrays take about 175 MB, the resampled templates
    (memoised in :func:`_build`) a few MB.
    """
    paths = template_paths()
    imgs = {k: nib.as_closest_canonical(nib.load(str(p))) for k, p in paths.items()}
    affine = np.array(imgs["t1"].affine, dtype=np.float64)
    for key in ("gm", "wm"):
        if imgs[key].shape != imgs["t1"].shape or not np.allclose(imgs[key].affine, affine, atol=1e-3):
            raise ValueError(f"template files t1 and {key} are not on the same grid")
    data = {k: np.asarray(img.get_fdata(dtype=np.float32)) for k, img in imgs.items()}
    t1 = data["t1"]
    mask = t1 > 0
    if not mask.any():
        raise ValueError(f"template T1 {paths['t1']} is empty")
    scale = float(np.percentile(t1[mask], 99.5))
    t1n = np.clip(t1 / scale, 0.0, 1.0).astype(np.float32)

    probs = []
    for key in ("gm", "wm"):
        p = data[key]
        pmax = float(p.max())
        probs.append(p / pmax if pmax > 1.5 else p)  # uint8 maps store 255 for p = 1
    gm, wm = (np.clip(p, 0.0, 1.0) * mask for p in probs)
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask
    background = (~mask).astype(np.float32)

    idx = np.argwhere(mask)
    lo = affine @ np.r_[idx.min(axis=0), 1.0]
    hi = affine @ np.r_[idx.max(axis=0), 1.0]
    world_lo, world_hi = np.minimum(lo, hi)[:3], np.maximum(lo, hi)[:3]
    return {
        "t1": t1n,
        "probs": np.stack([background, csf, gm, wm]).astype(np.float32),
        "affine": affine,
        "world_lo": world_lo,
        "world_hi": world_hi,
    }


def _resample(volume: np.ndarray, src_to_tgt: np.ndarray, shape: Tuple[int, int, int],
              sigma: Sequence[float], cval: float) -> np.ndarray:
    """Anti-aliased linear resampling: ``src_to_tgt`` maps target voxel -> source voxel."""
    if any(s > 0 for s in sigma):
        volume = ndimage.gaussian_filter(volume, sigma=sigma, mode="constant", cval=cval)
    return ndimage.affine_transform(
        volume, src_to_tgt[:3, :3], offset=src_to_tgt[:3, 3], output_shape=shape,
        order=1, mode="constant", cval=cval, prefilter=False,
    ).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _build(voxel_size: Tuple[float, float, float], shape: Tuple[int, int, int]) -> Template:
    src = _load_source()
    src_affine = src["affine"]
    vs = np.asarray(voxel_size)
    centre = 0.5 * (src["world_lo"] + src["world_hi"])
    affine = np.eye(4)
    affine[:3, :3] = np.diag(vs)
    affine[:3, 3] = centre - vs * (np.asarray(shape) - 1) / 2.0
    tgt_to_src = np.linalg.inv(src_affine) @ affine  # target voxel -> source voxel
    # anti-aliasing sigma along each *source* axis (target axes are parallel to the source's)
    factor = np.abs(np.diag(tgt_to_src[:3, :3]))
    sigma = [max(0.0, (f - 1.0) / 2.0) for f in factor]

    image = _resample(src["t1"], tgt_to_src, shape, sigma, cval=0.0)
    image = np.clip(image, 0.0, 1.0)
    probs = np.stack([
        _resample(p, tgt_to_src, shape, sigma, cval=1.0 if k == 0 else 0.0)
        for k, p in enumerate(src["probs"])
    ])
    tissue = np.argmax(probs, axis=0)  # 0 background, 1 CSF, 2 GM, 3 WM
    mask = tissue > 0

    ii, jj, kk = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    x = affine[0, 0] * ii + affine[0, 1] * jj + affine[0, 2] * kk + affine[0, 3]
    y = affine[1, 0] * ii + affine[1, 1] * jj + affine[1, 2] * kk + affine[1, 3]
    hemi = (x >= 0).astype(np.int64)
    y_lo, y_hi = src["world_lo"][1], src["world_hi"][1]
    extent = y_hi - y_lo
    zone = np.where(y < y_lo + extent / 3.0, 0, np.where(y < y_lo + 2.0 * extent / 3.0, 1, 2))
    labels = np.where(mask, 1 + 6 * (tissue - 1) + 3 * hemi + zone, 0).astype(np.uint8)
    return Template(image=image, labels=labels, mask=mask, affine=affine,
                    voxel_size=tuple(float(v) for v in vs))  # type: ignore[arg-type]


#: coarsest voxel size (mm) of a template: 8 voxels across a 160 mm field of view; a coarser
#: one spends minutes in a huge anti-aliasing filter for a grid of a few voxels
MAX_VOXEL_SIZE_MM = 20.0
#: largest template grid: ``registration.world.MAX_WORKING_VOXELS`` (not imported from there:
#: world -> config -> data.dataset -> template would be an import cycle; a test checks they agree)
MAX_TEMPLATE_VOXELS = 100_000_000


def _check_grid(vs: Tuple[float, float, float], shape: Tuple[int, int, int]) -> None:
    """Refuse, before loading anything, a voxel size too coarse or a grid too large."""
    if max(vs) > MAX_VOXEL_SIZE_MM:
        raise ValueError(f"voxel_size {max(vs):g} mm is too coarse for the template (at most "
                         f"{MAX_VOXEL_SIZE_MM:g} mm)")
    n = int(np.prod(shape, dtype=np.float64))
    if n > MAX_TEMPLATE_VOXELS:
        raise ValueError(f"shape {'x'.join(map(str, shape))} has {n:,} voxels, more than "
                         f"{MAX_TEMPLATE_VOXELS:,}")


def build_template(
    voxel_size: Union[float, Sequence[float]] = 2.5,
    shape: Sequence[int] = (64, 72, 64),
) -> Template:
    """Template resampled to ``voxel_size`` mm and cropped/padded to ``shape`` around the brain.

    Results are memoised per (voxel_size, shape); each call returns fresh array copies.
    """
    vs, sh = _as_voxel_size(voxel_size), _as_shape(shape)
    _check_grid(vs, sh)
    tpl = _build(vs, sh)
    return Template(
        image=tpl.image.copy(), labels=tpl.labels.copy(), mask=tpl.mask.copy(),
        affine=tpl.affine.copy(), voxel_size=tpl.voxel_size,
    )
