"""SLAYER's ALIF neuron with its time loop fused: the same numbers, several times faster on a CPU.

lava-dl's ALIF (``slayer.neuron.alif``) runs three autograd functions one after another on a
CPU: the current leaky integrator, the voltage leaky integrator and the adaptive
threshold/refractory dynamics, each a Python loop over time steps on time-last (strided) slices
with a dozen int64 passes per step, then the spike function. :class:`FusedALIF` computes the
same recurrences in one loop over a time-first view and one reverse loop for the gradient:

    c[t]   = rstz(c[t-1] * (4096 - d_c), 12) + trunc(4096 x[t])          (current, fixed point)
    v[t]   = rstz(v[t-1] * (4096 - d_v), 12) + f32(c[t])                  (voltage)
    th[t]  = rstz((th[t-1] - th0) * (4096 - d_th), 12) + th0              (threshold)
    r[t]   = rstz(r[t-1] * (4096 - d_r), 12)                               (refractory)
    hit    = f32(v[t]) >= th[t] + r[t];  th += th_step * hit;  r += 2 th[t] * hit
    s[t]   = f32(v)/4096 >= f32(th)/4096 + f32(r)/4096      (times f32(v)/4096 if graded)

with ``rstz`` SLAYER's right shift towards zero and ``f32`` the float32 rounding SLAYER's
int64 -> float32 hand-over between its three functions applies. The backward pass is SLAYER's:
the surrogate ``Spike`` derivative at ``(v, th + r)``, then the two leaky-integrator
recurrences ``g[t] = (1 - d/4096) g[t+1] + g_out[t]`` (voltage, then current); no gradient
through the threshold and refractory states, and none to the (fixed) decays.

The integer states are held in the cheapest exact type (:func:`_regime`, from bounds on the
input's magnitude): float32 while every state and product fits 24 bits (then SLAYER's float32
hand-overs round nothing and its float spike test is the integer one), float64 while they fit
53 bits (with SLAYER's float32 roundings applied), else int64. Outputs and gradients are
bit-identical to SLAYER's (``tests/test_model.py``). An input that is constant over time (a
stride-0 time axis, as the graded image input of the first layer) is quantized once.

In the float32 regime without threshold adaptation (SpikeReg's neurons) the loops run in C
(:mod:`~spikereg_neuro.model.native`) when its kernel could be built, with the same numbers;
otherwise in torch.
"""
from __future__ import annotations

from typing import Tuple

import torch

from . import native
from .native import FRAC as _FRAC, decay_cost as _cost, use_complement
from .slayer import alif as slayer_alif

# SLAYER ALIF's surrogate-gradient multipliers (slayer/neuron/alif.py: TAU_RHO_MULT, SCALE_RHO_MULT)
_TAU_RHO_MULT = slayer_alif.TAU_RHO_MULT
_SCALE_RHO_MULT = slayer_alif.SCALE_RHO_MULT


def _rstz(x: torch.Tensor, m: int) -> torch.Tensor:
    """``rstz(x * m, 12)``, SLAYER's decay: in place for floats holding integers (exact when
    the product fits the mantissa, see :func:`_regime`), by integer division for int64.

    Floats take the cheaper of two exact forms: ``trunc(x m / 4096)``, or, when the decay
    ``d = 4096 - m`` has the smaller odd part (a slow decay such as d = 1), its complement
    ``x - sign(x) ceil(|x| d / 4096)`` (the same integer, since ``x m / 4096 = x - x d / 4096``),
    whose product needs ``odd(d)`` instead of ``odd(m)`` times ``|x|`` of mantissa."""
    if x.dtype.is_floating_point:
        if use_complement(m):
            return x.sub_(x.abs().mul_(((1 << _FRAC) - m) / (1 << _FRAC)).ceil_().copysign_(x))
        return x.mul_(m / (1 << _FRAC)).trunc_()
    return torch.div(x * m, 1 << _FRAC, rounding_mode="trunc")


