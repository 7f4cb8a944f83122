"""Exact operation counts of the spiking U-Net: neurons, synapses, fan-in/fan-out, synaptic ops.

Everything here is derived from the layer descriptions of :meth:`SpikeRegUNet.export` (name,
type, channels, kernel, stride, padding, integer weights, inputs such as ``["up(enc3)", "enc2"]``,
time window) and the spatial shape of one patch.

Connectivity is computed exactly, borders and strides included, by factorising a 3D convolution
into three 1D problems: an output index ``y`` reads the (upsampled) input index
``u = y * stride - padding + k`` through kernel tap ``k`` when ``0 <= u < up * n_src``, i.e. the
source neuron ``u // up`` (``up = 2`` for a nearest-neighbour x2 upsampled source, 1 otherwise).
Validity is a product over the three axes, so every count below is a sum of products of 1D
counts: no sampling, no approximation. The rule is written once, in :mod:`spikereg_neuro.geometry`.

Four fan-out *variants* are counted for each source neuron (and hence four synaptic-op counts):

``dense``
    one synapse per (target neuron, kernel tap) that reads the source neuron, all weights
    counted. This equals the MACs of the equivalent ANN convolution on the (upsampled) input
    grid, padding taps excluded, and is what NeuroBench-style "effective ops" count.
``nonzero``
    as ``dense``, but only taps whose (8-bit integer) weight is non-zero.
``merged``
    one synapse per (source neuron, target neuron) pair: the taps of a x2-upsampled source that
    hit the same source neuron are merged into one synapse whose weight is their sum (what a
    sparse-matrix lowering of "upsample then conv", e.g. to ``lava.proc.sparse.Sparse``, stores).
    Equal to ``dense`` for sources that are not upsampled.
``merged_nonzero``
    as ``merged``, only pairs whose summed weight is non-zero. This is what an event-driven chip
    executes per spike when zero synapses are not stored; it is the default for the Loihi model.

Synaptic ops into a layer are ``sum over source events of the source neuron's fan-out``. The
first layer receives the graded 8-bit intensity payload (analog, multi-bit): its ops are MACs and
are kept apart from the accumulate-only ops (ACs) of the layers that receive binary spikes.
With graded spikes between layers (``neuron.graded_spike``) a hidden spike is still one event:
its ops (one per synapse reached) are counted with the spike-driven ops (``synops``), although on
the chip each multiplies the weight by the payload; both kinds are priced alike (the energy of a
graded synaptic op is not published).

Time: the network runs on one timeline of ``T = max(time windows)`` steps (``enc_windows[0]``);
a layer with window ``T_l`` is active on the last ``T_l`` steps and reads the last ``T_l`` steps of
each of its sources (exactly as :meth:`SpikeRegUNet.forward` slices them). Neuron updates are
``neurons x T_l`` per layer (Loihi updates every compartment on every step it runs); the
``neurons x (T - T_l)`` updates of a layer before its window starts are counted separately as
*idle* updates (compartments with no input and zero state).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..connections import INPUT, Connection, ConnectionRecord
from ..geometry import conv_output_shape, fanin as _fanin_1d, tapsets as _tapsets_1d
from ..hardware import STATE_BITS, WEIGHT_BITS, state_var_counts

VARIANTS = ("dense", "nonzero", "merged", "merged_nonzero")
GRADED_SOURCE = INPUT
#: state variables per neuron kind, under its model and Lava names (spikereg_neuro/hardware.py)
STATE_VARS = state_var_counts()

Shape3 = Tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# 1D connectivity: the one geometry rule (spikereg_neuro/geometry.py)
def _outer3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return a[:, None, None] * b[None, :, None] * c[None, None, :]


# ---------------------------------------------------------------------------------------------
@dataclass
class ConnectionCounts(ConnectionRecord):
    """One source feeding a layer (:class:`~spikereg_neuro.connections.Connection`): its channel
    slice of the layer's weights and fan-out maps."""

    connection: Connection
    channel_start: int
    channel_stop: int
    source_shape: Shape3
    graded: bool
    #: variant -> (C_src, D, H, W) int32: synapses from each source neuron into the layer
    fanout: Dict[str, np.ndarray]

    @property
    def source_neurons(self) -> int:
        return (self.channel_stop - self.channel_start) * math.prod(self.source_shape)

    def synapses(self, variant: str = "dense") -> int:
        return int(self.fanout[variant].sum(dtype=np.int64))

    def mean_fanout(self, variant: str = "dense") -> float:
        return self.synapses(variant) / self.source_neurons

    def max_fanout(self, variant: str = "dense") -> int:
        return int(self.fanout[variant].max())


