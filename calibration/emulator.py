"""Bit-accurate integer emulation of the quantized network (the reference the Lava backend matches).

Everything here is integer arithmetic (torch int64; the convolutions run in float32 or float64
only where every partial sum is an integer that the type represents exactly, and the result is
checked to be integral). The neuron update is lava-nc's ``PyATRLIFModelFixed`` step, written
with the primitives of :mod:`calibration.loihi_rules`:

    i     = wrap24( sign_shift(i * m_i) + 64 * a_in )          m_i = 4096 - (delta_i*4096 + 1)
    v     = sat24 ( sign_shift(v * m_v) + i + bias )           m_v = 4096 - delta_v*4096
    theta = sign_shift((theta - 64*theta_0) * m_th) + 64*theta_0
    r     = sign_shift(r * m_r)
    s     = (v - r) >= theta
    r    += 2 * theta * s ;  theta += 64 * theta_step * s

with ``sign_shift(x) = sign(x) * (|x| >> 12)``, ``wrap24``/``sat24`` as in
:func:`~calibration.loihi_rules.wrap_current` / :func:`~calibration.loihi_rules.saturate_voltage`.
States start at ``i = v = r = 0``, ``theta = 64 * theta_0`` for every patch.

Time semantics (defined here; the float SLAYER model has the same ones)
----------------------------------------------------------------------
Layer by layer, no synaptic delay. Each layer ``L`` has local steps ``tau = 0 .. T_L - 1``
(``T_L`` = its ``time_window``). Its synaptic input at ``tau`` is, per incoming connection,
``shift(sum_w w * s_src[tau + off], weight_exp)`` where ``off = source_step_offset = T_src - T_L``
(the layer sees its sources' LAST ``T_L`` steps; upsampling is applied to the spikes first), and
the input of the graded-input layer is the same payload at every step. The connections'
outputs are summed (one ATRLIF ``a_in``), each connection shifted separately (each is its own
lava connection process). The read-out's field is ``output_scale * v`` after its last step.

Lava alignment. In lava every Dense/Sparse connection delivers at step ``g + 1`` what its source
emitted at ``g`` (``a_out.send(a_buff)`` before accumulating). :func:`lava_schedule` gives, per
layer, the global step at which its local step 0 must happen, the extra delay each incoming
connection needs so that all inputs of a layer line up (the U-Net skips arrive earlier than the
upsampled path), and the rule that a layer must receive nothing before its start step (its
sources emit steps before ``off``): run that schedule and the spikes equal this emulator's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, MutableMapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from spikereg_neuro.model.encoding import graded_payload

from . import loihi_rules as R
from .netfile import LayerInput, QuantizedLayer, QuantizedNet

OVERFLOW_MODES = ("lava", "none")


# ============================================================================ neuron
@dataclass(frozen=True)
class NeuronParams:
    """Integer constants of one ATRLIF population (derived from the lava constructor args)."""

    i_mult: int
    v_mult: int
    th_mult: int
    r_mult: int
    theta0: int        # state scale: 64 * theta_0
    theta_step: int    # state scale: 64 * theta_step
    bias: int = 0      # effective bias: bias_mant << bias_exp

    @classmethod
    def from_atrlif(cls, p: Mapping[str, float]) -> "NeuronParams":
        be = int(p.get("bias_exp", 0))
        bm = int(p.get("bias_mant", 0))
        bias = bm << be if be >= 0 else bm >> (-be)   # PyATRLIFModelFixed.scale_bias
        return cls(
            i_mult=R.current_decay_multiplier(p["delta_i"]),
            v_mult=R.decay_multiplier(p["delta_v"], "delta_v"),
            th_mult=R.decay_multiplier(p["delta_theta"], "delta_theta"),
            r_mult=R.decay_multiplier(p["delta_r"], "delta_r"),
            theta0=R.scale_threshold(int(p["theta_0"])),
            theta_step=R.scale_threshold(int(p["theta_step"])),
            bias=bias,
        )


@dataclass
class NeuronState:
    i: torch.Tensor
    v: torch.Tensor
    theta: torch.Tensor
    r: torch.Tensor

    @classmethod
    def initial(cls, shape, p: NeuronParams, device=None) -> "NeuronState":
        z = torch.zeros(shape, dtype=torch.int64, device=device)
        return cls(z.clone(), z.clone(), torch.full(shape, p.theta0, dtype=torch.int64, device=device), z.clone())


@dataclass
class LayerStats:
    """Running integer statistics of one layer (merged over calls)."""

    a_in_max: int = 0          # max |a_in| (after the weight exponent)
    i_max: int = 0             # max |i| (before the 24-bit wrap in 'none' mode)
    v_max: int = 0             # max |v| (before saturation in 'none' mode)
    r_max: int = 0
    current_wraps: int = 0     # 24-bit current overflows (lava mode)
    voltage_saturations: int = 0
    spikes: int = 0
    neuron_steps: int = 0      # neurons x steps simulated
    neurons: int = 0           # neurons simulated (summed over patches)
    spikes_per_step: Optional[np.ndarray] = None

    def merge_max(self, **kw: int) -> None:
        for k, v in kw.items():
            setattr(self, k, max(getattr(self, k), int(v)))

    @property
    def rate(self) -> float:
        return self.spikes / self.neuron_steps if self.neuron_steps else float("nan")

    def to_dict(self) -> Dict[str, float]:
        return {"a_in_max": self.a_in_max, "i_max": self.i_max, "v_max": self.v_max, "r_max": self.r_max,
                "current_wraps": self.current_wraps, "voltage_saturations": self.voltage_saturations,
                "spikes": self.spikes, "neuron_steps": self.neuron_steps, "rate": self.rate}


def atrlif_step(state: NeuronState, a_in: torch.Tensor, p: NeuronParams, overflow: str = "lava",
                stats: Optional[LayerStats] = None) -> torch.Tensor:
    """One PyATRLIFModelFixed ``run_spk`` on int64 tensors (in place); returns the spikes (bool).

    ``overflow='lava'`` wraps the current and saturates the voltage at 24 bits as lava does;
    ``'none'`` leaves them unbounded (for calibration statistics: the peaks a state would need).
    """
    i = R.decay(state.i, p.i_mult) + a_in * (1 << R.ACT_SHIFT)
    if stats is not None:
        stats.merge_max(i_max=int(i.abs().max()) if i.numel() else 0)
    if overflow == "lava":
        wi = R.wrap_current(i)
        if stats is not None:
            stats.current_wraps += int((wi != i).sum())
        i = wi
    v = R.decay(state.v, p.v_mult) + i + p.bias
    if stats is not None:
        stats.merge_max(v_max=int(v.abs().max()) if v.numel() else 0)
    if overflow == "lava":
        sv = R.saturate_voltage(v)
        if stats is not None:
            stats.voltage_saturations += int((sv != v).sum())
        v = sv
    theta = R.decay(state.theta - p.theta0, p.th_mult) + p.theta0
    r = R.decay(state.r, p.r_mult)
    s = (v - r) >= theta
    si = s.to(torch.int64)
    r = r + 2 * theta * si
    theta = theta + p.theta_step * si
    if stats is not None and r.numel():
        stats.merge_max(r_max=int(r.abs().max()))
    state.i, state.v, state.theta, state.r = i, v, theta, r
    return s


def atrlif_run(p: NeuronParams, a_in: torch.Tensor, overflow: str = "lava") -> Dict[str, torch.Tensor]:
    """Run neurons on an integer input sequence ``a_in`` of shape ``(..., T)``.

    Returns ``s`` (bool) and the states ``i, v, theta, r`` after each step, all ``(..., T)``.
    """
    a_in = torch.as_tensor(a_in, dtype=torch.int64)
    st = NeuronState.initial(a_in.shape[:-1], p)
    out = {k: [] for k in ("s", "i", "v", "theta", "r")}
    for t in range(a_in.shape[-1]):
        s = atrlif_step(st, a_in[..., t], p, overflow)
        out["s"].append(s)
        for k in ("i", "v", "theta", "r"):
            out[k].append(getattr(st, k).clone())
    return {k: torch.stack(v, dim=-1) for k, v in out.items()}


# ============================================================================ synapses
def upsample2(s: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling of ``(N, C, D, H, W, T)`` (as ``spikereg_neuro.model.unet``)."""
    return s.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)