def _as_f32(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The integer ``x`` rounded to float32 and back (SLAYER's int64 -> float32 -> int64)."""
    return x.to(torch.float32).to(dtype)


class _Constants:
    """Integer constants of one neuron population, read from a SLAYER ALIF neuron."""

    def __init__(self, n: "slayer_alif.Neuron") -> None:
        q = slayer_alif.quantize
        s = n.s_scale
        self.s_scale = s
        self.m_c = (1 << _FRAC) - int(q(n.current_decay).item())
        self.m_v = (1 << _FRAC) - int(q(n.voltage_decay).item())
        self.m_th = (1 << _FRAC) - int(q(n.threshold_decay).item())
        self.m_r = (1 << _FRAC) - int(q(n.refractory_decay).item())
        self.th0 = int(n.threshold * s)
        self.th_step = int(n.threshold_step * s)
        self.th0_f32 = torch.tensor(float(self.th0), dtype=torch.float32) / float(s)
        # float32 gradient constants, exactly as SLAYER's Spike and _LIDynamics form them
        self.g_c = 1 - q(n.current_decay).detach() / (1 << _FRAC)
        self.g_v = 1 - q(n.voltage_decay).detach() / (1 << _FRAC)
        self.tau = torch.tensor(n.tau_rho * _TAU_RHO_MULT, dtype=torch.float32)
        self.scale = torch.tensor(n.scale_rho * _SCALE_RHO_MULT, dtype=torch.float32)
        self.graded = bool(n.graded_spike)


def _regime(k: _Constants, T: int, peak: float, drive: float | None = None) -> torch.dtype:
    """The cheapest type in which the recurrences are exact for inputs up to ``peak``.

    Bounds: ``|c| <= drive`` (the sum over steps of each step's largest input, ``T peak`` when
    not given), ``|v| <= T |c|``, ``th <= th0 + T th_step``, ``|r| <= 2 T th``; a decay
    ``rstz(x m, 12)`` is exact in a type with ``p`` mantissa bits while ``|x| * cost(m) < 2**p``
    (:func:`_cost`). float32 (``p = 24``) also needs every state below ``2**24``, where SLAYER's
    float32 hand-overs round nothing, so the spike test is the integer one.
    """
    bc = T * peak if drive is None else min(float(drive), T * peak)
    bv = T * bc
    th = k.th0 + T * abs(k.th_step)
    br = 2 * T * th
    need = max(bc * _cost(k.m_c), bv * _cost(k.m_v), br * _cost(k.m_r), T * abs(k.th_step) * _cost(k.m_th),
               bv + br + th)
    if need < 2.0 ** 24:
        return torch.float32
    if need < 2.0 ** 53:
        return torch.float64
    return torch.int64


def _empty_steps(frame: torch.Tensor, T: int) -> torch.Tensor:
    """A float32 ``(T, *frame.shape)`` tensor, time outermost, each step laid out like ``frame``
    (channels-last frames stay channels-last, so the next convolution reads them as they are)."""
    if frame.dim() == 5 and not frame.is_contiguous() and frame.is_contiguous(memory_format=torch.channels_last_3d):
        n, *rest = frame.shape
        out = torch.empty((T * n, *rest), dtype=torch.float32, device=frame.device,
                          memory_format=torch.channels_last_3d)
        return out.view(T, n, *rest)
    return torch.empty((T, *frame.shape), dtype=torch.float32, device=frame.device)


def _forward_loop(x: torch.Tensor, k: _Constants, keep: bool, out_div: float = 1.0,
                  dtype: torch.dtype | None = None) -> Tuple[torch.Tensor, torch.Tensor | None]:
    """Run the fixed-point dynamics on a time-first ``x`` ``(T, ...)``.

    Returns the spikes ``(T, ...)`` float32 (graded payloads divided by ``out_div``, as one
    would divide SLAYER's output) and, with ``keep``, SLAYER's float32 margin
    ``v/4096 - (th/4096 + r/4096)`` that the surrogate gradient needs. ``dtype`` forces the
    state type (tests); by default :func:`_regime` picks it.
    """
    T = x.shape[0]
    const_in = T > 1 and x.stride(0) == 0
    xs = x[:1] if const_in else x
    if dtype is None and not k.th_step and x.numel() and native.available():
        spikes = _empty_steps(xs[0], T)
        margin = _empty_steps(xs[0], T) if keep else None
        if native.same_dense_frames(xs, spikes, *([margin] if keep else [])) and native.forward(
                xs, const_in, T, spikes, margin, k, out_div):
            return spikes, margin       # the C loop, exact in float32 (it checked every value)
    xq = (xs * float(k.s_scale)).trunc_()                       # float32, SLAYER's (4096 x).to(int64)
    if xq.numel() and not const_in and T > 1:   # each step's largest input: the current's bound
        steps = torch.linalg.vector_norm(xq, float("inf"), dim=tuple(range(1, xq.dim())))
        peak, drive = float(steps.max()), float(steps.sum())
    else:
        peak = float(torch.linalg.vector_norm(xq, float("inf"))) if xq.numel() else 0.0
        drive = T * peak
    dtype = dtype or _regime(k, T, peak, drive)
    if xq.shape[0] > 1 and xq.stride(0) < max(xq.stride()):
        xq = xq.contiguous()        # time-first slices (the network's tensors already are)
    xq = xq.to(dtype)               # keeps the layout of each frame (channels-last or not)
    c = torch.zeros_like(xq[0])
    v = torch.zeros_like(c)
    r = torch.zeros_like(c)
    th = torch.full_like(c, k.th0) if k.th_step else None
    inv = 1.0 / k.s_scale
    spikes = _empty_steps(c, T)
    margin = _empty_steps(c, T) if keep else None
    exact32 = dtype == torch.float32
    zero = torch.zeros((), dtype=torch.float32, device=x.device)
    one = torch.ones((), dtype=dtype, device=x.device)
    d, hit = (torch.empty_like(c), torch.empty_like(c)) if exact32 else (None, None)
    for t in range(T):
        c = _rstz(c, k.m_c).add_(xq[0 if const_in else t])
        v = _rstz(v, k.m_v).add_(c if exact32 else _as_f32(c, dtype))
        r = _rstz(r, k.m_r)
        if th is not None:
            th = _rstz(th.sub_(k.th0), k.m_th).add_(k.th0)
        if exact32:   # every value exact in float32: SLAYER's float test is the integer one
            torch.sub(v, r, out=d).sub_(th if th is not None else k.th0)   # v - (th + r)
            torch.heaviside(d, one, out=hit)                               # 1.0 where v >= th + r
            if k.graded:   # (v / 4096) / out_div in one rounding: 4096 is a power of two
                torch.mul(v, hit, out=spikes[t]).div_(k.s_scale * out_div)
            else:
                spikes[t] = hit
            if keep:
                torch.mul(d, inv, out=margin[t])
        else:
            tr = r + (th if th is not None else k.th0)
            vf = v.to(torch.float32)
            hit = vf.to(dtype) >= tr
            # SLAYER's spike function compares its float32 outputs: v/4096 >= th/4096 + r/4096
            vn = vf * inv
            thr = (th.to(torch.float32) * inv if th is not None else k.th0_f32) + r.to(torch.float32) * inv
            s = vn >= thr
            spikes[t] = torch.where(s, vn, zero).div_(out_div) if k.graded else s
            if keep:
                torch.sub(vn, thr, out=margin[t])
        if th is not None:
            r = r.add_(hit * (2 * th))
            th = th.add_(hit, alpha=k.th_step)
        else:
            r = r.add_(hit, alpha=2 * k.th0)
    return spikes, margin


class _FusedALIFFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, k: _Constants, out_div: float) -> torch.Tensor:  # noqa: D401
        keep = bool(ctx.needs_input_grad[0])
        spikes, margin = _forward_loop(x, k, keep=keep, out_div=out_div)
        if keep:
            ctx.save_for_backward(margin)
        ctx.k = k
        ctx.out_div = out_div
        return spikes

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        margin, = ctx.saved_tensors
        k: _Constants = ctx.k
        # in place, in the order (and so with the roundings) of the expressions in the comments
        if k.graded:   # SLAYER spike.py _spike_backward, graded branch:
            # k.scale * torch.exp(torch.clamp(margin, max=0) / k.tau) * (grad / ctx.out_div)
            g = margin.clamp(max=0).div_(k.tau).exp_().mul_(k.scale)
            g.mul_(grad if ctx.out_div == 1.0 else grad / ctx.out_div)
        else:          # k.scale / 2 / k.tau * torch.exp(-torch.abs(margin) / k.tau) * grad
            g = margin.abs().neg_().div_(k.tau).exp_().mul_(k.scale / 2 / k.tau).mul_(grad)
        g_v, g_c = k.g_v.to(g.device), k.g_c.to(g.device)
        out = torch.empty_like(g)
        if native.available() and native.same_dense_frames(g, out):
            native.backward(g, out, float(g_v), float(g_c))
            return out, None, None
        gv = gc = None
        for t in range(g.shape[0] - 1, -1, -1):   # voltage, then current leaky integrator
            gv = g[t] if gv is None else g_v * gv + g[t]
            gc = gv if gc is None else g_c * gc + gv
            out[t] = gc
        return out, None, None


class FusedALIF(slayer_alif.Neuron):
    """SLAYER's ALIF neuron (same parameters, export and ``dynamics``) with a fused forward.

    Only the configuration SpikeReg uses is fused (shared parameters, no persistent state, no
    norm or dropout); anything else is refused at construction. Learnable decays
    (``requires_grad``, :attr:`NeuronConfig.learn_decays`) run SLAYER's own time loop while
    their gradient is needed (training) and the fused one otherwise: the same numbers.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.shared_param or self.persistent_state:
            raise ValueError("FusedALIF supports shared, non-persistent neurons only")
        if self.norm is not None or self.drop is not None:
            raise ValueError("FusedALIF has no norm or dropout")

    def clamp(self) -> None:
        """SLAYER's clamp of the decays to [0, 4096], with the current decay kept >= 1/4096: a
        current that never decays (iDecay 0) has no ATRLIF equivalent (calibration refuses it)."""
        super().clamp()
        with torch.no_grad():
            self.current_decay.data.clamp_(min=1.0)

    def forward(self, input: torch.Tensor, payload_div: float = 1.0) -> torch.Tensor:  # noqa: A002
        """Spikes of ``(N, ..., T)`` input (time last, as SLAYER), same shape.

        ``payload_div``: graded payloads come divided by it, the same numbers (and gradients)
        as dividing SLAYER's output, one pass cheaper."""
        if self.requires_grad:
            if torch.is_grad_enabled():    # SLAYER's loop (it clamps): gradients to the decays too
                out = super().forward(input)
                return out / payload_div if self.graded_spike and payload_div != 1.0 else out
            self.clamp()
        xt = input.movedim(-1, 0)
        return _FusedALIFFunction.apply(xt, _Constants(self), float(payload_div)).movedim(0, -1)
