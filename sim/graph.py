"""Build the Lava process graph of a quantized network for one input patch.

Processes (all lava-nc, fixed-point models selected by ``Loihi2SimCfg(select_tag="fixed_pt")``):

* **input injection**: ``lava.proc.io.source.RingBuffer`` (``PySendModelFixed``) emitting the
  integer graded payload (fixed, moving; ``round(x * 255)``) for the first layer's ``T`` steps
  (``q.input_steps``: step 0 only for a net with ``input_once``), then zeros. Its ``Sparse`` connection has ``num_message_bits = input_bits``: lava's
  bit-accurate Sparse then computes ``weights.dot(payload)`` (graded spikes) instead of summing
  the columns of binary spikes, which is exactly the emulator's ``conv(w, payload)``. The first
  layer's input is therefore injected as graded spikes, not precomputed on the host.
* **connections**: one ``lava.proc.sparse.Sparse`` per incoming edge of a layer (3-D conv with
  stride/padding, x2 upsampling folded in, concatenation = several processes into one ``a_in``;
  see :mod:`sim.lowering`), ``weight_exp`` and ``sign_mode=MIXED`` passed through (the net's
  weights are even, so lava's mixed-sign truncation keeps them). Edges that must arrive later
  (the U-Net skips) are ``lava.proc.sparse.DelaySparse`` with a uniform synaptic delay (Loihi 2
  supports 0..63 steps: 6 bits, per lava-nc's ``PyDelaySparseModelBitAcc``): ``extra_delay`` from :func:`calibration.emulator.lava_schedule`.
* **neurons**: ``lava.proc.atrlif.ATRLIF`` per layer with the net's constructor arguments
  (model ``PyATRLIFModelFixed``); layers that would otherwise see source steps before their
  window, and the read-out, are :class:`sim.processes.WindowedATRLIF` (the same model, input
  gated outside the window, read-out voltage on ``v_out``).
* **read-out**: the net's integrator layer (ATRLIF, ``theta_0 = 2**17`` out of reach,
  ``delta_i = 4095/4096``, ``delta_v = 0``) is a ``WindowedATRLIF`` whose ``v_out`` feeds an
  ``Extractor``; the field is ``output_scale * v`` after its last step.
* **monitors**: one ``lava.proc.io.extractor.Extractor`` (model ``PyLoihiExtractorModel``) per
  spiking layer on ``s_out`` - one shared-memory message per step for the whole layer.

Time: the emulator runs layer by layer without delay; lava delays every connection by one step
(``a_out.send(a_buff)`` before accumulating). With the input emitting its step 0 at global step
0 (= lava ``time_step`` 1), :func:`calibration.emulator.lava_schedule` gives each layer's global
start; the layer's spikes at local step ``tau`` appear at lava time step ``start + tau + 1``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from calibration.emulator import lava_schedule
from calibration.netfile import QuantizedLayer, QuantizedNet

from .lowering import LoweredConnection, LoweringError, lower_connection

#: lava/proc/sparse/models.py PyDelaySparseModelBitAcc: "Loihi 2 has a maximum of 6 bits for
#: delays" (it raises for delays > 63)
MAX_SYNAPTIC_DELAY = 63
#: ATRLIF constructor arguments copied from the net file
_ATRLIF_ARGS = ("delta_i", "delta_v", "delta_theta", "delta_r", "theta_0", "theta_step",
                "bias_mant", "bias_exp")


@dataclass
class LayerPlan:
    """Where one layer lives in lava time (1-based lava ``time_step``s) and what it is built of."""

    name: str
    shape: Tuple[int, int, int, int]
    neurons: int
    time_window: int
    t_start: int                 # lava time_step of local step 0
    t_end: int                   # lava time_step of the last local step
    windowed: bool               # WindowedATRLIF (input gated) instead of plain ATRLIF
    integrator: bool
    connections: List[dict] = field(default_factory=list)


@dataclass
class SimGraph:
    """The built Lava graph (process handles) and its plan."""

    q: QuantizedNet
    patch: Tuple[int, int, int]
    num_steps: int
    plans: Dict[str, LayerPlan]
    source: Any
    neurons: Dict[str, Any]
    connections: Dict[str, List[Any]]
    monitors: Dict[str, Any]           # spiking layers: Extractor on s_out; read-out: on v_out
    connection_stats: Dict[str, dict]  # per lowered connection: processes, synapses, bytes, delay
    lowered: Optional[Dict[str, List[LoweredConnection]]] = None   # kept only with keep_lowered
    build_seconds: float = 0.0

    @property
    def readout_name(self) -> str:
        return self.q.readout.name

    @property
    def num_processes(self) -> int:
        return 1 + len(self.neurons) + sum(len(v) for v in self.connections.values()) + len(self.monitors)

    @property
    def total_neurons(self) -> int:
        return int(sum(p.neurons for p in self.plans.values()))

    def cost(self) -> Dict[str, Any]:
        """Memory cost of the lowering (synapses and bytes) and graph size."""
        conns = self.connection_stats
        return {"neurons": self.total_neurons, "synapses": int(sum(v["synapses"] for v in conns.values())),
                "synapse_bytes": int(sum(v["bytes"] for v in conns.values())),
                "processes": self.num_processes, "num_steps": self.num_steps, "connections": conns}


def _finish_graph(q, patch, num_steps, plans, source, neurons, conns, mons, stats, lowered, t0, log,
                  what: str, steps: str) -> "SimGraph":
    """The :class:`SimGraph` of built layers, its build time, and one log line of its size."""
    g = SimGraph(q=q, patch=patch, num_steps=num_steps, plans=plans, source=source, neurons=neurons,
                 connections=conns, monitors=mons, connection_stats=stats, lowered=lowered,
                 build_seconds=time.perf_counter() - t0)
    if log:
        c = g.cost()
        log(f"{what}: {c['processes']} processes, {c['neurons']} neurons, {c['synapses']} synapses "
            f"({c['synapse_bytes'] / 2 ** 20:.1f} MiB), {num_steps} {steps}; built in {g.build_seconds:.1f} s")
    return g


def plan_layers(q: QuantizedNet, patch: Sequence[int]) -> Tuple[Dict[str, LayerPlan], int]:
    """Lava time windows of every layer (from ``lava_schedule``) and the number of lava steps."""
    shapes = q.shapes(patch)
    sched = lava_schedule(q)
    plans: Dict[str, LayerPlan] = {}
    for layer in q.layers:
        s = sched[layer.name]
        pre_window = any(i["first_source_step"] > 0 for i in s["inputs"])
        integ = layer.neuron == "integrator"
        shp = tuple(int(x) for x in shapes[layer.name])
        plans[layer.name] = LayerPlan(
            name=layer.name, shape=shp, neurons=int(np.prod(shp)), time_window=int(layer.time_window),
            t_start=int(s["start"]) + 1, t_end=int(s["end"]) + 1, windowed=pre_window or integ,
            integrator=integ,
            connections=[{"source": i["source"], "transform": i["transform"],
                          "extra_delay": int(i["extra_delay"]),
                          "process": "DelaySparse" if i["extra_delay"] > 0 else "Sparse"}
                         for i in s["inputs"]])
    num_steps = max(p.t_end for p in plans.values())
    return plans, num_steps


def _check_layer(layer: QuantizedLayer) -> None:
    p = layer.atrlif
    if int(p.get("bias_mant", 0)) != 0:
        raise LoweringError(f"{layer.name}: bias_mant {p['bias_mant']} != 0: a biased neuron evolves "
                            "before its time window, which the emulator's semantics exclude")


def _atrlif_kwargs(layer: QuantizedLayer) -> Dict[str, Any]:
    kw = {k: layer.atrlif[k] for k in _ATRLIF_ARGS}
    kw["theta_0"] = int(kw["theta_0"])
    kw["theta_step"] = int(kw["theta_step"])
    # initial states: i = v = r = 0; theta is overwritten by the fixed model (64 * theta_0)
    kw.update(i=0, v=0, r=0, s=0, theta=int(kw["theta_0"]))
    return kw


def build_graph(q: QuantizedNet, payload: np.ndarray, *, lowered: Optional[Dict[str, List[LoweredConnection]]] = None,
                monitors: bool = True, keep_lowered: bool = False,
                log: Optional[Callable[[str], None]] = None) -> SimGraph:
    """Build the Lava graph for ONE patch.

    ``payload``: integer ``(C_in, D, H, W)`` (or ``(1, C_in, D, H, W)``) graded input in
    ``[0, 2**input_bits - 1]``, as :func:`calibration.emulator.payload_of` gives it.
    ``lowered`` (from :func:`sim.lowering.lower_network` for this patch size) is computed if not
    given (one layer at a time); then, unless ``keep_lowered``, each host matrix is dropped as soon
    as its lava process holds its own copy (``Sparse`` copies its weights): the peak memory is
    about one copy of all synapses plus the largest single connection.
    """
    from lava.proc.atrlif.process import ATRLIF
    from lava.proc.io.source import RingBuffer

    from .processes import WindowedATRLIF

    t0 = time.perf_counter()
    pl = np.asarray(payload)
    if pl.ndim == 5:
        if pl.shape[0] != 1:
            raise ValueError(f"the Lava backend runs one patch at a time, got a batch of {pl.shape[0]}")
        pl = pl[0]
    if pl.ndim != 4 or pl.shape[0] != q.in_channels:
        raise ValueError(f"payload must be ({q.in_channels}, D, H, W), got {pl.shape}")
    if not np.issubdtype(pl.dtype, np.integer):
        raise ValueError("payload must be integer (use calibration.emulator.payload_of)")
    hi = 2 ** q.input_bits - 1
    if pl.size and (pl.min() < 0 or pl.max() > hi):
        raise ValueError(f"payload outside [0, {hi}]")
    patch = tuple(int(x) for x in pl.shape[1:])
    m = q.size_multiple
    if any(x % m for x in patch):
        raise ValueError(f"patch {patch} must be divisible by {m}")
    plans, num_steps = plan_layers(q, patch)

    # ---- input injection: the payload for the graded layer's T steps (1 with input_once), then zeros
    t_in = q.input_steps
    data = np.zeros((int(pl.size), num_steps), dtype=np.int32)
    data[:, :t_in] = pl.reshape(-1, 1).astype(np.int32)
    source = RingBuffer(data=data)

    def neuron(layer: QuantizedLayer, plan: LayerPlan, kw: Dict[str, Any]):
        if plan.windowed or layer.graded_output:
            return WindowedATRLIF(shape=(plan.neurons,), t_start=plan.t_start if plan.windowed else 1,
                                  t_end=plan.t_end if plan.windowed else 2 ** 31 - 1,
                                  with_v_out=plan.integrator, payload_shift=layer.payload_shift,
                                  name=layer.name, **kw)
        return ATRLIF(shape=(plan.neurons,), name=layer.name, **kw)

    neurons, conns, mons, stats, lowered = _add_layers(
        q, patch, plans, source.s_out, neuron, lowered=lowered, keep_lowered=keep_lowered,
        monitor=(lambda plan: True) if monitors else (lambda plan: False), log=log, t0=t0)
    return _finish_graph(q, patch, num_steps, plans, source, neurons, conns, mons, stats, lowered, t0,
                         log, "lava graph", "steps")


def _add_layers(q: QuantizedNet, patch: Tuple[int, int, int], plans: Dict[str, LayerPlan], input_port,
                neuron: Callable, *, lowered: Optional[Dict[str, List[LoweredConnection]]], keep_lowered: bool,
                monitor: Callable[[LayerPlan], bool], log: Optional[Callable[[str], None]], t0: float):
    """Neuron populations (``neuron(layer, plan, atrlif_kwargs)``), their Sparse/DelaySparse
    connections from ``lowered`` (lowered here, layer by layer, when None: each host matrix is
    then dropped once its process holds a copy unless ``keep_lowered``) and Extractor monitors
    (where ``monitor(plan)``). Returns ``(neurons, connections, monitors, stats, lowered)``."""
    from lava.proc.io.extractor import Extractor
    from lava.proc.sparse.process import DelaySparse, Sparse
    from lava.utils.weightutils import SignMode

    for layer in q.layers:
        _check_layer(layer)
    own = lowered is None
    shapes = q.shapes(patch)
    if own:
        lowered = {}
    stats: Dict[str, dict] = {}
    outs: Dict[str, Any] = {"input": input_port}
    neurons: Dict[str, Any] = {}
    conns: Dict[str, List[Any]] = {}
    mons: Dict[str, Any] = {}
    for layer in q.layers:
        plan = plans[layer.name]
        neu = neuron(layer, plan, _atrlif_kwargs(layer))
        neurons[layer.name] = neu
        conns[layer.name] = []
        if own:
            lowered[layer.name] = [lower_connection(layer, e, shapes[e.source], shapes[layer.name], q.input_bits)
                                   for e in layer.inputs]
        for lc, cp in zip(lowered[layer.name], plan.connections):
            if lc.source != cp["source"]:
                raise LoweringError(f"{layer.name}: lowered edges out of order ({lc.source} vs {cp['source']})")
            extra = cp["extra_delay"]
            if extra > MAX_SYNAPTIC_DELAY:
                raise LoweringError(f"{layer.name}: the edge from {lc.source} needs {extra} extra steps of "
                                    f"delay; DelaySparse (Loihi 2) allows at most {MAX_SYNAPTIC_DELAY}")
            for k, mat in enumerate(lc.matrices):
                w = sp.csr_matrix(mat, dtype=np.int32)
                common = dict(weights=w, num_message_bits=lc.num_message_bits, weight_exp=lc.weight_exp,
                              num_weight_bits=8, sign_mode=SignMode.MIXED,
                              name=f"{lc.name}#{k}" if len(lc.matrices) > 1 else lc.name)
                if extra > 0:
                    d = w.copy().astype(np.int64)
                    d.data[:] = extra
                    c = DelaySparse(delays=d, max_delay=extra, **common)
                else:
                    c = Sparse(**common)
                outs[lc.source].connect(c.s_in)
                c.a_out.connect(neu.a_in)
                conns[layer.name].append(c)
            stats[lc.name] = {"layer": layer.name, "source": lc.source, "transform": lc.transform,
                              "process": cp["process"], "processes": len(lc.matrices),
                              "extra_delay": extra, "synapses": lc.synapses, "bytes": lc.bytes(),
                              "matrix_shape": [int(x) for x in lc.matrices[0].shape],
                              "delay_buffer_bytes": 4 * int(lc.matrices[0].shape[0]) * (extra + 1) if extra else 0}
            if own and not keep_lowered:
                lc.matrices = []
        if log and own:
            n_syn = sum(stats[lc.name]["synapses"] for lc in lowered[layer.name])
            log(f"lowered {layer.name}: {plan.neurons} neurons, {n_syn} synapses in "
                f"{len(conns[layer.name])} connection process(es) ({time.perf_counter() - t0:.1f} s)")
        if monitor(plan):
            ex = Extractor(shape=(plan.neurons,), buffer_size=4)
            if plan.integrator:
                neu.v_out.connect(ex.in_port)
            else:
                neu.s_out.connect(ex.in_port)
            mons[layer.name] = ex
        outs[layer.name] = neu.s_out
    return neurons, conns, mons, stats, (lowered if (keep_lowered or not own) else None)


def build_reusable_graph(q: QuantizedNet, patch: Sequence[int], *,
                         lowered: Optional[Dict[str, List[LoweredConnection]]] = None,
                         spike_monitors: bool = False, injector_buffer: int = 2,
                         log: Optional[Callable[[str], None]] = None) -> SimGraph:
    """The Lava graph of one patch SHAPE, reusable for any number of patches of that shape.

    One patch per period of ``num_steps`` lava steps: the input is a
    :class:`sim.processes.PatchInjector` (the host sends one payload frame per patch while the
    graph runs; it is emitted for the first ``q.input_steps`` steps of the period) and every layer is a periodic :class:`sim.processes.WindowedATRLIF` (state set to
    the initial state at its window's first step, silent outside the window), so period ``k``
    computes exactly what a fresh single-patch graph computes for patch ``k``. Connections are
    the same Sparse/DelaySparse processes as :func:`build_graph`'s (``lowered`` from
    :func:`sim.lowering.lower_network` or :class:`sim.lowering.LoweringCache`; lowered here
    when None). Monitors: the read-out's ``v_out`` (and every layer's ``s_out`` with
    ``spike_monitors``). ``SimGraph.source`` is the injector.
    """
    from .processes import PatchInjector, WindowedATRLIF

    t0 = time.perf_counter()
    patch = tuple(int(x) for x in patch)
    if len(patch) != 3 or any(x < 1 for x in patch):
        raise ValueError(f"patch must be 3 positive sizes, got {patch}")
    m = q.size_multiple
    if any(x % m for x in patch):
        raise ValueError(f"patch {patch} must be divisible by {m}")
    plans, num_steps = plan_layers(q, patch)
    for p in plans.values():
        p.windowed = True
    n_in = q.in_channels * int(np.prod(patch))
    source = PatchInjector(shape=(n_in,), period=num_steps, steps=q.input_steps, buffer_size=injector_buffer)

    def neuron(layer: QuantizedLayer, plan: LayerPlan, kw: Dict[str, Any]):
        return WindowedATRLIF(shape=(plan.neurons,), t_start=plan.t_start, t_end=plan.t_end,
                              with_v_out=plan.integrator, payload_shift=layer.payload_shift, period=num_steps,
                              name=layer.name, **kw)

    neurons, conns, mons, stats, lowered = _add_layers(
        q, patch, plans, source.out_port, neuron, lowered=lowered, keep_lowered=False,
        monitor=lambda plan: plan.integrator or spike_monitors, log=log, t0=t0)
    return _finish_graph(q, patch, num_steps, plans, source, neurons, conns, mons, stats, lowered, t0,
                         log, "reusable lava graph", "steps per patch")


__all__ = ["LayerPlan", "SimGraph", "plan_layers", "build_graph", "build_reusable_graph"]
