"""Bit-accurate integer emulation of the quantized network (the reference the Lava backend matches).

Two engines compute the same integers. :func:`emulate_reference` (:func:`run_layer` /
:func:`atrlif_step`) is the executable definition: torch int64, one step at a time, the
convolutions in float32 or float64 only where every partial sum is an integer that the type
represents exactly (checked integral). :func:`emulate` (the fast engine, see "fast engine"
below) reorganises the same arithmetic - time-major float tensors, float64 integer states
within proven bounds, folded upsampling, the read-out's time-summed input - and is tested bit
for bit against it (``tests/test_emulator_fast.py``). The neuron update is lava-nc's
``PyATRLIFModelFixed`` step, written with the primitives of :mod:`calibration.loihi_rules`:

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
the input of the graded-input layer is the same payload at every step - or, for a net with
``input_once``, the payload at step 0 and nothing after (the layer's current holds it). The connections'
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
from fractions import Fraction
from typing import Callable, Dict, List, Mapping, MutableMapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from spikereg_neuro.payload import graded_payload

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


def _bounded(x: torch.Tensor, overflow: str, bound: Callable[[torch.Tensor], torch.Tensor],
             stats: Optional[LayerStats], peak: str, counter: str) -> torch.Tensor:
    """``x`` through lava's 24-bit ``bound`` (wrap or saturation) when ``overflow == 'lava'``;
    ``stats`` records the peak ``|x|`` (field ``peak``) and the changed elements (``counter``)."""
    if stats is not None:
        stats.merge_max(**{peak: int(x.abs().max()) if x.numel() else 0})
    if overflow != "lava":
        return x
    b = bound(x)
    if stats is not None:
        setattr(stats, counter, getattr(stats, counter) + int((b != x).sum()))
    return b


def atrlif_step(state: NeuronState, a_in: torch.Tensor, p: NeuronParams, overflow: str = "lava",
                stats: Optional[LayerStats] = None) -> torch.Tensor:
    """One PyATRLIFModelFixed ``run_spk`` on int64 tensors (in place); returns the spikes (bool).

    ``overflow='lava'`` wraps the current and saturates the voltage at 24 bits as lava does;
    ``'none'`` leaves them unbounded (for calibration statistics: the peaks a state would need).
    """
    i = R.decay(state.i, p.i_mult) + a_in * (1 << R.ACT_SHIFT)
    i = _bounded(i, overflow, R.wrap_current, stats, "i_max", "current_wraps")
    v = R.decay(state.v, p.v_mult) + i + p.bias
    v = _bounded(v, overflow, R.saturate_voltage, stats, "v_max", "voltage_saturations")
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
                      graded: bool = False, max_payload: int = 1, once: bool = False) -> torch.Tensor:
    """One connection's per-step output ``shift(W_e * s, weight_exp)``, ``(N, O, D', H', W', steps)``.

    ``src`` is the source's spikes ``(N, C, D, H, W, T_src)`` (bool, or int64 payloads of a
    graded-spike layer), or for the graded input the payload ``(N, C, D, H, W)``: sent at every
    step, or with ``once`` at step 0 only (the connection's output is 0 at later steps).
    """
    a, b = edge.channels
    w = torch.from_numpy(np.asarray(layer.weight[:, a:b], dtype=np.int64))
    if graded:
        y = _exact_conv(src, w, layer.stride, layer.padding, max_payload)
        y = R.shift_activation(y, layer.weight_exp)
        if once:
            out = torch.zeros((*y.shape, steps), dtype=y.dtype)
            if steps:
                out[..., 0] = y
            return out
        return y.unsqueeze(-1).expand(*y.shape, steps)
    s = src[..., edge.source_step_offset: edge.source_step_offset + steps]
    if s.shape[-1] != steps:
        raise ValueError(f"{layer.name}: source {edge.source} has {src.shape[-1]} steps, needs "
                         f"{edge.source_step_offset + steps}")
    if edge.upsample > 1:
        s = upsample2(s)
    n, c, d, h, ww, t = s.shape
    frames = s.permute(0, 5, 1, 2, 3, 4).reshape(n * t, c, d, h, ww)
    max_in = 1 if s.dtype == torch.bool else max(1, int(s.abs().max()) if s.numel() else 1)
    y = _exact_conv(frames, w, layer.stride, layer.padding, max_in)
    y = R.shift_activation(y, layer.weight_exp)
    return y.reshape(n, t, *y.shape[1:]).permute(0, 2, 3, 4, 5, 1)


def layer_input(layer: QuantizedLayer, sources: Mapping[str, torch.Tensor], input_bits: int,
                input_once: bool = False) -> torch.Tensor:
    """The summed ``a_in`` of a layer over its window, int64 ``(N, O, D', H', W', T_L)``
    (``input_once``: the graded input reaches the layer at step 0 only)."""
    total = None
    for e in layer.inputs:
        y = connection_output(layer, e, sources[e.source], layer.time_window,
                              graded=(e.source == "input"), max_payload=2 ** input_bits - 1,
                              once=input_once and e.source == "input")
        total = y if total is None else total + y
    return total


def run_layer(layer: QuantizedLayer, sources: Mapping[str, torch.Tensor], input_bits: int = 8,
              overflow: str = "lava", stats: Optional[LayerStats] = None,
              input_once: bool = False) -> torch.Tensor:
    """Emulate one layer. Spiking layers return spikes ``(N, O, D', H', W', T)`` (bool; graded
    layers: int64 payloads ``v >> payload_shift`` where they spike, 0 elsewhere); the integrator
    returns its voltage after the last step ``(N, O, D', H', W')`` (int64). ``input_once``: the
    graded input arrives at step 0 only (the net's ``input_once``)."""
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow must be one of {OVERFLOW_MODES}")
    a_in = layer_input(layer, sources, input_bits, input_once)
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
def emulate_reference(q: QuantizedNet, payload: torch.Tensor, *, record_spikes: bool = False,
                      stats: Optional[MutableMapping[str, LayerStats]] = None, overflow: str = "lava",
                      forced: Optional[Mapping[str, torch.Tensor]] = None) -> EmulationResult:
    """The reference emulator: :func:`run_layer` / :func:`atrlif_step` step by step in int64.

    Same arguments and results as :func:`emulate` (which is bit-exact to it and much faster);
    kept as the executable definition the fast engine is tested against.
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
        y = run_layer(layer, outs, q.input_bits, overflow, st, input_once=q.input_once)
        if layer.neuron == "integrator":
            v = y
        else:
            if record_spikes:
                rec[layer.name] = y
            outs[layer.name] = forced[layer.name] if forced and layer.name in forced else y
    field_ = (v.to(torch.float64) * q.readout.output_scale).to(torch.float32)
    return EmulationResult(field=field_, readout_v=v, spikes=rec,
                           stats=dict(stats) if stats is not None else {})


# ============================================================================ fast engine
# The same arithmetic as run_layer/atrlif_step, organised for speed (bit-exact, tested against
# emulate_reference in tests/test_emulator_fast.py):
#
# * tensors are time-major ``(T, N, C, D, H, W)``, so one layer's T frames are a free reshape
#   ``(T*N, C, D, H, W)`` for the convolution and a step is a contiguous slice (no permutes);
# * spikes / payloads travel as float32 (0/1 or the payload integer, exact below 2**24), the
#   convolutions run in float32 whenever ``max_o sum|w_o| * max_in < 2**24`` (every partial sum
#   an exact integer; checked integral afterwards), float64 otherwise;
# * x2 upsampling followed by a stride-1 convolution is one ``conv_transpose3d`` with stride 2 and
#   the weights folded over each 2x2x2 block (nearest upsampling is separable: per dimension
#   ``K[m] = w[k-1-m] + w[k-m]``); each output sums the same integer products, 3.4x fewer MACs;
# * the weight exponent is ``floor(y * 2**e)`` in float (exact: a power-of-two scale of an
#   integer below 2**24), the neuron states are float64 integers: a decay is
#   ``trunc(x * (m / 4096))``, exact because ``|x| * m < 2**53`` is checked a priori
#   (``_state_bound``) - the engine falls back to the reference when it could not be;
# * the 24-bit current wrap / voltage clip are applied only where a cheap bound (the layer's
#   exact ``max |a_in|`` and the decays' geometric sums) does not rule them out; with
#   ``theta_step = 0`` the threshold is the constant ``64 * theta_0``;
# * the non-leaky read-out integrator (current multiplier 0, voltage multiplier 4096, no bias)
#   has ``v_T = 64 * sum_t a_in[t]``: when the weight exponent's shift is linear (``e >= 0``, or
#   ``-e`` at most the power of two dividing every weight: lava's weights are even) the
#   time-summed input is convolved once, together with ``|w|`` to bound every step's current and
#   voltage; if the bound leaves any possibility of a wrap, a saturation or a spike (or stats are
#   requested) the read-out runs step by step instead.

_F32_EXACT = 2 ** 24
_F64_EXACT = 2 ** 53
#: states below this magnitude make ``x * m`` (``m <= 4096``) an exact float64 integer
_STATE_EXACT = 2 ** 40
#: run the convolutions channels-last (a few % faster here, measured) where the input has at
#: least this many channels; the layers' spikes are then produced channels-last too
_CHANNELS_LAST = True
_CHANNELS_LAST_MIN = 4


class _NotExact(Exception):
    """A bound the fast engine relies on does not hold (the caller falls back to the reference)."""


@dataclass
class _Edge:
    """One connection prepared for the fast engine."""

    edge: LayerInput
    w_int: torch.Tensor              # int64 (O, C, k, k, k), the layer's weight slice
    weight: torch.Tensor             # float32 (O, C, k, k, k) - or folded (C, O, k+1, ...) if transposed
    abs_sum: int                     # max_o sum |w_o| (the exactness bound per unit input)
    transposed: Optional[tuple]      # conv_transpose3d padding of the folded x2 upsampling, or None


def _fold_upsample2(w: torch.Tensor, padding) -> Optional[tuple]:
    """``(K, P)`` with ``conv_transpose3d(x, K, stride=2, padding=P) == conv3d(upsample2(x), w,
    padding=padding)`` (stride 1), or None when the padding does not allow it."""
    ks = tuple(int(k) for k in w.shape[2:])
    pads = tuple(int(k) - 1 - int(p) for k, p in zip(ks, padding))
    if min(pads) < 0:
        return None
    k_ = w
    for dim, k in zip((2, 3, 4), ks):
        shape = list(k_.shape)
        shape[dim] = k + 1
        z = k_.new_zeros(shape)
        f = k_.flip(dim)                     # f[m] = w[k - 1 - m]
        z.narrow(dim, 0, k).add_(f)          # K[m] += w[k - 1 - m]
        z.narrow(dim, 1, k).add_(f)          # K[m] += w[k - m]
        k_ = z
    return k_.transpose(0, 1).contiguous(), pads


def _prepare_edges(layer: QuantizedLayer) -> List[_Edge]:
    """The layer's connections with their float weights (folded where upsampling allows it)."""
    out = []
    for e in layer.inputs:
        a, b = e.channels
        w = torch.from_numpy(np.asarray(layer.weight[:, a:b], dtype=np.int64))
        abs_sum = int(w.abs().sum(dim=(1, 2, 3, 4)).max()) if w.numel() else 0
        wf = w.to(torch.float32)
        tr = None
        if e.upsample > 1 and all(int(s) == 1 for s in layer.stride):
            folded = _fold_upsample2(wf, layer.padding)
            if folded is not None:
                wf, tr = folded
        out.append(_Edge(e, w, wf, abs_sum, tr))
    return out


def _conv(x: torch.Tensor, ed: _Edge, layer: QuantizedLayer, max_in: int) -> torch.Tensor:
    """The exact integer convolution of float frames ``x`` (B, C, D, H, W) by one edge, as float
    (float32 when every partial sum is an integer below 2**24, else float64)."""
    bound = ed.abs_sum * int(max_in)
    if bound < _F32_EXACT:
        dt = torch.float32
    elif bound < _F64_EXACT:
        dt = torch.float64
    else:  # pragma: no cover
        raise OverflowError(f"convolution bound {bound} exceeds float64's exact integer range")
    x = x if x.dtype == dt else x.to(dt)
    if _CHANNELS_LAST and x.shape[1] >= _CHANNELS_LAST_MIN:
        x = x.contiguous(memory_format=torch.channels_last_3d)   # a no-op when it already is
    w = ed.weight.to(dt)
    if ed.transposed is not None:
        y = F.conv_transpose3d(x, w, None, 2, ed.transposed)
    else:
        if ed.edge.upsample > 1:
            x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        if x.shape[1] * w.shape[2] <= _FOLD_DEPTH_MAX:
            y = _conv3d_as_2d(x, w, tuple(layer.stride), tuple(layer.padding))
        else:
            y = F.conv3d(x, w, None, tuple(layer.stride), tuple(layer.padding))
    _check_integral(y, (x.dtype, tuple(x.shape[1:]), x.stride(), tuple(w.shape), ed.transposed,
                        tuple(layer.stride), tuple(layer.padding)))
    return y


#: convolutions whose ``in_channels * kernel_depth`` is at most this run as one conv2d with the
#: kernel's depth folded into the channels (the 2-channel input layer: ~8x faster than conv3d)
_FOLD_DEPTH_MAX = 8
#: convolution configurations whose output was checked integral in full once (later calls of
#: the same configuration check a sample: an inexact algorithm is inexact almost everywhere)
_VERIFIED: set = set()


def _check_integral(y: torch.Tensor, key: tuple) -> None:
    """Raise if the float convolution ``y`` is not integral (a non-exact conv algorithm)."""
    z = y if key not in _VERIFIED else y[(slice(None),) * (y.dim() - 3) + (slice(None, None, 3),) * 3]
    if not torch.equal(torch.round(z), z):  # pragma: no cover - would mean a non-exact conv algorithm
        raise RuntimeError("integer convolution was not exact")
    _VERIFIED.add(key)


def _conv3d_as_2d(x: torch.Tensor, w: torch.Tensor, stride, padding) -> torch.Tensor:
    """``conv3d(x, w, stride, padding)`` as one conv2d over (H, W): the kernel's depth taps are
    stacked as input channels, one output depth slice per batch entry. The same integer products
    and sums; returns ``(B, O, D', H', W')``."""
    b, c, d = x.shape[:3]
    o, _, kd, kh, kw = w.shape
    sd, pd = int(stride[0]), int(padding[0])
    xp = F.pad(x, (0, 0, 0, 0, pd, pd))
    do = (d + 2 * pd - kd) // sd + 1
    taps = [xp[:, :, a: a + sd * (do - 1) + 1: sd] for a in range(kd)]       # (B, C, D', H, W) each
    x2 = torch.stack(taps, dim=1).permute(0, 3, 1, 2, 4, 5).reshape(b * do, kd * c, *x.shape[3:])
    w2 = w.permute(0, 2, 1, 3, 4).reshape(o, kd * c, kh, kw)
    y = F.conv2d(x2, w2, None, tuple(stride[1:]), tuple(padding[1:]))
    y = y.reshape(b, do, o, *y.shape[2:]).permute(0, 2, 1, 3, 4)
    # one standard layout for what follows (the neuron loop and its outputs take it over)
    return y.contiguous(memory_format=torch.channels_last_3d if _CHANNELS_LAST else torch.contiguous_format)


def _shift_float(y: torch.Tensor, e: int) -> torch.Tensor:
    """:func:`~calibration.loihi_rules.shift_activation` on float integers (in place)."""
    e = int(e)
    if e > 0:
        y.mul_(float(2 ** e))
    elif e < 0:
        y.mul_(2.0 ** e).floor_()
    return y


def _minmax(x: torch.Tensor) -> Tuple[float, float]:
    """``(min, max)`` of a non-empty tensor, reduced in its memory order (a permuted view is not
    copied first)."""
    order = sorted(range(x.dim()), key=lambda d: (-x.stride(d), d))
    xp = x.permute(order)
    lo, hi = torch.aminmax(xp if xp.is_contiguous() else x)
    return float(lo), float(hi)


def _absmax(x: torch.Tensor) -> int:
    if not x.numel():
        return 0
    lo, hi = _minmax(x)
    return int(max(-lo, hi))


def _geometric(m: int, steps: int) -> Fraction:
    """``sum_{k < steps} (m / 4096)**k``: how much a decayed sum of bounded increments can grow."""
    c = Fraction(int(m), R.DECAY_UNITY)
    return sum((c ** k for k in range(int(steps))), Fraction(0))


@dataclass
class _LayerInput:
    """A layer's ``a_in``: per step ``(T, N, O, D, H, W)``, or one frame used at every step
    (``constant``), or one frame at step 0 and zero after (``constant`` and ``once``)."""

    a: torch.Tensor
    constant: bool
    steps: int
    amax: int                        # exact max |a_in|
    once: bool = False


def _fast_layer_input(layer: QuantizedLayer, edges: List[_Edge], outs: Mapping[str, torch.Tensor],
                      maxes: Mapping[str, int], input_once: bool = False) -> _LayerInput:
    T = int(layer.time_window)
    per_step: List[torch.Tensor] = []
    const: List[torch.Tensor] = []
    total_bound = 0
    for ed in edges:
        e = ed.edge
        total_bound += ed.abs_sum * maxes[e.source] * (1 << max(int(layer.weight_exp), 0))
        src = outs[e.source]
        if e.source == "input":
            const.append(_shift_float(_conv(src, ed, layer, maxes[e.source]), layer.weight_exp))
            continue
        s = src[e.source_step_offset: e.source_step_offset + T]
        if s.shape[0] != T:
            raise ValueError(f"{layer.name}: source {e.source} has {src.shape[0]} steps, needs "
                             f"{e.source_step_offset + T}")
        n = s.shape[1]
        y = _conv(s.reshape(T * n, *s.shape[2:]), ed, layer, maxes[e.source])
        per_step.append(_shift_float(y, layer.weight_exp).reshape(T, n, *y.shape[1:]))
    dt = torch.float32 if total_bound < _F32_EXACT else torch.float64
    if input_once and per_step and const:
        total = per_step[0].to(dt)
        for y in per_step[1:]:
            total.add_(y)
        for y in const:               # the input frame reaches step 0 only
            total[0].add_(y)
        return _LayerInput(total, constant=False, steps=T, amax=_absmax(total))
    parts = per_step + const          # per-step first: constants broadcast over the steps
    total = parts[0].to(dt)
    for y in parts[1:]:
        total.add_(y)                 # exact: every partial sum is below total_bound
    return _LayerInput(total, constant=not per_step, steps=T, amax=_absmax(total),
                       once=input_once and not per_step)


def _state_bound(p: NeuronParams, amax: int, steps: int) -> int:
    """A bound on ``|i|, |v|, |theta|, |r|`` over ``steps`` steps (both overflow modes)."""
    i_b = (1 << R.ACT_SHIFT) * amax * steps + 2 * R.STATE_MAX
    v_b = steps * (i_b + abs(p.bias)) + 2 * R.STATE_MAX
    th_b = abs(p.theta0) + abs(p.theta_step) * steps
    r_b = 2 * th_b * steps
    return max(i_b, v_b, th_b, r_b + v_b)


def _merge_stats(dst: LayerStats, src: LayerStats) -> None:
    dst.merge_max(a_in_max=src.a_in_max, i_max=src.i_max, v_max=src.v_max, r_max=src.r_max)
    dst.current_wraps += src.current_wraps
    dst.voltage_saturations += src.voltage_saturations
    dst.spikes += src.spikes
    dst.neuron_steps += src.neuron_steps
    dst.neurons += src.neurons
    if src.spikes_per_step is not None:
        dst.spikes_per_step = (src.spikes_per_step.copy() if dst.spikes_per_step is None
                               else dst.spikes_per_step + src.spikes_per_step)


#: neurons per block of the time loop: all of a block's states stay in cache over its T steps
_CHUNK = 1 << 15


@dataclass
class _NeuronPlan:
    """A layer's neuron constants and which overflow handling its bounds leave necessary."""

    p: NeuronParams
    steps: int
    lava: bool
    can_wrap: bool
    can_saturate: bool
    int32_trunc: bool                # |states| < 2**31: truncate through an int32 cast
    nonneg: bool                     # theta_0, theta_step >= 0: r >= 0, theta >= theta_0
    const_theta: bool                # theta_step == 0: theta stays 64 * theta_0
    integrator: bool
    payload_shift: int               # -1: binary spikes


def _neuron_plan(layer: QuantizedLayer, amax: int, steps: int, overflow: str, once: bool = False) -> _NeuronPlan:
    p = NeuronParams.from_atrlif(layer.atrlif)
    bound = _state_bound(p, amax, steps)
    if bound >= _STATE_EXACT:
        raise _NotExact(f"{layer.name}: states may exceed float64's exact range")
    lava = overflow == "lava"
    # a priori: |i_t| <= 64 * max|a| * sum_k c_i^k (input at one step only: |i_t| <= 64 * max|a|,
    # a decay never grows |i|); |v_t| <= (|i| + |bias|) * sum_k c_v^k
    i_peak = (1 << R.ACT_SHIFT) * amax * (1 if once else _geometric(p.i_mult, steps))
    can_wrap = lava and i_peak >= R.STATE_MAX
    v_peak = ((R.STATE_MAX if can_wrap else i_peak) + abs(p.bias)) * _geometric(p.v_mult, steps)
    return _NeuronPlan(p, steps, lava, can_wrap, lava and v_peak > R.VOLTAGE_MAX, bound < 2 ** 31,
                       p.theta0 >= 0 and p.theta_step >= 0, p.theta_step == 0,
                       layer.neuron == "integrator", int(layer.payload_shift))


class _Block:
    """Reusable float64 state buffers for one block of neurons."""

    def __init__(self, n: int, steps: int, int32_trunc: bool) -> None:
        f64 = torch.float64
        self.a = torch.empty((steps, n), dtype=f64)
        self.i, self.v, self.r, self.theta, self.s, self.d = (torch.empty(n, dtype=f64) for _ in range(6))
        self.i32 = torch.empty(n, dtype=torch.int32) if int32_trunc else None


def _trunc_(x: torch.Tensor, i32: Optional[torch.Tensor]) -> torch.Tensor:
    """``x <- trunc(x)`` in place: through an int32 cast (a truncation, several times faster
    than ``trunc_`` here) when the caller guarantees ``|x| < 2**31``."""
    if i32 is None:
        return x.trunc_()
    i32.copy_(x)
    return x.copy_(i32)


def _neuron_block(pl: _NeuronPlan, a: torch.Tensor, constant: bool, out: Optional[torch.Tensor], buf: _Block,
                  stats: Optional[LayerStats], per_step: Optional[np.ndarray],
                  once: bool = False) -> Tuple[torch.Tensor, bool]:
    """The ATRLIF steps of one block (``a``: ``(T or 1, n)`` inputs; a constant ``(1, n)`` input
    with ``once`` is used at step 0 only, zero after; ``out``: ``(T, n)`` float32 spikes /
    payloads or None). Returns the final voltage (a view of ``buf``) and whether any neuron
    spiked (counted only for stats and the integrator)."""
    p = pl.p
    n = a.shape[1]
    T = pl.steps
    a64 = buf.a[:a.shape[0], :n]
    a64.copy_(a).mul_(float(1 << R.ACT_SHIFT))           # 64 * a_in, exact
    i, v, r, s, d = buf.i[:n], buf.v[:n], buf.r[:n], buf.s[:n], buf.d[:n]
    i32 = buf.i32[:n] if buf.i32 is not None else None
    i.zero_()
    v.zero_()
    r.zero_()
    r_zero = True                      # r is known to be 0 (no spike yet)
    theta = None
    if not pl.const_theta:
        theta = buf.theta[:n].fill_(float(p.theta0))
    ci, cv = p.i_mult / R.DECAY_UNITY, p.v_mult / R.DECAY_UNITY
    cr, cth = p.r_mult / R.DECAY_UNITY, p.th_mult / R.DECAY_UNITY
    spiked_any = False
    for t in range(T):
        a_t = None if (once and t > 0) else (a64[0] if constant else a64[t])   # None: no input
        # current: i = wrap(decay(i) + 64 a)
        if p.i_mult == 0:
            i.copy_(a_t) if a_t is not None else i.zero_()
        else:
            if p.i_mult != R.DECAY_UNITY:
                _trunc_(i.mul_(ci), i32)
            if a_t is not None:
                i.add_(a_t)
        if stats is not None or pl.can_wrap:
            lo, hi = (float(x) for x in torch.aminmax(i))
            if stats is not None:
                stats.merge_max(i_max=max(-lo, hi))
            if pl.can_wrap and (hi > R.STATE_MAX or lo <= -R.STATE_MAX):
                wi = R.wrap_current(i)
                if stats is not None:
                    stats.current_wraps += int((wi != i).sum())
                i.copy_(wi)
        # voltage: v = sat(decay(v) + i + bias)
        if p.v_mult == 0:
            v.copy_(i)
        else:
            if p.v_mult != R.DECAY_UNITY:
                _trunc_(v.mul_(cv), i32)
            v.add_(i)
        if p.bias:
            v.add_(float(p.bias))
        if stats is not None:
            lo, hi = (float(x) for x in torch.aminmax(v))
            stats.merge_max(v_max=max(-lo, hi))
            if pl.lava and (hi > R.VOLTAGE_MAX or lo < R.VOLTAGE_MIN):
                stats.voltage_saturations += int(((v > R.VOLTAGE_MAX) | (v < R.VOLTAGE_MIN)).sum())
        if pl.can_saturate:
            v.clamp_(R.VOLTAGE_MIN, R.VOLTAGE_MAX)
        # threshold and refractory decay (both >= their rest when nonneg: floor == trunc)
        if theta is not None:
            theta.sub_(float(p.theta0)).mul_(cth)
            theta.floor_() if pl.nonneg else _trunc_(theta, i32)
            theta.add_(float(p.theta0))
        if not r_zero:
            if p.r_mult == 0:
                r.zero_()
            elif p.r_mult != R.DECAY_UNITY:
                r.mul_(cr)
                r.floor_() if pl.nonneg else _trunc_(r, i32)
        # s = (v - r) >= theta, as 0/1: integers, so clamp(v - r - theta + 1, 0, 1)
        torch.sub(v, r, out=s) if not r_zero else s.copy_(v)
        if theta is None:
            s.add_(1.0 - p.theta0)
        else:
            s.sub_(theta).add_(1.0)
        s.clamp_(0.0, 1.0)
        n_sp = None
        if stats is not None or pl.integrator:
            n_sp = int(s.sum())
            spiked_any = spiked_any or n_sp > 0
        if n_sp is None or n_sp:
            if theta is None:
                r.add_(s, alpha=2.0 * p.theta0)
            else:
                r.addcmul_(theta, s, value=2.0)
                theta.add_(s, alpha=float(p.theta_step))
            r_zero = False
        if stats is not None:
            stats.merge_max(r_max=_absmax(r))
            per_step[t] += n_sp
        if out is not None:
            if pl.payload_shift >= 0:   # payload v >> k where it spikes (v after saturation)
                torch.mul(v, 2.0 ** -pl.payload_shift, out=d)
                out[t].copy_(d.floor_().mul_(s))
            else:
                out[t].copy_(s)
    return v, spiked_any


def _fast_neurons(layer: QuantizedLayer, li: _LayerInput, overflow: str,
                  stats: Optional[LayerStats]) -> torch.Tensor:
    """The ATRLIF time loop on float64 integer states, block by block of :data:`_CHUNK`
    neurons. Spiking layers: time-major float32 spikes (0/1) or payloads ``(T, N, O, D, H, W)``;
    the integrator: its int64 voltage after the last step ``(N, O, D, H, W)``."""
    T = li.steps
    pl = _neuron_plan(layer, li.amax, T, overflow, li.once)
    # work in the input's physical layout (NCDHW or channels-last): flat views, no copies
    a6 = li.a.unsqueeze(0) if li.constant else li.a
    perm = _physical_order(a6)
    ap = a6.permute(perm)
    if not ap.is_contiguous():
        ap = ap.contiguous()
    shape = tuple(ap.shape[1:])
    n = int(np.prod(shape))
    a = ap.reshape(ap.shape[0], n)
    out = None if pl.integrator else torch.empty((T, n), dtype=torch.float32)
    v_last = torch.empty(n, dtype=torch.float64) if pl.integrator else None
    per_step = np.zeros(T, dtype=np.int64) if stats is not None else None
    buf = _Block(min(n, _CHUNK), T, pl.int32_trunc)
    spiked_any = False
    for j0 in range(0, n, _CHUNK):
        j1 = min(n, j0 + _CHUNK)
        v, sp = _neuron_block(pl, a[:, j0:j1], li.constant, None if out is None else out[:, j0:j1], buf,
                              stats, per_step, once=li.once)
        spiked_any = spiked_any or sp
        if v_last is not None:
            v_last[j0:j1] = v
    if stats is not None:
        stats.spikes += int(per_step.sum())
        stats.neuron_steps += n * T
        stats.neurons += n
        stats.spikes_per_step = per_step if stats.spikes_per_step is None else stats.spikes_per_step + per_step
    inv = [perm.index(k) for k in range(len(perm))]
    if pl.integrator:
        if spiked_any:  # pragma: no cover - theta_0 is out of reach by construction
            raise RuntimeError(f"{layer.name}: the integrator spiked")
        v_last = v_last.to(torch.int64).reshape(1, *shape).permute(inv)[0]
        return v_last.contiguous()
    return out.reshape(T, *shape).permute(inv)


def _physical_order(x: torch.Tensor) -> List[int]:
    """The dimension order in which ``x`` is laid out in memory (outermost first; dim 0 stays
    first), e.g. ``[0, 1, 3, 4, 5, 2]`` for time-major channels-last tensors."""
    rest = sorted(range(1, x.dim()), key=lambda d: (-x.stride(d), d))
    return [0] + rest


def _summed_readout(layer: QuantizedLayer, edges: List[_Edge], outs: Mapping[str, torch.Tensor],
                    maxes: Mapping[str, int], input_once: bool = False) -> Optional[torch.Tensor]:
    """``v_T = 64 * sum_t a_in[t]`` of a non-leaky integrator from ONE convolution of the
    time-summed input, or None where that is not provably equal to the step-by-step run."""
    p = NeuronParams.from_atrlif(layer.atrlif)
    wexp = int(layer.weight_exp)
    if layer.neuron != "integrator" or p.i_mult != 0 or p.v_mult != R.DECAY_UNITY or p.bias:
        return None
    # the shift must be linear: a left shift, or a right shift by at most the power of two that
    # divides every weight of the edge (lava's weights are even), so it divides every sum exactly
    if any(-wexp > _two_adic(ed.w_int) for ed in edges):
        return None
    T = int(layer.time_window)
    total = bound = None
    for ed in edges:
        e = ed.edge
        src = outs[e.source]
        if e.source == "input":
            s, summed, m, scale = src, src, maxes[e.source], 1.0 if input_once else float(T)
        else:
            s = src[e.source_step_offset: e.source_step_offset + T]
            if s.shape[0] != T:
                return None
            m, scale = maxes[e.source] * T, 1.0
            summed = s.sum(dim=0, dtype=torch.float32 if m < _F32_EXACT else torch.float64)
        if s.numel() and _minmax(s)[0] < 0:
            return None                      # conv(|w|, sum_t s_t) bounds sum_t |a_t| only for s >= 0
        w_abs = ed.w_int.abs().to(torch.float32)
        if ed.transposed is not None:        # fold |w| (|fold(w)| would be no upper bound)
            w_abs = _fold_upsample2(w_abs, layer.padding)[0]
        both = _Edge(e, ed.w_int, torch.cat([ed.weight, w_abs], dim=1 if ed.transposed is not None else 0),
                     ed.abs_sum, ed.transposed)
        y = _conv(summed, both, layer, m).to(torch.float64)
        if scale != 1.0:
            y.mul_(scale)
        o = y.shape[1] // 2
        y.mul_(2.0 ** wexp)
        yv, yb = y[:, :o], y[:, o:]
        total = yv if total is None else total + yv
        bound = yb if bound is None else bound + yb
    peak = (1 << R.ACT_SHIFT) * float(bound.max()) if bound.numel() else 0.0
    if not (peak < R.STATE_MAX and peak <= R.VOLTAGE_MAX and peak < p.theta0):
        return None
    return total.mul_(float(1 << R.ACT_SHIFT)).to(torch.int64)


def _two_adic(w: torch.Tensor) -> int:
    """The largest ``g`` with ``2**g`` dividing every weight (63 for all-zero weights)."""
    nz = w[w != 0].abs()
    if not nz.numel():
        return 63
    g = 0
    while g < 62 and not bool(((nz >> (g + 1)) << (g + 1) != nz).any()):
        g += 1
    return g


def _to_reference_layout(y: torch.Tensor, graded: bool) -> torch.Tensor:
    """Time-major float spikes/payloads -> ``(N, C, D, H, W, T)`` bool / int64 (contiguous)."""
    perm = y.permute(*range(1, y.dim()), 0)
    out = torch.empty(perm.shape, dtype=torch.int64 if graded else torch.bool)
    out.copy_(perm)
    return out


def _emulate_fast(q: QuantizedNet, payload: torch.Tensor, record_spikes: bool,
                  stats: Optional[MutableMapping[str, LayerStats]], overflow: str,
                  forced: Optional[Mapping[str, torch.Tensor]]) -> EmulationResult:
    outs: Dict[str, torch.Tensor] = {"input": payload.to(torch.float32)}
    maxes: Dict[str, int] = {"input": 2 ** q.input_bits - 1}
    local: Dict[str, LayerStats] = {}
    rec: Dict[str, torch.Tensor] = {}
    v = None
    for layer in q.layers:
        edges = _prepare_edges(layer)
        st = None
        if stats is not None:
            st = local.setdefault(layer.name, LayerStats())
        if layer.neuron == "integrator" and st is None:
            v = _summed_readout(layer, edges, outs, maxes, q.input_once)
            if v is not None:
                continue
        li = _fast_layer_input(layer, edges, outs, maxes, q.input_once)
        if st is not None:
            st.merge_max(a_in_max=li.amax)
        y = _fast_neurons(layer, li, overflow, st)
        del li
        if layer.neuron == "integrator":
            v = y
            continue
        if record_spikes:
            rec[layer.name] = _to_reference_layout(y, layer.graded_output)
        if forced and layer.name in forced:
            fz = forced[layer.name]
            if fz.dtype.is_floating_point or (fz.dtype != torch.bool and _absmax(fz) >= _F32_EXACT):
                raise _NotExact(f"{layer.name}: forced values not exact in float32")
            y = fz.permute(5, 0, 1, 2, 3, 4).to(torch.float32).contiguous()
        is_forced = bool(forced) and layer.name in forced
        outs[layer.name] = y
        # the largest input the consumers' convolutions see (only chooses float32 / float64)
        binary = (forced[layer.name].dtype == torch.bool) if is_forced else not layer.graded_output
        maxes[layer.name] = 1 if binary else max(1, _absmax(y))
    if stats is not None:
        for name, s in local.items():
            _merge_stats(stats.setdefault(name, LayerStats()), s)
    field_ = (v.to(torch.float64) * q.readout.output_scale).to(torch.float32)
    return EmulationResult(field=field_, readout_v=v, spikes=rec,
                           stats=dict(stats) if stats is not None else {})


@torch.no_grad()
def emulate(q: QuantizedNet, payload: torch.Tensor, *, record_spikes: bool = False,
            stats: Optional[MutableMapping[str, LayerStats]] = None, overflow: str = "lava",
            forced: Optional[Mapping[str, torch.Tensor]] = None) -> EmulationResult:
    """Emulate one batch of patches from the integer input payload ``(N, C_in, D, H, W)``.

    ``stats`` (a dict, filled/merged per layer) collects integer peaks, overflow counts and
    spikes; ``record_spikes`` keeps every layer's spikes; ``forced`` replaces named layers'
    outputs by given spikes (teacher forcing, to compare layers one at a time). Any spatial size
    divisible by ``q.size_multiple`` works (whole volumes too). The payload reaches the input
    layer at every step of its window, or at step 0 only when ``q.input_once``. Bit-exact to
    :func:`emulate_reference` (the fast engine above; it falls back to the reference where a
    bound it relies on cannot be proven).
    """
    check_patch(q, payload)
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow must be one of {OVERFLOW_MODES}")
    if payload.numel() == 0:
        return emulate_reference(q, payload, record_spikes=record_spikes, stats=stats, overflow=overflow,
                                 forced=forced)
    try:
        return _emulate_fast(q, payload, record_spikes, stats, overflow, forced)
    except _NotExact:
        return emulate_reference(q, payload, record_spikes=record_spikes, stats=stats, overflow=overflow,
                                 forced=forced)


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
    ``q.input_steps`` steps: the input layer's window, or step 0 only with ``input_once``). Every connection adds ``connection_delay`` steps. For each layer:
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
                      "emulate_reference",
                      "emulate_pair", "payload_of", "emulator_predictor", "lava_schedule",
                      "spike_agreement", "upsample2"]
