"""Lowering of the network's 3-D operations onto lava-nc ``Sparse`` weight matrices.

lava-nc has no 3-D convolution process (``lava.proc.conv`` is 2-D and its fixed model ignores
``weight_exp``), no upsampling and no concatenation. Every connection of the quantized network
(one entry of ``QuantizedLayer.inputs``) is therefore lowered to ONE weight matrix
``W_e`` of shape ``(n_out, n_src)`` that a ``lava.proc.sparse.Sparse`` process applies each step:

* **3-D convolution** (any kernel, stride, zero padding; PyTorch ``conv3d`` semantics): row
  ``r`` = flat C-order index of output ``(o, z, y, x)``, column = flat C-order index of input
  ``(c, d, h, w)``, value = the integer weight mantissa ``weight[o, c, kd, kh, kw]`` of the tap
  that connects them. Taps that fall into the zero padding have no synapse. Zero weights have
  no synapse. Stride-2 downsampling is just the stride of the matrix.
* **x2 nearest upsampling folded into the following convolution**: the conv reads the
  upsampled spikes ``u[c, Z, Y, X] = s[c, Z//2, Y//2, X//2]``, so column
  ``(c, Z//2, Y//2, X//2)`` of the SOURCE population is used directly; taps of one output that
  meet the same source neuron are summed into one synapse (per dimension two of the three taps
  of a 3-kernel coincide, so a folded 3x3x3 conv has 8 instead of 27 synapses per input
  channel and output neuron, and no upsampled population exists at all).
* **skip concatenation**: the weight's input-channel slice ``channels`` of each incoming edge is
  its own matrix (its own connection process); all of a layer's connection processes feed the
  same neuron ``a_in`` port, where lava adds them (one ``shift(W_e s, weight_exp)`` per process,
  exactly the emulator's per-connection shift).

Folded weights are sums of up to 8 mantissas and may leave the 8-bit synapse range
``[-256, 254]`` that lava's bit-accurate ``Sparse`` enforces (``clip_weights``). Such a matrix is
split into ``K`` chunk matrices whose entries are in range (``W = W_1 + ... + W_K``, each its own
``Sparse`` process into the same ``a_in``): exact when ``weight_exp >= 0`` (the shift is
linear); with ``weight_exp < 0`` the per-process floor shift of a split sum is not the shift of
the sum, so that case is refused (:class:`LoweringError`). ``K = 1`` for every network we
trained (the folded sums stay far inside the range).

Construction is vectorised (numpy over all neurons of an axis class at once; the Python loops
run over kernel slots and border/parity classes only, never over neurons or synapses).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from calibration import loihi_rules as R
from calibration.netfile import LayerInput, QuantizedLayer, QuantizedNet
from spikereg_neuro.connections import Connection
from spikereg_neuro.geometry import axis_slots, conv_output_shape

Shape4 = Tuple[int, int, int, int]


class LoweringError(ValueError):
    """A connection that cannot be lowered exactly onto lava-nc Sparse processes."""


# ============================================================================ matrices
def conv_output_size(n: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int]) -> Tuple[int, int, int]:
    """Spatial output size of a 3-D convolution (:func:`spikereg_neuro.geometry.conv_output_shape`);
    :class:`LoweringError` when the input is too small for the kernel."""
    out = conv_output_shape(n, kernel, stride, padding)
    if min(out) < 1:
        raise LoweringError(f"input {tuple(n)} too small for kernel {tuple(kernel)}")
    return out  # type: ignore[return-value]


def conv3d_matrix(weight: np.ndarray, in_shape: Shape4, stride: Sequence[int] = (1, 1, 1),
                  padding: Sequence[int] = (0, 0, 0), upsample: bool = False) -> sp.csr_matrix:
    """The integer matrix of a 3-D convolution of ``in_shape = (C, D, H, W)`` populations.

    ``weight`` is ``(O, C, kd, kh, kw)`` (integers). With ``upsample=True`` the convolution
    runs on the x2 nearest-upsampled input ``(C, 2D, 2H, 2W)`` but the columns index the
    ORIGINAL ``(C, D, H, W)`` population (upsampling folded in: the taps of one output that meet
    the same source neuron are summed into one synapse).
    Returns ``csr_matrix`` (int32 values, no explicit zeros) of shape ``(O*D'*H'*W', C*D*H*W)``.

    Vectorised per axis: every axis is reduced to "slots" (source offsets) with their tap sets
    (:func:`spikereg_neuro.geometry.axis_slots`); the outputs of an axis fall into a few classes with the same tap sets
    (parity and borders), and for every combination of classes along the three axes the folded
    kernel ``(O, C)`` is one weighted sum of the weight and the synapses of all those outputs
    are generated at once. No duplicates are generated, so no summation pass is needed.
    """
    w = np.asarray(weight)
    if w.ndim != 5:
        raise LoweringError(f"weight must be (O, C, kd, kh, kw), got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        raise LoweringError(f"weight must be integer, got {w.dtype}")
    O, C = int(w.shape[0]), int(w.shape[1])
    kern = tuple(int(k) for k in w.shape[2:])
    Cs, Ds, Hs, Ws = (int(x) for x in in_shape)
    if Cs != C:
        raise LoweringError(f"weight has {C} input channels, population has {Cs}")
    f = 2 if upsample else 1
    src_sp = (Ds, Hs, Ws)
    out_sp = conv_output_size(tuple(n * f for n in src_sp), kern, stride, padding)
    n_out_sp = int(np.prod(out_sp))
    n_src_sp = Ds * Hs * Ws
    shape = (O * n_out_sp, C * n_src_sp)
    idx_t = np.int32 if max(shape) < 2 ** 31 - 1 else np.int64
    # per axis: classes of (slot, tap set) -> the outputs in the class and their sources
    axes = []
    for n_in, n_o, k, st, p in zip(src_sp, out_sp, kern, stride, padding):
        src, mask = axis_slots(n_in, n_o, k, int(st), int(p), f)
        classes = []
        for j in range(src.shape[1]):
            code = (mask[:, j, :] * (1 << np.arange(k, dtype=np.int64))).sum(axis=1)
            for c in np.unique(code[src[:, j] >= 0]):
                sel = np.nonzero((code == c) & (src[:, j] >= 0))[0]
                classes.append((mask[sel[0], j, :].astype(np.int64), sel, src[sel, j]))
        axes.append(classes)
    w64 = w.astype(np.int64)
    rows_all, cols_all, vals_all = [], [], []
    for mz, oz, iz in axes[0]:
        wz = np.einsum("ocabd,a->ocbd", w64, mz)
        for my, oy, iy in axes[1]:
            wy = np.einsum("ocbd,b->ocd", wz, my)
            out_zy = (oz[:, None] * out_sp[1] + oy[None, :]).ravel()
            in_zy = (iz[:, None] * Hs + iy[None, :]).ravel()
            for mx, ox, ix in axes[2]:
                wf = wy @ mx                                             # folded kernel (O, C)
                oo, cc = np.nonzero(wf)
                if oo.size == 0:
                    continue
                out_flat = (out_zy[:, None] * out_sp[2] + ox[None, :]).ravel()
                in_flat = (in_zy[:, None] * Ws + ix[None, :]).ravel()
                rows_all.append((oo[:, None] * n_out_sp + out_flat[None, :]).astype(idx_t).ravel())
                cols_all.append((cc[:, None] * n_src_sp + in_flat[None, :]).astype(idx_t).ravel())
                vals_all.append(np.repeat(wf[oo, cc].astype(np.int32), out_flat.size))
    if not rows_all:
        return sp.csr_matrix(shape, dtype=np.int32)
    rows, cols, vals = np.concatenate(rows_all), np.concatenate(cols_all), np.concatenate(vals_all)
    del rows_all, cols_all, vals_all
    m = sp.coo_matrix((vals, (rows, cols)), shape=shape)
    del rows, cols, vals
    m = m.tocsr()
    m.sort_indices()
    return m


def split_synapse_range(m: sp.csr_matrix, lo: int = R.WEIGHT_MIN, hi: int = R.WEIGHT_MAX) -> List[sp.csr_matrix]:
    """Split ``m`` into matrices with entries in ``[lo, hi]`` whose sum is ``m``.

    Each entry ``v`` becomes ``clip(v, lo, hi)``, then the clipped remainder, and so on; with
    even ``v`` and even bounds every chunk stays even (unchanged by lava's mixed-sign
    truncation). Returns ``[m]`` when it is in range already.
    """
    m = m.tocsr()
    if m.nnz == 0 or (m.data.min() >= lo and m.data.max() <= hi):
        return [m]
    chunks = []
    rest = m.copy()
    while rest.nnz:
        c = rest.copy()
        c.data = np.clip(c.data, lo, hi)
        rest = rest - c
        rest.eliminate_zeros()
        c.eliminate_zeros()
        chunks.append(c)
    return chunks


# ============================================================================ connections
@dataclass
class LoweredConnection:
    """One edge of a layer lowered to lava ``Sparse`` matrices (usually exactly one)."""

    layer: str
    source: str
    transform: str
    channels: Tuple[int, int]
    source_step_offset: int
    weight_exp: int
    num_message_bits: int
    src_shape: Shape4
    out_shape: Shape4
    matrices: List[sp.csr_matrix] = field(default_factory=list)

    @property
    def connection(self) -> Connection:
        return Connection.from_transform(self.source, self.transform)

    @property
    def name(self) -> str:
        """``"enc2->dec2"``, ``"up2:enc3->dec2"`` (the Lava process names)."""
        t = "up2:" if self.connection.upsampled else ""
        return f"{t}{self.source}->{self.layer}"

    @property
    def synapses(self) -> int:
        return int(sum(m.nnz for m in self.matrices))

    @property
    def graded(self) -> bool:
        return self.num_message_bits > 0

    def bytes(self) -> int:
        """Host memory of the CSR matrices as lava holds them (int32 data and indices)."""
        return int(sum(4 * m.nnz + 4 * m.nnz + 4 * (m.shape[0] + 1) for m in self.matrices))

    def apply(self, s: np.ndarray) -> np.ndarray:
        """What lava's bit-accurate Sparse processes deliver for one step of source output ``s``
        (flat ``(n_src,)``, or ``(n_src, T)`` for T steps): per process
        ``shift(W_k s, weight_exp)``, summed over the processes. int64."""
        x = np.asarray(s).astype(np.int64)
        total = None
        for m in self.matrices:
            y = R.shift_activation(m.astype(np.int64) @ x, self.weight_exp)
            total = y if total is None else total + y
        return total


def lower_connection(layer: QuantizedLayer, edge: LayerInput, src_shape: Shape4, out_shape: Shape4,
                     input_bits: int = 8) -> LoweredConnection:
    """Lower one incoming edge of ``layer`` (the weight slice ``edge.channels``)."""
    a, b = edge.channels
    w = np.asarray(layer.weight[:, a:b]).astype(np.int64)
    m = conv3d_matrix(w, src_shape, layer.stride, layer.padding, upsample=edge.upsample > 1)
    if m.shape[0] != int(np.prod(out_shape)):
        raise LoweringError(f"{layer.name}: lowered {edge.source} gives {m.shape[0]} outputs, "
                            f"population {out_shape} has {int(np.prod(out_shape))}")
    chunks = split_synapse_range(m)
    if len(chunks) > 1 and layer.weight_exp < 0:
        raise LoweringError(
            f"{layer.name}: the folded x2-upsampling weights from {edge.source} reach "
            f"[{int(m.data.min())}, {int(m.data.max())}], outside the 8-bit synapse range, and the "
            f"weight exponent {layer.weight_exp} < 0: splitting the matrix would floor each part "
            "separately, which is not the emulator's shift of the sum")
    # the input's payload bits, else the layer's num_message_bits (a layer reads only graded or
    # only binary spike sources, validate_qnet: 24 for graded spikes, 0 for binary)
    return LoweredConnection(layer=layer.name, source=edge.source, transform=edge.transform,
                             channels=(int(a), int(b)), source_step_offset=int(edge.source_step_offset),
                             weight_exp=int(layer.weight_exp),
                             num_message_bits=int(input_bits if edge.source == "input"
                                                  else layer.num_message_bits),
                             src_shape=tuple(int(x) for x in src_shape),  # type: ignore[arg-type]
                             out_shape=tuple(int(x) for x in out_shape),  # type: ignore[arg-type]
                             matrices=chunks)


def lower_network(q: QuantizedNet, patch: Optional[Sequence[int]] = None) -> Dict[str, List[LoweredConnection]]:
    """Every layer's connections for a patch size (default ``q.patch_size``), in layer order."""
    shapes = q.shapes(patch)
    out: Dict[str, List[LoweredConnection]] = {}
    for layer in q.layers:
        out[layer.name] = [lower_connection(layer, e, shapes[e.source], shapes[layer.name], q.input_bits)
                           for e in layer.inputs]
    return out


def net_fingerprint(q: QuantizedNet) -> str:
    """sha256 of everything the lowering reads from ``q`` (per layer: name, weights, exponent,
    kernel/stride/padding, inputs, message bits; the input bits)."""
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(json.dumps({"input_bits": int(q.input_bits), "in_channels": int(q.in_channels)}).encode())
    for l in q.layers:
        w = np.ascontiguousarray(np.asarray(l.weight).astype(np.int64))
        h.update(json.dumps({"name": l.name, "weight_exp": int(l.weight_exp), "shape": list(w.shape),
                             "stride": [int(x) for x in l.stride], "padding": [int(x) for x in l.padding],
                             "kernel": [int(x) for x in l.kernel_size], "nmb": int(l.num_message_bits),
                             "inputs": [e.to_dict() for e in l.inputs]}, sort_keys=True, default=str).encode())
        h.update(w.tobytes())
    return h.hexdigest()


class LoweringCache:
    """The lowering of a network per (net, patch shape), computed once and reused.

    ``get(q, patch)`` returns :func:`lower_network`'s result for that key, building it on the
    first request only (``builds`` counts them, ``hits`` the reuses); the lowering depends only
    on the weights and the patch shape, never on the patch content. At most ``max_entries``
    shapes are kept (least recently used dropped): a 32^3 lowering of the default network holds
    about 1.4 GiB."""

    def __init__(self, max_entries: int = 2) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = int(max_entries)
        self._entries: Dict[Tuple[str, Tuple[int, int, int]], Dict[str, List[LoweredConnection]]] = {}
        self.builds = 0
        self.hits = 0
        self.build_seconds = 0.0

    def key(self, q: QuantizedNet, patch: Sequence[int]) -> Tuple[str, Tuple[int, int, int]]:
        """``(net_fingerprint(q), patch)``."""
        return net_fingerprint(q), tuple(int(x) for x in patch)  # type: ignore[return-value]

    def get(self, q: QuantizedNet, patch: Sequence[int]) -> Dict[str, List[LoweredConnection]]:
        """The lowered connections of ``q`` at ``patch`` (built on first use)."""
        import time

        k = self.key(q, patch)
        if k in self._entries:
            self.hits += 1
            self._entries[k] = self._entries.pop(k)          # most recently used last
            return self._entries[k]
        t0 = time.perf_counter()
        low = lower_network(q, k[1])
        self.build_seconds += time.perf_counter() - t0
        self.builds += 1
        self._entries[k] = low
        while len(self._entries) > self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        return low

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


__all__ = ["LoweringError", "conv_output_size", "conv3d_matrix", "split_synapse_range",
           "LoweredConnection", "lower_connection", "lower_network", "net_fingerprint",
           "LoweringCache"]
