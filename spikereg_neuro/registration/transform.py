"""Spatial transforms on dense displacement fields (torch, differentiable, 3D).

Conventions (the Learn2Reg / LUMIR ones):

* volumes are batch-first, channel-first: ``(N, C, D, H, W)``;
* a displacement field is ``(N, 3, D, H, W)`` in **voxels**; channel ``k`` moves along
  spatial axis ``k`` (0 = D, 1 = H, 2 = W);
* warping is *pull* (backward): ``warped(x) = moving(x + u(x))``;
* ``compose(u_first, u_second)`` is the single field equivalent to warping with ``u_first``
  and then warping the result with ``u_second``.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "identity_grid",
    "warp",
    "warp_labels",
    "trilinear_corners",
    "compose",
    "integrate_velocity",
    "invert_field",
    "symmetric_field",
    "register_both_ways",
    "resize_field",
]


def _check_field(field: torch.Tensor) -> None:
    if field.dim() != 5 or field.shape[1] != 3:
        raise ValueError(
            f"displacement field must have shape (N, 3, D, H, W), got {tuple(field.shape)}"
        )


def identity_grid(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates of a ``(D, H, W)`` grid as a ``(1, 3, D, H, W)`` tensor."""
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    return grid.unsqueeze(0)


def _normalised_sampling_grid(field: torch.Tensor) -> torch.Tensor:
    """Absolute sampling positions ``x + u(x)`` as the ``(N, D, H, W, 3)`` grid of grid_sample."""
    shape = field.shape[2:]
    pos = identity_grid(shape, device=field.device, dtype=field.dtype) + field
    scale = torch.tensor([max(s - 1, 1) for s in shape], device=field.device, dtype=field.dtype)
    pos = 2.0 * pos / scale.view(1, 3, 1, 1, 1) - 1.0
    # grid_sample wants the last dimension ordered (x, y, z) = (W, H, D)
    return pos.permute(0, 2, 3, 4, 1).flip(-1)


def warp(
    image: torch.Tensor,
    field: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Pull-warp ``image`` (N, C, D, H, W) with ``field`` (N, 3, D, H, W), in voxels.

    ``mode='bilinear'`` is trilinear interpolation in 3D; ``'nearest'`` for label maps.
    """
    _check_field(field)
    if image.dim() != 5:
        raise ValueError(f"image must have shape (N, C, D, H, W), got {tuple(image.shape)}")
    if image.shape[2:] != field.shape[2:]:
        raise ValueError(
            f"image spatial shape {tuple(image.shape[2:])} != field spatial shape "
            f"{tuple(field.shape[2:])}"
        )
    if image.shape[0] != field.shape[0]:
        if field.shape[0] == 1:
            field = field.expand(image.shape[0], -1, -1, -1, -1)
        else:
            raise ValueError(f"batch sizes differ: image {image.shape[0]}, field {field.shape[0]}")
    grid = _normalised_sampling_grid(field.to(image.dtype) if image.is_floating_point() else field)
    src = image if image.is_floating_point() else image.to(field.dtype)
    out = F.grid_sample(src, grid.to(src.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)
    return out if image.is_floating_point() else out.round().to(image.dtype)


def trilinear_corners(field: torch.Tensor) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """The 8 corners of ``warp``'s trilinear interpolation at ``x + u(x)``.

    Yields ``(index, weight)`` per corner, both ``(N, D*H*W)``: the flat voxel index of the
    corner and its weight (differentiable in ``field``), with ``warp``'s border padding (the
    position clamped to the grid); ``sum_k weight_k * v[index_k]`` is ``warp(v, field)``.
    """
    _check_field(field)
    n, shape = field.shape[0], field.shape[2:]
    axes = []
    for a, s in enumerate(shape):
        base = torch.arange(s, device=field.device, dtype=field.dtype).view([s if i == a else 1 for i in range(3)])
        p = (field[:, a] + base).clamp(0, s - 1)
        lo = p.detach().floor().clamp(max=max(s - 2, 0))
        w_hi = p - lo
        lo = lo.long()
        axes.append(((lo, 1.0 - w_hi), ((lo + 1).clamp(max=s - 1), w_hi)))
    h, w = shape[1], shape[2]
    for (z, wz), (y, wy), (x, wx) in itertools.product(*axes):
        yield ((z * h + y) * w + x).reshape(n, -1), (wz * wy * wx).reshape(n, -1)


def warp_labels(labels: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour pull warp of an integer label map (N, 1, D, H, W)."""
    return warp(labels, field, mode="nearest", padding_mode="border")


def compose(u_first: torch.Tensor, u_second: torch.Tensor) -> torch.Tensor:
    """Field of "warp with ``u_first``, then warp the result with ``u_second``".

    ``m2(x) = m1(x + u2(x)) = m(x + u2(x) + u1(x + u2(x)))``, so the composed field is
    ``u2 + u1 o (id + u2)``.
    """
    _check_field(u_first)
    _check_field(u_second)
    return u_second + warp(u_first, u_second, mode="bilinear", padding_mode="border")


def invert_field(field: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """Pull field ``w`` of the inverse of ``x -> x + u(x)``: ``x + w(x) + u(x + w(x)) = x``, by
    the fixed-point iteration ``w <- -u o (id + w)`` from ``w = -u`` (it converges where the
    map is smooth, ``|grad u| < 1``; a folded field has no inverse to find)."""
    _check_field(field)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    w = -field
    for _ in range(iterations):
        w = -warp(field, w, mode="bilinear", padding_mode="border")
    return w


def symmetric_field(u_fm: torch.Tensor, u_mf: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """Inverse-consistent mean of a pair registered both ways: ``(u_fm + inverse(u_mf)) / 2``,
    ``u_fm`` warping the moving image onto the fixed one and ``u_mf`` the fixed onto the moving.
    A bias both directions share (motion a network predicts for any input) cancels: two identical
    images give a field near zero."""
    return 0.5 * (u_fm + invert_field(u_mf, iterations))


def register_both_ways(register: Callable[[Any, Any], torch.Tensor], fixed: Any, moving: Any,
                       iterations: int = 8) -> torch.Tensor:
    """``register(fixed, moving)`` (a pull field ``(N, 3, D, H, W)``) run both ways, then
    :func:`symmetric_field` of the two: the one definition of "register both ways"."""
    return symmetric_field(register(fixed, moving), register(moving, fixed), iterations)


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring: displacement of ``exp(v)`` for a stationary velocity field."""
    _check_field(velocity)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    disp = velocity / (2**steps)
    for _ in range(steps):
        disp = compose(disp, disp)
    return disp


def resize_field(field: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample a displacement field to a new grid, rescaling the vectors (voxel units).

    The field is interpolated trilinearly with ``align_corners=True`` and each channel ``k`` is
    multiplied by ``(new_k - 1) / (old_k - 1)`` so that it keeps pointing at the same anatomy.
    """
    _check_field(field)
    size = tuple(int(s) for s in size)
    if len(size) != 3:
        raise ValueError(f"size must have 3 entries, got {size}")
    old = field.shape[2:]
    out = F.interpolate(field, size=size, mode="trilinear", align_corners=True)
    factors = torch.tensor(
        [(n - 1) / max(o - 1, 1) for n, o in zip(size, old)], device=field.device, dtype=field.dtype
    )
    return out * factors.view(1, 3, 1, 1, 1)