def _exact_conv(x: torch.Tensor, w: torch.Tensor, stride, padding, max_in: int) -> torch.Tensor:
    """Integer 3-D convolution ``(B, C, D, H, W)`` -> int64, exact.

    float32 is used when every partial sum is an integer below 2**24 (bound:
    ``max_o sum|w_o| * max_in``), float64 otherwise (bound below 2**53).
    """
    bound = int(w.abs().sum(dim=(1, 2, 3, 4)).max()) * int(max_in) if w.numel() else 0
    if bound < 2 ** 24:
        dt = torch.float32
    elif bound < 2 ** 53:
        dt = torch.float64
    else:  # pragma: no cover
        raise OverflowError(f"convolution bound {bound} exceeds float64's exact integer range")
    y = F.conv3d(x.to(dt), w.to(dt), None, tuple(stride), tuple(padding))
    yi = torch.round(y)
    if not torch.equal(yi, y):  # pragma: no cover - would mean a non-exact conv algorithm
        raise RuntimeError("integer convolution was not exact")
    return yi.to(torch.int64)


def connection_output(layer: QuantizedLayer, edge: LayerInput, src: torch.Tensor, steps: int,
                      graded: bool = False, max_payload: int = 1) -> torch.Tensor:
    """One connection's per-step output ``shift(W_e * s, weight_exp)``, ``(N, O, D', H', W', steps)``.

    ``src`` is the source's spikes ``(N, C, D, H, W, T_src)`` (bool, or int64 payloads of a
    graded-spike layer), or for the graded input the payload ``(N, C, D, H, W)`` (the same at
    every step).
    """
    a, b = edge.channels
    w = torch.from_numpy(np.asarray(layer.weight[:, a:b], dtype=np.int64))
    if graded:
        y = _exact_conv(src, w, layer.stride, layer.padding, max_payload)
        y = R.shift_activation(y, layer.weight_exp)
        return y.unsqueeze(-1).expand(*y.shape, steps)
    s = src[..., edge.source_step_offset: edge.source_step_offset + steps]
    if s.shape[-1] != steps:
        raise ValueError(f"{layer.name}: source {edge.source} has {src.shape[-1]} steps, needs "
                         f"{edge.source_step_offset + steps}")
    if edge.transform == "upsample2":
        s = upsample2(s)
    n, c, d, h, ww, t = s.shape
    frames = s.permute(0, 5, 1, 2, 3, 4).reshape(n * t, c, d, h, ww)
    max_in = 1 if s.dtype == torch.bool else max(1, int(s.abs().max()) if s.numel() else 1)
    y = _exact_conv(frames, w, layer.stride, layer.padding, max_in)
    y = R.shift_activation(y, layer.weight_exp)
    return y.reshape(n, t, *y.shape[1:]).permute(0, 2, 3, 4, 5, 1)


