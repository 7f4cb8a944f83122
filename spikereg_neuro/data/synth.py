"""Synthetic subjects: random smooth diffeomorphic deformations of the template.

Generative model for one subject (everything drawn from ``numpy.random.default_rng(seed)``,
in this order, so a subject seed reproduces the subject exactly):

1. **velocity**: i.i.d. standard normal noise ``(3, d, h, w)`` on a coarse control grid
   (spacing ``velocity_spacing_vox`` target voxels, ``d = ceil((D - 1) / spacing) + 1``),
   Gaussian-smoothed (``velocity_smoothing`` control-grid cells), upsampled trilinearly
   (``align_corners=True``) to the image grid and scaled so that ``max |v| =
   velocity_magnitude_vox`` voxels. The stored coarse velocity carries the same scale, so
   upsampling it reproduces ``v`` exactly.
2. **displacement** ``u = exp(v)`` by scaling and squaring
   (:func:`spikereg_neuro.registration.transform.integrate_velocity`,
   ``integration_steps``): a diffeomorphism.
3. **warp**: ``subject(x) = template(x + u(x))`` (pull); image trilinear, labels
   nearest-neighbour.
4. **intensity**: smooth multiplicative bias ``exp(b)``, ``b`` a coarse-grid (spacing
   ``bias_spacing_vox``) normal field upsampled trilinearly and scaled to ``max |b| =
   bias_strength``; gamma ``I ** g`` with ``log g`` uniform in ``log(gamma_range)``;
   additive Gaussian noise (std ``noise_std``); clipped to [0, 1]. Labels are unaffected.

So subject ``k`` is ``T o phi_k`` with ``phi_k = exp(v_k)``; the exact correspondence of a
pair (fixed ``i``, moving ``j``) is ``phi_j^-1 o phi_i``, see :func:`pair_displacement`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..dataclass_io import DictIO
from ..registration.transform import compose, integrate_velocity, warp, warp_labels

__all__ = [
    "SynthConfig",
    "SynthSubject",
    "coarse_shape",
    "random_velocity",
    "upsample_velocity",
    "random_bias",
    "augment_intensity",
    "synth_subject",
    "subject_map",
    "pair_displacement",
]


@dataclass
class SynthConfig(DictIO):
    """Parameters of the synthetic-subject model (units: voxels of the target grid)."""

    _keys_label = "SynthConfig key(s)"

    velocity_magnitude_vox: float = 3.5
    velocity_spacing_vox: float = 8.0
    velocity_smoothing: float = 1.0
    integration_steps: int = 7
    bias_strength: float = 0.2
    bias_spacing_vox: float = 16.0
    gamma_range: Tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.02

    def __post_init__(self) -> None:
        self.gamma_range = tuple(float(g) for g in self.gamma_range)  # type: ignore[assignment]
        if len(self.gamma_range) != 2 or not 0 < self.gamma_range[0] <= self.gamma_range[1]:
            raise ValueError(f"gamma_range must be (low, high) with 0 < low <= high, got {self.gamma_range}")
        for name in ("velocity_magnitude_vox", "velocity_smoothing", "bias_strength", "noise_std"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("velocity_spacing_vox", "bias_spacing_vox"):
            if not float(getattr(self, name)) >= 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.integration_steps) != self.integration_steps or self.integration_steps < 0:
            raise ValueError(f"integration_steps must be an integer >= 0, got {self.integration_steps!r}")
        self.integration_steps = int(self.integration_steps)


@dataclass
class SynthSubject:
    """One synthetic subject: ``image`` float32 (D,H,W), ``labels`` uint8 (D,H,W),
    ``velocity`` the coarse stationary velocity (3,d,h,w) in target voxels and
    ``displacement`` ``exp(v)`` (3,D,H,W) float32 (pull field: subject = template o (id + u))."""

    image: np.ndarray
    labels: np.ndarray
    velocity: np.ndarray
    displacement: np.ndarray


def coarse_shape(shape: Sequence[int], spacing: float) -> Tuple[int, ...]:
    """Control-grid shape covering ``shape`` with the given spacing (>= 2 nodes per axis)."""
    return tuple(max(2, int(math.ceil((int(s) - 1) / float(spacing))) + 1) for s in shape)


def upsample_velocity(coarse: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    """Trilinear (align_corners) upsampling of a coarse ``(3,d,h,w)`` field -> ``(1,3,D,H,W)``.

    The vectors are *not* rescaled: coarse fields here are already in target-grid voxels.
    """
    t = torch.as_tensor(np.ascontiguousarray(coarse), dtype=torch.float32)[None]
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=True)


def _smooth_coarse(noise: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return noise
    return np.stack([ndimage.gaussian_filter(c, sigma=sigma, mode="reflect") for c in noise])


def random_velocity(
    shape: Sequence[int], cfg: SynthConfig, rng: np.random.Generator
) -> Tuple[np.ndarray, torch.Tensor]:
    """Draw a velocity field: returns ``(coarse (3,d,h,w) float32, full (1,3,D,H,W) tensor)``
    with ``max |full| == cfg.velocity_magnitude_vox`` (0 if the magnitude is 0)."""
    cshape = coarse_shape(shape, cfg.velocity_spacing_vox)
    noise = rng.standard_normal((3,) + cshape)
    coarse = _smooth_coarse(noise, cfg.velocity_smoothing).astype(np.float32)
    full = upsample_velocity(coarse, shape)
    peak = float(full.norm(dim=1).max())
    scale = cfg.velocity_magnitude_vox / peak if peak > 0 else 0.0
    coarse = (coarse * np.float32(scale)).astype(np.float32)
    return coarse, upsample_velocity(coarse, shape)


def random_bias(shape: Sequence[int], cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative bias field ``exp(b)`` (D,H,W) float32 with ``max |b| = bias_strength``."""
    cshape = coarse_shape(shape, cfg.bias_spacing_vox)
    noise = rng.standard_normal((1,) + cshape).astype(np.float32)
    b = upsample_velocity(noise, shape)[0, 0].numpy()
    peak = float(np.abs(b).max())
    b = b * (cfg.bias_strength / peak if peak > 0 else 0.0)
    return np.exp(b).astype(np.float32)


