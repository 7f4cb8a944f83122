"""Differentiable registration losses (torch, batch-first, 3D).

All losses return a scalar tensor where **lower is better**:

* :class:`LocalNCC` returns ``-mean(local NCC)`` (``-mean(NCC^2)`` by default, as VoxelMorph),
  so a perfect match gives ``-1``;
* :class:`MSE` returns the mean squared error;
* :class:`GradientSmoothness` / :class:`BendingEnergy` regularise displacement fields
  ``(N, 3, D, H, W)`` (voxel units);
* :class:`DiceLoss` returns ``1 - mean Dice`` over foreground channels of one-hot maps.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transform import trilinear_corners

__all__ = [
    "gaussian_blur",
    "LocalNCC",
    "MSE",
    "GradientSmoothness",
    "BendingEnergy",
    "DiceLoss",
    "one_hot",
    "label_indices",
]


def _check_5d(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(f"{name} must have shape (N, C, D, H, W), got {tuple(x.shape)}")


def _check_pair(a: torch.Tensor, b: torch.Tensor, names=("fixed", "warped")) -> None:
    _check_5d(a, names[0])
    _check_5d(b, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"shape mismatch: {names[0]} {tuple(a.shape)} vs {names[1]} {tuple(b.shape)}"
        )


def _check_field(field: torch.Tensor, name: str = "field") -> None:
    _check_5d(field, name)
    if field.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, D, H, W), got {tuple(field.shape)}")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(N, C, D, H, W)`` per channel with ``sigma`` voxels
    (radius ``ceil(3 sigma)``, replicated edges); ``sigma > 0``."""
    r = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = 2 * r + 1
        pad = [0] * 6
        pad[4 - 2 * axis] = pad[5 - 2 * axis] = r     # F.pad lists the last axis first
        x = F.conv3d(F.pad(x, pad, mode="replicate"), g.reshape(1, 1, *shape).expand(c, 1, *shape),
                     groups=c)
    return x