def layer_input(layer: QuantizedLayer, sources: Mapping[str, torch.Tensor], input_bits: int) -> torch.Tensor:
    """The summed ``a_in`` of a layer over its window, int64 ``(N, O, D', H', W', T_L)``."""
    total = None
    for e in layer.inputs:
        y = connection_output(layer, e, sources[e.source], layer.time_window,
                              graded=(e.source == "input"), max_payload=2 ** input_bits - 1)
        total = y if total is None else total + y
    return total


def run_layer(layer: QuantizedLayer, sources: Mapping[str, torch.Tensor], input_bits: int = 8,
              overflow: str = "lava", stats: Optional[LayerStats] = None) -> torch.Tensor:
    """Emulate one layer. Spiking layers return spikes ``(N, O, D', H', W', T)`` (bool; graded
    layers: int64 payloads ``v >> payload_shift`` where they spike, 0 elsewhere); the integrator
    returns its voltage after the last step ``(N, O, D', H', W')`` (int64)."""
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow must be one of {OVERFLOW_MODES}")
    a_in = layer_input(layer, sources, input_bits)
    p = NeuronParams.from_atrlif(layer.atrlif)
    st = NeuronState.initial(a_in.shape[:-1], p)
    if stats is not None and a_in.numel():
        stats.merge_max(a_in_max=int(a_in.abs().max()))
    spikes, payloads = [], []
    for t in range(a_in.shape[-1]):
        s_t = atrlif_step(st, a_in[..., t], p, overflow, stats)
        spikes.append(s_t)
        if layer.graded_output:   # the voltage after the step (lava ATRLIF does not reset v)
            payloads.append(torch.where(s_t, st.v >> int(layer.payload_shift), 0))
    s = torch.stack(spikes, dim=-1)
    if stats is not None:
        n_neurons = int(s[..., 0].numel())
        stats.spikes += int(s.sum())
        stats.neuron_steps += int(s.numel())
        stats.neurons += n_neurons
        per = s.sum(dim=(0, 1, 2, 3, 4)).numpy().astype(np.int64)
        stats.spikes_per_step = per if stats.spikes_per_step is None else stats.spikes_per_step + per
    if layer.neuron == "integrator":
        if bool(s.any()):  # pragma: no cover - theta_0 is out of reach by construction
            raise RuntimeError(f"{layer.name}: the integrator spiked")
        return st.v
    return torch.stack(payloads, dim=-1) if layer.graded_output else s