def augment_intensity(image: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Bias field, gamma and Gaussian noise, clipped to [0, 1] (draws: bias, gamma, noise)."""
    bias = random_bias(image.shape, cfg, rng)
    lo, hi = cfg.gamma_range
    gamma = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    out = np.clip(image * bias, 0.0, None) ** gamma
    if cfg.noise_std > 0:
        out = out + rng.normal(0.0, cfg.noise_std, size=image.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def synth_subject(
    image: np.ndarray,
    labels: np.ndarray,
    seed: int,
    cfg: Optional[SynthConfig] = None,
) -> SynthSubject:
    """Deform ``image`` (D,H,W, float) and ``labels`` (D,H,W, int) with a random diffeomorphism
    drawn from ``seed`` and augment the image intensities (see the module docstring)."""
    cfg = cfg or SynthConfig()
    if image.shape != labels.shape or image.ndim != 3:
        raise ValueError(f"image and labels must be 3D of one shape, got {image.shape} and {labels.shape}")
    rng = np.random.default_rng(seed)
    shape = image.shape
    coarse, velocity = random_velocity(shape, cfg, rng)
    with torch.no_grad():
        disp = integrate_velocity(velocity, steps=cfg.integration_steps)
        img_t = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        lab_t = torch.as_tensor(np.ascontiguousarray(labels).astype(np.int64))[None, None]
        warped = warp(img_t, disp, mode="bilinear", padding_mode="border")[0, 0].numpy()
        warped_labels = warp_labels(lab_t, disp)[0, 0].numpy()
    new_image = augment_intensity(warped, cfg, rng)
    return SynthSubject(
        image=new_image,
        labels=warped_labels.astype(labels.dtype),
        velocity=coarse,
        displacement=disp[0].numpy().astype(np.float32),
    )


def subject_map(velocity: np.ndarray, shape: Sequence[int], steps: int = 7, sign: int = 1) -> torch.Tensor:
    """Displacement ``(1, 3, D, H, W)`` of ``exp(sign * v)`` from a subject's coarse velocity:
    ``phi_k`` for ``sign = 1``, its inverse ``phi_k^-1`` for ``sign = -1``."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be 1 or -1, got {sign!r}")
    with torch.no_grad():
        return integrate_velocity(sign * upsample_velocity(velocity, shape), steps=steps)


def pair_displacement(
    velocity_fixed: np.ndarray,
    velocity_moving: np.ndarray,
    shape: Sequence[int],
    steps: int = 7,
) -> np.ndarray:
    """Exact pull field (3,D,H,W) of a synthetic pair from the subjects' coarse velocities.

    With ``subject_k = T o phi_k``, ``phi_k = exp(v_k)``, the field ``u`` such that
    ``moving(x + u(x)) = fixed(x)`` is ``phi_moving^-1 o phi_fixed - id``, computed as
    ``compose(exp(-v_moving), exp(v_fixed))`` (up to interpolation error of the scaling and
    squaring and of the border, where the template is background anyway).
    """
    with torch.no_grad():
        u_fixed = subject_map(velocity_fixed, shape, steps, sign=1)
        inv_moving = subject_map(velocity_moving, shape, steps, sign=-1)
        return compose(inv_moving, u_fixed)[0].numpy().astype(np.float32)
