"""Patch tiling with smooth blending, so memory stays bounded by the patch size."""
from __future__ import annotations

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


def count_tiles(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> int:
    padded = [max(s, p) for s, p in zip(shape, patch)]
    return sum(1 for _ in iter_tiles(padded, patch, stride))
