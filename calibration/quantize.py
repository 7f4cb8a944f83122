"""Float SpikeReg network -> :class:`~calibration.netfile.QuantizedNet` (Loihi 2 fixed point).

The trained weights already live on SLAYER's 8-bit grid (``pre_hook_fx = quantize_8bit``), so
their integer mantissas are taken as they are. What remains is, per layer, the weight exponent
``e`` (chosen by :mod:`calibration.calibrate`) and the threshold mantissa that goes with it:

* binary-spike layers: the float model integrates ``sum(w * s)`` with ``w = m / 64``; ATRLIF
  integrates ``a = shift(sum(m * s), e)`` left-shifted by 6. With ``e = 0`` the integer states are
  SLAYER's own integer states (``s_scale = 4096``), ``theta_0 = vThMant``, and the mapping is
  exact. With ``e < 0`` the states shrink by ``2**e`` and ``theta_0 = vThMant * 2**e``.
* the graded-input layer: the float model sees ``payload / (2**bits - 1)``; Loihi multiplies
  the integer payload by the weight, so the input is ``2**bits - 1`` times larger in integer
  units (``input_gain``). The threshold absorbs that gain:
  ``theta_0 = vThMant * (2**bits - 1) * 2**e`` (an integer for ``-6 <= e``, and within 12 bits
  for ``e <= -2`` with the default ``vThMant = 64``).
* the read-out: integrator neurons (ATRLIF with ``delta_i = 4095/4096`` so that the current is the
  input, ``delta_v = 0``, threshold out of reach); ``field = output_scale * v_T`` with
  ``output_scale = readout_scale * 2**-e / (64 * 64 * T)``.

* graded-spike networks (``neuron.graded_spike``): a spiking layer's float output is
  ``p = v / theta`` where it spikes. On Loihi it sends the payload ``v >> k``, which is
  ``floor(G * p)`` when ``64 * theta_0 = G * 2**k``. One payload gain ``G`` serves every graded
  layer: ``G = (2**input_bits - 1) * 2**j`` with the largest ``j`` such that a consumer's
  ``theta_0 = vThMant * G`` fits 12 bits at weight exponent 0 (``vThMant = 256``, 8-bit input:
  ``G = 255 / 16``, ``theta_0 = 4080``, ``k = 14``; ``enc0``, which reads the input at gain 255 with
  ``e = -4``, has ``theta_0 = 4080`` too). Weight exponent 0 matters: the x2-upsampled edges fold
  up to 8 weights into one synapse and need splitting across processes, which is exact only
  without a right shift (:mod:`sim.lowering`). ``vThMant`` must be a power of two.

Decays map exactly: ``delta_i = (iDecay - 1) / 4096`` (ATRLIF adds ``ds_offset = 1`` to the
current decay), ``delta_v = vDecay / 4096``, ``delta_theta = thDecay / 4096``,
``delta_r = refDecay / 4096``; ``theta_step = vThStep`` (threshold adaptation, 0 by default).

Input schedule: ``ModelConfig.input_once`` (absent in older configs: False) is recorded as
``QuantizedNet.input_once``; the input layer's slow current decay that goes with it (SLAYER
``iDecay = 1``, ATRLIF ``delta_i = 0``) comes through the exported neuron like any decay.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from spikereg_neuro.connections import Connection
from spikereg_neuro.geometry import up2_group_matrices
from spikereg_neuro.hardware import neuron_kind
from spikereg_neuro.model.unet import SpikeRegUNet

from . import loihi_rules as R
from .netfile import LayerInput, QuantizedLayer, QuantizedNet, validate_qnet


def graded_payload_gain(net: SpikeRegUNet) -> float:
    """Payload units per threshold of a graded-spike network's hidden layers (module doc)."""
    m = int(net.enc[0].neuron.v_th_mant)
    if m < 1 or m & (m - 1):
        raise ValueError(f"graded spikes need a power-of-two threshold mantissa vThMant (threshold x "
                         f"{R.SLAYER_W_SCALE}), got {m}")
    g = float(2 ** net.cfg.input_bits - 1)
    while m * g > R.THETA_MAX:
        g /= 2
    while m * g * 2 <= R.THETA_MAX:
        g *= 2
    return g


