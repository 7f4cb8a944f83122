"""Per-layer Loihi resources of the spiking U-Net: neurons, stored synapses, fan-in, fan-out.

Input: a plain list of layer dicts in execution order, as :meth:`SpikeRegUNet.export` gives them
(``name``, ``type`` conv3d/readout3d, ``in_channels``, ``out_channels``, ``kernel_size``,
``stride``, ``padding``, ``weight`` (integer Lava weight values, optional), ``inputs``: labels
such as ``["up(enc3)", "enc2"]`` or :class:`~spikereg_neuro.connections.Connection` objects,
``time_window``, ``neuron_kind``). :func:`layers_from_qnet` turns a calibrated ``net.h5``
(:class:`calibration.netfile.QuantizedNet`) into the same list (with Connection objects).

Exact counts come from the profiler's :class:`~spikereg_neuro.profiler.NetworkCounter`. The
mapper needs one thing the counter does not keep: the synapses of each TARGET neuron (a core
stores its neurons' fan-in), so this module computes per-target fan-in maps with the same 1D
factorisation and checks that they sum to the counter's totals, connection by connection.

Lowering and stored synapses
----------------------------
Every connection (one entry of ``inputs``) becomes Lava ``Sparse`` matrices exactly as the Lava
backend builds them (:mod:`sim.lowering`): one matrix with one synapse per (source, target) pair
whose weight is non-zero; for an x2-upsampled source the kernel taps that reach the same source
neuron are folded into one synapse (their weights summed; the profiler's ``merged_nonzero``
count). A folded weight outside the 8-bit range [-256, 254] is split over ``chunks`` matrices
(:func:`sim.lowering.split_synapse_range`: ``v -> clip(v) + rest``), each entry then costs
``ceil(v / 254)`` (``v > 0``) or ``ceil(-v / 256)`` (``v < 0``) stored synapses; the extra ones are
reported as ``extra_synapses`` (0 for the default network; small random networks can need them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from spikereg_neuro.connections import Connection, ConnectionRecord
from spikereg_neuro.geometry import axis_groups, folded_kernel_taps
from spikereg_neuro.hardware import neuron_kind
from spikereg_neuro.profiler.counting import GRADED_SOURCE, NetworkCounter

from . import limits as LIM

#: profiler variant = synapses the folded lowering stores (before range chunks)
STORED_VARIANT = "merged_nonzero"
#: 8-bit Lava weight range (calibration/loihi_rules.py WEIGHT_MIN / WEIGHT_MAX)
WEIGHT_MIN, WEIGHT_MAX = -256, 254

Shape3 = Tuple[int, int, int]


# ============================================================================ 1D connectivity
# axis_groups (which output reads which source through which taps) is spikereg_neuro.geometry's


def _signatures(groups) -> Tuple[np.ndarray, List[Tuple[Tuple[int, ...], ...]]]:
    """Per output index the id of its tap structure (the taps of each group, sources dropped)."""
    sigs: Dict[Tuple[Tuple[int, ...], ...], int] = {}
    ids = np.empty(len(groups), dtype=np.int64)
    for y, g in enumerate(groups):
        key = tuple(t for _, t in g)
        ids[y] = sigs.setdefault(key, len(sigs))
    return ids, list(sigs)


def _sub(w: np.ndarray, g0, g1, g2) -> np.ndarray:
    return w[:, :, list(g0)][:, :, :, list(g1)][:, :, :, :, list(g2)]


# ============================================================================ data classes
@dataclass
class ConnectionResources(ConnectionRecord):
    """One incoming connection of a layer (one entry of its ``inputs``)."""

    connection: Connection
    channels: Tuple[int, int]
    source_shape: Shape3
    graded: bool
    chunks: int                   # Sparse matrices (processes) of this connection
    fanin: np.ndarray             # (C_out, D, H, W) int64: stored synapses per target neuron
    groups: List[list]            # per axis: axis_groups(...) of the layer's output
    synapses: int                 # stored synapses (NetworkCounter merged_nonzero + extra_synapses)
    extra_synapses: int           # synapses of the range chunks beyond the first
    weight_range: Optional[Tuple[int, int]] = None   # folded weights (None: weights unknown)

    @property
    def source_channels(self) -> int:
        return self.channels[1] - self.channels[0]

    def coverage(self, axis: int, start: int, stop: int) -> np.ndarray:
        """Boolean ``(source length,)``: the source indices along ``axis`` read by outputs
        ``start <= y < stop``."""
        cov = np.zeros(self.source_shape[axis], dtype=bool)
        for g in self.groups[axis][start:stop]:
            for p, _ in g:
                cov[p] = True
        return cov


@dataclass
class LayerResources:
    """Static resources of one layer for one patch shape."""

    name: str
    type: str
    neuron_kind: str
    spiking: bool
    in_channels: int
    out_channels: int
    kernel_size: Shape3
    output_shape: Shape3
    window: int
    connections: List[ConnectionResources]
    stride: Shape3 = (1, 1, 1)
    padding: Shape3 = (1, 1, 1)
    counter_synapses: Dict[str, int] = field(default_factory=dict)
    fan_in_max_dense: int = 0
    consumers: List[Tuple[str, int]] = field(default_factory=list)  # (layer, connection index)

    @property
    def neurons(self) -> int:
        return self.out_channels * math.prod(self.output_shape)

    @property
    def state_bytes_per_neuron(self) -> float:
        return LIM.state_bytes_per_neuron(self.neuron_kind)

    @property
    def fanin(self) -> np.ndarray:
        """(C_out, D, H, W): stored synapses per neuron, all connections."""
        return sum(c.fanin for c in self.connections)

    @property
    def synapses(self) -> int:
        """Stored synapses of the layer (sum over its connections of their lowering's count)."""
        return sum(c.synapses for c in self.connections)

    @property
    def shared_kernel_entries_per_channel(self) -> int:
        """Kernel entries a shared-kernel core stores per output channel it holds: over the
        incoming connections, input channels x folded taps (27 for a 3^3 kernel; 4^3 = 64
        polyphase-folded taps for a x2 upsampled source, :func:`~spikereg_neuro.geometry.folded_kernel_taps`)."""
        total = 0
        for c in self.connections:
            taps = 1
            for a in range(3):
                taps *= folded_kernel_taps(self.kernel_size[a], self.stride[a], self.padding[a], c.upsample)
            total += c.source_channels * taps
        return total

    @property
    def ops_variant(self) -> str:
        """The profiler variant whose synaptic ops this layer executes (folded, non-zero)."""
        return STORED_VARIANT


# ============================================================================ adapters
def layers_from_qnet(q) -> List[Dict[str, Any]]:
    """A :class:`calibration.netfile.QuantizedNet` as the plain layer list this package reads."""
    out = []
    for l in q.layers:
        out.append({
            "name": l.name,
            "type": "readout3d" if l.neuron == "integrator" else "conv3d",
            "in_channels": l.in_channels, "out_channels": l.out_channels,
            "kernel_size": [int(x) for x in l.kernel_size], "stride": [int(x) for x in l.stride],
            "padding": [int(x) for x in l.padding],
            "weight": np.asarray(l.weight).astype(np.int64),
            "inputs": [e.connection for e in l.inputs],
            "time_window": int(l.time_window),
            "neuron_kind": neuron_kind(l.neuron).model,
            "neuron": l.neuron, "weight_exp": int(l.weight_exp),
            "payload_shift": int(l.payload_shift),
        })
    return out


def _int_weight(d: Mapping[str, Any]) -> Optional[np.ndarray]:
    w = d.get("weight")
    if w is None:
        return None
    w = np.asarray(w)
    wi = np.rint(w).astype(np.int64)
    if not np.array_equal(wi, w):
        raise ValueError(f"layer {d['name']}: weights must be integer Lava weight values "
                         "(SpikeRegUNet.export() or net.h5 give them)")
    return wi


def weight_chunks(values: np.ndarray) -> np.ndarray:
    """Stored synapses per folded weight value: 0 for 0, else the number of in-range chunks
    :func:`sim.lowering.split_synapse_range` cuts it into."""
    v = np.asarray(values, dtype=np.int64)
    pos = -(-np.maximum(v, 0) // WEIGHT_MAX)
    neg = -(-np.maximum(-v, 0) // -WEIGHT_MIN)
    return pos + neg


# ============================================================================ the network
class NetworkResources:
    """Resources of every layer of a network for one patch shape.

    >>> res = NetworkResources(net.export(), (32, 32, 32))
    >>> res.layers["dec0"].synapses, res.layers["dec0"].fanin.max()
    """

    def __init__(self, layers: Sequence[Mapping[str, Any]], patch_shape: Sequence[int]) -> None:
        self.patch_shape: Shape3 = tuple(int(x) for x in patch_shape)  # type: ignore
        self.counter = NetworkCounter(layers, self.patch_shape)
        self.notes: List[str] = []
        #: layers that send graded spikes (payload_shift >= 0 in net.h5)
        self.graded_layers: List[str] = [d["name"] for d in layers if int(d.get("payload_shift", -1)) >= 0]
        self.layers: Dict[str, LayerResources] = {}
        for d in layers:
            self.layers[d["name"]] = self._build(d)
        for name, l in self.layers.items():
            for i, c in enumerate(l.connections):
                if c.source != GRADED_SOURCE:
                    self.layers[c.source].consumers.append((name, i))

    # ------------------------------------------------------------------------------------------
    def _build(self, d: Mapping[str, Any]) -> LayerResources:
        info = self.counter.layers[d["name"]]
        w = _int_weight(d)
        if w is None and "weights unknown" not in " ".join(self.notes):
            self.notes.append("weights unknown: every synapse counted as non-zero")
        conns = []
        for c in info.connections:
            groups = [axis_groups(info.output_shape[a], c.source_shape[a], info.kernel_size[a],
                                  info.stride[a], info.padding[a], c.upsample) for a in range(3)]
            wc = None if w is None else w[:, c.channel_start:c.channel_stop]
            nonzero, stored, chunks, wrange = self._fanin_maps(groups, wc, info.out_channels,
                                                               c.channel_stop - c.channel_start)
            total = int(nonzero.sum())
            if total != c.synapses(STORED_VARIANT):  # the counter is the reference
                raise RuntimeError(f"layer {info.name} <- {c.label()}: per-target fan-in sums to {total}, "
                                   f"NetworkCounter counts {c.synapses(STORED_VARIANT)} ({STORED_VARIANT})")
            if chunks > 1:
                self.notes.append(f"{info.name} <- {c.label()}: folded weights {wrange} leave the 8-bit "
                                  f"range: {chunks} Sparse matrices, {int(stored.sum()) - total} extra synapses")
                if int(d.get("weight_exp", 0)) < 0:
                    self.notes.append(f"{info.name}: weight_exp {d['weight_exp']} < 0 with a split folded "
                                      "matrix is not exact on Lava (sim.lowering refuses it)")
            conns.append(ConnectionResources(
                connection=c.connection, channels=(c.channel_start, c.channel_stop),
                source_shape=c.source_shape, graded=c.graded, chunks=chunks, fanin=stored,
                groups=groups, synapses=int(stored.sum()), extra_synapses=int(stored.sum()) - total,
                weight_range=wrange))
        return LayerResources(
            name=info.name, type=info.type, neuron_kind=info.neuron_kind, spiking=info.spiking,
            in_channels=info.in_channels, out_channels=info.out_channels,
            kernel_size=info.kernel_size, output_shape=info.output_shape, window=info.window,
            connections=conns, stride=info.stride, padding=info.padding,
            counter_synapses={v: info.synapses(v) for v in ("dense", "nonzero", "merged", "merged_nonzero")},
            fan_in_max_dense=int(info.fan_in_max["dense"]))

    @staticmethod
    def _fanin_maps(groups, wc: Optional[np.ndarray], cout: int, csrc: int):
        """Per target neuron ``(C_out, D, H, W)``: non-zero folded synapses and stored synapses
        (with range chunks); the connection's number of chunk matrices and folded weight range.
        Computed per combination of the three axes' tap structures (signatures)."""
        ids, sigs = zip(*[_signatures(g) for g in groups])
        shp = (cout, len(sigs[0]), len(sigs[1]), len(sigs[2]))
        nz_t, st_t = np.zeros(shp, dtype=np.int64), np.zeros(shp, dtype=np.int64)
        chunks, lo, hi = 1, None, None
        for i0, s0 in enumerate(sigs[0]):
            for i1, s1 in enumerate(sigs[1]):
                for i2, s2 in enumerate(sigs[2]):
                    if wc is None:
                        nz_t[:, i0, i1, i2] = csrc * len(s0) * len(s1) * len(s2)
                        continue
                    for g0 in s0:
                        for g1 in s1:
                            for g2 in s2:
                                v = _sub(wc, g0, g1, g2).sum(axis=(2, 3, 4))      # (C_out, C_src)
                                ch = weight_chunks(v)
                                nz_t[:, i0, i1, i2] += (v != 0).sum(axis=1)
                                st_t[:, i0, i1, i2] += ch.sum(axis=1)
                                chunks = max(chunks, int(ch.max(initial=0)))
                                lo = int(v.min()) if lo is None else min(lo, int(v.min()))
                                hi = int(v.max()) if hi is None else max(hi, int(v.max()))
        if wc is None:
            st_t = nz_t
        idx = (slice(None), ids[0][:, None, None], ids[1][None, :, None], ids[2][None, None, :])
        return nz_t[idx], st_t[idx], chunks, (None if lo is None else (lo, hi))

    # ------------------------------------------------------------------------------------------
    @property
    def neurons(self) -> int:
        return sum(l.neurons for l in self.layers.values())

    @property
    def synapses(self) -> int:
        return sum(l.synapses for l in self.layers.values())

    def fan_out(self, layer: str) -> Dict[str, Dict[str, float]]:
        """Per consumer connection of ``layer``: mean and max folded non-zero synapses per source
        neuron (the counter's ``merged_nonzero`` fan-out maps)."""
        out = {}
        for cons, i in self.layers[layer].consumers:
            c = self.layers[cons].connections[i]
            fo = self.counter.fanout_map(cons, c.connection, STORED_VARIANT)
            out[f"{cons}<-{c.label()}"] = {"mean": float(fo.mean()), "max": int(fo.max())}
        return out

    def table(self) -> List[Dict[str, Any]]:
        """One row per layer (static, per patch)."""
        rows = []
        for l in self.layers.values():
            fi = l.fanin
            rows.append({
                "layer": l.name, "type": l.type, "neuron_kind": l.neuron_kind,
                "output_shape": [l.out_channels, *l.output_shape], "neurons": l.neurons,
                "time_window": l.window,
                "inputs": [{"source": c.label(), "channels": list(c.channels), "sparse_matrices": c.chunks,
                            "synapses": c.synapses, "extra_synapses": c.extra_synapses,
                            "weight_range": list(c.weight_range) if c.weight_range else None}
                           for c in l.connections],
                "synapses": l.synapses,
                "synapses_by_variant": dict(l.counter_synapses),
                "fan_in": {"mean": float(fi.mean()), "max": int(fi.max()),
                           "max_dense_taps": l.fan_in_max_dense},
                "fan_out": self.fan_out(l.name),
                "state_bytes": l.neurons * l.state_bytes_per_neuron,
            })
        return rows


__all__ = ["STORED_VARIANT", "WEIGHT_MIN", "WEIGHT_MAX", "axis_groups", "weight_chunks",
           "ConnectionResources", "LayerResources", "NetworkResources", "layers_from_qnet"]
