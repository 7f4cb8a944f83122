"""Convolution geometry, written once: which output reads which input through which kernel tap.

Pure integer arithmetic (no torch, no Lava). A 3D convolution factorises over its axes, so
everything is stated for one axis and combined by products:

* an output index ``y`` reads the (x ``up`` nearest-upsampled) input index
  ``u = y * stride - padding + tap`` through kernel tap ``tap`` (``0 <= tap < k``) when
  ``0 <= u < up * n_src`` (padding taps read nothing);
* that input index belongs to the source neuron ``p = u // up`` (``up = 2``: an x2 nearest
  upsampled source; ``up = 1`` otherwise), so the taps of ``y`` that meet the same source
  neuron form one *group*; a folded (upsampling-free) synapse from ``p`` to ``y`` has the sum of
  the group's weights (polyphase folding: the groups of an output depend only on its phase
  ``y mod up`` away from the borders, and a border output loses whole groups, never part of one);
* the output length is ``(up * n_src + 2 * padding - k) // stride + 1`` (PyTorch semantics).

Users: the profiler's exact counts (``spikereg_neuro/profiler/counting.py``), the Loihi mapper
(``loihi/resources.py``). ``tests/test_geometry.py`` checks that the Lava lowering
(``sim/lowering.py``) and the quantizer's folded-range rule (``calibration/quantize.py``) agree
with this module on a grid of shapes, strides and paddings.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

#: per output index: ``((source index, (taps...)), ...)`` sorted by source index
AxisGroups = List[Tuple[Tuple[int, Tuple[int, ...]], ...]]


def conv_output_length(n: int, k: int, s: int, p: int) -> int:
    """Output length of a 1D convolution of an input of length ``n`` (PyTorch semantics)."""
    return (int(n) + 2 * int(p) - int(k)) // int(s) + 1


def conv_output_shape(in_shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                      padding: Sequence[int]) -> Tuple[int, ...]:
    """Output shape of a convolution of ``in_shape`` (any rank; lengths may come out < 1)."""
    return tuple(conv_output_length(n, k, s, p) for n, k, s, p in zip(in_shape, kernel, stride, padding))


def axis_groups(out_len: int, src_len: int, k: int, s: int, pad: int, up: int = 1) -> AxisGroups:
    """The rule itself: per output index ``y``, the source indices it reads and the taps reaching each.

    ``y`` reads input ``u = y * s - pad + tap`` when ``0 <= u < up * src_len``, i.e. source
    ``u // up``. Returns, per ``y``, ``((source, taps), ...)`` sorted by source index.
    """
    if min(int(k), int(s), int(up)) < 1 or int(src_len) < 0 or int(pad) < 0:
        raise ValueError(f"axis geometry needs k, s, up >= 1 and pad, src_len >= 0; got k={k} s={s} "
                         f"up={up} pad={pad} src_len={src_len}")
    out: AxisGroups = []
    n_in = int(src_len) * int(up)
    for y in range(int(out_len)):
        groups: Dict[int, List[int]] = {}
        for t in range(int(k)):
            u = y * int(s) - int(pad) + t
            if 0 <= u < n_in:
                groups.setdefault(u // int(up), []).append(t)
        out.append(tuple((p, tuple(g)) for p, g in sorted(groups.items())))
    return out


def tapsets(out_len: int, src_len: int, k: int, s: int, pad: int, up: int = 1
            ) -> Dict[Tuple[int, ...], np.ndarray]:
    """For each tap group, how many outputs read source index ``p`` through exactly that group.

    ``{taps: counts}`` with ``counts[p]`` (int64, length ``src_len``) = the number of outputs ``y``
    whose taps landing on source ``p`` are exactly ``taps``.
    """
    res: Dict[Tuple[int, ...], np.ndarray] = {}
    for g in axis_groups(out_len, src_len, k, s, pad, up):
        for p, taps in g:
            res.setdefault(taps, np.zeros(int(src_len), dtype=np.int64))[p] += 1
    return res


def fanin(out_len: int, src_len: int, k: int, s: int, pad: int, up: int = 1
          ) -> Tuple[np.ndarray, np.ndarray]:
    """Per output index: the number of valid (non-padding) taps and of distinct sources read."""
    groups = axis_groups(out_len, src_len, k, s, pad, up)
    taps = np.array([sum(len(t) for _, t in g) for g in groups], dtype=np.int64)
    uniq = np.array([len(g) for g in groups], dtype=np.int64)
    return taps, uniq


def axis_slots(src_len: int, out_len: int, k: int, s: int, pad: int, up: int = 1
               ) -> Tuple[np.ndarray, np.ndarray]:
    """The groups as dense arrays: slot ``j`` of output ``y`` is source ``(y*s - pad) // up + j``.

    Returns ``src (out_len, S)`` (source index of each slot, -1 where empty) and
    ``mask (out_len, S, k)`` (the taps of each slot); ``S`` covers the offsets of all ``k`` taps.
    """
    groups = axis_groups(out_len, src_len, k, s, pad, up)
    base = [(y * int(s) - int(pad)) // int(up) for y in range(int(out_len))]
    # slots span every tap's offset, padding taps included (so border outputs may have empty ones)
    n_slots = 1 + max(((y * int(s) - int(pad) + int(k) - 1) // int(up) - b for y, b in enumerate(base)), default=0)
    src = np.full((int(out_len), n_slots), -1, dtype=np.int64)
    mask = np.zeros((int(out_len), n_slots, int(k)), dtype=bool)
    for y, (g, b) in enumerate(zip(groups, base)):
        for p, taps in g:
            src[y, p - b] = p
            mask[y, p - b, list(taps)] = True
    return src, mask


def interior_phases(k: int, s: int = 1, pad: int = 1, up: int = 2) -> List[Tuple[Tuple[int, ...], ...]]:
    """The tap groups of an interior output for each phase ``y mod up`` (polyphase folding).

    For a 3-tap kernel, stride 1, padding 1 over an x2 upsampled source:
    ``[((0,), (1, 2)), ((0, 1), (2,))]`` (even outputs: tap 0 alone, taps 1-2 together; odd: taps
    0-1, then 2). Border outputs lose whole groups of these, never part of one.
    """
    n = 4 * (int(k) + int(pad) + int(s) * int(up))          # long enough for interior outputs
    out_len = conv_output_length(n * int(up), k, s, pad)
    groups = axis_groups(out_len, n, k, s, pad, up)
    mid = out_len // 2 - (out_len // 2) % int(up)
    return [tuple(t for _, t in groups[mid + r]) for r in range(int(up))]


def up2_group_matrices(k: int = 3, s: int = 1, pad: int = 1) -> Tuple[np.ndarray, ...]:
    """:func:`interior_phases` for ``up = 2`` as 0/1 matrices ``(groups, k)``, one per phase."""
    out = []
    for phase in interior_phases(k, s, pad, 2):
        m = np.zeros((len(phase), int(k)), dtype=np.int64)
        for i, taps in enumerate(phase):
            m[i, list(taps)] = 1
        out.append(m)
    return tuple(out)


def folded_kernel_taps(k: int, s: int = 1, pad: int = 1, up: int = 1) -> int:
    """Kernel entries per (input channel, output channel) along one axis that a shared-kernel
    (convolutional) core stores: ``k`` without upsampling; with it, one folded entry per
    (phase, group) of :func:`interior_phases` (4 for a 3-tap kernel over x2 upsampling, i.e.
    ``4**3 = 64`` folded entries in 3D instead of 27)."""
    if int(up) == 1:
        return int(k)
    return sum(len(phase) for phase in interior_phases(k, s, pad, up))


__all__ = ["AxisGroups", "conv_output_length", "conv_output_shape", "axis_groups", "tapsets", "fanin",
           "axis_slots", "interior_phases", "up2_group_matrices", "folded_kernel_taps"]