def input_gain(net: SpikeRegUNet, name: str) -> float:
    """Integer input units per float unit of a layer's input: ``2**input_bits - 1`` for the
    graded-input layer; the payload gain (:func:`graded_payload_gain`) for the other layers of a
    graded-spike network; 1 for binary spikes."""
    if name == net.enc[0].name:
        return 2 ** net.cfg.input_bits - 1
    if net.cfg.neuron.graded_spike:
        return graded_payload_gain(net)
    return 1


def payload_shift(theta_0: int, gain: float, name: str = "layer") -> int:
    """``k`` with ``64 * theta_0 = gain * 2**k``: the voltage shift that makes a graded layer's
    payload ``floor(gain * v / theta)``."""
    x = (1 << R.ACT_SHIFT) * int(theta_0) / float(gain)
    k = int(round(np.log2(x))) if x > 0 else -1
    if k < 0 or float(2 ** k) != x or k >= R.MAX_PAYLOAD_BITS:
        raise ValueError(f"{name}: 64 * theta_0 / payload gain = {x} is not a power of two in "
                         f"[1, 2**{R.MAX_PAYLOAD_BITS - 1}]; no voltage shift gives the payload")
    return k


def theta_mantissa(v_th_mant: int, gain: float, weight_exp: int) -> Tuple[int, bool]:
    """``theta_0 = vThMant * gain * 2**weight_exp`` rounded to an integer; ``exact`` flag."""
    x = int(v_th_mant) * float(gain) * (2.0 ** int(weight_exp))
    t = int(round(x))
    return t, float(t) == x


def feasible_weight_exps(v_th_mant: int, gain: float) -> List[int]:
    """Weight exponents for which ``theta_0`` is an exact integer within 12 bits (>= 1)."""
    out = []
    for e in range(R.WEIGHT_EXP_MIN, R.WEIGHT_EXP_MAX + 1):
        t, exact = theta_mantissa(v_th_mant, gain, e)
        if exact and 1 <= t <= R.THETA_MAX:
            out.append(e)
    return out


def default_weight_exp(feasible: List[int]) -> int:
    """The finest feasible exponent: 0 if allowed, else the largest negative one."""
    if 0 in feasible:
        return 0
    neg = [x for x in feasible if x < 0]
    return max(neg) if neg else min(feasible)


def folded_upsample_range(weight: np.ndarray) -> Tuple[int, int]:
    """Smallest and largest synapse of a stride-1 3^3 conv that reads an x2 nearest-upsampled
    source with the upsampling folded into its weights (as :mod:`sim.lowering` builds it)."""
    w = np.asarray(weight, dtype=np.int64)
    if tuple(w.shape[2:]) != (3, 3, 3):
        raise ValueError(f"folding is defined for 3x3x3 kernels, got {w.shape[2:]}")
    # per phase of an output (even / odd position), the taps of a 3-kernel that read the same
    # source neuron (spikereg_neuro.geometry; a border output loses a whole group, never part of one)
    groups = up2_group_matrices(3, 1, 1)
    lo, hi = 0, 0
    for a in groups:
        for b in groups:
            for c in groups:
                f = np.einsum("ocxyz,ix,jy,kz->ocijk", w, a, b, c)
                lo, hi = min(lo, int(f.min())), max(hi, int(f.max()))
    return lo, hi


def layers_with_split_folds(net: SpikeRegUNet) -> Set[str]:
    """Blocks with an upsampled input edge whose folded synapses leave the 8-bit range, so that
    lava needs several Sparse matrices for it (exact only at weight exponent >= 0)."""
    edges = _inputs(net)
    out = set()
    for d in net.export():
        w = np.rint(np.asarray(d["weight"], dtype=np.float64)).astype(np.int64)
        for e in edges[d["name"]]:
            if e.upsample > 1:
                lo, hi = folded_upsample_range(w[:, e.channels[0]:e.channels[1]])
                if lo < R.WEIGHT_MIN or hi > R.WEIGHT_MAX:
                    out.add(d["name"])
    return out


