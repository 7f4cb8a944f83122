"""Fidelity report: float vs quantized (emulated) network on the held-out demo pairs.

Both networks run through the same host pipeline (``register_tensors``: same tiling, blending
and coarse-to-fine residual policy); only the per-patch predictor differs. The report has Dice
float vs quantized per pair and mean, the field difference, and per layer the weight error,
spike-rate change, calibration statistics, chosen exponents and spike agreement.
``calibration_report.json`` holds ``dice_float``, ``dice_quantized`` and ``dice_drop``
(``dice_float - dice_quantized``; positive = the quantized network is worse).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from spikereg_neuro.evaluate import evaluate_registration, mean_metrics
from spikereg_neuro.inference import SpikeRegInference, normalize_intensity, register_tensors
from spikereg_neuro.io.atomic import atomic_write_text
from spikereg_neuro.model.unet import SpikeRegUNet

from .emulator import LayerStats, emulator_predictor
from .netfile import QuantizedNet, _json_default

TARGET_DROP = 0.01
GOAL_DROP = 0.005

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def float_predictor(net: SpikeRegUNet, activity: Dict[str, Dict[str, float]]) -> Predictor:
    """The float network as a patch predictor that accumulates spikes and neuron-steps per layer."""
    def predict(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        u = net(f, m)
        for k, v in net.activity.items():
            a = activity.setdefault(k, {"spikes": 0.0, "neuron_steps": 0})
            a["spikes"] += float(v.sum())
            a["neuron_steps"] += net.num_neurons[k] * f.shape[0] * int(v.numel())
        return u
    return predict


@torch.no_grad()
def evaluate_pairs(predict: Predictor, scales: Sequence[int], pairs: Sequence[Mapping[str, Any]],
                   patch: Sequence[int], stride: Sequence[int], batch_size: int = 4,
                   progress: Optional[Callable[[str], None]] = None,
                   integration_steps: int = 0) -> List[Dict[str, Any]]:
    """Register each pair with ``predict`` by the host pipeline; metrics per pair, plus the field."""
    out = []
    for p in pairs:
        t0 = time.time()
        f = torch.from_numpy(normalize_intensity(p["fixed"]))[None, None]
        m = torch.from_numpy(normalize_intensity(p["moving"]))[None, None]
        u = register_tensors(predict, scales, f, m, patch, stride, batch_size,
                             integration_steps=integration_steps)
        field = u[0].cpu().numpy().astype(np.float32)
        wl = SpikeRegInference.apply_deformation(p["moving_labels"], field, labels=True)
        r = evaluate_registration(p["fixed_labels"], p["moving_labels"], wl, field, p["spacing"])
        r.update(pair=list(map(int, p["pair"])), seconds=time.time() - t0, field=field)
        out.append(r)
        if progress is not None:
            progress(f"pair {p['pair'][0]}->{p['pair'][1]}: Dice {r['dice']:.4f} ({r['seconds']:.1f} s)")
    return out


def compare_on_pairs(net: SpikeRegUNet, q: QuantizedNet, pairs: Sequence[Mapping[str, Any]],
                     patch: Sequence[int], stride: Sequence[int], batch_size: int = 4,
                     progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Dice (and more) float vs quantized on ``pairs`` with the same tiling and policy."""
    net.eval()
    act_f: Dict[str, Dict[str, float]] = {}
    st_q: Dict[str, LayerStats] = {}
    say = progress or (lambda s: None)
    say("float model:")
    rf = evaluate_pairs(float_predictor(net, act_f), net.cfg.scales, pairs, patch, stride, batch_size, progress,
                        net.cfg.integration_steps)
    say("quantized network (bit-accurate emulator):")
    rq = evaluate_pairs(emulator_predictor(q, st_q), q.scales, pairs, patch, stride, batch_size, progress,
                        q.integration_steps)
    per_pair = []
    for a, b in zip(rf, rq):
        d = np.abs(a["field"] - b["field"])
        per_pair.append({
            "pair": a["pair"], "dice_before": a["dice_before"], "dice_float": a["dice"], "dice_quantized": b["dice"],
            "dice_drop": a["dice"] - b["dice"], "hd95_float": a["hd95"], "hd95_quantized": b["hd95"],
            "folding_pct_float": a["folding_pct"], "folding_pct_quantized": b["folding_pct"],
            "field_mean_abs_diff_vox": float(d.mean()), "field_max_abs_diff_vox": float(d.max()),
            "seconds_float": a["seconds"], "seconds_quantized": b["seconds"],
        })
    mf = mean_metrics([{k: v for k, v in r.items() if k != "field"} for r in rf])
    mq = mean_metrics([{k: v for k, v in r.items() if k != "field"} for r in rq])
    rates = {}
    for k, a in act_f.items():
        rfl = a["spikes"] / a["neuron_steps"] if a["neuron_steps"] else float("nan")
        s = st_q.get(k)
        rq_ = s.rate if s is not None else float("nan")
        rates[k] = {"rate_float": rfl, "rate_quantized": rq_, "rate_change": rq_ - rfl,
                    "rate_rel_change": (rq_ - rfl) / rfl if rfl else float("nan"),
                    "current_wraps": s.current_wraps if s else 0,
                    "voltage_saturations": s.voltage_saturations if s else 0}
    return {"dice_float": mf["dice"], "dice_quantized": mq["dice"], "dice_drop": mf["dice"] - mq["dice"],
            "dice_before": mf["dice_before"], "hd95_float": mf["hd95"], "hd95_quantized": mq["hd95"],
            "folding_pct_float": mf["folding_pct"], "folding_pct_quantized": mq["folding_pct"],
            "pairs": per_pair, "rates": rates}


