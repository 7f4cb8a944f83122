"""Calibration on data: per-layer statistics of the float model, weight-exponent choice, check.

1. :func:`collect_float_stats` runs calibration pairs of the TRAIN split through the float model
   with the real host pipeline (tiling + coarse-to-fine residual policy, so patches at every
   scale and after warping are seen) and records, per layer, the pre-activations (synaptic input),
   the SLAYER neuron states (current, voltage, refractory) converted to ATRLIF integer units at
   weight exponent 0, and the spike rates. The patches are kept for step 3.
2. :func:`choose_weight_exps` picks per layer the finest weight exponent (largest ``e <= 0``)
   among those for which the threshold mantissa is an exact 12-bit integer and the predicted
   peaks ``peak_0 * 2**e`` of ``i``, ``v``, ``r`` stay below ``2**23`` with ``headroom_bits`` to
   spare and ``a_in`` within the nominal 16-bit activation. Rounding error only grows as ``e``
   decreases (coarser input), so the finest feasible exponent minimises quantization error.
3. :func:`verify` emulates the quantized network on the same patches and compares with the float
   model: spike agreement per layer end to end and teacher-forced (each layer fed the float
   model's input spikes, which isolates the arithmetic of that layer), rates, and the emulator's
   own overflow counters (24-bit wraps / saturations; must be 0).

Quantization-aware fine-tuning is not built: the weights are trained on the 8-bit grid already
(``pre_hook_fx = quantize_8bit``), the binary-spike layers map bit-exactly, and only the
graded-input layer differs by rounding (see docs/calibration.md). If a future model lost accuracy
here, the route is SLAYER's: fine-tune with the emulator's input rounding in the forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from spikereg_neuro.inference import normalize_intensity, register_tensors
from spikereg_neuro.model.neuron import reset_neuron
from spikereg_neuro.model.unet import SpikeRegUNet

from . import loihi_rules as R
from .emulator import LayerStats, emulate, payload_of, spike_agreement
from .netfile import QuantizedLayer, QuantizedNet
from .quantize import feasible_weight_exps, input_gain, layers_with_split_folds

_SAMPLE = 20000  # |a_in| values kept per layer and batch for percentiles


@dataclass
class FloatLayerStats:
    """Float-model statistics of one layer, states in ATRLIF integer units at weight_exp 0."""

    a_in_peak: float = 0.0
    i_peak: float = 0.0
    v_peak: float = 0.0
    r_peak: float = 0.0
    spikes: float = 0.0
    neuron_steps: int = 0
    silent: int = 0
    neurons: int = 0
    samples: List[np.ndarray] = field(default_factory=list)
    spikes_per_step: Optional[np.ndarray] = None

    @property
    def rate(self) -> float:
        return self.spikes / self.neuron_steps if self.neuron_steps else float("nan")

    def percentile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        return float(np.percentile(np.concatenate(self.samples), q))

    def to_dict(self) -> Dict[str, float]:
        return {"a_in_peak": self.a_in_peak, "a_in_p99_9": self.percentile(99.9),
                "a_in_mean_abs": float(np.concatenate(self.samples).mean()) if self.samples else 0.0,
                "i_peak": self.i_peak, "v_peak": self.v_peak, "r_peak": self.r_peak,
                "rate": self.rate, "silent_fraction": self.silent / self.neurons if self.neurons else float("nan"),
                "rate_per_step": (self.spikes_per_step / max(1, self.neurons)).tolist()
                if self.spikes_per_step is not None else []}


class FloatRecorder:
    """Forward hooks on a SpikeRegUNet: per block the synaptic input and output spikes.

    ``with FloatRecorder(net) as rec: net(f, m)`` then ``rec.pre[name]`` (float pre-activation,
    ``(N, C, D, H, W, T)``) and ``rec.out[name]`` (spikes, or the read-out field).
    """

    def __init__(self, net: SpikeRegUNet, keep_pre: bool = True) -> None:
        self.net = net
        self.keep_pre = keep_pre
        self.pre: Dict[str, torch.Tensor] = {}
        self.out: Dict[str, torch.Tensor] = {}
        self._hooks: List[Any] = []

    def __enter__(self) -> "FloatRecorder":
        if self.keep_pre:   # per-step read-out inputs (the read-out otherwise sums over time first)
            self._per_step = self.net.readout.per_step
            self.net.readout.per_step = True
        for b in self.net.blocks():
            if self.keep_pre:
                self._hooks.append(b.synapse.register_forward_hook(
                    lambda mod, inp, out, n=b.name: self.pre.__setitem__(n, out.detach())))
            self._hooks.append(b.register_forward_hook(
                lambda mod, inp, out, n=b.name: self.out.__setitem__(n, out.detach())))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self.keep_pre:
            self.net.readout.per_step = self._per_step


@torch.no_grad()
def _accumulate(net: SpikeRegUNet, rec: FloatRecorder, stats: Dict[str, FloatLayerStats],
                gen: np.random.Generator) -> None:
    s_scale = float(R.SLAYER_S_SCALE)
    for b in net.blocks():
        st = stats.setdefault(b.name, FloatLayerStats())
        pre = rec.pre[b.name]
        gain = input_gain(net, b.name)
        a = (pre.abs() * R.SLAYER_W_SCALE * gain).flatten()
        st.a_in_peak = max(st.a_in_peak, float(a.max()))
        k = min(_SAMPLE, a.numel())
        idx = torch.from_numpy(gen.choice(a.numel(), size=k, replace=False))
        st.samples.append(a[idx].numpy().astype(np.float64))
        if b.name == "readout":
            v = torch.cumsum(pre, dim=-1) * s_scale * gain
            st.i_peak = max(st.i_peak, float(pre.abs().max()) * s_scale * gain)
            st.v_peak = max(st.v_peak, float(v.abs().max()))
            continue
        reset_neuron(b.neuron)
        cur, vol, _th, ref = b.neuron.dynamics(pre)
        reset_neuron(b.neuron)
        st.i_peak = max(st.i_peak, float(cur.abs().max()) * s_scale * gain)
        st.v_peak = max(st.v_peak, float(vol.abs().max()) * s_scale * gain)
        r_after = ref + 2 * _th * (rec.out[b.name] > 0)   # r after the post-spike increment
        st.r_peak = max(st.r_peak, float(r_after.abs().max()) * s_scale * gain)
        s = rec.out[b.name] > 0
        st.spikes += float(s.sum())
        st.neuron_steps += s.numel()
        nn = s[..., 0].numel()
        st.neurons += nn
        st.silent += int((~s.any(dim=-1)).sum())
        per = s.sum(dim=(0, 1, 2, 3, 4)).numpy().astype(np.float64)
        st.spikes_per_step = per if st.spikes_per_step is None else st.spikes_per_step + per


@dataclass
class CalibrationData:
    stats: Dict[str, FloatLayerStats]
    patches: List[Tuple[torch.Tensor, torch.Tensor]]   # (fixed, moving) batches seen
    n_patches: int
    description: Dict[str, Any]


@torch.no_grad()
def collect_float_stats(net: SpikeRegUNet, pairs: Sequence[Mapping[str, Any]], patch: Sequence[int],
                        stride: Sequence[int], batch_size: int = 4, max_patches: int = 0,
                        seed: int = 0, description: Optional[Dict[str, Any]] = None,
                        progress: Optional[Callable[[int], None]] = None) -> CalibrationData:
    """Run ``pairs`` (dicts with ``fixed``/``moving`` float volumes, e.g. from
    ``load_pairs_numpy(h5, 'train', ...)``) through the float model by the host pipeline and
    collect per-layer statistics. ``max_patches`` (> 0) keeps at most that many patches for the
    verification step (evenly spaced); statistics use every patch."""
    net.eval()
    gen = np.random.default_rng(seed)
    stats: Dict[str, FloatLayerStats] = {}
    kept: List[Tuple[torch.Tensor, torch.Tensor]] = []
    count = [0]

    def predict(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        with FloatRecorder(net) as rec:
            u = net(f, m)
        _accumulate(net, rec, stats, gen)
        kept.append((f.clone(), m.clone()))
        count[0] += f.shape[0]
        if progress is not None:
            progress(f.shape[0])
        return u

    for p in pairs:
        f = torch.from_numpy(normalize_intensity(p["fixed"]))[None, None]
        m = torch.from_numpy(normalize_intensity(p["moving"]))[None, None]
        register_tensors(predict, net.cfg.scales, f, m, patch, stride, batch_size,
                         integration_steps=net.cfg.integration_steps)
    if max_patches and count[0] > max_patches:
        flat = [(f[i:i + 1], m[i:i + 1]) for f, m in kept for i in range(f.shape[0])]
        pick = np.linspace(0, len(flat) - 1, int(max_patches)).round().astype(int)
        flat = [flat[i] for i in pick]
        kept = [(torch.cat([a for a, _ in flat[i:i + batch_size]]), torch.cat([b for _, b in flat[i:i + batch_size]]))
                for i in range(0, len(flat), batch_size)]
    desc = dict(description or {})
    desc.update({"pairs": [list(map(int, p["pair"])) for p in pairs if "pair" in p],
                 "patches_seen": count[0], "patches_verified": sum(f.shape[0] for f, _ in kept),
                 "patch_size": list(map(int, patch)), "stride": list(map(int, stride)),
                 "scales": list(net.cfg.scales)})
    return CalibrationData(stats=stats, patches=kept, n_patches=count[0], description=desc)


def choose_weight_exps(net: SpikeRegUNet, stats: Mapping[str, FloatLayerStats],
                       headroom_bits: float = 1.0) -> Tuple[Dict[str, int], Dict[str, Dict[str, Any]]]:
    """Per layer the finest weight exponent whose predicted integer peaks fit (see module doc).

    Returns the exponents and, per layer, the reasoning (feasible set, predicted peaks, headroom).
    """
    limit = R.STATE_MAX / (2.0 ** headroom_bits)
    act_limit = 2 ** (R.ACTIVATION_BITS - 1) - 1
    exps: Dict[str, int] = {}
    why: Dict[str, Dict[str, Any]] = {}
    split_folds = layers_with_split_folds(net)
    for b in net.blocks():
        st = stats.get(b.name)
        if st is None:
            raise ValueError(f"no calibration statistics for layer {b.name}")
        if b.name == "readout":
            feas = list(range(R.WEIGHT_EXP_MIN, 1))
        else:
            feas = [e for e in feasible_weight_exps(b.neuron.v_th_mant, input_gain(net, b.name)) if e <= 0]
        # an upsampled edge whose folded synapses leave 8 bits is split over several Sparse
        # matrices, which is exact only without a right shift (sim.lowering): exponent 0 then
        split = b.name in split_folds
        if split and 0 in feas:
            feas = [0]
        peak = max(st.i_peak, st.v_peak, st.r_peak)
        chosen, fits = None, False
        for e in sorted(feas, reverse=True):
            if peak * 2.0 ** e <= limit and st.a_in_peak * 2.0 ** e <= act_limit:
                chosen, fits = e, True
                break
        if chosen is None:
            chosen = min(feas)
        exps[b.name] = chosen
        why[b.name] = {
            "feasible_weight_exps": feas, "weight_exp": chosen, "fits": fits,
            "predicted_state_peak": peak * 2.0 ** chosen,
            "predicted_a_in_peak": st.a_in_peak * 2.0 ** chosen,
            "state_headroom_bits": R.state_headroom_bits(peak * 2.0 ** chosen),
            "required_headroom_bits": headroom_bits,
            "folded_upsampling_split": split,
        }
    return exps, why


@torch.no_grad()
def verify(net: SpikeRegUNet, q: QuantizedNet, patches: Sequence[Tuple[torch.Tensor, torch.Tensor]]
           ) -> Dict[str, Dict[str, Any]]:
    """Float vs emulator on the same patches: per layer end-to-end and teacher-forced spike
    agreement, rates, integer peaks and overflow counts; plus the read-out field difference."""
    agg: Dict[str, Dict[str, float]] = {}
    e2e_stats: Dict[str, LayerStats] = {}
    field_abs, field_max, field_n = 0.0, 0.0, 0
    for f, m in patches:
        with FloatRecorder(net, keep_pre=False) as rec:
            u = net(f, m)
        pl = payload_of(q, f, m)
        r = emulate(q, pl, record_spikes=True, stats=e2e_stats)
        forced = {k: forced_output(q.layer(k), v) for k, v in rec.out.items() if k != q.readout.name}
        rt = emulate(q, pl, record_spikes=True, forced=forced)
        d = (u - r.field).abs()
        field_abs += float(d.sum())
        field_max = max(field_max, float(d.max()))
        field_n += d.numel()
        for name, s in r.spikes.items():
            fs = rec.out[name] > 0
            a = spike_agreement(fs, s)
            t = spike_agreement(fs, rt.spikes[name])
            g = agg.setdefault(name, {"entries": 0, "mismatch_e2e": 0, "mismatch_tf": 0,
                                      "spikes_float": 0, "spikes_quant": 0})
            g["entries"] += a["entries"]
            g["mismatch_e2e"] += a["mismatches"]
            g["mismatch_tf"] += t["mismatches"]
            g["spikes_float"] += int(fs.sum())
            g["spikes_quant"] += int((s != 0).sum())
    out: Dict[str, Dict[str, Any]] = {}
    for name, g in agg.items():
        n = max(1, g["entries"])
        out[name] = {
            "spike_agreement": 1 - g["mismatch_e2e"] / n,
            "spike_agreement_teacher_forced": 1 - g["mismatch_tf"] / n,
            "mismatches": g["mismatch_e2e"], "mismatches_teacher_forced": g["mismatch_tf"],
            "entries": g["entries"],
            "rate_float": g["spikes_float"] / n, "rate_quantized": g["spikes_quant"] / n,
        }
    for name, st in e2e_stats.items():
        out.setdefault(name, {}).update({
            "emulated_a_in_max": st.a_in_max, "emulated_i_max": st.i_max, "emulated_v_max": st.v_max,
            "emulated_r_max": st.r_max, "current_wraps": st.current_wraps,
            "voltage_saturations": st.voltage_saturations,
            "state_headroom_bits": R.state_headroom_bits(max(st.i_max, st.v_max, st.r_max)),
        })
    out["_field"] = {"mean_abs_diff_vox": field_abs / max(1, field_n), "max_abs_diff_vox": field_max,
                     "patches": sum(f.shape[0] for f, _ in patches)}
    return out


def forced_output(layer: QuantizedLayer, out: torch.Tensor) -> torch.Tensor:
    """A float layer's output as the emulator's: spikes (bool), or for a graded layer the payload
    ``floor(gain * v / theta)`` (int64) where it spiked."""
    if not layer.graded_output:
        return out > 0
    return torch.where(out > 0, torch.floor(out.double() * layer.payload_gain), 0).to(torch.int64)


def summarize_stats(stats: Mapping[str, FloatLayerStats]) -> Dict[str, Dict[str, float]]:
    return {k: v.to_dict() for k, v in stats.items()}


__all__ = ["FloatRecorder", "FloatLayerStats", "CalibrationData", "collect_float_stats",
           "choose_weight_exps", "verify", "summarize_stats"]
