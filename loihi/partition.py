"""Greedy partitioner: layers -> Loihi 2 neuro-cores -> chips, under :class:`~loihi.limits.CoreLimits`.

Each layer is cut into a regular grid of slices: ``ceil(C / gc)`` groups of output channels
times ``ceil(D / bd) x ceil(H / bh) x ceil(W / bw)`` spatial blocks (the last slice along an axis
may be smaller). One slice = one core; a core holds only neurons of one layer, and it stores the
synapses of its neurons' fan-in (all their incoming connections).

Per core (exact, from the per-target fan-in maps of :mod:`loihi.resources`):

* ``neurons``; ``synapses`` (stored by the lowering); ``state_bytes`` (neurons x state size);
* ``fan_in_axons``: distinct source neurons that send to the core (per incoming connection,
  the source positions its outputs read, times the source's channels);
* ``fan_out_axons``: sum over the core's neurons of the number of destination cores (a spike
  is routed once per destination core);
* ``synaptic_memory_bits`` by the encoding (:func:`loihi.limits.synaptic_memory_bits`).

Greedy choice per layer: among all grids (channel group sizes and block sizes from the distinct
values of ``ceil(n / m)``), the one with the fewest cores whose EVERY core respects the neuron,
memory (synapses + state), fan-in and fan-out limits; ties go to the fewest total input axons
(the duplicated routing of a layer's sources), then to the smallest largest-core memory. A
core's fan-out depends on how its consumers are cut, and a layer's cut does not depend on its
sources' cuts, so layers are planned from the last to the first: when a layer is cut, the grids
of all its consumers are known and its fan-out is exact. Cores are then numbered in execution
order and packed onto chips in that order (a new chip when ``cores_per_chip``,
``neurons_per_chip`` or ``synapses_per_chip`` would be exceeded).

The network is mapped for ONE patch shape; patches run one after another on the same cores.

Caching: inside ``with partition_cache(DIR):`` every :func:`partition_network` result is stored
in ``DIR`` as JSON, keyed by the sha256 of the network's resources (every layer's shapes and
per-target fan-in maps), the limits, the neuron caps and this package's mapper source; a later
call with the same key reads it back instead of cutting again (:data:`CACHE_STATS` counts hits).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import limits as LIM
from .limits import CoreLimits
from .resources import LayerResources, NetworkResources

Shape3 = Tuple[int, int, int]
#: candidates with the minimal core count evaluated for the tie-break (at most)
MAX_TIES = 48


def _sizes(n: int) -> List[int]:
    """Distinct slice sizes ``ceil(n / m)``, m = 1..n (largest first)."""
    return sorted({math.ceil(n / m) for m in range(1, n + 1)}, reverse=True)


def _starts(n: int, b: int) -> np.ndarray:
    return np.arange(0, n, b)


def _lengths(n: int, b: int) -> np.ndarray:
    s = _starts(n, b)
    return np.minimum(s + b, n) - s


@dataclass
class Core:
    """One neuro-core: a slice of one layer."""

    id: int
    layer: str
    channels: Tuple[int, int]
    block: Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]
    neurons: int
    synapses: int
    synaptic_memory_bits: int
    state_bytes: int
    fan_in_axons: int
    fan_out_axons: int = 0
    chip: int = -1
    #: folded non-zero (source, target) connections into the core's neurons (splits the layer's ops)
    connections: int = 0
    synops_per_step: Optional[List[float]] = None
    spikes_out_per_step: Optional[List[float]] = None

    @property
    def synaptic_memory_bytes(self) -> int:
        return -(-int(self.synaptic_memory_bits) // 8)

    @property
    def memory_bytes(self) -> int:
        return self.synaptic_memory_bytes + int(self.state_bytes)

    def to_dict(self) -> Dict[str, Any]:
        d = {"id": self.id, "chip": self.chip, "layer": self.layer, "channels": list(self.channels),
             "block": [list(b) for b in self.block], "neurons": self.neurons,
             "synapses": self.synapses, "connections": self.connections,
             "synaptic_memory_bytes": self.synaptic_memory_bytes,
             "state_bytes": int(self.state_bytes), "memory_bytes": self.memory_bytes,
             "fan_in_axons": self.fan_in_axons, "fan_out_axons": self.fan_out_axons,
             # estimate_loihi2 reads neurons, synops_per_step, spikes_out_per_step, chip
             "synops_per_step": self.synops_per_step if self.synops_per_step is not None else 0.0,
             "spikes_out_per_step": self.spikes_out_per_step if self.spikes_out_per_step is not None else 0.0}
        return d


@dataclass
class LayerPlan:
    layer: str
    channel_group: int
    block_shape: Shape3
    grid: Tuple[int, int, int, int]
    cores: List[Core]
    candidates_evaluated: int
    #: neurons per core this layer was cut for when the op balancing lowered it (None: the limit)
    neuron_cap: Optional[int] = None

    def utilisation(self, limits: CoreLimits) -> Dict[str, float]:
        """Largest core's use of each enforced per-core limit (1.0 = full)."""
        u = {"neurons": max(c.neurons for c in self.cores) / limits.neuron_cap,
             "memory": max(c.memory_bytes for c in self.cores) / limits.memory_budget_bytes}
        if self.neuron_cap is not None and self.neuron_cap < limits.neuron_cap:
            u["synaptic_op_balance"] = max(c.neurons for c in self.cores) / self.neuron_cap
        if limits.fan_in_axons_per_core and limits.explicit_axons:
            u["fan_in_axons"] = max(c.fan_in_axons for c in self.cores) / limits.fan_in_axons_per_core
        if limits.fan_out_axons_per_core and limits.explicit_axons:
            u["fan_out_axons"] = max(c.fan_out_axons for c in self.cores) / limits.fan_out_axons_per_core
        return u

    def binding_limit(self, limits: CoreLimits) -> str:
        u = self.utilisation(limits)
        return max(u, key=u.get)


