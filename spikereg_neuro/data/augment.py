"""Training-time augmentation: new anatomy, pose and contrast for every training pair.

The embedded subjects are one template warped by small smooth fields (``max |v|`` 3.5 voxels,
:mod:`spikereg_neuro.data.synth`), so a network trained on them alone learns to move little.
Each training step, before patches are cropped, :func:`augment_pair` draws for the fixed and
the moving volume (independently, each with probability ``p_deform``) a random pull transform
``x -> A(x + u(x))``:

* ``u = exp(v)``, ``v`` the sum of smooth random velocities at several control-grid spacings,
  each with a peak magnitude drawn uniformly in ``[0, max]`` voxels (``velocity``: pairs
  ``[spacing, max]``; large spacings give large smooth motions, small ones local detail): a
  diffeomorphism, so labels keep their topology;
* ``A`` an affine about the volume centre: rotations (``rotation_deg`` per axis), isotropic
  scaling (``scale``) and a shift (``shift_vox``) drawn uniformly in ``[-max, max]``.

Images are warped trilinearly (zero outside), labels nearest-neighbour. Then, with probability
``p_contrast``, the pair's intensities are redrawn from its label maps as in SynthMorph
(Hoffmann et al., IEEE TMI 2022): one random mean per label (the same table for both volumes,
so the pair stays mono-modal and NCC remains meaningful), Gaussian noise, Gaussian blur, a
smooth multiplicative bias field per volume and a gamma, rescaled to [0, 1]: the network
learns shapes, not one template's intensities.

Validation and test pairs are never augmented. Everything is drawn from one
``numpy.random.Generator`` the trainer owns (the same on every rank of a process group, stored
in checkpoints), so a resumed run augments as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..dataclass_io import DictIO
from .synth import SynthConfig, random_bias, random_velocity
from ..registration.losses import gaussian_blur
from ..registration.transform import compose, integrate_velocity, resize_field, warp, warp_labels

__all__ = ["AugmentConfig", "augment_generator", "random_transform", "synth_contrast", "augment_pair"]


@dataclass
class AugmentConfig(DictIO):
    """Parameters of :func:`augment_pair` (voxel units of the training grid)."""

    _keys_label = "keys in 'augment':"

    enabled: bool = False
    p_deform: float = 0.8
    velocity: List[List[float]] = field(default_factory=lambda: [[16.0, 5.0], [8.0, 2.5], [4.0, 1.0]])
    integration_steps: int = 7
    rotation_deg: float = 4.0
    scale: float = 0.04
    shift_vox: float = 2.0
    p_contrast: float = 0.3
    noise_std: float = 0.05
    blur_sigma: float = 1.0
    bias_strength: float = 0.3
    gamma_range: Tuple[float, float] = (0.7, 1.4)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"augment.enabled must be true or false, got {self.enabled!r}")
        for name in ("p_deform", "p_contrast"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"augment.{name} must be a probability in [0, 1], got {v!r}")
        for name in ("rotation_deg", "scale", "shift_vox", "noise_std", "blur_sigma", "bias_strength"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ValueError(f"augment.{name} must be a finite number >= 0, got {v!r}")
        if self.scale >= 0.5:
            raise ValueError(f"augment.scale must be < 0.5 (a fraction), got {self.scale}")
        try:
            self.velocity = [[float(s), float(m)] for s, m in self.velocity]
        except (TypeError, ValueError):
            raise ValueError("augment.velocity must be a list of [spacing_vox, max_vox] pairs, "
                             f"got {self.velocity!r}") from None
        for s, m in self.velocity:
            if not (1 <= s < math.inf and 0 <= m < math.inf):
                raise ValueError(f"augment.velocity: spacing must be >= 1 and max >= 0, got [{s}, {m}]")
        if isinstance(self.integration_steps, bool) or not isinstance(self.integration_steps, int) \
                or not 0 <= self.integration_steps <= 16:
            raise ValueError(f"augment.integration_steps must be an integer in [0, 16], got {self.integration_steps!r}")
        g = tuple(float(x) for x in self.gamma_range)
        if len(g) != 2 or not 0 < g[0] <= g[1]:
            raise ValueError(f"augment.gamma_range must be (low, high) with 0 < low <= high, got {self.gamma_range}")
        self.gamma_range = g  # type: ignore[assignment]


def augment_generator(seed: int) -> np.random.Generator:
    """The generator of a training run's augmentation draws (seeded from ``train.seed``): the
    SpikeReg and VoxelMorph trainers both take theirs from here, so they augment alike."""
    return np.random.default_rng([int(seed), 0xA06])


def _affine_field(shape: Sequence[int], cfg: AugmentConfig, rng: np.random.Generator,
                  vox: float = 1.0) -> torch.Tensor:
    """Pull displacement ``(1, 3, D, H, W)`` of a random affine about the volume centre
    (``vox``: grid voxels per training voxel, for the shift)."""
    ang = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, 3))
    s = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    t = rng.uniform(-cfg.shift_vox, cfg.shift_vox, 3) * vox
    rot = np.eye(3)
    for axis, a in enumerate(ang):
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i] = r[j, j] = math.cos(a)
        r[i, j], r[j, i] = -math.sin(a), math.sin(a)
        rot = r @ rot
    a_mat = torch.as_tensor(s * rot - np.eye(3), dtype=torch.float32)
    c = torch.as_tensor([(n - 1) / 2.0 for n in shape], dtype=torch.float32)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    x = torch.stack(grids) - c.view(3, 1, 1, 1)                       # (3, D, H, W) about centre
    u = torch.einsum("ij,j...->i...", a_mat, x) + torch.as_tensor(t, dtype=torch.float32).view(3, 1, 1, 1)
    return u[None]


def random_transform(shape: Sequence[int], cfg: AugmentConfig, rng: np.random.Generator,
                     factor: int = 2) -> torch.Tensor:
    """A random pull displacement ``(1, 3, D, H, W)`` (voxels): multi-scale diffeomorphism,
    then the affine (see the module docstring).

    The field is drawn and integrated on a grid ``factor`` times coarser (8x fewer voxels at
    2; it is smooth at the finest velocity spacing of 4 voxels) and resampled trilinearly,
    vectors rescaled, to ``shape``."""
    shape = tuple(int(n) for n in shape)
    coarse = tuple(max(2, -(-n // factor)) for n in shape)
    f = [(c - 1) / max(n - 1, 1) for c, n in zip(coarse, shape)]   # coarse voxels per voxel
    v = torch.zeros((1, 3) + coarse)
    for spacing, peak in cfg.velocity:
        mag = float(rng.uniform(0.0, peak)) * f[0]
        sc = SynthConfig(velocity_magnitude_vox=mag, velocity_spacing_vox=max(1.0, spacing * f[0]),
                         velocity_smoothing=1.0)
        v = v + random_velocity(coarse, sc, rng)[1]
    u = integrate_velocity(v, steps=cfg.integration_steps)
    if cfg.rotation_deg or cfg.scale or cfg.shift_vox:
        u = compose(_affine_field(coarse, cfg, rng, f[0]), u)   # x -> A(x + u(x)): u, then A
    return resize_field(u, shape)


def synth_contrast(labels: Sequence[torch.Tensor], cfg: AugmentConfig,
                   rng: np.random.Generator) -> List[torch.Tensor]:
    """SynthMorph-style images ``(1, 1, D, H, W)`` in [0, 1] drawn from label maps (one random
    intensity per label shared by all maps; noise, blur, bias and gamma per map)."""
    n = int(max(int(lab.max()) for lab in labels)) + 1
    means = torch.as_tensor(rng.uniform(0.0, 1.0, n), dtype=torch.float32)
    lo, hi = cfg.gamma_range
    out = []
    for lab in labels:
        shape = tuple(lab.shape[-3:])
        img = means[lab.long()].view(1, 1, *shape)
        if cfg.noise_std > 0:
            img = img + torch.as_tensor(rng.normal(0.0, cfg.noise_std, shape), dtype=torch.float32)
        sigma = float(rng.uniform(0.0, cfg.blur_sigma))
        if sigma > 0.05:                      # below that the blur changes nothing visible
            img = gaussian_blur(img, sigma)
        bias = random_bias(shape, SynthConfig(bias_strength=cfg.bias_strength), rng)
        img = img.clamp(min=0) * torch.as_tensor(bias)
        img = img / img.max().clamp(min=1e-6)
        img = img ** float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        out.append(img.clamp(0.0, 1.0))
    return out


@torch.no_grad()
def augment_pair(batch: Dict[str, torch.Tensor], cfg: AugmentConfig,
                 rng: np.random.Generator) -> Dict[str, torch.Tensor]:
    """A new training pair from a loader batch of full volumes (``fixed``, ``moving``
    ``(1, 1, D, H, W)``, optional ``*_labels``); other keys pass through. Batches of one pair
    only (the trainer's); a ``true_field`` would no longer be true, so it is refused."""
    if "true_field" in batch:
        raise ValueError("training augmentation changes the pair, so its true field would be wrong: "
                         "set train.w_field = 0 or augment.enabled = false")
    if batch["fixed"].shape[0] != 1:
        raise ValueError(f"augment_pair takes one pair per batch, got {batch['fixed'].shape[0]}")
    out = dict(batch)
    shape = tuple(batch["fixed"].shape[2:])
    for side in ("fixed", "moving"):
        if rng.uniform() >= cfg.p_deform:
            continue
        u = random_transform(shape, cfg, rng)
        out[side] = warp(batch[side].float(), u, mode="bilinear", padding_mode="zeros")
        key = f"{side}_labels"
        if key in batch:
            out[key] = warp_labels(batch[key], u)
    if "fixed_labels" in out and "moving_labels" in out and rng.uniform() < cfg.p_contrast:
        out["fixed"], out["moving"] = synth_contrast([out["fixed_labels"], out["moving_labels"]], cfg, rng)
    return out