@dataclass
class LayerInfo:
    """Static (per patch) description of one layer."""

    name: str
    type: str
    in_channels: int
    out_channels: int
    kernel_size: Shape3
    stride: Shape3
    padding: Shape3
    input_shape: Shape3
    output_shape: Shape3
    window: int
    offset: int  # first step of the layer on the network timeline
    spiking: bool
    graded_input: bool
    neuron_kind: str
    weights: int
    zero_weights: int
    connections: List[ConnectionCounts]
    fan_in_max: Dict[str, int]
    state_bits: int = STATE_BITS

    @property
    def neurons(self) -> int:
        return self.out_channels * math.prod(self.output_shape)

    @property
    def state_vars(self) -> int:
        return STATE_VARS.get(self.neuron_kind, 2)

    @property
    def state_bytes(self) -> int:
        return self.neurons * self.state_vars * self.state_bits // 8

    def synapses(self, variant: str = "dense") -> int:
        return sum(c.synapses(variant) for c in self.connections)

    @property
    def ann_macs(self) -> int:
        """MACs of the equivalent ANN conv (one pass), padding taps excluded (exact)."""
        return self.synapses("dense")

    @property
    def ann_macs_padded(self) -> int:
        """The conventional count ``out_numel x C_in x prod(kernel)`` (includes padding taps)."""
        return self.neurons * self.in_channels * math.prod(self.kernel_size)

    def fan_in_mean(self, variant: str = "dense") -> float:
        return self.synapses(variant) / self.neurons


# ---------------------------------------------------------------------------------------------
@dataclass
class LayerCounts:
    """Counts of one layer over the network timeline, summed over ``samples`` patches.

    ``ops[variant][t]`` are the synaptic operations delivered *into* this layer at step ``t``
    (MACs if ``graded_input``, ACs otherwise); ``messages[t]`` the source events delivered into it
    (one per source spike and consuming layer, graded payload events for the first layer);
    ``spikes[t]`` the spikes this layer emits (zero for the non-spiking read-out).
    """

    name: str
    spiking: bool
    graded_input: bool
    neurons: int
    window: int
    state_bytes: int
    weights: int
    zero_weights: int
    synapses: Dict[str, int]
    ann_macs: int
    ann_macs_padded: int
    fan_out: Dict[str, Dict[str, float]]
    fan_in: Dict[str, float]
    spikes: np.ndarray
    ops: Dict[str, np.ndarray]
    messages: np.ndarray
    neuron_updates: np.ndarray
    idle_neuron_updates: np.ndarray

    _STATIC = ("name", "spiking", "graded_input", "neurons", "window", "state_bytes", "weights",
               "zero_weights", "synapses", "ann_macs", "ann_macs_padded")

    def __add__(self, other: "LayerCounts") -> "LayerCounts":
        for k in self._STATIC:
            if getattr(self, k) != getattr(other, k):
                raise ValueError(f"cannot add counts of different networks/patch shapes: layer "
                                 f"{self.name} differs in {k} ({getattr(self, k)} vs {getattr(other, k)})")
        return LayerCounts(
            **{k: getattr(self, k) for k in self._STATIC}, fan_out=self.fan_out, fan_in=self.fan_in,
            spikes=self.spikes + other.spikes,
            ops={v: self.ops[v] + other.ops[v] for v in self.ops},
            messages=self.messages + other.messages,
            neuron_updates=self.neuron_updates + other.neuron_updates,
            idle_neuron_updates=self.idle_neuron_updates + other.idle_neuron_updates,
        )

    def to_dict(self) -> Dict[str, Any]:
        d = {k: getattr(self, k) for k in self._STATIC}
        d.update(fan_out=self.fan_out, fan_in=self.fan_in, spikes=self.spikes.tolist(),
                 ops={v: a.tolist() for v, a in self.ops.items()}, messages=self.messages.tolist(),
                 neuron_updates=self.neuron_updates.tolist(),
                 idle_neuron_updates=self.idle_neuron_updates.tolist())
        return d