# ============================================================================ network
@dataclass
class EmulationResult:
    field: torch.Tensor                       # (N, 3, D, H, W) float32, voxels
    readout_v: torch.Tensor                   # (N, 3, D, H, W) int64
    spikes: Dict[str, torch.Tensor] = field(default_factory=dict)   # (N, C, D, H, W, T) bool / int64 payloads
    stats: Dict[str, LayerStats] = field(default_factory=dict)


def check_patch(q: QuantizedNet, payload: torch.Tensor) -> None:
    if payload.dim() != 5 or payload.shape[1] != q.in_channels:
        raise ValueError(f"payload must be (N, {q.in_channels}, D, H, W), got {tuple(payload.shape)}")
    m = q.size_multiple
    if any(s % m for s in payload.shape[2:]):
        raise ValueError(f"spatial size {tuple(payload.shape[2:])} must be divisible by {m}")
    if payload.dtype.is_floating_point:
        raise ValueError("payload must be integer (use graded_payload / emulate_pair for float volumes)")
    if int(payload.min()) < 0 or int(payload.max()) > 2 ** q.input_bits - 1:
        raise ValueError(f"payload outside [0, {2 ** q.input_bits - 1}]")


@torch.no_grad()
def emulate(q: QuantizedNet, payload: torch.Tensor, *, record_spikes: bool = False,
            stats: Optional[MutableMapping[str, LayerStats]] = None, overflow: str = "lava",
            forced: Optional[Mapping[str, torch.Tensor]] = None) -> EmulationResult:
    """Emulate one batch of patches from the integer input payload ``(N, C_in, D, H, W)``.

    ``stats`` (a dict, filled/merged per layer) collects integer peaks, overflow counts and
    spikes; ``record_spikes`` keeps every layer's spikes; ``forced`` replaces named layers'
    outputs by given spikes (teacher forcing, to compare layers one at a time).
    """
    check_patch(q, payload)
    payload = payload.to(torch.int64)
    outs: Dict[str, torch.Tensor] = {"input": payload}
    rec: Dict[str, torch.Tensor] = {}
    v = None
    for layer in q.layers:
        st = None
        if stats is not None:
            st = stats.setdefault(layer.name, LayerStats())
        y = run_layer(layer, outs, q.input_bits, overflow, st)
        if layer.neuron == "integrator":
            v = y
        else:
            if record_spikes:
                rec[layer.name] = y
            outs[layer.name] = forced[layer.name] if forced and layer.name in forced else y
    field_ = (v.to(torch.float64) * q.readout.output_scale).to(torch.float32)
    return EmulationResult(field=field_, readout_v=v, spikes=rec,
                           stats=dict(stats) if stats is not None else {})