@dataclass
class Chip:
    id: int
    cores: List[int]
    neurons: int
    synapses: int
    memory_bytes: int

    def to_dict(self, limits: CoreLimits) -> Dict[str, Any]:
        return {"id": self.id, "cores": len(self.cores), "core_ids": [self.cores[0], self.cores[-1]],
                "neurons": self.neurons, "synapses": self.synapses, "memory_bytes": self.memory_bytes,
                "core_occupancy": len(self.cores) / limits.cores_per_chip,
                "neuron_occupancy": self.neurons / limits.neurons_per_chip}


@dataclass
class Partition:
    plans: Dict[str, LayerPlan]
    chips: List[Chip]
    limits: CoreLimits
    notes: List[str] = field(default_factory=list)
    #: the synaptic-op load balancing (:func:`balance_neuron_caps`), when it ran
    balance: Optional[Dict[str, Any]] = None

    @property
    def cores(self) -> List[Core]:
        return [c for p in self.plans.values() for c in p.cores]

    def violations(self) -> List[str]:
        """Every per-core and per-chip limit a core or chip breaks (empty for a valid mapping)."""
        L, out = self.limits, []
        for c in self.cores:
            if c.neurons > L.neuron_cap:
                out.append(f"core {c.id} ({c.layer}): {c.neurons} neurons > {L.neuron_cap}")
            if c.memory_bytes > L.memory_budget_bytes:
                out.append(f"core {c.id} ({c.layer}): {c.memory_bytes} bytes > {L.memory_budget_bytes}")
            if L.fan_in_axons_per_core and L.explicit_axons and c.fan_in_axons > L.fan_in_axons_per_core:
                out.append(f"core {c.id} ({c.layer}): fan-in {c.fan_in_axons} axons > {L.fan_in_axons_per_core}")
            if L.fan_out_axons_per_core and L.explicit_axons and c.fan_out_axons > L.fan_out_axons_per_core:
                out.append(f"core {c.id} ({c.layer}): fan-out {c.fan_out_axons} axons > {L.fan_out_axons_per_core}")
        for ch in self.chips:
            if len(ch.cores) > L.cores_per_chip or ch.neurons > L.neurons_per_chip \
                    or ch.synapses > L.synapses_per_chip:
                out.append(f"chip {ch.id}: {len(ch.cores)} cores, {ch.neurons} neurons, "
                           f"{ch.synapses} synapses exceed the chip limits")
        return out