@dataclass
class ProfileCounts:
    """Counts of a workload (one or many patches); ``a + b`` aggregates patches/iterations.

    ``exact`` is False when synaptic ops were obtained from per-step spike totals and the mean
    fan-out of each source (:meth:`NetworkCounter.count_activity`), True when they were summed
    over the actual spike positions (:meth:`NetworkCounter.count_spikes`).
    """

    timeline_steps: int
    samples: int
    exact: bool
    layers: Dict[str, LayerCounts]
    notes: List[str] = field(default_factory=list)

    def __add__(self, other: "ProfileCounts") -> "ProfileCounts":
        if not isinstance(other, ProfileCounts):
            return NotImplemented
        if self.timeline_steps != other.timeline_steps or list(self.layers) != list(other.layers):
            raise ValueError("cannot add counts of different networks (layers or timeline differ)")
        notes = list(self.notes) + [n for n in other.notes if n not in self.notes]
        return ProfileCounts(self.timeline_steps, self.samples + other.samples,
                             self.exact and other.exact,
                             {k: self.layers[k] + other.layers[k] for k in self.layers}, notes)

    def __radd__(self, other):  # so that sum([...]) works
        if other == 0:
            return self
        return self.__add__(other)

    # -- totals ------------------------------------------------------------------------------
    def totals(self, variant: str = "dense") -> Dict[str, Any]:
        """Workload totals (all samples, all steps) for one fan-out ``variant``."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        L = self.layers.values()
        spiking = [l for l in L if l.spiking]
        return {
            "variant": variant,
            "samples": self.samples,
            "timeline_steps": self.timeline_steps,
            "exact": self.exact,
            "spikes": float(sum(l.spikes.sum() for l in L)),
            "synops": float(sum(l.ops[variant].sum() for l in L if not l.graded_input)),
            "graded_macs": float(sum(l.ops[variant].sum() for l in L if l.graded_input)),
            "spike_messages": float(sum(l.messages.sum() for l in L if not l.graded_input)),
            "graded_messages": float(sum(l.messages.sum() for l in L if l.graded_input)),
            "neuron_updates": float(sum(l.neuron_updates.sum() for l in L)),
            "idle_neuron_updates": float(sum(l.idle_neuron_updates.sum() for l in L)),
            "neurons_per_sample": int(sum(l.neurons for l in L)),
            "spiking_neuron_steps": float(self.samples * sum(l.neurons * l.window for l in spiking)),
            "ann_macs_per_sample": int(sum(l.ann_macs for l in L)),
            "ann_macs_padded_per_sample": int(sum(l.ann_macs_padded for l in L)),
            "dense_ops_per_sample": int(sum(l.ann_macs * l.window for l in L)),
        }

    def per_step(self, variant: str = "dense") -> Dict[str, np.ndarray]:
        """Per time step of the timeline (summed over layers and samples)."""
        L = self.layers.values()
        return {
            "spikes": sum(l.spikes for l in L),
            "synops": sum(l.ops[variant] for l in L if not l.graded_input),
            "graded_macs": sum(l.ops[variant] for l in L if l.graded_input),
            "neuron_updates": sum(l.neuron_updates for l in L),
        }

    def neurobench(self, graded_sources: Sequence[str] = ()) -> Dict[str, Any]:
        """NeuroBench-style summary (definitions in docs/profiler.md).

        A layer whose input is not in {-1, 0, 1} counts MACs, not ACs (NeuroBench's rule): the
        first layer (graded input) and every layer reading a source in ``graded_sources`` (the
        layers that send graded spikes, e.g. ``payload_shift >= 0`` in net.h5).
        """
        t = self.totals("dense")
        tl = self.totals("merged_nonzero")
        L = list(self.layers.values())
        graded = set(graded_sources)

        def mac_layer(l: LayerCounts) -> bool:
            return l.graded_input or any(Connection.parse(k).source in graded for k in l.fan_out)

        macs = float(sum(l.ops["dense"].sum() for l in L if mac_layer(l)))
        acs = float(sum(l.ops["dense"].sum() for l in L if not mac_layer(l)))
        weights = sum(l.weights for l in L)
        zeros = sum(l.zero_weights for l in L)
        spikes_spiking = sum(l.spikes.sum() for l in L if l.spiking)
        wbytes = weights * WEIGHT_BITS // 8
        sbytes = sum(l.state_bytes for l in L)
        return {
            "effective_macs": macs,
            "effective_acs": acs,
            "mac_layers": [l.name for l in L if mac_layer(l)],
            "synaptic_operations": t["graded_macs"] + t["synops"],
            "dense_ops": float(t["dense_ops_per_sample"] * self.samples),
            "synops_loihi": tl["synops"],  # merged, non-zero weights only
            "graded_macs_loihi": tl["graded_macs"],
            "neuron_updates": t["neuron_updates"],
            "activation_sparsity": float(1.0 - spikes_spiking / t["spiking_neuron_steps"])
            if t["spiking_neuron_steps"] else float("nan"),
            "connection_sparsity": zeros / weights if weights else float("nan"),
            "footprint_bytes": wbytes + sbytes,
            "footprint_weight_bytes": wbytes,
            "footprint_state_bytes": sbytes,
            "samples": self.samples,
            "exact": self.exact,
            "notes": list(self.notes),
        }

    def per_layer(self) -> List[Dict[str, Any]]:
        rows = []
        for l in self.layers.values():
            rows.append({
                "layer": l.name, "neurons": l.neurons, "window": l.window,
                "graded_input": l.graded_input, "spiking": l.spiking,
                "synapses": l.synapses["dense"], "synapses_nonzero": l.synapses["nonzero"],
                "synapses_merged": l.synapses["merged"],
                "synapses_merged_nonzero": l.synapses["merged_nonzero"],
                "ann_macs": l.ann_macs, "fan_in_mean": l.fan_in.get("mean"),
                "fan_in_max": l.fan_in.get("max"), "fan_out": l.fan_out,
                "spikes": float(l.spikes.sum()),
                "rate": float(l.spikes.sum() / (l.neurons * l.window * self.samples)) if l.spiking else None,
                **{f"ops_{v}": float(l.ops[v].sum()) for v in VARIANTS},
                "neuron_updates": float(l.neuron_updates.sum()),
            })
        return rows

    def to_dict(self) -> Dict[str, Any]:
        return {"timeline_steps": self.timeline_steps, "samples": self.samples,
                "exact": self.exact, "notes": list(self.notes),
                "totals": {v: self.totals(v) for v in VARIANTS},
                "neurobench": self.neurobench(),
                "layers": {k: l.to_dict() for k, l in self.layers.items()}}


# ---------------------------------------------------------------------------------------------
class NetworkCounter:
    """Static structure and exact counting for one network and one patch shape.

    >>> counter = NetworkCounter(net.export(), (32, 32, 32))
    >>> counts = counter.count_spikes(spikes, graded_input)        # exact
    >>> counts = counter.count_activity(net.activity, samples=1)   # mean fan-out (not exact)
    """

    def __init__(self, layers: Sequence[Mapping[str, Any]], input_shape: Sequence[int],
                 state_bits: int = STATE_BITS) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (D, H, W), got {tuple(input_shape)}")
        self.input_shape: Shape3 = tuple(int(s) for s in input_shape)  # type: ignore
        self.layers: Dict[str, LayerInfo] = {}
        shapes: Dict[str, Shape3] = {GRADED_SOURCE: self.input_shape}
        channels: Dict[str, int] = {}
        windows: Dict[str, int] = {}
        self.timeline_steps = max(int(d["time_window"]) for d in layers)
        for d in layers:
            self.layers[d["name"]] = self._build_layer(d, shapes, channels, windows, state_bits)
            info = self.layers[d["name"]]
            shapes[info.name] = info.output_shape
            channels[info.name] = info.out_channels
            windows[info.name] = info.window

    # -- structure -----------------------------------------------------------------------------
    def _build_layer(self, d: Mapping[str, Any], shapes, channels, windows, state_bits) -> LayerInfo:
        name = d["name"]
        k = tuple(int(x) for x in d["kernel_size"])
        s = tuple(int(x) for x in d["stride"])
        p = tuple(int(x) for x in d["padding"])
        cin, cout = int(d["in_channels"]), int(d["out_channels"])
        window = int(d["time_window"])
        w = d.get("weight")
        w = None if w is None else np.asarray(w, dtype=np.float64)
        if w is not None and w.shape != (cout, cin, *k):
            raise ValueError(f"layer {name}: weight shape {w.shape} != {(cout, cin, *k)}")
        inputs = list(d.get("inputs", [GRADED_SOURCE]))
        in_shape = None
        c0 = 0
        conns: List[ConnectionCounts] = []
        for label in inputs:
            conn = Connection.parse(label)
            src, up = conn.source, conn.upsample
            if src not in shapes:
                raise ValueError(f"layer {name}: unknown source {src!r} (layers must come in execution order)")
            graded = src == GRADED_SOURCE
            csrc = cin if graded and len(inputs) == 1 else channels.get(src)
            if csrc is None:
                raise ValueError(f"layer {name}: cannot tell the channel count of source {src!r}")
            if not graded and windows[src] < window:
                raise ValueError(f"layer {name} (window {window}) reads {src} whose window is only {windows[src]}")
            src_shape = shapes[src]
            sh = tuple(up * n for n in src_shape)
            if in_shape is not None and sh != in_shape:
                raise ValueError(f"layer {name}: inputs disagree in spatial shape ({in_shape} vs {sh})")
            in_shape = sh
            conns.append(ConnectionCounts(conn, c0, c0 + csrc, src_shape, graded, {}))
            c0 += csrc
        if c0 != cin:
            raise ValueError(f"layer {name}: sources give {c0} channels, layer expects {cin}")
        out_shape = conv_output_shape(in_shape, k, s, p)
        if min(out_shape) < 1:
            raise ValueError(f"layer {name}: input {in_shape} too small for kernel {k}")
        fin_taps = np.zeros(out_shape, dtype=np.int64)
        fin_merged = np.zeros(out_shape, dtype=np.int64)
        for c in conns:
            c.fanout = self._fanout_maps(c, w, cout, out_shape, k, s, p)
            ft, fu = zip(*[_fanin_1d(out_shape[a], c.source_shape[a], k[a], s[a], p[a], c.upsample)
                           for a in range(3)])
            nch = c.channel_stop - c.channel_start
            fin_taps += nch * _outer3(*ft)
            fin_merged += nch * _outer3(*fu)
        kind = str(d.get("neuron_kind", "integrator" if d.get("type") == "readout3d" else "alif"))
        spiking = d.get("type", "conv3d") != "readout3d"
        nweights = cout * cin * math.prod(k)
        zeros = int((w == 0).sum()) if w is not None else 0
        return LayerInfo(
            name=name, type=str(d.get("type", "conv3d")), in_channels=cin, out_channels=cout,
            kernel_size=k, stride=s, padding=p, input_shape=in_shape, output_shape=out_shape,
            window=window, offset=self.timeline_steps - window, spiking=spiking,
            graded_input=any(c.graded for c in conns), neuron_kind=kind, weights=nweights,
            zero_weights=zeros, connections=conns,
            fan_in_max={"dense": int(fin_taps.max()), "merged": int(fin_merged.max())},
            state_bits=state_bits)

    @staticmethod
    def _fanout_maps(c: ConnectionCounts, w: Optional[np.ndarray], cout: int, out_shape: Shape3,
                     k: Shape3, s: Shape3, p: Shape3) -> Dict[str, np.ndarray]:
        nch = c.channel_stop - c.channel_start
        per_axis = [list(_tapsets_1d(out_shape[a], c.source_shape[a], k[a], s[a], p[a], c.upsample).items())
                    for a in range(3)]
        maps = {v: np.zeros((nch, *c.source_shape), dtype=np.int64) for v in VARIANTS}
        wc = None if w is None else w[:, c.channel_start:c.channel_stop]
        for (s0, v0), (s1, v1), (s2, v2) in product(*per_axis):
            spatial = _outer3(v0, v1, v2)[None]
            ntaps = len(s0) * len(s1) * len(s2)
            maps["dense"] += cout * ntaps * spatial
            maps["merged"] += cout * spatial
            if wc is None:
                maps["nonzero"] += cout * ntaps * spatial
                maps["merged_nonzero"] += cout * spatial
                continue
            sub = wc[:, :, list(s0)][:, :, :, list(s1)][:, :, :, :, list(s2)]  # (O, C, |s0|, |s1|, |s2|)
            nz = (sub != 0).sum(axis=(0, 2, 3, 4)).astype(np.int64)
            mnz = (sub.sum(axis=(2, 3, 4)) != 0).sum(axis=0).astype(np.int64)
            maps["nonzero"] += nz[:, None, None, None] * spatial
            maps["merged_nonzero"] += mnz[:, None, None, None] * spatial
        # int32 halves the memory of big patches; fan-outs are far below 2**31
        assert all(m.max(initial=0) < 2 ** 31 for m in maps.values())
        return {v: m.astype(np.int32) for v, m in maps.items()}

    # -- structural summaries ------------------------------------------------------------------
    def ann_macs(self) -> int:
        """MACs of one pass of the equivalent (non-spiking) ANN, padding taps excluded."""
        return sum(l.ann_macs for l in self.layers.values())

    def ann_macs_padded(self) -> int:
        """The conventional MAC count (``out_numel x C_in x k^3`` per layer, padding included)."""
        return sum(l.ann_macs_padded for l in self.layers.values())

    def dense_ops_all_steps(self) -> int:
        """Ops if every source neuron fired on every step of every window (dense SNN bound)."""
        return sum(l.ann_macs * l.window for l in self.layers.values())

    def fanout_map(self, layer: str, source: Union[str, Connection], variant: str = "dense") -> np.ndarray:
        """``(C_src, D, H, W)`` synapses from each neuron of ``source`` (a Connection, its label
        such as ``"up(enc3)"``, or a source name) into ``layer``."""
        for c in self.layers[layer].connections:
            if c.connection == source or c.label() == source or c.source == source:
                return c.fanout[variant]
        raise KeyError(f"{source!r} does not feed {layer!r}")

    def structure(self) -> List[Dict[str, Any]]:
        rows = []
        for l in self.layers.values():
            rows.append({
                "layer": l.name, "type": l.type, "inputs": [c.label() for c in l.connections],
                "input_shape": l.input_shape, "output_shape": l.output_shape,
                "neurons": l.neurons, "window": l.window, "weights": l.weights,
                "zero_weights": l.zero_weights,
                **{f"synapses_{v}": l.synapses(v) for v in VARIANTS},
                "ann_macs": l.ann_macs, "ann_macs_padded": l.ann_macs_padded,
                "fan_in_mean": l.fan_in_mean(), "fan_in_max": l.fan_in_max["dense"],
                "fan_out": {c.label(): {"mean": c.mean_fanout(), "max": c.max_fanout(),
                                        "mean_merged": c.mean_fanout("merged"),
                                        "max_merged": c.max_fanout("merged")}
                            for c in l.connections},
            })
        return rows

    # -- counting ------------------------------------------------------------------------------
    def _empty_counts(self, samples: int) -> Dict[str, LayerCounts]:
        T = self.timeline_steps
        out = {}
        for l in self.layers.values():
            nu = np.zeros(T)
            nu[l.offset:] = l.neurons * samples
            idle = np.zeros(T)
            idle[:l.offset] = l.neurons * samples
            out[l.name] = LayerCounts(
                name=l.name, spiking=l.spiking, graded_input=l.graded_input, neurons=l.neurons,
                window=l.window, state_bytes=l.state_bytes, weights=l.weights,
                zero_weights=l.zero_weights, synapses={v: l.synapses(v) for v in VARIANTS},
                ann_macs=l.ann_macs, ann_macs_padded=l.ann_macs_padded,
                fan_out={c.label(): {"mean": c.mean_fanout(), "max": float(c.max_fanout()),
                                     "mean_merged_nonzero": c.mean_fanout("merged_nonzero")}
                         for c in l.connections},
                fan_in={"mean": l.fan_in_mean(), "max": float(l.fan_in_max["dense"])},
                spikes=np.zeros(T), ops={v: np.zeros(T) for v in VARIANTS}, messages=np.zeros(T),
                neuron_updates=nu, idle_neuron_updates=idle)
        return out

    def count_spikes(self, spikes: Mapping[str, torch.Tensor],
                     graded_input: Optional[Any] = None, input_once: bool = False) -> ProfileCounts:
        """Exact counts from the full spike tensors.

        ``spikes[name]`` is the ``(N, C, D, H, W, T_name)`` output of every spiking layer (its
        whole window); ``graded_input`` the first layer's input, ``(N, C, D, H, W, T)`` as the
        layer receives it, or ``(N, C, D, H, W)``: the same payload on every step, or on the
        first step only with ``input_once`` (the input sent once per patch), or an object with
        ``value`` ``(N, C, D, H, W)`` and ``steps`` (the model's ``Impulse``: the first step
        only). Synaptic ops are the sum, over every source event, of that source neuron's exact
        fan-out; input events exist only on the steps the input is sent.
        """
        if hasattr(graded_input, "value") and hasattr(graded_input, "steps"):
            graded_input, input_once = graded_input.value, True
        needed = [l.name for l in self.layers.values() if l.spiking]
        missing = [n for n in needed if n not in spikes]
        if missing:
            raise ValueError(f"spike tensors missing for layers {missing}")
        N = int(next(iter(spikes.values())).shape[0])
        agg: Dict[str, torch.Tensor] = {}
        for name in needed:
            info, s = self.layers[name], spikes[name]
            want = (info.out_channels, *info.output_shape, info.window)
            if s.dim() != 6 or tuple(s.shape[1:]) != want or s.shape[0] != N:
                raise ValueError(f"spikes[{name!r}] has shape {tuple(s.shape)}, expected (N={N}, *{want})")
            # events: a graded spike (non-zero payload) is one event, whatever its payload
            agg[name] = (s.detach().cpu() != 0).to(torch.float64).sum(0)  # (C, D, H, W, T)
        counts = self._empty_counts(N)
        T = self.timeline_steps
        for l in self.layers.values():
            lc = counts[l.name]
            if l.spiking:
                lc.spikes[l.offset:] = agg[l.name].sum(dim=(0, 1, 2, 3)).numpy()
            for c in l.connections:
                if c.graded:
                    if graded_input is None:
                        raise ValueError(f"layer {l.name} reads the graded input: pass graded_input")
                    x = graded_input.detach().cpu()
                    if x.dim() == 5 and input_once:      # sent at the window's first step only
                        x = torch.cat([x.unsqueeze(-1), torch.zeros((*x.shape, l.window - 1), dtype=x.dtype)], -1)
                    elif x.dim() == 5:
                        x = x.unsqueeze(-1).expand(*x.shape, l.window)
                    want = (N, c.channel_stop - c.channel_start, *c.source_shape)
                    if tuple(x.shape[:5]) != want or x.shape[-1] < l.window:
                        raise ValueError(f"graded_input has shape {tuple(x.shape)}, expected {want} x T>={l.window}")
                    src = (x[..., -l.window:] != 0).to(torch.float64).sum(0)
                else:
                    src = agg[c.source][..., -l.window:]
                lc.messages[l.offset:] += src.sum(dim=(0, 1, 2, 3)).numpy()
                for v in VARIANTS:
                    f = torch.from_numpy(c.fanout[v]).to(torch.float64)
                    lc.ops[v][l.offset:] += torch.einsum("cdhwt,cdhw->t", src, f).numpy()
        notes = ["exact: synaptic ops summed over the actual spike positions"]
        return ProfileCounts(T, N, True, counts, notes)

    def count_activity(self, activity: Mapping[str, Any], samples: int,
                       input_nonzero_fraction: Optional[float] = None,
                       input_once: bool = False) -> ProfileCounts:
        """Counts from per-step spike totals (``net.activity``), using each source's MEAN fan-out.

        ``activity[name]`` is the ``(T_name,)`` spike count per step of each spiking layer summed
        over ``samples`` patches. Spike positions are unknown, so synaptic ops are
        ``spikes x mean fan-out`` -- exact only if spikes were spread uniformly over the source's
        neurons (``exact=False``). ``input_nonzero_fraction`` is the fraction of non-zero graded
        input payloads; if None every input voxel is assumed non-zero (dense; said in ``notes``).
        ``input_once``: the input is sent on the first step of the window only.
        """
        counts = self._empty_counts(int(samples))
        T = self.timeline_steps
        notes = ["approximate: synaptic ops = per-step spike totals x mean fan-out of each source "
                 "(exact only for uniformly spread spikes)"]
        if input_nonzero_fraction is None:
            notes.append("graded input assumed dense (every voxel's payload non-zero)")
            frac = 1.0
        else:
            frac = float(input_nonzero_fraction)
        act: Dict[str, np.ndarray] = {}
        for l in self.layers.values():
            if not l.spiking:
                continue
            if l.name not in activity:
                raise ValueError(f"activity missing for layer {l.name}")
            a = np.asarray(activity[l.name], dtype=np.float64).reshape(-1)
            if a.shape[0] != l.window:
                raise ValueError(f"activity[{l.name!r}] has {a.shape[0]} steps, layer window is {l.window}")
            act[l.name] = a
            counts[l.name].spikes[l.offset:] = a
        for l in self.layers.values():
            lc = counts[l.name]
            for c in l.connections:
                if c.graded:
                    events = np.full(l.window, frac * c.source_neurons * samples)
                    if input_once:
                        events[1:] = 0.0
                else:
                    events = act[c.source][-l.window:]
                lc.messages[l.offset:] += events
                for v in VARIANTS:
                    lc.ops[v][l.offset:] += events * c.mean_fanout(v)
        return ProfileCounts(T, int(samples), False, counts, notes)


# ---------------------------------------------------------------------------------------------
# Running the network
def _spiking_blocks(net) -> List[torch.nn.Module]:
    return [*net.enc, *net.dec]


@torch.no_grad()
def record_spikes(net, fixed: torch.Tensor, moving: torch.Tensor) -> Dict[str, Any]:
    """One forward pass with hooks: ``{"spikes": {layer: (N, C, D, H, W, T)}, "graded_input":
    the first layer's input (N, C, D, H, W, T), "output": the field}``."""
    spikes: Dict[str, torch.Tensor] = {}
    graded: Dict[str, torch.Tensor] = {}
    handles = [net.enc[0].register_forward_pre_hook(lambda m, a: graded.__setitem__(
        "x", a[0].detach() if isinstance(a[0], torch.Tensor) else a[0]))]
    for b in _spiking_blocks(net):
        handles.append(b.register_forward_hook(
            lambda m, a, out, name=b.name: spikes.__setitem__(name, out.detach())))
    try:
        out = net(fixed, moving)
    finally:
        for h in handles:
            h.remove()
    return {"spikes": spikes, "graded_input": graded["x"], "output": out}


def input_sent_once(net_or_qnet: Any) -> bool:
    """Whether the graded input is sent once per patch: ``QuantizedNet.input_once`` or
    ``ModelConfig.input_once`` (False for networks made before the flag existed)."""
    if hasattr(net_or_qnet, "input_once"):
        return bool(getattr(net_or_qnet, "input_once", False))
    return bool(getattr(getattr(net_or_qnet, "cfg", None), "input_once", False))


def _input_shape(x: Any) -> Shape3:
    v = x.value if hasattr(x, "value") and hasattr(x, "steps") else x
    return tuple(int(n) for n in v.shape[2:5])  # type: ignore[return-value]


def count_patch(net, fixed: torch.Tensor, moving: torch.Tensor) -> ProfileCounts:
    """Exact counts of one forward pass of ``net`` on a batch of patches."""
    rec = record_spikes(net, fixed, moving)
    counter = NetworkCounter(net.export(), tuple(fixed.shape[2:]))
    return counter.count_spikes(rec["spikes"], rec["graded_input"], input_once=input_sent_once(net))


class ExactCountRecorder:
    """Context manager: exact counts of every forward pass of ``net`` while it is active.

    >>> with ExactCountRecorder(reg.net) as rec:
    ...     field = reg.register(fixed, moving)
    >>> rec.counts            # ProfileCounts over all patches and iterations
    """

    def __init__(self, net) -> None:
        self.net = net
        self.counts: Optional[ProfileCounts] = None
        self.calls = 0
        self._counters: Dict[Shape3, NetworkCounter] = {}
        self._handles: List[Any] = []
        self._spikes: Dict[str, torch.Tensor] = {}
        self._graded: Optional[torch.Tensor] = None

    def _counter(self, shape: Shape3) -> NetworkCounter:
        if shape not in self._counters:
            self._counters[shape] = NetworkCounter(self.net.export(), shape)
        return self._counters[shape]

    def _on_input(self, module, args) -> None:
        x = args[0]
        self._graded = x.detach() if isinstance(x, torch.Tensor) else x
        self._spikes = {}

    def _on_readout(self, module, args, out) -> None:
        shape = _input_shape(self._graded)
        c = self._counter(shape).count_spikes(self._spikes, self._graded,
                                              input_once=input_sent_once(self.net))
        self.counts = c if self.counts is None else self.counts + c
        self.calls += 1

    def __enter__(self) -> "ExactCountRecorder":
        net = self.net
        self._handles.append(net.enc[0].register_forward_pre_hook(self._on_input))
        for b in _spiking_blocks(net):
            self._handles.append(b.register_forward_hook(
                lambda m, a, out, name=b.name: self._spikes.__setitem__(name, out.detach())))
        self._handles.append(net.readout.register_forward_hook(self._on_readout))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# ---------------------------------------------------------------------------------------------
# Whole-volume registrations
def patches_per_scale(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int],
                      scales: Sequence[int]) -> List[int]:
    """Patches the tiled coarse-to-fine registration runs at each scale (as ``register_tensors``)."""
    from ..tiling import count_tiles
    k = max(scales)
    padded = [-(-int(n) // k) * k for n in shape]
    return [count_tiles([n // s for n in padded], patch, stride) for s in scales]


def counts_from_inference(reg, input_nonzero_fraction: Optional[float] = None,
                          volume_shape: Optional[Sequence[int]] = None) -> ProfileCounts:
    """Totals of a whole registration from ``SpikeRegInference`` after ``.register``.

    Uses ``reg.activity`` (spike counts per layer and step, summed over all patches and residual
    iterations) with mean fan-outs, so the result is approximate (``exact=False``; use
    :func:`register_and_count` for exact counts). The number of patches is
    ``reg.num_neurons[first layer] / neurons per patch``; with ``volume_shape`` it is checked
    against :func:`patches_per_scale`.
    """
    if not reg.activity:
        raise ValueError("no activity recorded: call reg.register(fixed, moving) first")
    counter = NetworkCounter(reg.net.export(), reg.patch)
    first = next(iter(counter.layers.values()))
    total = reg.num_neurons[first.name]
    samples, rem = divmod(int(total), first.neurons)
    if rem:
        raise ValueError(f"num_neurons[{first.name!r}]={total} is not a multiple of the "
                         f"{first.neurons} neurons of one {reg.patch} patch")
    counts = counter.count_activity(reg.activity, samples, input_nonzero_fraction,
                                    input_once=input_sent_once(reg.net))
    if volume_shape is not None:
        per_scale = patches_per_scale(volume_shape, reg.patch, reg.stride, reg.net.cfg.scales)
        if sum(per_scale) != samples:
            raise ValueError(f"activity covers {samples} patches, the tiling of {tuple(volume_shape)} "
                             f"gives {per_scale} per scale")
        counts.notes.append(f"patches per scale {dict(zip(reg.net.cfg.scales, per_scale))}")
    return counts


def register_and_count(reg, fixed, moving) -> Tuple[np.ndarray, ProfileCounts]:
    """``reg.register(fixed, moving)`` with exact counts of every patch and iteration."""
    with ExactCountRecorder(reg.net) as rec:
        u = reg.register(fixed, moving)
    if rec.counts is None:
        raise RuntimeError("the network was never called")
    return u, rec.counts