def payload_of(q: QuantizedNet, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """Integer input payload of a (fixed, moving) pair in [0, 1] (the model's graded encoding)."""
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} differ in shape")
    if not (torch.isfinite(fixed).all() and torch.isfinite(moving).all()):
        raise ValueError("input volume contains NaN or inf")
    return graded_payload(torch.cat([fixed, moving], dim=1), q.input_bits).to(torch.int64)


def emulate_pair(q: QuantizedNet, fixed: torch.Tensor, moving: torch.Tensor, **kw) -> EmulationResult:
    """:func:`emulate` on float patches ``(N, 1, D, H, W)`` in [0, 1]."""
    return emulate(q, payload_of(q, fixed, moving), **kw)


def emulator_predictor(q: QuantizedNet, stats: Optional[MutableMapping[str, LayerStats]] = None,
                       overflow: str = "lava") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A patch predictor ``(fixed, moving) -> field (N, 3, D, H, W)`` for the host pipeline.

    Plugs into :func:`spikereg_neuro.inference.register_tensors` (tiling + residual policy), so
    whole volumes are processed exactly like the float model. ``stats`` accumulates per-layer
    spike counts and integer peaks over all patches.
    """
    def predict(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        dev = fixed.device
        res = emulate_pair(q, fixed.cpu(), moving.cpu(), stats=stats, overflow=overflow)
        return res.field.to(dev)

    return predict


# ============================================================================ lava alignment
def lava_schedule(q: QuantizedNet, connection_delay: int = 1) -> Dict[str, dict]:
    """Global step schedule that reproduces the emulator in a Lava graph with delayed connections.

    Global step 0 is when the input source emits its step 0 (it emits the payload for
    ``enc_windows[0]`` steps). Every connection adds ``connection_delay`` steps. For each layer:
    ``start`` (global step of its local step 0), ``end`` (of its last step), and per input:
    ``first_source_step`` (= ``source_step_offset``), ``arrival`` (global step at which that
    source step reaches the layer without extra delay) and ``extra_delay`` (steps to add to that
    connection so that all inputs arrive at ``start``). The layer must receive no input before
    ``start`` (reset/gate it: its sources emit steps before ``first_source_step``), and the
    read-out voltage is read after its ``end`` step.
    """
    start = {"input": 0}
    out: Dict[str, dict] = {}
    for layer in q.layers:
        arr = []
        for e in layer.inputs:
            arr.append((e, start[e.source] + e.source_step_offset + int(connection_delay)))
        s = max(a for _, a in arr)
        start[layer.name] = s
        out[layer.name] = {
            "start": s, "steps": layer.time_window, "end": s + layer.time_window - 1,
            "inputs": [{"source": e.source, "transform": e.transform,
                        "first_source_step": e.source_step_offset, "arrival": a, "extra_delay": s - a}
                       for e, a in arr],
        }
    return out


def spike_agreement(a: torch.Tensor, b: torch.Tensor) -> Dict[str, float]:
    """Agreement of two spike tensors: fraction of equal (neuron, step) entries, rates, and the
    fraction of spikes (of either) that are not matched."""
    a = a.bool()
    b = b.bool()
    if a.shape != b.shape:
        raise ValueError(f"spike tensors differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    n = a.numel()
    diff = int((a ^ b).sum())
    union = int((a | b).sum())
    return {"agreement": 1.0 - diff / n if n else float("nan"), "mismatches": diff,
            "entries": n, "rate_a": float(a.float().mean()), "rate_b": float(b.float().mean()),
            "mismatch_of_spikes": diff / union if union else 0.0}


__all__: List[str] = ["NeuronParams", "NeuronState", "LayerStats", "atrlif_step", "atrlif_run",
                      "connection_output", "layer_input", "run_layer", "EmulationResult", "emulate",
                      "emulate_pair", "payload_of", "emulator_predictor", "lava_schedule",
                      "spike_agreement", "upsample2"]