def readout_output_scale(readout_scale: float, weight_exp: int, time_window: int, gain: float = 1) -> float:
    """Voxels per unit of the read-out voltage after the last step (``gain``: integer input units
    per float unit of the read-out's input, 1 for binary spikes)."""
    return float(readout_scale) * (2.0 ** -int(weight_exp)) / (
        (1 << R.ACT_SHIFT) * R.SLAYER_W_SCALE * int(time_window) * float(gain))


def _inputs(net: SpikeRegUNet) -> Dict[str, List[LayerInput]]:
    """Connectivity (with upsampling, concatenation slices and time offsets) of each block."""
    exp = {d["name"]: d for d in net.export()}
    out_ch = {"input": net.cfg.in_channels}
    window = {"input": net.cfg.enc_windows[0]}
    res: Dict[str, List[LayerInput]] = {}
    for name, d in exp.items():
        edges, pos = [], 0
        for label in d["inputs"]:
            conn = Connection.parse(label)
            c = out_ch[conn.source]
            off = 0 if conn.reads_input else window[conn.source] - d["time_window"]
            edges.append(LayerInput.of(conn, (pos, pos + c), off))
            pos += c
        if pos != d["in_channels"]:
            raise ValueError(f"block {name}: inputs give {pos} channels, the synapse has {d['in_channels']}")
        res[name] = edges
        out_ch[name] = d["out_channels"]
        window[name] = d["time_window"]
    return res


def quantize_network(
    net: SpikeRegUNet,
    weight_exps: Optional[Mapping[str, int]] = None,
    *,
    source_checkpoint: str = "",
    source_sha256: str = "",
    calibration: Optional[Dict[str, Any]] = None,
    patch_size: Sequence[int] = (32, 32, 32),
    stride: Sequence[int] = (16, 16, 16),
) -> QuantizedNet:
    """Build the QuantizedNet of ``net`` with the given per-layer weight exponents (default 0,
    or the smallest feasible one where 0 would break the 12-bit threshold)."""
    weight_exps = dict(weight_exps or {})
    edges = _inputs(net)
    layers: List[QuantizedLayer] = []
    for d in net.export():
        name = d["name"]
        w = np.asarray(d["weight"], dtype=np.float64)
        wi = np.rint(w).astype(np.int64)
        if not np.array_equal(wi, w):
            raise ValueError(f"{name}: exported weights are not integers (was the layer trained "
                             "without the 8-bit pre_hook_fx?)")
        R.check_weights(wi, name)
        if int(d["weight_scale"]) != R.SLAYER_W_SCALE:
            raise ValueError(f"{name}: weight scale {d['weight_scale']} != {R.SLAYER_W_SCALE}")
        gain = input_gain(net, name)
        T = int(d["time_window"])
        graded = any(e.source == "input" for e in edges[name])
        hidden_graded = net.cfg.neuron.graded_spike and not graded
        nmb = net.cfg.input_bits if graded else (R.MAX_PAYLOAD_BITS if hidden_graded else 0)
        if d["neuron_kind"] == "integrator":
            e = int(weight_exps.get(name, 0))
            R.check_weight_exp(e, name)
            atr = {"delta_i": (R.DECAY_UNITY - 1) / R.DECAY_UNITY, "delta_v": 0.0, "delta_theta": 0.0,
                   "delta_r": 0.0, "theta_0": R.NON_SPIKING_THETA_0, "theta_step": 0,
                   "bias_mant": 0, "bias_exp": 0}
            layer = QuantizedLayer(
                name=name, neuron="integrator", weight=wi.astype(np.int16), weight_exp=e,
                kernel_size=tuple(d["kernel_size"]), stride=tuple(d["stride"]), padding=tuple(d["padding"]),
                inputs=edges[name], time_window=T, atrlif=atr,
                num_message_bits=nmb, input_gain=gain,
                output_scale=readout_output_scale(d["output_scale"], e, T, gain),
                slayer={"neuron": d["neuron"], "output_scale": d["output_scale"]})
        else:
            kind = neuron_kind(d["neuron_kind"])
            if kind.lava != "atrlif":
                raise ValueError(f"{name}: neuron kind {d['neuron_kind']!r} has no ATRLIF mapping "
                                 "(only SLAYER ALIF maps to lava-nc ATRLIF)")
            dp = d["neuron"]
            feas = feasible_weight_exps(dp["vThMant"], gain)
            if not feas:
                raise ValueError(f"{name}: no weight exponent gives a 12-bit integer threshold "
                                 f"(vThMant={dp['vThMant']}, input gain {gain})")
            e = int(weight_exps.get(name, default_weight_exp(feas)))
            R.check_weight_exp(e, name)
            theta_0, exact = theta_mantissa(dp["vThMant"], gain, e)
            if not exact or not 1 <= theta_0 <= R.THETA_MAX:
                raise ValueError(f"{name}: weight_exp {e} gives threshold mantissa "
                                 f"{dp['vThMant'] * gain * 2.0 ** e} (must be an integer in [1, {R.THETA_MAX}]); "
                                 f"feasible exponents: {feas}")
            step, step_exact = theta_mantissa(dp["vThStep"], gain, e)
            if not step_exact:
                raise ValueError(f"{name}: threshold step {dp['vThStep']} not representable at weight_exp {e}")
            atr = R.atrlif_deltas_from_slayer(dp["iDecay"], dp["vDecay"], dp["thDecay"], dp["refDecay"])
            atr.update(theta_0=theta_0, theta_step=step, bias_mant=0, bias_exp=0)
            layer = QuantizedLayer(
                name=name, neuron=kind.lava, weight=wi.astype(np.int16), weight_exp=e,
                kernel_size=tuple(d["kernel_size"]), stride=tuple(d["stride"]), padding=tuple(d["padding"]),
                inputs=edges[name], time_window=T, atrlif=atr,
                num_message_bits=nmb, input_gain=gain,
                slayer={"neuron": {k: (bool(v) if isinstance(v, (bool, np.bool_)) else v)
                                   for k, v in dp.items()}},
                payload_shift=(payload_shift(theta_0, graded_payload_gain(net), name)
                               if net.cfg.neuron.graded_spike else -1))
        layers.append(layer)
    cfg = net.cfg
    q = QuantizedNet(layers=layers, enc_windows=cfg.enc_windows, dec_window=cfg.dec_window,
                     input_bits=cfg.input_bits, in_channels=cfg.in_channels, scales=cfg.scales,
                     readout_scale=cfg.readout_scale, source_checkpoint=str(source_checkpoint),
                     source_sha256=str(source_sha256), calibration=dict(calibration or {}),
                     model_config=cfg.to_dict(), patch_size=tuple(patch_size), stride=tuple(stride),
                     integration_steps=cfg.integration_steps,
                     input_once=bool(getattr(cfg, "input_once", False)))
    return validate_qnet(q)