# ============================================================================ one layer
class _LayerCutter:
    """Exact per-core numbers of a layer for any grid."""

    def __init__(self, layer: LayerResources, limits: CoreLimits, cap: Optional[int] = None) -> None:
        self.l = layer
        self.limits = limits
        self.cap = int(cap) if cap is not None else limits.neuron_cap
        self.fanin = layer.fanin
        self.C = layer.out_channels
        self.shape = layer.output_shape
        self._cov: Dict[Tuple[int, int, int], np.ndarray] = {}
        self._fo: Dict[Tuple[int, int], np.ndarray] = {}
        #: (consumer connection, consumer output shape, consumer block shape, consumer channel groups)
        self.consumers: List[Tuple[Any, Shape3, Shape3, int]] = []

    def coverage_counts(self, conn: int, axis: int, b: int) -> np.ndarray:
        """Distinct source indices along ``axis`` read by each block of size ``b``."""
        key = (conn, axis, b)
        if key not in self._cov:
            c = self.l.connections[conn]
            n = self.shape[axis]
            self._cov[key] = np.array([c.coverage(axis, s, min(s + b, n)).sum() for s in _starts(n, b)],
                                      dtype=np.int64)
        return self._cov[key]

    def axons(self, b: Shape3) -> np.ndarray:
        """Input axons per core ``(nD, nH, nW)`` (the same for every channel group)."""
        axons = np.zeros(1, dtype=np.int64)
        for i, c in enumerate(self.l.connections):
            cc = [self.coverage_counts(i, a, b[a]) for a in range(3)]
            axons = axons + c.source_channels * (cc[0][:, None, None] * cc[1][None, :, None] * cc[2][None, None, :])
        return axons

    def _fan_out_axis(self, axis: int, b: int) -> np.ndarray:
        """Per source block along ``axis``: sum over consumer blocks (all consumers, times their
        channel groups) of the block's positions those consumer blocks read."""
        key = (axis, b)
        if key not in self._fo:
            starts = _starts(self.shape[axis], b)
            out = []
            for conn, cshape, cblock, n_cg in self.consumers:
                col = np.zeros(len(starts), dtype=np.int64)
                n_out, bo = cshape[axis], cblock[axis]
                for s0 in _starts(n_out, bo):
                    col += np.add.reduceat(conn.coverage(axis, s0, min(s0 + bo, n_out)).astype(np.int64), starts)
                out.append(col)
            self._fo[key] = np.array(out, dtype=np.int64).reshape(len(self.consumers), len(starts))
        return self._fo[key]

    def fan_out(self, b: Shape3) -> np.ndarray:
        """Output axons per neuron channel of each spatial block ``(nD, nH, nW)``: a core's fan-out
        is this times its number of channels."""
        cols = [self._fan_out_axis(a, b[a]) for a in range(3)]
        total = np.zeros(tuple(len(_starts(n, bb)) for n, bb in zip(self.shape, b)), dtype=np.int64)
        for i, (_, _, _, n_cg) in enumerate(self.consumers):
            total += n_cg * (cols[0][i][:, None, None] * cols[1][i][None, :, None] * cols[2][i][None, None, :])
        return total

    def evaluate(self, gc: int, b: Shape3, max_neurons: Optional[int] = None) -> Optional[Dict[str, np.ndarray]]:
        """Per-core arrays ``(nC, nD, nH, nW)`` for channel group ``gc`` and block ``b``. With
        ``max_neurons`` (feasibility mode) None as soon as a per-core limit is broken."""
        L = self.limits
        C, (D, H, W) = self.C, self.shape
        axons3 = self.axons(b)
        check = max_neurons is not None
        explicit = L.explicit_axons
        if check and explicit and L.fan_in_axons_per_core and axons3.max() > L.fan_in_axons_per_core:
            return None
        lc = _lengths(C, gc)
        l0, l1, l2 = (_lengths(n, bb) for n, bb in zip((D, H, W), b))
        neurons = lc[:, None, None, None] * (l0[:, None, None] * l1[None, :, None] * l2[None, None, :])[None]
        if check and neurons.max() > max_neurons:
            return None
        if explicit:
            fo = lc[:, None, None, None] * self.fan_out(b)[None]
            if check and L.fan_out_axons_per_core and fo.max() > L.fan_out_axons_per_core:
                return None
        else:   # shared kernels: destination cores per core, counted once the whole network is cut
            fo = np.zeros(neurons.shape, dtype=np.int64)
        syn = self.fanin
        for ax, (n, bb) in enumerate(zip((C, D, H, W), (gc, *b))):
            syn = np.add.reduceat(syn, _starts(n, bb), axis=ax)
        axons = np.broadcast_to(axons3[None], syn.shape)
        kernel = np.broadcast_to((lc * self.l.shared_kernel_entries_per_channel)[:, None, None, None], syn.shape)
        bits = LIM.synaptic_memory_bits(L.encoding, synapses=syn, axons=axons, neurons=neurons,
                                        kernel_weights=kernel)
        stored = kernel if L.encoding == "shared" else syn     # kernel entries, or explicit synapses
        state = np.ceil(neurons * self.l.state_bytes_per_neuron).astype(np.int64)
        mem = -(-bits // 8) + state
        if check and mem.max() > L.memory_budget_bytes:
            return None
        return {"neurons": neurons, "synapses": np.asarray(stored), "connections": syn, "axons": axons,
                "bits": bits, "state": state, "memory": mem, "fan_out": fo}

    def lower_bound_memory(self, ncores: int) -> float:
        """A lower bound of the largest core's memory for a grid of ``ncores`` cores."""
        enc = self.limits.encoding
        per_syn = (LIM.WEIGHT_BITS + 1) / 8 if enc == "sparse" else (LIM.WEIGHT_BITS / 8 if enc == "dense" else 0)
        return (self.l.synapses * per_syn + self.l.neurons * self.l.state_bytes_per_neuron) / ncores

    def plan(self) -> Tuple[Tuple[int, Shape3], Dict[str, np.ndarray], int]:
        L = self.limits
        cap = self.cap
        C, (D, H, W) = self.C, self.shape
        cands = []
        for gc, bd, bh, bw in product(_sizes(C), _sizes(D), _sizes(H), _sizes(W)):
            if gc * bd * bh * bw > cap:
                continue
            n = math.ceil(C / gc) * math.ceil(D / bd) * math.ceil(H / bh) * math.ceil(W / bw)
            if self.lower_bound_memory(n) > L.memory_budget_bytes:
                continue
            # prefer channel-complete, compact blocks among equals (fewer duplicated input axons)
            cands.append((n, -gc, max(bd, bh, bw) - min(bd, bh, bw), gc, (bd, bh, bw)))
        cands.sort()
        best, best_key, best_n, evaluated = None, None, None, 0
        ties = 0
        for n, _, _, gc, b in cands:
            if best_n is not None and (n > best_n or ties >= MAX_TIES):
                break
            ev = self.evaluate(gc, b, cap)
            evaluated += 1
            if ev is None:
                continue
            # fewest duplicated input axons (= least routing, and the sources' fan-out), then the
            # smallest largest core
            key = (int(ev["axons"].sum()), int(ev["memory"].max()))
            if best is None or key < best_key:
                best, best_key = ((gc, b), ev), key
            best_n = n
            ties += 1
        if best is None:
            one = self.evaluate(1, (1, 1, 1))
            raise ValueError(
                f"layer {self.l.name}: no slicing fits the per-core limits (one neuron per core needs up "
                f"to {one['memory'].max()} bytes, {one['axons'].max()} input axons and "
                f"{one['fan_out'].max()} output axons; limits {L.memory_budget_bytes} bytes, "
                f"{L.fan_in_axons_per_core} and {L.fan_out_axons_per_core} axons)")
        return best[0], best[1], evaluated


def _make_cores(layer: LayerResources, gc: int, b: Shape3, ev: Dict[str, np.ndarray], first_id: int) -> List[Core]:
    C, (D, H, W) = layer.out_channels, layer.output_shape
    cs, zs, ys, xs = _starts(C, gc), _starts(D, b[0]), _starts(H, b[1]), _starts(W, b[2])
    cores = []
    for i, c0 in enumerate(cs):
        for j, z0 in enumerate(zs):
            for k, y0 in enumerate(ys):
                for m, x0 in enumerate(xs):
                    idx = (i, j, k, m)
                    cores.append(Core(
                        id=first_id + len(cores), layer=layer.name,
                        channels=(int(c0), int(min(c0 + gc, C))),
                        block=((int(z0), int(min(z0 + b[0], D))), (int(y0), int(min(y0 + b[1], H))),
                               (int(x0), int(min(x0 + b[2], W)))),
                        neurons=int(ev["neurons"][idx]), synapses=int(ev["synapses"][idx]),
                        connections=int(ev["connections"][idx]),
                        synaptic_memory_bits=int(ev["bits"][idx]), state_bytes=int(ev["state"][idx]),
                        fan_in_axons=int(ev["axons"][idx]), fan_out_axons=int(ev["fan_out"][idx])))
    return cores


# ============================================================================ network
def partition_network(res: NetworkResources, limits: Optional[CoreLimits] = None,
                      neuron_caps: Optional[Mapping[str, int]] = None) -> Partition:
    """Place every layer of ``res`` on cores and the cores on chips (see the module docstring).

    ``neuron_caps`` (layer -> neurons per core, below the limit) cuts those layers finer, as the
    synaptic-op balancing (:func:`balance_neuron_caps`) asks. Inside :func:`partition_cache` the
    result is read from / written to that cache.
    """
    L = limits or CoreLimits()
    caps = dict(neuron_caps or {})
    cdir = _CACHE_DIR[0]
    if cdir is None:
        return _partition_network(res, L, caps)
    path = cdir / f"{_cache_key(res, L, caps)}.json"
    part = _read_cached(path, L)
    if part is not None:
        CACHE_STATS["hits"] += 1
        return part
    part = _partition_network(res, L, caps)
    CACHE_STATS["misses"] += 1
    try:
        from spikereg_neuro.io.atomic import atomic_write_text
        atomic_write_text(path, json.dumps(_partition_to_dict(part), separators=(",", ":"),
                                                 default=_json_number))
    except OSError as e:  # a read-only cache folder only costs time
        CACHE_STATS["errors"].append(f"{path}: {e}")
    return part


def _partition_network(res: NetworkResources, L: CoreLimits, caps: Dict[str, int]) -> Partition:
    """:func:`partition_network` without the cache."""
    chosen: Dict[str, Tuple[int, Shape3, Dict[str, np.ndarray], int]] = {}
    for name in reversed(list(res.layers)):
        layer = res.layers[name]
        cap = min(int(caps[name]), L.neuron_cap) if name in caps else None
        cutter = _LayerCutter(layer, L, cap)
        for cons_name, ci in layer.consumers:
            gc, b, ev, _ = chosen[cons_name]
            cons = res.layers[cons_name]
            cutter.consumers.append((cons.connections[ci], cons.output_shape, b, int(ev["neurons"].shape[0])))
        (gc, b), ev, n_eval = cutter.plan()
        chosen[name] = (gc, b, ev, n_eval)
    plans: Dict[str, LayerPlan] = {}
    next_id = 0
    for name, layer in res.layers.items():
        gc, b, ev, n_eval = chosen[name]
        cores = _make_cores(layer, gc, b, ev, next_id)
        next_id += len(cores)
        grid = tuple(int(x) for x in ev["neurons"].shape)
        cap = min(int(caps[name]), L.neuron_cap) if name in caps and int(caps[name]) < L.neuron_cap else None
        plans[name] = LayerPlan(name, gc, b, grid, cores, n_eval, cap)  # type: ignore[arg-type]
    notes = []
    if not L.explicit_axons:
        shared_axons(plans, res)
        notes.append("shared kernels: fan-in = source cores sending to the core (the host for the graded "
                     "input counts as one), fan-out = destination cores of the core's spikes")
    chips = pack_chips([c for p in plans.values() for c in p.cores], L)
    return Partition(plans, chips, L, notes)


# ============================================================================ cache
#: bump when a partition's meaning changes in a way the mapper source hash below would not show
CACHE_FORMAT = 1
#: the folder of the active :func:`partition_cache` (None: no caching)
_CACHE_DIR: List[Optional[Path]] = [None]
#: cache use since the process started: hits, misses (computed and stored), write errors
CACHE_STATS: Dict[str, Any] = {"hits": 0, "misses": 0, "errors": []}
_CODE_SHA: List[Optional[str]] = [None]


@contextlib.contextmanager
def partition_cache(directory: Optional[str | Path]) -> Iterator[Optional[Path]]:
    """Cache every :func:`partition_network` result in ``directory`` (created) while inside the
    block; ``None`` turns caching off. Restores the previous setting on exit."""
    prev = _CACHE_DIR[0]
    d = None if directory is None else Path(directory)
    if d is not None:
        d.mkdir(parents=True, exist_ok=True)
    _CACHE_DIR[0] = d
    try:
        yield d
    finally:
        _CACHE_DIR[0] = prev


def _code_sha() -> str:
    """sha256 of the mapper's source (this module, limits, resources, the kernel geometry): a changed cut rule
    invalidates every cached partition."""
    if _CODE_SHA[0] is None:
        h = hashlib.sha256()
        here = Path(__file__).resolve().parent
        for f in (here / "partition.py", here / "limits.py", here / "resources.py",
                  here.parent / "spikereg_neuro" / "geometry.py"):
            if f.is_file():
                h.update(f.read_bytes())
        _CODE_SHA[0] = h.hexdigest()
    return _CODE_SHA[0]


def resources_sha256(res: NetworkResources) -> str:
    """sha256 of everything a partition depends on in ``res``: the input shape, the graded
    layers, every layer's shapes, kinds and counted synapses, and every connection's groups and
    per-target stored fan-in map (remembered on ``res``)."""
    got = getattr(res, "_partition_sha256", None)
    if got is not None:
        return got
    h = hashlib.sha256()
    h.update(repr((tuple(res.patch_shape), list(res.graded_layers))).encode())
    for name, l in res.layers.items():
        h.update(repr((name, l.type, l.neuron_kind, l.spiking, l.in_channels, l.out_channels,
                       tuple(l.kernel_size), tuple(l.output_shape), l.window, tuple(l.stride), tuple(l.padding),
                       sorted(l.counter_synapses.items()), l.fan_in_max_dense,
                       [tuple(c) for c in l.consumers])).encode())
        for c in l.connections:
            h.update(repr((c.source, c.upsample, tuple(c.channels), tuple(c.source_shape), c.graded, c.chunks,
                           c.synapses, c.extra_synapses, c.weight_range, repr(c.groups))).encode())
            a = np.ascontiguousarray(c.fanin)
            h.update(repr((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    out = h.hexdigest()
    try:
        res._partition_sha256 = out  # type: ignore[attr-defined]
    except AttributeError:
        pass
    return out


def _cache_key(res: NetworkResources, L: CoreLimits, caps: Mapping[str, int]) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "code": _code_sha(), "resources": resources_sha256(res),
                       "limits": dataclasses.asdict(L), "caps": sorted((k, int(v)) for k, v in caps.items())},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def _json_number(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


_CORE_FIELDS = ("id", "layer", "channels", "block", "neurons", "synapses", "synaptic_memory_bits", "state_bytes",
                "fan_in_axons", "fan_out_axons", "chip", "connections")


def _partition_to_dict(part: Partition) -> Dict[str, Any]:
    """A JSON-able copy of a freshly cut partition (no activity attached, no balancing report)."""
    return {"format": CACHE_FORMAT, "limits": dataclasses.asdict(part.limits), "notes": list(part.notes),
            "core_fields": list(_CORE_FIELDS),
            "plans": [{"layer": p.layer, "channel_group": int(p.channel_group),
                       "block_shape": [int(x) for x in p.block_shape], "grid": [int(x) for x in p.grid],
                       "candidates_evaluated": int(p.candidates_evaluated), "neuron_cap": p.neuron_cap,
                       "cores": [[getattr(c, f) if f != "block" else [list(b) for b in c.block]
                                  for f in _CORE_FIELDS] for c in p.cores]} for p in part.plans.values()],
            "chips": [dataclasses.asdict(ch) for ch in part.chips]}


def _read_cached(path: Path, L: CoreLimits) -> Optional[Partition]:
    """The partition stored at ``path``, or None (absent, unreadable or not of these limits)."""
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        if d.get("format") != CACHE_FORMAT or d.get("limits") != dataclasses.asdict(L) \
                or d.get("core_fields") != list(_CORE_FIELDS):
            return None
        plans: Dict[str, LayerPlan] = {}
        for p in d["plans"]:
            cores = []
            for row in p["cores"]:
                kw = dict(zip(_CORE_FIELDS, row))
                kw["channels"] = tuple(kw["channels"])
                kw["block"] = tuple(tuple(b) for b in kw["block"])
                cores.append(Core(**kw))
            plans[p["layer"]] = LayerPlan(p["layer"], p["channel_group"], tuple(p["block_shape"]),
                                          tuple(p["grid"]), cores, p["candidates_evaluated"], p["neuron_cap"])
        chips = [Chip(**c) for c in d["chips"]]
        return Partition(plans, chips, L, list(d["notes"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        CACHE_STATS["errors"].append(f"{path}: unreadable cache entry ({type(e).__name__}), recomputed")
        return None


def _block_hits(conn, axis: int, n_out: int, b_out: int, b_src: int, n_src: int) -> np.ndarray:
    """``(consumer blocks, source blocks)`` along ``axis``: True where a consumer block reads a
    position of the source block."""
    starts = _starts(n_out, b_out)
    n_sb = len(_starts(n_src, b_src))
    hit = np.zeros((len(starts), n_sb), dtype=bool)
    for i, s0 in enumerate(starts):
        pos = np.nonzero(conn.coverage(axis, s0, min(s0 + b_out, n_out)))[0]
        hit[i, np.unique(pos // b_src)] = True
    return hit


def shared_axons(plans: Mapping[str, LayerPlan], res: NetworkResources) -> None:
    """Shared-kernel cores: ``fan_in_axons`` = source cores that send to the core (one axon per
    source core, as Lava's Loihi 2 conv cores receive, the host's graded input counted as one),
    ``fan_out_axons`` = destination cores of the core's spikes. Exact per block overlap."""
    fan_in = {n: np.zeros(p.grid, dtype=np.int64) for n, p in plans.items()}
    fan_out = {n: np.zeros(p.grid, dtype=np.int64) for n, p in plans.items()}
    for name, plan in plans.items():
        layer = res.layers[name]
        n_cg = plan.grid[0]
        for c in layer.connections:
            if c.graded or c.source not in plans:
                fan_in[name] += 1
                continue
            sp = plans[c.source]
            src_shape = res.layers[c.source].output_shape
            hits = [_block_hits(c, a, layer.output_shape[a], plan.block_shape[a], sp.block_shape[a], src_shape[a])
                    for a in range(3)]
            into = [h.sum(axis=1) for h in hits]          # source blocks read, per consumer block
            outof = [h.sum(axis=0) for h in hits]         # consumer blocks reading, per source block
            fan_in[name] += sp.grid[0] * (into[0][:, None, None] * into[1][None, :, None] * into[2][None, None, :])[None]
            fan_out[c.source] += n_cg * (outof[0][:, None, None] * outof[1][None, :, None] * outof[2][None, None, :])[None]
    for name, plan in plans.items():
        fi, fo = fan_in[name].ravel(), fan_out[name].ravel()
        for i, core in enumerate(plan.cores):
            core.fan_in_axons, core.fan_out_axons = int(fi[i]), int(fo[i])


# ============================================================================ op balancing
def layer_step_loads_ns(res: NetworkResources, counts, constants=None) -> Dict[str, np.ndarray]:
    """Per layer, per step of the timeline: the work of ONE patch in ns (synaptic ops x
    ``t_synop_ns`` + output spikes x ``t_spike_within_tile_ns`` + neurons x
    ``t_neuron_update_active_ns``, the profiler's step-time model), from exact counts."""
    from spikereg_neuro.profiler.loihi2_energy import Loihi2Constants
    c = constants or Loihi2Constants()
    S = max(int(counts.samples), 1)
    out = {}
    for name, layer in res.layers.items():
        lc = counts.layers[name]
        ops = np.asarray(lc.ops[layer.ops_variant], dtype=np.float64) / S
        spk = np.asarray(lc.spikes, dtype=np.float64) / S
        out[name] = (ops * c.value("t_synop_ns") + spk * c.value("t_spike_within_tile_ns")
                     + layer.neurons * c.value("t_neuron_update_active_ns"))
    return out


def balance_neuron_caps(res: NetworkResources, limits: CoreLimits, counts, constants=None,
                        base: Optional[Partition] = None, grid_points: int = 64
                        ) -> Tuple[Dict[str, int], Dict[str, Any]]:
    """Per-layer neurons per core that balance the per-core load on synaptic ops (not neurons).

    The step time is the busiest core's work plus the barrier, and static energy is chips x time,
    so a layer whose cores carry far more ops than the others' sets the latency. For a target
    per-core load ``tau`` every layer gets ``n_l = max(n_min_l, ceil(max_t load_l[t] / tau))``
    cores (``n_min_l``: the fewest that fit the limits, from ``base``), the loads split evenly;
    ``tau`` is swept over a geometric grid and the one with the smallest ``chips x sum over steps
    of (max_l load_l[t] / n_l + barrier)`` (static energy; ties: the shorter time) is kept.
    Returns the caps ``ceil(neurons_l / n_l)`` of the layers cut finer and a report.
    """
    from spikereg_neuro.profiler.loihi2_energy import Loihi2Constants
    c = constants or Loihi2Constants()
    base = base or partition_network(res, limits)
    loads = layer_step_loads_ns(res, counts, c)
    names = list(res.layers)
    n_min = np.array([len(base.plans[n].cores) for n in names], dtype=np.float64)
    neurons = np.array([res.layers[n].neurons for n in names], dtype=np.float64)
    peak = np.array([loads[n].max() for n in names])
    M = np.stack([loads[n] for n in names])                  # (layers, steps)
    barrier = c.value("t_barrier_ns")

    def evaluate(n: np.ndarray) -> Tuple[float, float, int]:
        t = float((M / n[:, None]).max(axis=0).sum() + barrier * M.shape[1])
        chips = math.ceil(n.sum() / limits.cores_per_chip)
        return chips * t, t, chips

    hi = float((peak / n_min).max())
    lo = max(float((peak / neurons).max()), hi * 1e-3)
    best_n, best = n_min, evaluate(n_min)
    for tau in np.geomspace(hi, lo, int(grid_points)):
        n = np.minimum(np.maximum(n_min, np.ceil(peak / tau)), neurons)
        e = evaluate(n)
        if (e[0], e[1]) < (best[0], best[1]):
            best_n, best = n, e
    caps = {nm: int(math.ceil(neurons[i] / best_n[i])) for i, nm in enumerate(names) if best_n[i] > n_min[i]}
    t0 = evaluate(n_min)
    report = {"objective": "chips x step time summed over the timeline (static energy), even split per layer",
              "cores_min": int(n_min.sum()), "cores_balanced": int(best_n.sum()),
              "estimated_patch_time_us": {"min_cores": t0[1] * 1e-3, "balanced": best[1] * 1e-3},
              "chips": {"min_cores": t0[2], "balanced": best[2]},
              "layer_cores": {nm: {"min": int(n_min[i]), "balanced": int(best_n[i])} for i, nm in enumerate(names)},
              "neuron_caps": caps}
    return caps, report


def pack_chips(cores: Sequence[Core], limits: CoreLimits) -> List[Chip]:
    """Pack cores onto chips in order (sets ``core.chip``)."""
    chips: List[Chip] = []
    cur: Optional[Chip] = None
    for c in cores:
        if c.neurons > limits.neurons_per_chip or c.synapses > limits.synapses_per_chip:
            raise ValueError(f"core {c.id} alone exceeds a chip's neurons or synapses")
        if cur is None or len(cur.cores) >= limits.cores_per_chip \
                or cur.neurons + c.neurons > limits.neurons_per_chip \
                or cur.synapses + c.synapses > limits.synapses_per_chip:
            cur = Chip(len(chips), [], 0, 0, 0)
            chips.append(cur)
        cur.cores.append(c.id)
        cur.neurons += c.neurons
        cur.synapses += c.synapses
        cur.memory_bytes += c.memory_bytes
        c.chip = cur.id
    return chips


# ============================================================================ activity
def attach_activity(part: Partition, res: NetworkResources, counts) -> None:
    """Per-core expected synaptic ops and output spikes per step (per patch) from profiler counts.

    ``counts`` is a :class:`~spikereg_neuro.profiler.ProfileCounts` of the same network and patch
    shape. A layer's ops on each step (``merged_nonzero``: its folded non-zero synapses,
    :attr:`LayerResources.ops_variant`; a range-chunked weight costs one op per chunk, not counted)
    are split over its cores in proportion to their folded non-zero connections (``Core.connections``,
    = stored synapses for the explicit encodings), its spikes in proportion to their neurons: exact per layer and step, per core exact
    only for spikes spread uniformly over the layer (spike positions are not kept per core).
    """
    S = max(int(counts.samples), 1)
    missing = [n for n in res.layers if n not in counts.layers]
    if missing:
        raise ValueError(f"counts have no layers {missing}: counts of another network?")
    for name, plan in part.plans.items():
        lc, layer = counts.layers[name], res.layers[name]
        if lc.neurons != layer.neurons:
            raise ValueError(f"counts of layer {name} are for {lc.neurons} neurons, the mapping has "
                             f"{layer.neurons} (another patch shape?)")
        ops = np.asarray(lc.ops[layer.ops_variant], dtype=np.float64) / S
        spk = np.asarray(lc.spikes, dtype=np.float64) / S
        total = sum(c.connections for c in plan.cores)
        for c in plan.cores:
            share = c.connections / total if total else 0.0
            c.synops_per_step = (ops * share).tolist()
            c.spikes_out_per_step = (spk * c.neurons / layer.neurons).tolist()


__all__ = ["Core", "LayerPlan", "Chip", "Partition", "partition_network", "partition_cache", "CACHE_STATS",
           "resources_sha256", "pack_chips",
           "attach_activity", "shared_axons", "layer_step_loads_ns", "balance_neuron_caps"]