class LocalNCC(nn.Module):
    """Local (windowed) normalised cross-correlation loss, ``-mean(NCC^p)``.

    For every voxel the correlation of the two images over a ``window^3`` box is computed from
    box sums (``conv3d`` with a ones kernel), as in VoxelMorph's ``NCC``::

        cc = cross / sqrt(var_I * var_J + eps)         (squared=False)
        cc = cross^2 / (var_I * var_J + eps)           (squared=True, VoxelMorph's default)

    Returned value: ``-mean(cc)`` over batch, channels and voxels, so identical images give
    ``~ -1`` and lower is better. Differences from VoxelMorph: local means use the number of
    voxels of the window that lie inside the volume (zero padding is not counted), so the
    statistic is exactly invariant to ``a * I + b`` up to ``eps`` at the borders too. Constant
    windows (zero variance) give ``cc = 0``. Channels are treated independently.

    ``sigma > 0`` first smooths both images with a Gaussian of that standard deviation (voxels;
    separable, truncated at 3 sigma, edges replicated). On noisy images a sub-voxel field raises
    the raw NCC by blurring the moving image through interpolation (no alignment needed); on
    smoothed images that reward is several times smaller, so the loss rewards alignment instead.
    """

    def __init__(self, window: int | Sequence[int] = 9, eps: float = 1e-5, squared: bool = True,
                 sigma: float = 0.0):
        super().__init__()
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0 (voxels), got {sigma}")
        self.sigma = float(sigma)
        win = (int(window),) * 3 if isinstance(window, int) else tuple(int(w) for w in window)
        if len(win) != 3 or any(w < 1 or w % 2 == 0 for w in win):
            raise ValueError(f"window must be an odd positive int or 3 of them, got {window}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.window = win
        self.eps = float(eps)
        self.squared = bool(squared)

    def _box_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-padded box sums over ``window``, separable: along each axis a cumulative sum
        and the difference of its ends (about 3x cheaper on the CPU, forward + backward, than
        depthwise 1D convolutions; equal up to float rounding)."""
        for axis, w in enumerate(self.window):
            if w == 1:
                continue
            dim = axis + 2
            n = x.shape[dim]
            pad = [0] * 6
            pad[2 * (4 - dim)] = w // 2 + 1     # F.pad lists the last axis first
            pad[2 * (4 - dim) + 1] = w // 2
            c = F.pad(x, pad).cumsum(dim)
            x = c.narrow(dim, w, n) - c.narrow(dim, 0, n)
        return x

    def _smooth(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x, self.sigma)

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``-mean(cc)``; with ``mask`` (``(N, 1, D, H, W)``, weights in [0, 1]) the mean is
        weighted by the mask, so voxels outside it (e.g. background noise) do not count."""
        _check_pair(fixed, warped)
        if mask is not None and (mask.dim() != 5 or mask.shape[1] != 1
                                 or mask.shape[0] != fixed.shape[0] or mask.shape[2:] != fixed.shape[2:]):
            raise ValueError(f"mask must be (N, 1, D, H, W) matching {tuple(fixed.shape)}, "
                             f"got {tuple(mask.shape)}")
        i, j = (self._smooth(fixed), self._smooth(warped)) if self.sigma > 0 else (fixed, warped)
        with torch.no_grad():   # voxels of each window inside the volume, (N, 1, D, H, W)
            n = self._box_sum(torch.ones_like(i[:, :1]))
        c = i.shape[1]           # the five box sums in one pass
        s_i, s_j, s_ii, s_jj, s_ij = self._box_sum(torch.cat([i, j, i * i, j * j, i * j], dim=1)).split(c, dim=1)
        cross = s_ij - s_i * s_j / n
        var_i = (s_ii - s_i * s_i / n).clamp_min(0.0)
        var_j = (s_jj - s_j * s_j / n).clamp_min(0.0)
        if self.squared:
            cc = cross * cross / (var_i * var_j + self.eps)
        else:
            cc = cross / torch.sqrt(var_i * var_j + self.eps)
        if mask is None:
            return -cc.mean()
        w = mask.to(cc.dtype).expand_as(cc)
        # an empty mask gives 0 (no similarity signal) without a host sync on the hot path
        return -(cc * w).sum() / w.sum().clamp_min(torch.finfo(cc.dtype).tiny)


class MSE(nn.Module):
    """Mean squared error ``mean((fixed - warped)^2)``."""

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        _check_pair(fixed, warped)
        return torch.mean((fixed - warped) ** 2)


def _diff(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Forward difference along spatial ``axis`` (0, 1, 2) of a (N, C, D, H, W) tensor."""
    return torch.diff(x, dim=axis + 2)


class GradientSmoothness(nn.Module):
    """VoxelMorph-style ``Grad`` regulariser of a displacement field ``(N, 3, D, H, W)``.

    ``mean over axes k of mean(|d_k u|^p)`` with forward differences ``d_k``; ``p = 2`` for
    ``penalty='l2'``, ``p = 1`` for ``'l1'``. Zero exactly for constant fields.
    """

    def __init__(self, penalty: str = "l2"):
        super().__init__()
        if penalty not in ("l1", "l2"):
            raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
        self.penalty = penalty

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        _check_field(field)
        terms = []
        for k in range(3):
            d = _diff(field, k)
            terms.append((d * d).mean() if self.penalty == "l2" else d.abs().mean())
        return sum(terms) / 3.0


class BendingEnergy(nn.Module):
    """Bending energy of a displacement field ``(N, 3, D, H, W)`` (voxel units).

    ``sum_k mean(d_kk u ^ 2) + 2 * sum_{k<l} mean(d_kl u ^ 2)``, with second differences
    ``u[x+1] - 2u[x] + u[x-1]`` on the diagonal and forward-forward mixed differences; each
    ``mean`` is over batch, the 3 channels and the valid voxels. Zero for affine fields.
    """

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        _check_field(field)
        if any(s < 3 for s in field.shape[2:]):
            raise ValueError(f"field needs >= 3 voxels per axis, got {tuple(field.shape[2:])}")
        total = field.new_zeros(())
        first = [_diff(field, k) for k in range(3)]
        for k in range(3):
            dkk = _diff(first[k], k)
            total = total + (dkk * dkk).mean()
            for m in range(k + 1, 3):
                dkm = _diff(first[k], m)
                total = total + 2.0 * (dkm * dkm).mean()
        return total


def label_indices(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Int64 ``(N, D, H, W)`` class indices from labels ``(N, 1, D, H, W)``/``(N, D, H, W)``,
    checked to be integers in ``[0, num_classes)``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() == 5:
        if labels.shape[1] != 1:
            raise ValueError(
                f"labels must have shape (N, 1, D, H, W) or (N, D, H, W), got {tuple(labels.shape)}"
            )
        labels = labels[:, 0]
    if labels.dim() != 4:
        raise ValueError(
            f"labels must have shape (N, 1, D, H, W) or (N, D, H, W), got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()):
            raise ValueError("labels must hold integer values")
    labels = labels.long()
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot float ``(N, L, D, H, W)`` from int labels ``(N, 1, D, H, W)``/``(N, D, H, W)``."""
    return F.one_hot(label_indices(labels, num_classes), num_classes).permute(0, 4, 1, 2, 3).float()


class DiceLoss(nn.Module):
    """Soft Dice loss on one-hot / probability maps ``(N, L, D, H, W)``.

    ``1 - mean over (batch, foreground channels) of (2 sum(p t) + smooth) / (sum p + sum t +
    smooth)``; channel 0 is background and skipped unless ``include_background=True``.
    A channel empty in both maps has Dice 1 (thanks to ``smooth``).
    """

    def __init__(self, include_background: bool = False, smooth: float = 1e-5):
        super().__init__()
        self.include_background = bool(include_background)
        self.smooth = float(smooth)

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        _check_pair(fixed, warped)
        start = 0 if self.include_background else 1
        if fixed.shape[1] <= start:
            raise ValueError(
                f"need at least {start + 1} channels (one-hot labels), got {fixed.shape[1]}"
            )
        t = fixed[:, start:]
        p = warped[:, start:]
        dims = (2, 3, 4)
        inter = (p * t).sum(dims)
        denom = p.sum(dims) + t.sum(dims)
        dice = (2.0 * inter + self.smooth) / (denom + self.smooth)
        return 1.0 - dice.mean()

    def warped_labels(self, fixed_labels: torch.Tensor, moving_labels: torch.Tensor,
                      field: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The loss of ``one_hot(fixed_labels)`` against ``one_hot(moving_labels)`` warped by
        ``field`` (trilinear, border padding: ``warp``'s interpolation), without building or
        warping the one-hot maps: the warped map of class ``c`` at ``x`` is the sum of the
        trilinear weights of the corners of ``x + u(x)`` whose label is ``c``, so both sums the
        Dice needs are weighted counts over the 8 corners (float64), the same value and
        gradient as warping every class up to float rounding, at the cost of one class."""
        n = field.shape[0]
        start = 0 if self.include_background else 1
        if num_classes <= start:
            raise ValueError(f"need at least {start + 1} channels (one-hot labels), got {num_classes}")
        fl, ml = (label_indices(x, num_classes) for x in (fixed_labels, moving_labels))
        for name, x in (("fixed", fl), ("moving", ml)):
            if x.shape != (n, *field.shape[2:]):
                raise ValueError(f"{name} labels {tuple(x.shape)} do not match the field's batch and grid "
                                 f"{(n, *field.shape[2:])}")
        fl, ml = fl.reshape(n, -1), ml.reshape(n, -1)
        offset = torch.arange(n, device=field.device).view(n, 1) * num_classes
        f_idx = (fl + offset).reshape(-1)
        t_sum = torch.bincount(f_idx, minlength=n * num_classes).double()
        p_sum = torch.zeros(n * num_classes, dtype=torch.float64, device=field.device)
        inter = torch.zeros_like(p_sum)
        for corner, weight in trilinear_corners(field):
            lab = torch.gather(ml, 1, corner)
            w = weight.double()
            p_sum = p_sum.index_add(0, (lab + offset).reshape(-1), w.reshape(-1))
            inter = inter.index_add(0, f_idx, (w * (lab == fl)).reshape(-1))
        dice = (2.0 * inter + self.smooth) / (p_sum + t_sum + self.smooth)
        return 1.0 - dice.view(n, num_classes)[:, start:].mean().float()