@torch.no_grad()
def weight_errors(net: SpikeRegUNet, q: QuantizedNet) -> Dict[str, Dict[str, float]]:
    """Per layer: integer weights vs the float forward weights, and vs the latent float weights.

    ``forward_max_abs_err`` compares ``weight / 64`` with what the float model's forward pass
    uses (``pre_hook_fx(weight)``); it is 0 when the weights were trained on the 8-bit grid.
    ``latent_*`` compare with the un-quantized parameters (the rounding training absorbed).
    """
    out = {}
    for b in net.blocks():
        syn = b.synapse
        fwd = syn.effective_weight().double()
        latent = syn.weight.double()
        qw = torch.from_numpy(q.layer(b.name).weight.astype(np.float64)) / R.SLAYER_W_SCALE
        err = (qw - fwd).abs()
        lat = latent - fwd
        out[b.name] = {
            "forward_max_abs_err": float(err.max()),
            "latent_rmse": float(lat.pow(2).mean().sqrt()),
            "latent_max_abs_err": float(lat.abs().max()),
            "latent_rel_rmse": float(lat.pow(2).mean().sqrt() / latent.pow(2).mean().sqrt().clamp_min(1e-30)),
            "weight_min": int(q.layer(b.name).weight.min()),
            "weight_max": int(q.layer(b.name).weight.max()),
            "zero_fraction": float((q.layer(b.name).weight == 0).mean()),
        }
    return out