def build_report(*, q: QuantizedNet, comparison: Mapping[str, Any], weight_errors: Mapping[str, Any],
                 float_stats: Mapping[str, Any], exp_choice: Mapping[str, Any], verification: Mapping[str, Any],
                 schedule: Mapping[str, Any], meta: Mapping[str, Any]) -> Dict[str, Any]:
    """Assemble calibration_report.json's dictionary."""
    layers = {}
    for l in q.layers:
        n = l.name
        row: Dict[str, Any] = {
            "neuron": l.neuron, "weight_shape": list(l.weight.shape), "weight_exp": l.weight_exp,
            "theta_0": l.atrlif["theta_0"], "time_window": l.time_window,
            "inputs": [str(e.connection) for e in l.inputs],
            "weight_error": dict(weight_errors.get(n, {})),
            "calibration_stats": dict(float_stats.get(n, {})),
            "exponent_choice": dict(exp_choice.get(n, {})),
            "verification": dict(verification.get(n, {})),
            "demo_rates": dict(comparison["rates"].get(n, {})),
        }
        if l.output_scale is not None:
            row["output_scale"] = l.output_scale
        layers[n] = row
    drop = float(comparison["dice_drop"])
    return {
        "dice_float": float(comparison["dice_float"]),
        "dice_quantized": float(comparison["dice_quantized"]),
        "dice_drop": drop,
        "target_dice_drop": TARGET_DROP, "goal_dice_drop": GOAL_DROP,
        "meets_target": bool(drop <= TARGET_DROP), "meets_goal": bool(drop <= GOAL_DROP),
        "dice_before": comparison["dice_before"],
        "hd95_float": comparison["hd95_float"], "hd95_quantized": comparison["hd95_quantized"],
        "folding_pct_float": comparison["folding_pct_float"],
        "folding_pct_quantized": comparison["folding_pct_quantized"],
        "pairs": list(comparison["pairs"]),
        "field_on_calibration_patches": dict(verification.get("_field", {})),
        "layers": layers,
        "lava_schedule": dict(schedule),
        **dict(meta),
    }


def _f(x: Any, nd: int = 4) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf"
    return f"{x:.{nd}f}"


