"""Patch tiling with smooth blending, so memory stays bounded by the patch size."""
from __future__ import annotations

import math
from typing import Callable, Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tile_starts(size: int, patch: int, stride: int) -> List[int]:
    """Start offsets covering ``[0, size)`` with windows of ``patch`` (``size >= patch``)."""
    if size < patch:
        raise ValueError(f"size {size} is smaller than the patch {patch}; pad first")
    if stride < 1 or stride > patch:
        raise ValueError(f"stride must be in [1, patch={patch}], got {stride}")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def blend_window(patch: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Separable Gaussian weight (sigma = patch / 4, as nnU-Net), floored at 1e-3, peak 1."""
    w = None
    for p in patch:
        x = torch.arange(p, device=device, dtype=dtype)
        g = torch.exp(-0.5 * ((x - (p - 1) / 2) / (p / 4)) ** 2)
        w = g if w is None else w.unsqueeze(-1) * g
    w = w / w.max()
    return w.clamp_min(1e-3)


def _pad_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    pads = []
    for have, want in reversed(list(zip(x.shape[2:], shape))):
        pads += [0, want - have]
    return F.pad(x, pads) if any(pads) else x


def iter_tiles(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> Iterator[Tuple[slice, ...]]:
    for a in tile_starts(shape[0], patch[0], stride[0]):
        for b in tile_starts(shape[1], patch[1], stride[1]):
            for c in tile_starts(shape[2], patch[2], stride[2]):
                yield (slice(a, a + patch[0]), slice(b, b + patch[1]), slice(c, c + patch[2]))


def tiled_predict(
    predict: Predictor,
    fixed: torch.Tensor,
    moving: torch.Tensor,
    patch: Sequence[int],
    stride: Sequence[int],
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Predict a displacement field for volumes of any size by overlapping patches.

    Volumes smaller than the patch are zero-padded up to it (and the result cropped back);
    each patch's prediction is weighted by :func:`blend_window` and the weighted sum is
    normalised, so there are no seams. A volume that is exactly one patch gives exactly the
    untiled prediction. ``progress(n)`` is called after each batch of ``n`` patches.
    """
    if fixed.shape != moving.shape or fixed.dim() != 5:
        raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must be "
                         "equal (N, C, D, H, W) shapes")
    patch = [int(p) for p in patch]
    stride = [int(s) for s in stride]
    size = list(fixed.shape[2:])
    padded = [max(s, p) for s, p in zip(size, patch)]
    f, m = _pad_to(fixed, padded), _pad_to(moving, padded)
    n = fixed.shape[0]
    out = fixed.new_zeros(n, 3, *padded)
    norm = fixed.new_zeros(1, 1, *padded)
    w = blend_window(patch, device=fixed.device, dtype=fixed.dtype)[None, None]
    tiles = list(iter_tiles(padded, patch, stride))
    for i in range(0, len(tiles), batch_size):
        group = tiles[i:i + batch_size]
        fb = torch.cat([f[(slice(None), slice(None), *t)] for t in group], dim=0)
        mb = torch.cat([m[(slice(None), slice(None), *t)] for t in group], dim=0)
        pred = predict(fb, mb)
        for j, t in enumerate(group):
            out[(slice(None), slice(None), *t)] += pred[j * n:(j + 1) * n] * w
            norm[(slice(None), slice(None), *t)] += w
        if progress is not None:
            progress(len(group))
    out = out / norm
    return out[(slice(None), slice(None), *[slice(0, s) for s in size])]


def plan_tiles(shape: Sequence[int], max_voxels: int, multiple: int = 8,
               halo: int = 16) -> Tuple[List[int], List[int]]:
    """Tiles for a volume too large for one call: ``(patch, stride)`` per axis.

    Starting from one tile (the whole volume), the axis with the longest tile is split into one
    more tile, each tile being its share of the axis plus ``halo`` voxels of overlap on each
    side (rounded up to ``multiple``, the network's stride product), until a tile has at most
    ``max_voxels`` voxels. A volume that fits gives one tile, the volume itself.
    """
    shape = [int(n) for n in shape]
    if max_voxels < 1:
        raise ValueError(f"max_voxels must be >= 1, got {max_voxels}")
    up = lambda n: -(-int(n) // multiple) * multiple   # noqa: E731
    k = [1, 1, 1]
    patch = list(shape)
    while math.prod(patch) > max_voxels:
        a = max(range(3), key=lambda i: patch[i])
        if patch[a] <= multiple + 2 * halo:
            raise ValueError(f"max_voxels {max_voxels} is below the smallest tile "
                             f"({multiple} + 2 x {halo} voxels per axis)")
        k[a] += 1
        patch[a] = min(shape[a], up(-(-shape[a] // k[a]) + 2 * halo))
    stride = [p if p >= n else p - 2 * halo for p, n in zip(patch, shape)]
    return patch, stride


def count_tiles(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> int:
    padded = [max(s, p) for s, p in zip(shape, patch)]
    return sum(1 for _ in iter_tiles(padded, patch, stride))