def report_markdown(rep: Mapping[str, Any]) -> str:
    """Human-readable calibration_report.md."""
    L: List[str] = []
    L.append("# Calibration report: float vs quantized (Loihi 2 fixed point)\n")
    L.append(f"- source checkpoint: `{rep.get('source_checkpoint', '')}` (sha256 `{rep.get('source_sha256', '')[:16]}…`)")
    L.append(f"- net file: `{rep.get('net_file', '')}`")
    L.append(f"- evaluation: {len(rep['pairs'])} held-out test pairs, same tiling "
             f"(patch {rep.get('patch_size')}, stride {rep.get('stride')}) and residual policy "
             f"(scales {rep.get('scales')}) for both networks")
    cal = rep.get("calibration", {})
    L.append(f"- calibration set: split `{cal.get('split')}`, pairs {cal.get('pairs')}, "
             f"{cal.get('patches_seen')} patches ({cal.get('patches_verified')} re-run for the spike comparison)")
    if "input_once" in rep:
        L.append(f"- input schedule: the payload at {rep.get('input_steps')} step(s) of the input layer's window "
                 f"(input_once: {str(bool(rep['input_once'])).lower()})")
    L.append("")
    L.append("## Dice")
    L.append("")
    L.append("| | Dice | HD95 (mm) | folding % |")
    L.append("|---|---|---|---|")
    L.append(f"| before registration | {_f(rep['dice_before'])} | | |")
    L.append(f"| float (SLAYER) | {_f(rep['dice_float'])} | {_f(rep['hd95_float'], 2)} | {_f(rep['folding_pct_float'], 3)} |")
    L.append(f"| quantized (emulator) | {_f(rep['dice_quantized'])} | {_f(rep['hd95_quantized'], 2)} | {_f(rep['folding_pct_quantized'], 3)} |")
    L.append("")
    L.append(f"**Dice drop = {_f(rep['dice_drop'], 5)}** (target <= {rep['target_dice_drop']}: "
             f"{'met' if rep['meets_target'] else 'NOT met'}; goal <= {rep['goal_dice_drop']}: "
             f"{'met' if rep['meets_goal'] else 'not met'}). Dice drop = float - quantized.")
    L.append("")
    L.append("| pair | Dice float | Dice quantized | drop | mean abs field diff (vox) | max (vox) |")
    L.append("|---|---|---|---|---|---|")
    for p in rep["pairs"]:
        L.append(f"| {p['pair'][0]}->{p['pair'][1]} | {_f(p['dice_float'])} | {_f(p['dice_quantized'])} | "
                 f"{_f(p['dice_drop'], 5)} | {_f(p['field_mean_abs_diff_vox'], 5)} | {_f(p['field_max_abs_diff_vox'], 3)} |")
    L.append("")
    L.append("## Layers")
    L.append("")
    L.append("| layer | weight_exp | theta_0 | weight err vs float fwd | spike agreement (end to end) | "
             "agreement (teacher-forced) | rate float | rate quantized | state headroom (bits) | 24-bit overflows |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for n, r in rep["layers"].items():
        v = r.get("verification", {})
        d = r.get("demo_rates", {})
        ov = int(v.get("current_wraps", 0)) + int(v.get("voltage_saturations", 0)) + \
            int(d.get("current_wraps", 0)) + int(d.get("voltage_saturations", 0))
        na = r["neuron"] == "integrator"   # no spikes: agreement and rates do not apply
        cells = ["n/a"] * 4 if na else [
            _f(v.get("spike_agreement", float("nan")), 6), _f(v.get("spike_agreement_teacher_forced", float("nan")), 6),
            _f(d.get("rate_float", float("nan"))), _f(d.get("rate_quantized", float("nan")))]
        L.append(f"| {n} | {r['weight_exp']} | {r['theta_0']} | {_f(r['weight_error'].get('forward_max_abs_err', 0), 6)} | "
                 f"{' | '.join(cells)} | {_f(v.get('state_headroom_bits', float('nan')), 2)} | {ov} |")
    L.append("")
    L.append("Spike agreement: fraction of (neuron, step) entries equal between the float SLAYER model and "
             "the integer emulator on the calibration patches. *End to end*: each network fed by itself; "
             "*teacher-forced*: every layer of the emulator fed the float model's spikes, which isolates that "
             "layer's arithmetic. Rates: spikes per neuron per step over all demo patches. Headroom: "
             "log2(2^23 / largest |i|, |v|, |r| seen by the emulator).")
    L.append("")
    L.append("## Calibration statistics (float model, ATRLIF integer units at weight_exp 0)")
    L.append("")
    L.append("| layer | max \\|a_in\\| | p99.9 \\|a_in\\| | max \\|i\\| | max \\|v\\| | max \\|r\\| | rate | silent % | chosen exp | feasible |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for n, r in rep["layers"].items():
        s = r.get("calibration_stats", {})
        c = r.get("exponent_choice", {})
        if r["neuron"] == "integrator":
            rate, silent = "n/a", "n/a"
        else:
            rate = _f(s.get("rate", float("nan")))
            silent = _f(100 * (s.get("silent_fraction") if s.get("silent_fraction") is not None else float("nan")), 1)
        L.append(f"| {n} | {_f(s.get('a_in_peak', 0), 0)} | {_f(s.get('a_in_p99_9', 0), 0)} | {_f(s.get('i_peak', 0), 0)} | "
                 f"{_f(s.get('v_peak', 0), 0)} | {_f(s.get('r_peak', 0), 0)} | {rate} | {silent} | "
                 f"{c.get('weight_exp')} | {c.get('feasible_weight_exps')} |")
    L.append("")
    notes = rep.get("notes", [])
    if notes:
        L.append("## Notes")
        L.append("")
        for n in notes:
            L.append(f"- {n}")
        L.append("")
    L.append("## Lava schedule (1-step delay per connection)")
    L.append("")
    L.append("| layer | start | end | inputs (source: first source step, extra delay) |")
    L.append("|---|---|---|---|")
    for n, s in rep.get("lava_schedule", {}).items():
        ins = ", ".join(f"{i['source']}: {i['first_source_step']}, +{i['extra_delay']}" for i in s["inputs"])
        L.append(f"| {n} | {s['start']} | {s['end']} | {ins} |")
    L.append("")
    return "\n".join(L)


def _clean(o: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy -> Python, recursively."""
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        x = float(o)
        return x if math.isfinite(x) else None
    return o


def report_texts(rep: Mapping[str, Any]) -> Dict[str, str]:
    return {"json": json.dumps(_clean(rep), indent=2, default=_json_default), "md": report_markdown(rep)}


def write_report(out_dir: Path, rep: Mapping[str, Any]) -> Dict[str, Path]:
    """Write calibration_report.json and .md atomically."""
    t = report_texts(rep)
    out_dir = Path(out_dir)
    pj = atomic_write_text(out_dir / "calibration_report.json", t["json"])
    pm = atomic_write_text(out_dir / "calibration_report.md", t["md"])
    return {"json": pj, "md": pm}
