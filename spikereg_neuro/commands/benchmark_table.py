"""``spikereg-neuro benchmark --out DIR``: the energy / latency / accuracy table.

Every row is computed here, on this machine, from the same held-out pairs (docs/benchmark.md):

* identity (reference) and ANTs SyN: CPU wall time, measured;
* VoxelMorph: CPU wall time measured; GPU energy/latency measured with NVML when a CUDA GPU is
  present, otherwise ESTIMATED from its counted MACs and a cited energy per MAC / peak throughput;
* SpikeReg CPU: the float SLAYER model as a user runs it (SpikeRegInference: whole volume up to
  ``inference.max_voxels``), measured;
* SpikeReg quantized (bit-accurate integer emulator) on CPU: one whole-volume registration per
  pair (``register_tensors(..., max_voxels, multiple)``, like the float model), measured; a
  separate tiled pass (32^3 patches at stride 16) and two more counted passes (the whole volume,
  non-overlapping tiles) record the exact spike counts of each Loihi 2 deployment;
* SpikeReg on Loihi 2: ESTIMATED by the profiler's model (counts x per-op energies and times,
  Loihi 2 static power, step time from the per-core load of loihi/'s mapping of each input shape;
  partitions cached in ``DIR/cache/partitions``); Dice from the quantized network's fields of the
  same deployment;
* SpikeReg GPU simulation (SLAYER on a GPU): measured with NVML when a GPU is present,
  otherwise ESTIMATED from the dense MACs SLAYER computes (every layer's conv on every step);
* SpikeReg Lava CPU simulation: measured on ONE patch; the full-volume figure is extrapolated
  (estimated) unless a measured full Lava registration is given (``--lava-run RUN_JSON``) or
  asked for (``--lava-full``; with ``--quick`` on a tile-sized crop, which the row says).

Each row's ``inference`` says how it covered the volume ("whole volume" / "tiles 32^3 stride 16");
``cpu_latency_ratio_vs_voxelmorph`` gives float SpikeReg's and the emulator's CPU latency over
VoxelMorph's (same threads, same pairs, same run).

Writes ``benchmark.json``, ``benchmark.md`` (linking the figures), ``report.html`` (one
self-contained page: :func:`spikereg_neuro.profiler.table.report_html`) and ``report/*.png``
(:mod:`spikereg_neuro.profiler.figures`: one overlay figure per pair, the fields, Dice per label,
the energy breakdown, spike rates, energy per layer).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


# ============================================================================ quantized network
def obtain_qnet(model_path: Path, net_path: Optional[str], out_dir: Path, calib_pairs: int = 1,
                cache: Optional[str] = None, log: Callable[[str], None] = print,
                data: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """The quantized network of the Loihi row and where it came from.

    ``net_path`` given: that file. Otherwise ``out_dir/net.h5`` if it was made from a model with
    the same sha256 and on the same data; otherwise a fast calibration of ``model_path``
    (statistics from ``calib_pairs`` training pairs, no fidelity report) written to
    ``out_dir/net.h5``: the training pairs of the ``data`` folder when given, else those of the
    embedded data set the model was trained on.
    """
    from calibration.netfile import load_qnet, save_qnet
    from spikereg_neuro.checkpoint import file_sha256

    sha = file_sha256(model_path) if model_path.is_file() else None
    if net_path:
        q = load_qnet(net_path)
        info = {"path": str(net_path), "made_by": "given (--net)", "source_sha256": q.source_sha256,
                "matches_spikereg_model": q.source_sha256 == sha}
        if sha and q.source_sha256 != sha:
            log(f"[benchmark] note: {net_path} was made from another model (sha256 {q.source_sha256[:12]}) than "
                f"{model_path} ({sha[:12]}); the Loihi row uses {net_path}")
        return q, info
    if sha is None:
        raise FileNotFoundError(f"no SpikeReg model at {model_path}: pass --spikereg-model or --net")
    cached = out_dir / "net.h5"
    if cached.is_file():
        try:
            q = load_qnet(cached)
            if q.source_sha256 == sha and (q.calibration or {}).get("data_source") == _calibration_source(data):
                log(f"[benchmark] quantized network: {cached} (cached, made from {model_path.name} {sha[:12]})")
                return q, {"path": str(cached), "made_by": "cached fast calibration", "source_sha256": sha,
                           "matches_spikereg_model": True, "calibration": q.calibration}
        except Exception as e:  # a stale or broken cache is rebuilt
            log(f"[benchmark] ignoring {cached}: {e}")
    t0 = time.perf_counter()
    log(f"[benchmark] fast calibration of {model_path} ({calib_pairs} training pair(s) of "
        f"{_calibration_source(data)}) -> {cached}")
    q = fast_calibration(model_path, sha, calib_pairs, cache, data=data)
    save_qnet(cached, q)
    secs = time.perf_counter() - t0
    log(f"[benchmark]   done in {secs:.0f} s; weight exponents "
        f"{ {l.name: l.weight_exp for l in q.layers} }")
    return q, {"path": str(cached), "made_by": f"fast calibration ({calib_pairs} training pair(s), no fidelity report)",
               "source_sha256": sha, "matches_spikereg_model": True, "seconds": secs, "calibration": q.calibration}


def _calibration_source(data: Optional[str]) -> str:
    """What a fast calibration's statistics came from (``data_source`` in its description)."""
    return str(Path(data).resolve()) if data else "embedded"


def fast_calibration(model_path: Path, sha: str, calib_pairs: int = 1, cache: Optional[str] = None,
                     data: Optional[str] = None):
    """``calibrate``'s quantization (statistics, weight exponents, quantize) without its report:
    ``calib_pairs`` training pairs of the ``data`` folder (as ``calibrate --data`` draws them), or of
    the embedded data set the model was trained on."""
    from calibration.calibrate import choose_weight_exps, collect_float_stats
    from calibration.quantize import quantize_network
    from spikereg_neuro.checkpoint import load_network
    from spikereg_neuro.config import InferenceConfig
    from spikereg_neuro.data import build_dataset, load_pairs_numpy
    from spikereg_neuro.data.dataset import DataConfig, dataset_info, train_pairs

    if calib_pairs < 1:
        raise ValueError("--calib-pairs must be >= 1")
    net, ckpt = load_network(model_path)
    net.eval()
    inf = InferenceConfig.from_checkpoint(ckpt)
    patch, stride = inf.patch3, inf.stride3
    if data:
        from calibration.cli import _folder_calibration_data
        from ..registration.world import model_spacing
        train, _, _, desc = _folder_calibration_data(data, model_spacing(ckpt)[0], int(calib_pairs), 0)
    else:
        dc = DataConfig.from_dict(ckpt.get("data_config") or {})
        h5 = build_dataset(dc, cache, progress=False)
        info = dataset_info(h5)
        n_train = info["n_subjects"]["train"]
        cpairs = train_pairs(n_train, epoch=0, seed=10_000, max_pairs=int(calib_pairs))
        train = load_pairs_numpy(h5, "train", pairs=cpairs)
        desc = {"split": "train", "dataset": h5.name, "dataset_params": info["config"].to_dict(),
                "pair_choice": f"train_pairs(n={n_train}, epoch=0, seed=10000)[:{calib_pairs}]"}
    cal = collect_float_stats(net, train, patch, stride, inf.batch_size, max_patches=1, seed=0,
                              description={**desc, "data_source": _calibration_source(data),
                                           "headroom_bits": 1.0, "made_by": "spikereg-neuro benchmark (fast)"})
    exps, _ = choose_weight_exps(net, cal.stats, 1.0)
    return quantize_network(net, exps, source_checkpoint=str(model_path), source_sha256=sha,
                            calibration=cal.description, patch_size=patch, stride=stride)


# ============================================================================ counting emulator
class CountingEmulator:
    """Patch predictor: the bit-accurate emulator of ``q`` with exact operation counts.

    Every call emulates a batch of patches (or a whole volume) with all spikes recorded and adds
    the exact counts (:meth:`NetworkCounter.count_spikes`) to :attr:`by_shape` (counts of
    different input shapes cannot be added); :attr:`emulate_s` and :attr:`count_s` keep the time
    spent in each, :attr:`fields` nothing (the caller keeps the registration's field).
    """

    def __init__(self, q) -> None:
        from loihi.resources import layers_from_qnet

        self.q = q
        self.layers = layers_from_qnet(q)
        self.counters: Dict[Tuple[int, int, int], Any] = {}
        self.by_shape: Dict[Tuple[int, int, int], Any] = {}
        self.emulate_s = 0.0
        self.count_s = 0.0

    @property
    def counts(self):
        """The counts when every call had one input shape (tiles); None before any call."""
        if len(self.by_shape) > 1:
            raise ValueError(f"counts of {len(self.by_shape)} input shapes {sorted(self.by_shape)}: use by_shape")
        return next(iter(self.by_shape.values()), None)

    def reset(self) -> None:
        self.by_shape, self.emulate_s, self.count_s = {}, 0.0, 0.0

    def __call__(self, fixed, moving):
        from calibration.emulator import emulate, payload_of
        from spikereg_neuro.profiler import NetworkCounter
        from spikereg_neuro.profiler.counting import input_sent_once

        t0 = time.perf_counter()
        payload = payload_of(self.q, fixed.cpu(), moving.cpu())
        res = emulate(self.q, payload, record_spikes=True)
        t1 = time.perf_counter()
        shape = tuple(int(x) for x in payload.shape[2:])
        if shape not in self.counters:
            self.counters[shape] = NetworkCounter(self.layers, shape)
        c = self.counters[shape].count_spikes(res.spikes, payload, input_once=input_sent_once(self.q))
        self.by_shape[shape] = c if shape not in self.by_shape else self.by_shape[shape] + c
        self.emulate_s += t1 - t0
        self.count_s += time.perf_counter() - t1
        return res.field.to(fixed.device)


# ============================================================================ Loihi 2 pricing
#: how a deployment covers the volume: (label, description)
DEPLOYMENTS = {
    "whole": "whole volume mapped at once (multi-chip system), one network call per residual iteration and scale",
    "tiles_no_overlap": "non-overlapping patch tiles (stride = patch; the last tile of an axis aligned to its end)",
    "tiles": "overlapping patch tiles of the CPU inference (stride = patch / 2)",
}
ENCODING_LABELS = {"shared": "shared kernels", "sparse": "explicit Sparse, conservative bound"}


def slayer_roofline_layers(emu: "CountingEmulator", registrations: int) -> List[Tuple[float, float]]:
    """Per layer and input shape, per registration: ``(MACs, bytes)`` SLAYER moves on a GPU: every
    layer's conv on every step of its window (``out x C_in x k^3 x window``, padding taps
    included) and its input + output frames and weights in FP32 (4 bytes)."""
    out = []
    for shape, counts in emu.by_shape.items():
        counter = emu.counters[shape]
        calls = counts.samples / registrations
        for l in counter.layers.values():
            macs = l.ann_macs_padded * l.window * calls
            nbytes = ((l.in_channels * math.prod(l.input_shape) + l.neurons) * l.window + l.weights) * 4 * calls
            out.append((float(macs), float(nbytes)))
    return out


def layer_rates(counts_list) -> Dict[str, float]:
    """Spikes per neuron and step of every spiking layer over the workloads in ``counts_list``."""
    spikes: Dict[str, float] = {}
    steps: Dict[str, float] = {}
    for c in counts_list:
        for n, l in c.layers.items():
            if l.spiking:
                spikes[n] = spikes.get(n, 0.0) + float(l.spikes.sum())
                steps[n] = steps.get(n, 0.0) + float(l.neurons * l.window * c.samples)
    return {n: spikes[n] / steps[n] for n in spikes if steps[n]}


def layer_energy(counts_list, consts, registrations: int) -> Dict[str, Dict[str, float]]:
    """ESTIMATED dynamic energy per layer and registration (mJ), summed over the workloads."""
    from ..profiler import energy_per_layer

    out: Dict[str, Dict[str, float]] = {}
    for c in counts_list:
        for n, row in energy_per_layer(c, consts).items():
            d = out.setdefault(n, {})
            for k, v in row.items():
                d[k] = d.get(k, 0.0) + v / registrations
    return out


def mean_spike_rate(counts_list) -> Optional[float]:
    """Neuron-weighted mean spike rate: all spikes / all (spiking neuron, step) pairs, over the
    workloads in ``counts_list`` (the read-out excluded)."""
    spikes = steps = 0.0
    for c in counts_list:
        for l in c.layers.values():
            if l.spiking:
                spikes += float(l.spikes.sum())
                steps += float(l.neurons * l.window * c.samples)
    return spikes / steps if steps else None


def price_loihi2(layers, by_shape: Dict[Tuple[int, int, int], Any], consts, encoding: str,
                 registrations: int, source: Dict[str, Any], balance: bool = True,
                 sensitivity: Optional[Dict[str, Any]] = None,
                 cache: Optional[Dict[Any, Any]] = None) -> Dict[str, Any]:
    """ESTIMATED Loihi 2 energy and latency per registration of one deployment.

    ``by_shape``: exact counts per network input shape (all calls of ``registrations``
    registrations). Each shape is mapped once (``encoding``: ``shared`` kernels, balanced on
    the counted synaptic ops, or explicit ``sparse`` synapses) and priced with
    :func:`estimate_loihi2`; the calls run one after another on a system of the largest mapping's
    chips, all of which draw static power for the whole time (reconfiguration between shapes not
    modelled). ``sensitivity``: ``{name: constants}`` priced on the same mappings. ``cache`` keeps
    resources and unbalanced partitions per (shape, encoding) between calls.
    """
    from loihi.limits import CoreLimits
    from loihi.mapping import build_mapping
    from loihi.partition import partition_network
    from loihi.resources import NetworkResources
    from ..profiler import estimate_loihi2

    cache = {} if cache is None else cache
    shapes, mappings = {}, {}
    lim = CoreLimits(encoding=encoding)
    for shape, counts in sorted(by_shape.items()):
        if shape not in cache:
            cache[shape] = NetworkResources(layers, shape)
        if (shape, encoding) not in cache:
            cache[(shape, encoding)] = partition_network(cache[shape], lim)
        m = build_mapping(layers, shape, lim, counts=counts, source=source, balance=balance, constants=consts,
                          resources=cache[shape], partition=cache[(shape, encoding)])
        mappings[shape] = m
        shapes[shape] = {"calls": int(counts.samples), "cores": m["totals"]["cores"], "chips": m["totals"]["chips"],
                         "valid": m["valid"], "balance": m.get("balance")}

    def total(c) -> Dict[str, Any]:
        dyn = lat = 0.0
        chips = max(v["chips"] for v in shapes.values())
        breakdown: Dict[str, float] = {}
        counts_tot: Dict[str, float] = {}
        for shape, counts in sorted(by_shape.items()):
            est = estimate_loihi2(counts, c, mapping=mappings[shape]["cores"])
            dyn += est["dynamic_mj"]
            lat += est["latency_ms"]
            for k, v in est["energy_breakdown_mj"].items():
                if k != "static":
                    breakdown[k] = breakdown.get(k, 0.0) + v / registrations
            for k, v in est["counts"].items():
                if isinstance(v, float):
                    counts_tot[k] = counts_tot.get(k, 0.0) + v / registrations
            if c is consts:
                shapes[shape]["step_time_us_mean"] = est["step_time_us"]
                shapes[shape]["latency_ms_per_call"] = est["latency_ms_per_sample"]
        static = c.value("static_power_w") * chips * lat * 1e-3 * 1e3
        breakdown["static"] = static / registrations
        return {"energy_mj": (dyn + static) / registrations, "energy_basis": "gross",
                "dynamic_mj": dyn / registrations, "static_mj": static / registrations,
                "latency_ms": lat / registrations, "chips": chips, "breakdown_mj": breakdown,
                "counts_per_registration": counts_tot}

    out = {"encoding": encoding, **total(consts),
           "cores": max(v["cores"] for v in shapes.values()),
           "shapes": {"x".join(map(str, k)): v for k, v in shapes.items()},
           "calls_per_registration": sum(v["calls"] for v in shapes.values()) / registrations,
           "mean_spike_rate": mean_spike_rate(by_shape.values()), "source": "estimated"}
    if sensitivity:
        out["sensitivity"] = {name: {k: v for k, v in total(c).items() if k in
                                     ("energy_mj", "dynamic_mj", "static_mj", "latency_ms")}
                              for name, c in sensitivity.items()}
    out["_mappings"] = mappings
    return out


# ============================================================================ helpers
def _mean(xs) -> Optional[float]:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return float(np.mean(xs)) if xs else None


def _acc(records: List[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    return {"dice": _mean(r["dice"] for r in records), "hd95": _mean(r["hd95"] for r in records),
            "folding_pct": _mean(r["folding_pct"] for r in records)}


def _gpu_name() -> Optional[str]:
    try:
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0] if s else ''}"


def _size(v) -> str:
    v = [int(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3)]
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


# ============================================================================ recorded GPU measurements
#: the format of scripts/gpu_session.py's record (benchmarks/results/gpu_nvml.json)
GPU_RECORD_FORMAT = "spikereg-neuro/gpu-nvml"
#: record key -> the row it can fill
GPU_RECORD_MODELS = {"voxelmorph": "VoxelMorph", "spikereg_slayer": "SpikeReg"}


def default_gpu_record() -> Optional[Path]:
    """``benchmarks/results/gpu_nvml.json`` of the repository this package sits in, or None when
    the package is not in a checkout (no ``benchmarks`` folder beside it, e.g. an installed wheel)."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    return bench / "results" / "gpu_nvml.json" if bench.is_dir() else None


def load_gpu_record(path: Any) -> Dict[str, Any]:
    """A record of ``scripts/gpu_session.py``; ValueError for a file that is not one."""
    from ..data.learn2reg import read_json_object

    path = Path(path)
    doc = read_json_object(path)
    if doc.get("format") != GPU_RECORD_FORMAT or not isinstance(doc.get("models"), dict):
        raise ValueError(f"{path} is not a scripts/gpu_session.py record (format {GPU_RECORD_FORMAT!r})")
    for key in ("machine", "pair"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise ValueError(f"{path}: its '{key}' must be a mapping, got {type(doc[key]).__name__}")
    shape = (doc.get("pair") or {}).get("shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3
                                  and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise ValueError(f"{path}: its pair shape must be 3 positive integers, got {shape!r}")
    for name, entry in doc["models"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("measurement") or {}, dict):
            raise ValueError(f"{path}: its model {name!r} must be a mapping with a 'measurement' mapping")
        for k, v in (entry.get("measurement") or {}).items():
            if k in ("energy_mj", "dynamic_mj", "latency_ms", "idle_power_w") and v is not None and not (
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (v >= 0 or k == "dynamic_mj")):
                raise ValueError(f"{path}: model {name!r}: measurement {k} must be a finite number, got {v!r}")
    doc["_path"] = str(path)
    return doc


def _record_gpu(record: Mapping[str, Any]) -> str:
    m = record.get("machine") or {}
    return str(m.get("gpu") or m.get("gpu_nvml_name") or "an unnamed GPU")


def gpu_record_row(est_row: Dict[str, Any], record: Optional[Mapping[str, Any]], key: str,
                   sha256: Optional[str], shape: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """The GPU row of model ``key`` (``voxelmorph`` / ``spikereg_slayer``) from a recorded NVML
    measurement, or the estimate ``est_row`` kept.

    The record is used when it holds a measurement of ``key`` whose checkpoint sha256 equals
    ``sha256`` (the model file of this run) and, with ``shape``, was measured on a pair of that
    volume shape: then a new row with the recorded gross / dynamic energy and latency
    (``energy_source`` / ``latency_source`` ``"measured"``), the platform naming the record's date
    and GPU, the accuracy of ``est_row`` (this run's CPU registrations) and in ``details`` the
    record (``gpu``, ``gpu_record``) and the estimate (``estimate``). Otherwise ``est_row`` with a
    note saying why the record was not used (no record: unchanged).
    """
    if not record:
        return est_row
    path = record.get("_path", "the GPU record")
    date = str(record.get("date") or "?")
    gpu = _record_gpu(record)
    entry = (record.get("models") or {}).get(key) or {}
    m = entry.get("measurement") or {}
    why = None
    if not m or m.get("energy_source") != "measured" or m.get("energy_mj") is None or m.get("latency_ms") is None:
        why = f"holds no NVML measurement of this model ({entry.get('error') or 'none recorded'})"
    elif not sha256 or entry.get("sha256") != sha256:
        why = (f"is for another model (recorded checkpoint {entry.get('checkpoint')} sha256 "
               f"{str(entry.get('sha256'))[:12]}, this run's {str(sha256)[:12]})")
    elif shape is not None and (record.get("pair") or {}).get("shape") not in (None, [int(x) for x in shape]):
        why = (f"was measured on a {'x'.join(map(str, record['pair']['shape']))} pair, this run's first pair is "
               f"{'x'.join(map(str, shape))}")
    if why:
        row = dict(est_row)
        row["note"] = (row.get("note", "") + f" The recorded GPU measurement {path} ({date} on {gpu}) {why}: "
                       "kept the estimate.").strip()
        row.setdefault("details", {})
        row["details"] = {**row["details"], "gpu_record": {"path": path, "date": date, "gpu": gpu, "used": False,
                                                           "why": why}}
        return row
    from ..profiler.table import make_row

    day = date[:10]
    pair = record.get("pair") or {}
    plat = (f"GPU (recorded {day} on {gpu}, scripts/gpu_session.py)" if key == "voxelmorph" else
            f"GPU simulation (SLAYER; recorded {day} on {gpu}, scripts/gpu_session.py)")
    mach = record.get("machine") or {}
    rec_info = {"path": path, "date": date, "gpu": gpu, "used": True, "machine": mach,
                "pair": {k: pair.get(k) for k in ("name", "subjects", "shape", "source", "dataset", "arrays_sha256")},
                **{k: entry.get(k) for k in ("checkpoint", "sha256", "what", "macs", "seconds")}}
    estimate = {k: est_row.get(k) for k in ("platform", "energy_mj", "dynamic_mj", "energy_source", "latency_ms",
                                            "latency_source", "note", "details")}
    row = make_row(
        est_row["method"], plat, energy_mj=m["energy_mj"], dynamic_mj=m.get("dynamic_mj"), energy_source="measured",
        latency_ms=m["latency_ms"], latency_source="measured",
        dice=est_row.get("dice"), hd95=est_row.get("hd95"), folding_pct=est_row.get("folding_pct"),
        note=(f"MEASURED elsewhere, recorded {date} on {gpu} (driver {mach.get('driver', '?')}, torch "
              f"{mach.get('torch', '?')}, CUDA {mach.get('cuda', '?')}, host {mach.get('hostname', '?')}) by "
              f"scripts/gpu_session.py ({path}): NVML energy counter over {m.get('n_calls', '?')} calls of "
              f"{entry.get('what', key)} on {pair.get('name', 'pair 0')} ({'x'.join(map(str, pair.get('shape') or []))}); "
              f"gross, dynamic = minus the idle power ({m.get('idle_power_w', float('nan')):.1f} W). Same model file "
              f"as this run (sha256 {str(sha256)[:12]}). Dice/HD95/folding from this run's CPU registrations. "
              f"No GPU here; the estimate ({est_row.get('energy_mj') or float('nan'):.3g} mJ, "
              f"{est_row.get('latency_ms') or float('nan'):.3g} ms) is in details.estimate."),
        details={"gpu": m, "gpu_record": rec_info, "estimate": estimate})
    if "inference" in est_row:
        row["inference"] = est_row["inference"]
    return row


def resolve_gpu_record(args: argparse.Namespace, log: Callable[[str], None] = print
                       ) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """The GPU record the table may read (``--gpu-record FILE``, default :func:`default_gpu_record`;
    none with ``--no-gpu-record``) and what benchmark.json says about it. A given file that is
    missing or not a record is an error; a missing default is not."""
    given = getattr(args, "gpu_record", None)
    if getattr(args, "no_gpu_record", False):
        if given:
            raise ValueError("--gpu-record FILE and --no-gpu-record exclude each other")
        return None, {"used_for": [], "why": "not read (--no-gpu-record)"}
    path = Path(given) if given else default_gpu_record()
    if path is None:
        return None, {"used_for": [], "why": "no benchmarks/ folder beside the package (not a checkout)"}
    try:
        shown = os.path.relpath(path.resolve(), Path(__file__).resolve().parents[2])
        shown = str(path) if shown.startswith("..") else shown
    except ValueError:
        shown = str(path)
    if not path.is_file():
        if given:
            raise FileNotFoundError(f"--gpu-record {given}: " + ("a directory, not a record file" if path.is_dir()
                                                                 else "no such file"))
        return None, {"path": shown, "used_for": [], "why": "no record (scripts/gpu_session.py not run on a GPU yet)"}
    try:
        rec = load_gpu_record(path)
    except ValueError as e:
        if given:
            raise
        log(f"[benchmark] ignoring the GPU record: {e}")
        return None, {"path": shown, "used_for": [], "why": str(e)}
    rec["_path"] = shown
    return rec, {"path": shown, "date": rec.get("date"), "gpu": _record_gpu(rec), "used_for": []}


#: the ``inference`` of a row whose method registers the volume in one call
WHOLE_VOLUME = "whole volume"


def inference_label(shape, scales, patch, stride, max_voxels: int, multiple: int = 8) -> str:
    """How :func:`~spikereg_neuro.inference.register_tensors` covers a volume of ``shape``:
    ``"whole volume"`` (one network call per residual iteration), ``"tiles 32^3 stride 16"``
    (``max_voxels = 0``) or the fewest tiles within ``max_voxels`` (a volume too large)."""
    from ..inference import count_calls

    if not max_voxels:
        p = _size(patch)
        return f"tiles {p}^3 stride {_size(stride)}" if "x" not in p else f"tiles {p} stride {_size(stride)}"
    if count_calls(shape, scales, patch, stride, int(max_voxels), int(multiple)) == len(scales):
        return WHOLE_VOLUME
    return f"fewest tiles within max_voxels={int(max_voxels)}"


def emulator_registrations(q, emu: "CountingEmulator", fixed: np.ndarray, moving: np.ndarray,
                           max_voxels: int, multiple: int, batch_size: int = 4,
                           symmetric: bool = False) -> Dict[str, Any]:
    """Both quantized registrations of one pair (each both ways with ``symmetric``).

    * tiled (``q.patch_size`` tiles at ``q.stride``) through the counting emulator ``emu``: the
      spike counts of the Loihi 2 row; ``tiled_seconds`` excludes the counting (``count_seconds``);
    * whole volume (up to ``max_voxels`` per call, as :class:`SpikeRegInference` registers) through
      the plain emulator, timed end to end (normalisation to field) like the float model.
    """
    import torch

    from calibration.emulator import emulator_predictor
    from ..inference import normalize_intensity, register_tensors

    cnt_before = emu.count_s
    t0 = time.perf_counter()
    f = torch.from_numpy(normalize_intensity(fixed))[None, None]
    m = torch.from_numpy(normalize_intensity(moving))[None, None]
    u = register_tensors(emu, q.scales, f, m, q.patch_size, q.stride, batch_size,
                         integration_steps=q.integration_steps, symmetric=symmetric)
    tiled = u[0].numpy().astype(np.float32)
    wall = time.perf_counter() - t0
    count_s = emu.count_s - cnt_before
    t0 = time.perf_counter()
    f = torch.from_numpy(normalize_intensity(fixed))[None, None]
    m = torch.from_numpy(normalize_intensity(moving))[None, None]
    u = register_tensors(emulator_predictor(q), q.scales, f, m, q.patch_size, q.stride, batch_size,
                         integration_steps=q.integration_steps, max_voxels=int(max_voxels), multiple=int(multiple),
                         symmetric=symmetric)
    whole = u[0].numpy().astype(np.float32)
    return {"tiled_field": tiled, "tiled_seconds": wall - count_s, "count_seconds": count_s,
            "whole_field": whole, "whole_seconds": time.perf_counter() - t0}


def register_deployment(q, emu: "CountingEmulator", fixed: np.ndarray, moving: np.ndarray,
                        stride=None, max_voxels: int = 0, multiple: int = 8, batch_size: int = 4,
                        symmetric: bool = False) -> np.ndarray:
    """One quantized registration through the counting emulator ``emu``: tiles of ``q.patch_size``
    at ``stride`` (default ``q.stride``), or whole volumes up to ``max_voxels`` per call; both ways
    with ``symmetric``. Returns the field; the counts accumulate in ``emu.by_shape``."""
    import torch

    from ..inference import normalize_intensity, register_tensors

    f = torch.from_numpy(normalize_intensity(fixed))[None, None]
    m = torch.from_numpy(normalize_intensity(moving))[None, None]
    u = register_tensors(emu, q.scales, f, m, q.patch_size, stride or q.stride, batch_size,
                         integration_steps=q.integration_steps, max_voxels=int(max_voxels), multiple=int(multiple),
                         symmetric=symmetric)
    return u[0].numpy().astype(np.float32)


def ratio_line(r: Dict[str, Any]) -> str:
    """One line for the printout: the CPU latency ratios against VoxelMorph."""
    f = (lambda v: "n/a" if v is None else f"{v:.2f}x")
    inf = r.get("inference") or {}
    return (f"CPU latency vs VoxelMorph ({r.get('platform')}): SpikeReg float {f(r.get('spikereg_float'))} "
            f"({inf.get('spikereg_float')}), quantized emulator {f(r.get('quantized_emulator'))} "
            f"({inf.get('quantized_emulator')})")


#: the rows of the CPU latency ratios (method names of the table)
RATIO_ROWS = {"spikereg_float": "SpikeReg (float SLAYER)", "quantized_emulator": "SpikeReg (quantized emulator)"}


def cpu_latency_ratios(rows: List[Dict[str, Any]], platform: str) -> Dict[str, Any]:
    """``benchmark.json["cpu_latency_ratio_vs_voxelmorph"]``: the CPU latency of float SpikeReg and
    of the emulator divided by VoxelMorph's, from the rows of ``platform`` (same threads, same
    pairs); a ratio is null where either row has no latency."""
    by = {r["method"]: r for r in rows if r.get("platform") == platform}
    vm = (by.get("VoxelMorph") or {}).get("latency_ms")
    out: Dict[str, Any] = {}
    for key, method in RATIO_ROWS.items():
        v = (by.get(method) or {}).get("latency_ms")
        out[key] = float(v) / float(vm) if v is not None and vm else None
    out["inference"] = {k: (by.get(m) or {}).get("inference") for k, m in
                        (("voxelmorph", "VoxelMorph"), *((k, m) for k, m in RATIO_ROWS.items()))}
    out["platform"] = platform
    out["basis"] = ("mean wall time per registration of the row / VoxelMorph's CPU row: same thread count, same "
                    "pairs, same run")
    return out


def energy_ratio_vs_gpu(rows: List[Dict[str, Any]], loihi_platform: str) -> Dict[str, Any]:
    """``benchmark.json["energy_ratio_vs_voxelmorph_gpu"]``: the main Loihi 2 row's energy over the
    VoxelMorph GPU row's, gross and dynamic, with each side's source (estimated / measured); a
    ratio is null where either side lacks the energy."""
    loihi = next((r for r in rows if r.get("method") == "SpikeReg (quantized)" and r.get("platform") == loihi_platform),
                 {})
    gpu = next((r for r in rows if r.get("method") == "VoxelMorph" and str(r.get("platform", "")).startswith("GPU")),
               {})

    def ratio(key: str) -> Optional[float]:
        a, b = loihi.get(key), gpu.get(key)
        return float(a) / float(b) if a is not None and b else None

    return {"gross": ratio("energy_mj"), "dynamic": ratio("dynamic_mj"),
            "spikereg": {"platform": loihi.get("platform"), "energy_mj": loihi.get("energy_mj"),
                         "dynamic_mj": loihi.get("dynamic_mj"), "source": loihi.get("energy_source")},
            "voxelmorph": {"platform": gpu.get("platform"), "energy_mj": gpu.get("energy_mj"),
                           "dynamic_mj": gpu.get("dynamic_mj"), "source": gpu.get("energy_source")},
            "basis": "energy per registration of the main Loihi 2 row / the VoxelMorph GPU row's, same pairs; "
                     "gross = static or idle power x time + dynamic on both sides"}


# ============================================================================ argument checks
def check_lava_patch(patch: Sequence[int], multiple: Optional[int] = None,
                     volume: Optional[Sequence[int]] = None) -> None:
    """``--lava-patch`` as ``simulate --patch`` must be (:func:`sim.harness.load_patch`): positive
    multiples of the network's size ``multiple``, within the pairs' ``volume``, checked up front."""
    patch = [int(p) for p in patch]
    if any(p < 1 or (multiple and p % multiple) for p in patch):
        raise ValueError(f"--lava-patch {patch} must be positive multiples of {multiple or 1}")
    if volume is not None and any(p > v for p, v in zip(patch, volume)):
        raise ValueError(f"--lava-patch {patch} larger than the volume {[int(v) for v in volume]}")


def read_lava_run(path: str) -> Dict[str, Any]:
    """The run.json of a ``simulate --full --backend lava`` run (``--lava-run``), else a one-line
    ``ValueError`` naming the file."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--lava-run {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"--lava-run {path} is not a readable JSON file ({_first_line(e)})") from None
    if (not isinstance(doc, dict) or doc.get("backend") != "lava" or doc.get("mode") != "full registration"
            or "seconds" not in doc):
        raise ValueError(f"--lava-run {path} is not the run.json of `simulate --full --backend lava`")
    return doc


def table_registrars(args: argparse.Namespace, symmetric: bool) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The registrars of the CPU rows with their models loaded (a bad --voxelmorph-model,
    --spikereg-model or --ants-iterations fails here, before any work), and why the others are
    skipped. A model file named on the command line must be usable; a missing default model only
    skips its rows (the SpikeReg one only when --net gives the quantized network)."""
    from ..accuracy import make_registrar

    regs: Dict[str, Any] = {"identity": make_registrar("identity"),
                            "voxelmorph": make_registrar("voxelmorph", args),
                            "spikereg": make_registrar("spikereg", argparse.Namespace(
                                spikereg_model=args.spikereg_model, device="cpu", symmetric=symmetric))}
    if not args.no_ants:
        regs["ants_syn"] = make_registrar("ants_syn", args)
    named = {"voxelmorph": ("--voxelmorph-model", args.voxelmorph_model),
             "spikereg": ("--spikereg-model", args.spikereg_model)}
    skipped: Dict[str, str] = {}
    for k in list(regs):
        ok, why = regs[k].available()
        flag, path = named.get(k, (None, None))
        if not ok and path:
            raise ValueError(f"{flag} {path}: no such file" if not Path(path).exists() else why)
        if not ok and k == "spikereg" and not args.net:
            raise ValueError(why)
        if not ok:
            skipped[k] = why
            del regs[k]
        elif hasattr(regs[k], "load"):
            regs[k].load()
    return regs, skipped


# ============================================================================ the command
def run_table(args: argparse.Namespace) -> int:
    """Run every row, write benchmark.json / benchmark.md / report/*.png, print the table."""
    if not args.out:
        raise ValueError("benchmark: --out DIR is required (or use a sub-command, e.g. 'benchmark accuracy')")
    t_start = time.perf_counter()
    from ..devices import check_threads
    threads = check_threads(args.threads)
    symmetric = bool(getattr(args, "symmetric", False))
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(threads))
    import torch
    torch.set_num_threads(threads)
    from tqdm.auto import tqdm

    from ..checkpoint import DEFAULT_MODEL
    from ..config import load_config
    from ..inference import SpikeRegInference, normalize_intensity
    from ..io.atomic import atomic_write_text
    from ..profiler import (GPU_CONSTANTS, count_conv_macs, count_gpu_kernels, energy_per_layer, estimate_gpu,
                            estimate_gpu_latency, estimate_loihi2, load_constants, measure_gpu,
                            nvml_available)
    from ..profiler import figures as figs
    from ..profiler.table import (build_document, energy_ratio_sentence, make_row, markdown, printable, refusal_row,
                                  report_html)
    from ..accuracy import _clean, _machine, embedded_pairs, evaluate_pair, table_pairs

    progress = not args.no_progress
    log = print
    from ..io.paths import check_output_dir
    out = check_output_dir("--out", args.out)  # before the calibration and every row
    report = out / "report"
    if args.pairs is not None and args.pairs < 0:
        raise ValueError("--pairs must be >= 0")
    if args.calib_pairs < 1:
        raise ValueError("--calib-pairs must be >= 1")
    if not args.lava_timeout > 0:   # False for NaN too
        raise ValueError(f"--lava-timeout must be > 0 seconds, got {args.lava_timeout:g}")
    if getattr(args, "lava_run", None):
        read_lava_run(args.lava_run)   # a file named on the command line must be such a run
    consts = load_constants(args.constants)
    gpu_basis = args.gpu_basis
    if gpu_basis not in GPU_CONSTANTS:
        raise ValueError(f"--gpu-basis must be one of {sorted(GPU_CONSTANTS)}, got {gpu_basis!r}")
    gpu_throughput = ("h100_sxm_fp32_peak_macs_per_s" if gpu_basis == "h100_sxm_fp32_peak_pj_per_mac"
                      else "h100_sxm_tf32_peak_macs_per_s")
    gpu_record, gpu_record_info = resolve_gpu_record(args, log)
    pareto_with = list(getattr(args, "pareto_with", None) or [])
    if pareto_with:
        from ..profiler import pareto as _pareto
        # each a finished benchmark run or a pareto.json, read (and so checked) before any work
        pareto_points = [q for run in pareto_with for q in _pareto.read_points(run)]
        from ..io.paths import check_outputs
        read = [f for rp in map(Path, pareto_with)
                for f in ((rp / "benchmark.json", rp / "pareto.json") if rp.is_dir() else (rp,))]
        check_outputs({f"--pareto-with {f}": f for f in read},
                      {f"--out {n}": out / n for n in ("benchmark.json", "benchmark.md", "report.html")})
    regs, skipped = table_registrars(args, symmetric)   # models loaded: checked before any pair or net.h5
    if not args.no_lava:
        from calibration.netfile import load_qnet
        # the quantized network's size multiple (2 ** stride-2 layers) is its model's downsampling
        check_lava_patch(args.lava_patch, load_qnet(args.net).size_multiple if args.net
                         else regs["spikereg"].load().net.cfg.downsampling)

    n = int(args.pairs) if args.pairs else (1 if args.quick else None)
    model_path = Path(args.spikereg_model) if args.spikereg_model else DEFAULT_MODEL
    data = getattr(args, "data", None)
    if data:
        if args.config:
            raise ValueError("--data and --config exclude each other (--config chooses the embedded pairs)")
        from ..checkpoint import read_checkpoint
        from ..registration.world import model_spacing
        if not model_path.is_file():
            raise FileNotFoundError(f"no SpikeReg model at {model_path}: pass --spikereg-model")
        spacing_mm, _ = model_spacing(read_checkpoint(model_path))
        pairs, meta = table_pairs(data, getattr(args, "split", "registration_val"), spacing_mm, n)
        where = f"pair(s) of {meta['source']}"
    else:
        pairs, meta = embedded_pairs(load_config(args.config), args.cache, progress=progress, max_pairs=n)
        where = "held-out test pair(s)"
    if not pairs:
        raise ValueError("no held-out pairs to benchmark")
    if not args.no_lava:
        check_lava_patch(args.lava_patch, volume=pairs[0]["fixed"].shape)
    names = [p["name"] for p in pairs]
    for q in (pareto_points if pareto_with else []):
        if list(q.get("pairs") or []) != names:
            raise ValueError(f"--pareto-with {q.get('from') or q.get('path')}: its point {q.get('label')!r} was "
                             f"scored on other pairs ({', '.join(map(str, q.get('pairs') or [])) or 'none'}) than "
                             f"this run ({', '.join(names)}): it could not be drawn on one basis")
    log(f"[benchmark] {len(pairs)} {where}: {', '.join(names)}; {threads} CPU thread(s)")

    q, qinfo = obtain_qnet(model_path, args.net, out, args.calib_pairs, args.cache, log, data=data)

    # ---------------------------------------------------------------- registrations (all on CPU)
    emu = CountingEmulator(q)
    # the emulator is timed the way a user runs it (whole volume up to the model's max_voxels, as
    # SpikeRegInference does); the counted pass for the Loihi row tiles 32^3 patches (the mapping is
    # of one patch, and counts of different shapes cannot be added)
    if "spikereg" in regs:
        finf = regs["spikereg"].load()
        emu_max_voxels = int(finf.max_voxels)
    else:
        from ..config import DEFAULT_MAX_VOXELS
        finf, emu_max_voxels = None, int(DEFAULT_MAX_VOXELS)
    # QuantizedNet.size_multiple is the network's own (2 ** stride-2 layers); the model config's
    # size_multiple also holds the coarsest scale, hence SpikeRegInference's division
    emu_multiple = int(q.size_multiple)
    emu_tiled_label = inference_label(pairs[0]["fixed"].shape, q.scales, q.patch_size, q.stride, 0)
    records: Dict[str, List[Dict[str, Any]]] = {k: [] for k in [*regs, "quantized", "quantized_whole",
                                                                "loihi_tiles_no_overlap", "loihi_whole"]}
    dep_emus = {"tiles_no_overlap": CountingEmulator(q), "whole": CountingEmulator(q)}
    main_dep = args.loihi_deployment
    keep: Dict[str, np.ndarray] = {}
    figures: Dict[str, str] = {}
    captions: Dict[str, str] = {}
    fig_notes: List[str] = []

    def figure(key: str, caption: str, draw: Callable[[], Path]) -> None:
        """Draw one figure; a failure is reported in the notes, never hides the table."""
        try:
            figures[key] = os.path.relpath(draw(), out)
            captions[key] = caption
        except Exception as e:
            fig_notes.append(f"figure {key} not written: {_first_line(e)}")

    shown = {"voxelmorph": "VoxelMorph", "spikereg": "SpikeReg float", "quantized": f"SpikeReg quantized ({main_dep})",
             "ants_syn": "ANTs SyN"}
    bar = tqdm(total=len(pairs) * (len(regs) + 3), desc="benchmark", unit="reg", disable=not progress,
               dynamic_ncols=True)
    for k, pair in enumerate(pairs):
        fields: Dict[str, np.ndarray] = {}
        for name, reg in regs.items():
            bar.set_postfix(method=name, pair=pair["name"])
            t0 = time.perf_counter()
            field = reg.register(pair["fixed"], pair["moving"], pair.get("affine"))
            secs = time.perf_counter() - t0
            records[name].append({"pair": pair["name"], "seconds": secs, **evaluate_pair(pair, field)})
            fields[name] = field
            bar.update(1)
        bar.set_postfix(method="quantized (emulator)", pair=pair["name"])
        r = emulator_registrations(q, emu, pair["fixed"], pair["moving"], emu_max_voxels, emu_multiple,
                                   symmetric=symmetric)
        records["quantized"].append({"pair": pair["name"], "seconds": r["tiled_seconds"],
                                     "count_seconds": r["count_seconds"], "inference": emu_tiled_label,
                                     **evaluate_pair(pair, r["tiled_field"])})
        bar.update(1)
        records["quantized_whole"].append({"pair": pair["name"], "seconds": r["whole_seconds"],
                                           "inference": inference_label(pair["fixed"].shape, q.scales, q.patch_size,
                                                                        q.stride, emu_max_voxels, emu_multiple),
                                           **evaluate_pair(pair, r["whole_field"])})
        dep_fields = {"tiles": r["tiled_field"]}
        # counted passes of the other Loihi deployments (exact counts per input shape, Dice of each)
        for dep, kw in (("tiles_no_overlap", {"stride": q.patch_size}),
                        ("whole", {"max_voxels": emu_max_voxels, "multiple": emu_multiple})):
            u = register_deployment(q, dep_emus[dep], pair["fixed"], pair["moving"], symmetric=symmetric, **kw)
            records[f"loihi_{dep}"].append({"pair": pair["name"], **evaluate_pair(pair, u)})
            dep_fields[dep] = u
        fields["quantized"] = dep_fields[main_dep]   # the quantized field of the Loihi 2 rows
        bar.update(1)
        warped = {shown[n]: SpikeRegInference.apply_deformation(normalize_intensity(pair["moving"]), fields[n])
                  for n in shown if n in fields}
        figure(f"overlays_{pair['name']}",
               f"{pair['name']} (subjects {pair.get('subjects')}): fixed and moving once, then each method's warped "
               "moving image; three orthogonal middle slices with the fixed image's edges (cyan), and "
               "|image - fixed| on one shared colour scale",
               lambda: figs.overlay_figure(report / f"overlays_{pair['name']}.png", normalize_intensity(pair["fixed"]),
                                           normalize_intensity(pair["moving"]), warped,
                                           title=f"{pair['name']}: fixed, moving and warped"))
        if k == 0:
            keep = fields
    bar.close()
    counts = emu.counts
    n_pairs = len(pairs)
    patches_per_reg = counts.samples / n_pairs
    dep_emus["tiles"] = emu
    records["loihi_tiles"] = records["quantized"]

    rows: List[Dict[str, Any]] = []
    notes: List[str] = []
    constants: Dict[str, Dict[str, Any]] = dict(consts.as_dict())
    gpu_present = bool(torch.cuda.is_available())
    gpu_measurable = gpu_present and nvml_available("cuda")
    if gpu_measurable and gpu_record is not None:
        gpu_record, gpu_record_info["why"] = None, "not used: the GPU rows are measured on this machine"
    if symmetric and gpu_record is not None:
        gpu_record, gpu_record_info["why"] = None, ("not used: --symmetric registers both ways, the record measured "
                                                    "one way")
    if symmetric:
        notes.append("--symmetric: VoxelMorph and SpikeReg (float, quantized emulator, Loihi 2 counts, GPU estimates) "
                     "registered each pair both ways and scored the inverse-consistent mean of the two fields "
                     "(registration.transform.symmetric_field): twice the network calls; ANTs SyN and the identity "
                     "as always.")

    def cpu_ms(name: str) -> Optional[float]:
        return 1e3 * float(np.mean([r["seconds"] for r in records[name]]))

    def labels(rs: List[Dict[str, Any]]) -> str:
        return "; ".join(dict.fromkeys(r["inference"] for r in rs))

    float_label = (labels([{"inference": inference_label(p["fixed"].shape, finf.net.cfg.scales, finf.patch, finf.stride,
                                                         finf.max_voxels, finf.multiple)} for p in pairs])
                   if finf is not None else None)
    whole_label = labels(records["quantized_whole"])

    # ---------------------------------------------------------------- VoxelMorph
    if "voxelmorph" in regs:
        acc = _acc(records["voxelmorph"])
        from ..baselines.voxelmorph import predict_field
        from ..registration.transform import register_both_ways
        vnet = regs["voxelmorph"].load()
        p0 = pairs[0]
        ft = torch.from_numpy(normalize_intensity(p0["fixed"]))[None, None]
        mt = torch.from_numpy(normalize_intensity(p0["moving"]))[None, None]
        def vm_register(net: Any, f: Any, m: Any) -> Any:
            """One VoxelMorph registration as the CPU rows run it (both ways with --symmetric)."""
            one_way = lambda a, b: predict_field(net, a, b)  # noqa: E731
            return register_both_ways(one_way, f, m) if symmetric else one_way(f, m)

        vm_pass = lambda: vm_register(vnet, ft, mt)  # noqa: E731
        vmacs = count_conv_macs(vnet, vm_pass)
        if gpu_measurable:
            gnet = vnet.to("cuda")
            fg, mg = ft.cuda(), mt.cuda()
            def vcall():
                with torch.no_grad():
                    return vm_register(gnet, fg, mg)
            g = measure_gpu(vcall, n_repeats=10)
            vnet.to("cpu")
            rows.append(make_row("VoxelMorph", f"{g['device']}", energy_mj=g["energy_mj"], dynamic_mj=g["dynamic_mj"],
                                 energy_source="measured",
                                 latency_ms=g["latency_ms"], latency_source="measured", **acc,
                                 note=f"NVML energy counter over {g['n_calls']} forward passes of the whole volume "
                                      "(gross; dynamic = minus idle power); Dice/HD95/folding from the CPU runs of the "
                                      "same model.",
                                 details={"gpu": g, "macs": vmacs["macs"]}))
        else:
            vkern = count_gpu_kernels(vm_pass)
            lat = estimate_gpu_latency(vmacs["macs"], basis=gpu_throughput, kernels=vkern["per_kernel"])
            conv_only = estimate_gpu_latency(vmacs["macs"], basis=gpu_throughput, layers=vmacs["layers"])
            e = estimate_gpu(vmacs["macs"], basis=gpu_basis, latency_ms=lat["latency_ms"])
            constants.update(e["constants"])
            constants.update(lat["constants"])
            vrow = make_row("VoxelMorph", "GPU (no GPU here: estimate)", energy_mj=e["energy_mj"],
                            dynamic_mj=e["dynamic_mj"],
                            energy_source="estimated", latency_ms=lat["latency_ms"], latency_source="estimated",
                            **acc, note=(f"ESTIMATED: {vmacs['macs']:.4g} counted conv MACs of one registration "
                                         f"({'both ways: two forward passes' if symmetric else 'one forward pass'}, "
                                         f"{tuple(p0['fixed'].shape)} volume) x {e['constants'][gpu_basis]['value']:g} "
                                         f"pJ/MAC ({gpu_basis}) + idle power x latency (gross); latency = {lat['latency_basis']} "
                                         f"({vkern['kernels']} kernels counted on the CPU; H100 SXM datasheet peaks and "
                                         "a graph-replay launch floor: a best case, eager launches cost more). No GPU on "
                                         "this machine. Dice/HD95/folding from the CPU runs."),
                            details={"macs": vmacs["macs"], "uncounted_modules": vmacs["uncounted"],
                                     "kernels": vkern["kernels"], "kernel_ops": vkern["ops"],
                                     "kernel_bytes": vkern["bytes"],
                                     "conv_only_roofline_latency_ms": conv_only["latency_ms"],
                                     "horowitz_lower_bound_mj": estimate_gpu(vmacs["macs"], basis="horowitz_fp32_mac_pj")["energy_mj"]})
            if gpu_record is not None:
                from ..checkpoint import file_sha256
                vrow = gpu_record_row(vrow, gpu_record, "voxelmorph", file_sha256(regs["voxelmorph"].checkpoint),
                                      p0["fixed"].shape)
                if vrow["energy_source"] == "measured":
                    gpu_record_info["used_for"].append("voxelmorph")
            rows.append(vrow)
        rows.append(make_row("VoxelMorph", f"CPU ({threads} thread(s))", energy_note="no CPU energy counter (RAPL) "
                             "readable on this machine", latency_ms=cpu_ms("voxelmorph"), latency_source="measured",
                             **acc, note="wall time of the whole-volume registration call (model loaded).",
                             details={"seconds_per_pair": [r["seconds"] for r in records["voxelmorph"]]}))
        rows[-1]["inference"] = WHOLE_VOLUME
    else:
        rows.append(refusal_row("VoxelMorph", "GPU", skipped.get("voxelmorph", "not available")))
        rows.append(refusal_row("VoxelMorph", "CPU", skipped.get("voxelmorph", "not available")))

    # ---------------------------------------------------------------- SpikeReg on Loihi 2 (estimated)
    from loihi.mapping import write_mapping
    from ..profiler.loihi2_energy import PRESETS, load_constants as _presets
    src = {"kind": "net.h5", "path": qinfo["path"], "sha256": qinfo.get("source_sha256")}
    bracket = {name: _presets(args.constants, preset=name) for name in PRESETS}
    graded_sources = [l.name for l in q.layers if int(getattr(l, "payload_shift", -1)) >= 0]
    variants: Dict[Tuple[str, str], Dict[str, Any]] = {}
    cache: Dict[Any, Any] = {}
    from loihi.partition import CACHE_STATS, partition_cache
    pcache_dir = None if getattr(args, "no_partition_cache", False) else out / "cache" / "partitions"
    hits0, miss0 = CACHE_STATS["hits"], CACHE_STATS["misses"]
    t_price = time.perf_counter()
    with partition_cache(pcache_dir):
        for dep in DEPLOYMENTS:
            for enc in ENCODING_LABELS:
                log(f"[benchmark] Loihi 2 estimate: {ENCODING_LABELS[enc]}, {dep}")
                variants[(enc, dep)] = price_loihi2(emu.layers, dep_emus[dep].by_shape, consts, enc, n_pairs, src,
                                                    sensitivity=bracket, cache=cache)
                variants[(enc, dep)].update(deployment=dep, **_acc(records[f"loihi_{dep}"]))
    pcache = {"dir": None if pcache_dir is None else os.path.relpath(pcache_dir, out),
              "hits": CACHE_STATS["hits"] - hits0, "misses": CACHE_STATS["misses"] - miss0,
              "pricing_seconds": time.perf_counter() - t_price,
              "key": "sha256 of the network's resources per input shape (every layer's fan-in maps), the core "
                     "limits (encoding), the neuron caps of the op balancing and the mapper's source",
              **({"errors": CACHE_STATS["errors"][-5:]} if CACHE_STATS["errors"] else {})}
    log(f"[benchmark]   Loihi 2 pricing {pcache['pricing_seconds']:.0f} s; partitions "
        + ("not cached (--no-partition-cache)" if pcache_dir is None else
           f"cached in {pcache_dir}: {pcache['hits']} read, {pcache['misses']} computed"))
    from loihi.mapping import mapping_summary
    from ..io.atomic import atomic_write_text as _awt
    sparse_json = "written"
    for enc, folder in (("shared", "loihi"), ("sparse", "loihi_sparse")):
        maps = variants[(enc, main_dep)]["_mappings"]
        big = maps[max(maps, key=lambda k: maps[k]["totals"]["cores"])]
        if enc == "sparse" and args.quick:
            # --quick: the conservative bound's per-core mapping.json (tens of MB for the whole volume,
            # ~10 s of JSON) is not written; its summary is, and benchmark.json says so
            stale = out / folder / "mapping.json"
            if stale.is_file():
                stale.unlink()
            _awt(out / folder / "mapping_summary.txt", mapping_summary(big))
            sparse_json = "not written (--quick): mapping_summary.txt only; run without --quick for mapping.json"
        else:
            write_mapping(big, out / folder)
    mapping = max(variants[("shared", main_dep)]["_mappings"].values(), key=lambda m: m["totals"]["cores"])
    main_counts = list(dep_emus[main_dep].by_shape.values())
    for enc in ENCODING_LABELS:
        v = variants[(enc, main_dep)]
        shapes_txt = ", ".join(f"{k}: {x['calls'] // n_pairs if n_pairs else x['calls']} call(s), {x['cores']} cores, "
                               f"{x['chips']} chips" for k, x in v["shapes"].items())
        rows.append(make_row(
            "SpikeReg (quantized)", f"Loihi 2 (estimated; {ENCODING_LABELS[enc]}, {main_dep.replace('_', ' ')})",
            energy_mj=v["energy_mj"], dynamic_mj=v["dynamic_mj"], energy_source="estimated",
            latency_ms=v["latency_ms"], latency_source="estimated",
            **{k: v[k] for k in ("dice", "hd95", "folding_pct")},
            note=(f"ESTIMATED by the profiler's model, not measured on Loihi 2: exact spike/synop counts of the "
                  f"bit-accurate emulator ({DEPLOYMENTS[main_dep]}; per input shape {shapes_txt}) x per-op energies "
                  f"and times ({PRESETS['hala_point'][0] if args.constants is None else 'constants from ' + str(args.constants)}) "
                  f"+ Loihi 2 static power x {v['chips']} chips x time (gross); mapping: "
                  + ("Loihi 2 convolutional (shared-kernel) cores balanced on synaptic ops" if enc == "shared" else
                     "every synapse stored explicitly (Lava Sparse) with Loihi 1 per-neuron axon limits: the "
                     "conservative bound")
                  + f". Loihi 1 Table 2 constants instead: {v['sensitivity']['loihi1_table2']['energy_mj']:.3g} mJ, "
                  f"{v['sensitivity']['loihi1_table2']['latency_ms']:.3g} ms. Dice/HD95/folding from the quantized "
                  "network's own fields of the same registrations."),
            details={k: val for k, val in v.items() if not k.startswith("_")} | {
                "neurobench": [c.neurobench(graded_sources) for c in main_counts], "net": qinfo}))
        rows[-1]["inference"] = DEPLOYMENTS[main_dep]
    main = variants[("shared", main_dep)]
    acc_q = _acc(records["quantized"])

    # ---------------------------------------------------------------- SpikeReg GPU simulation
    acc_f = _acc(records["spikereg"]) if "spikereg" in records else {}
    slayer_layers = slayer_roofline_layers(dep_emus["whole"], n_pairs)
    slayer_macs = sum(m for m, _ in slayer_layers)
    if "spikereg" not in regs:
        rows.append(refusal_row("SpikeReg", "GPU simulation (SLAYER)", skipped.get("spikereg", "not available")))
    elif gpu_measurable:
        ginf = SpikeRegInference(regs["spikereg"].checkpoint, device="cuda", symmetric=symmetric)
        p0 = pairs[0]
        g = measure_gpu(lambda: ginf.register(p0["fixed"], p0["moving"]), n_repeats=2, warmup=1)
        rows.append(make_row("SpikeReg", f"GPU simulation (SLAYER, {g['device']})", energy_mj=g["energy_mj"],
                             dynamic_mj=g["dynamic_mj"],
                             energy_source="measured", latency_ms=g["latency_ms"], latency_source="measured", **acc_f,
                             note="NVML energy of whole registrations of the first pair (gross; dynamic = minus idle power); "
                                  "Dice/HD95/folding from the CPU runs of the same float model.",
                             details={"gpu": g}))
        rows[-1]["inference"] = float_label
    else:
        lat = estimate_gpu_latency(slayer_macs, basis=gpu_throughput, layers=slayer_layers)
        e = estimate_gpu(slayer_macs, basis=gpu_basis, latency_ms=lat["latency_ms"])
        constants.update(e["constants"])
        constants.update(lat["constants"])
        srow = make_row(
            "SpikeReg", "GPU simulation (SLAYER; no GPU here: estimate)", energy_mj=e["energy_mj"],
            dynamic_mj=e["dynamic_mj"],
            energy_source="estimated", latency_ms=lat["latency_ms"], latency_source="estimated", **acc_f,
            note=(f"ESTIMATED: SLAYER computes every layer's convolution densely on every time step of its window, "
                  f"whole volume (as the float CPU row runs): {slayer_macs:.4g} MACs per registration (sum of out x "
                  f"C_in x k^3 x window over the calls) x {e['constants'][gpu_basis]['value']:g} pJ/MAC ({gpu_basis}) + "
                  f"idle power x latency (gross); latency = {lat['latency_basis']} (H100 SXM datasheet peaks: a best "
                  "case; neuron dynamics and kernel launches not counted). No GPU on this machine. Dice/HD95/folding "
                  "from the CPU runs of the same model."),
            details={"macs": slayer_macs, "horowitz_lower_bound_mj": estimate_gpu(slayer_macs, basis="horowitz_fp32_mac_pj")["energy_mj"]})
        srow["inference"] = f"{WHOLE_VOLUME} (MACs counted per call)"
        if gpu_record is not None:
            from ..checkpoint import file_sha256
            srow = gpu_record_row(srow, gpu_record, "spikereg_slayer", file_sha256(regs["spikereg"].checkpoint),
                                  pairs[0]["fixed"].shape)
            if srow["energy_source"] == "measured":
                srow["inference"] = float_label
                gpu_record_info["used_for"].append("spikereg_slayer")
        rows.append(srow)

    # ---------------------------------------------------------------- SpikeReg CPU (float) and emulator
    if "spikereg" in regs:
        rows.append(make_row("SpikeReg (float SLAYER)", f"CPU ({threads} thread(s))",
                             energy_note="no CPU energy counter (RAPL) readable on this machine",
                             latency_ms=cpu_ms("spikereg"), latency_source="measured", **acc_f,
                             note=(f"wall time of SpikeRegInference.register, as a user runs it ({float_label}: "
                                   f"max_voxels={finf.max_voxels}, coarse-to-fine over scales "
                                   f"{list(finf.net.cfg.scales)}); Dice/HD95/folding from these fields."),
                             details={"seconds_per_pair": [r["seconds"] for r in records["spikereg"]],
                                      "max_voxels": finf.max_voxels}))
        rows[-1]["inference"] = float_label
    else:
        rows.append(refusal_row("SpikeReg (float SLAYER)", "CPU", skipped.get("spikereg", "not available")))
    acc_w = _acc(records["quantized_whole"])
    rows.append(make_row("SpikeReg (quantized emulator)", f"CPU ({threads} thread(s))",
                         energy_note="no CPU energy counter (RAPL) readable on this machine",
                         latency_ms=cpu_ms("quantized_whole"), latency_source="measured", **acc_w,
                         note=(f"bit-accurate integer emulator of net.h5 (calibration/emulator.py) as a user runs it: "
                               f"latency and Dice/HD95/folding of one registration per pair, {whole_label} "
                               f"(register_tensors, max_voxels={emu_max_voxels}, like the float row). The Loihi row's "
                               f"spike counts come from a separate counted pass ({emu_tiled_label}): "
                               f"{cpu_ms('quantized'):.0f} ms per pair without the counting, Dice "
                               f"{'n/a' if acc_q['dice'] is None else format(acc_q['dice'], '.4f')} (tiled) vs "
                               f"{'n/a' if acc_w['dice'] is None else format(acc_w['dice'], '.4f')} (whole)."),
                         details={"seconds_per_pair": [r["seconds"] for r in records["quantized_whole"]],
                                  "max_voxels": emu_max_voxels, "multiple": emu_multiple,
                                  "tiled": {"inference": emu_tiled_label, "latency_ms": cpu_ms("quantized"),
                                            "seconds_per_pair": [r["seconds"] for r in records["quantized"]],
                                            "count_seconds_per_pair": [r["count_seconds"] for r in records["quantized"]],
                                            **acc_q}}))
    rows[-1]["inference"] = whole_label

    # ---------------------------------------------------------------- Lava CPU simulation
    lava_rows = _lava_rows(args, q, meta, variants[("sparse", "tiles")]["_mappings"][tuple(q.patch_size)],
                           patches_per_reg, log)
    rows += lava_rows

    # ---------------------------------------------------------------- classical baselines
    if "ants_syn" in regs:
        rows.append(make_row("ANTs SyN", f"CPU ({threads} thread(s))",
                             energy_note="no CPU energy counter (RAPL) readable on this machine",
                             latency_ms=cpu_ms("ants_syn"), latency_source="measured", **_acc(records["ants_syn"]),
                             note="antspyx registration (type SyN" + (f", iterations {args.ants_iterations}" if
                                                                      args.ants_iterations else ", ANTsPy defaults") + ").",
                             details={"seconds_per_pair": [r["seconds"] for r in records["ants_syn"]]}))
        rows[-1]["inference"] = WHOLE_VOLUME
    else:
        rows.append(refusal_row("ANTs SyN", "CPU", "skipped (--no-ants)" if args.no_ants
                                else skipped.get("ants_syn", "not available")))
    rows.append(make_row("identity (reference)", "CPU", energy_note="nothing to measure (zero field)",
                         latency_ms=cpu_ms("identity"), latency_source="measured", **_acc(records["identity"]),
                         note="no registration: the accuracy before registration."))

    if not gpu_present and gpu_record_info["used_for"]:
        notes.append(f"No GPU on this machine: the GPU row(s) of {', '.join(gpu_record_info['used_for'])} are NVML "
                     f"measurements recorded {gpu_record_info.get('date')} on {gpu_record_info.get('gpu')} by "
                     f"scripts/gpu_session.py ({gpu_record_info.get('path')}) for the same model files (sha256), "
                     "'measured' there, not on this machine; their Dice is this run's CPU registrations. Each such "
                     "row keeps the estimate from counted MACs in details.estimate. Any other GPU row is an "
                     "estimate (a best case for the GPU); --no-gpu-record shows the estimates alone.")
    elif not gpu_present:
        notes.append("No GPU on this machine: the GPU rows are estimates from counted MACs (energy per MAC and peak "
                      "throughput from cited datasheet/paper figures, a per-kernel time of a CUDA-graph replay); both are best "
                     "cases for the GPU.")
    notes.append("No CPU energy is reported: this machine exposes no energy counter (RAPL); nothing is estimated "
                 "in its place.")
    notes.append(f"Tiling: the CPU latency rows register as a user does (SpikeReg float: {float_label}; emulator: "
                 f"{whole_label}; VoxelMorph and ANTs: whole volume). The Loihi 2 rows count the operations of the "
                 f"{main_dep.replace('_', ' ')} deployment ({DEPLOYMENTS[main_dep]}; each input shape mapped and priced "
                 "on its own); the SLAYER GPU estimate counts the whole-volume calls; the Lava rows run one patch or "
                 f"the tiles ({emu_tiled_label}). Each row's `inference` in benchmark.json says which.")
    notes.append(f"Loihi 2 figures (estimated) depend on: the spike counts of the quantized network (net.h5: "
                 f"{qinfo['made_by']}), the per-op constants (derived from Hala Point's published totals; Loihi 1 "
                 "Table 2 in benchmark.json's loihi2_sensitivity; Loihi 2's own per-op figures are unpublished), the "
                 f"measured Loihi 2 static power per chip, and the mapping's chips ({main['chips']}) and per-core load "
                 "(loihi/). Not modelled: host I/O (injecting the input, reading the field), network-on-chip "
                 "congestion, reconfiguration between input shapes. Override constants with --constants. "
                 "benchmark.json's loihi2_variants prices every deployment with both mappings.")
    vtxt = "; ".join(f"{ENCODING_LABELS[e]}, {d.replace('_', ' ')}: {v['energy_mj']:.3g} mJ gross ({v['dynamic_mj']:.3g} "
                     f"dynamic), {v['latency_ms']:.3g} ms, {v['chips']} chips, {v['cores']} cores, Dice "
                     f"{'n/a' if v['dice'] is None else format(v['dice'], '.4f')}" for (e, d), v in variants.items())
    notes.append(f"Loihi 2 variants (estimated, per registration): {vtxt}.")
    # ---------------------------------------------------------------- figures
    fshown = {"identity": "identity (zero field)", **shown}
    figure("field", f"{pairs[0]['name']}: |u| of every method on one shared colour scale (the identity's zero field "
                    "first), det J on 0..2, and the det J histogram of every field",
           lambda: figs.field_figure(report / "field_detj.png", {fshown[k]: keep[k] for k in fshown if k in keep},
                                     title=f"{pairs[0]['name']}: displacement and det J"))
    label_names = {int(k): str(v) for k, v in (meta.get("label_names") or {}).items()}
    dice_methods = {"identity": "identity", "voxelmorph": "VoxelMorph", "spikereg": "SpikeReg float",
                    f"loihi_{main_dep}": f"SpikeReg quantized ({main_dep})", "ants_syn": "ANTs SyN"}
    dice_per_label: Dict[str, Dict[str, List[Optional[float]]]] = {}
    for key, lab in dice_methods.items():
        if not records.get(key):
            continue
        labs = sorted({int(x) for rec in records[key] for x in rec.get("dice_per_label", {})})
        dice_per_label[lab] = {label_names.get(l, str(l)): [
            (rec["dice_per_label"].get(l, rec["dice_per_label"].get(str(l)))) for rec in records[key]] for l in labs}
    if any(dice_per_label.values()):
        figure("dice_per_label", f"Dice per label ({'box plots over' if n_pairs > 1 else 'bars:'} {n_pairs} pair(s)), "
                                 "methods side by side, label names from the data set",
               lambda: figs.dice_per_label_figure(report / "dice_per_label.png", dice_per_label,
                                                  title=f"Dice per label, {n_pairs} held-out pair(s)"))
    identity_dice = next((r["dice"] for r in rows if r["method"] == "identity (reference)"), None)
    figure("energy", "gross energy per registration of every row with an energy: static (or idle) vs dynamic, and "
                     "against Dice (filled: gross, open: dynamic; dashed: the identity's Dice)",
           lambda: figs.energy_breakdown_figure(report / "energy.png", rows, identity_dice,
                                                title="energy per registration (estimated / measured as labelled)"))
    rates = layer_rates(main_counts)
    figure("spike_rates", f"spikes per neuron per step of every layer of the quantized network ({main_dep})",
           lambda: figs.spike_rate_figure(report / "spike_rates.png", rates,
                                          title=f"quantized network, {main_dep.replace('_', ' ')}: spikes / neuron / step"))
    per_layer = layer_energy(main_counts, consts, n_pairs)
    figure("energy_per_layer", "estimated Loihi 2 dynamic energy per layer (synaptic ops, neuron updates, idle updates, "
                               "spike routing) and the static energy of the whole system (shared kernels, "
                               f"{main_dep})",
           lambda: figs.energy_figure(report / "energy_per_layer.png", per_layer, static_mj=main["static_mj"]))
    if pareto_with:   # this run's point next to other models' benchmark runs, on one basis
        this = {"rows": rows, "pairs": names, "data": {k: v for k, v in meta.items() if k != "label_names"},
                "constants": constants, "mean_spike_rate": mean_spike_rate(main_counts), "spike_rates": rates}
        figure("pareto", "estimated Loihi 2 energy (gross filled, dynamic open) against the quantized Dice of this "
                         f"run's model (1) and of {len(pareto_with)} other benchmark run(s) on the same pairs and "
                         "constants (--pareto-with); the front joined",
               lambda: _pareto.figure(report / "pareto.png", _pareto.build_points(
                   [_pareto.point_from_doc(_clean(this), "this run")]
                   + pareto_points)))
    for stale in report.glob("*.png") if report.is_dir() else []:
        if os.path.relpath(stale, out) not in figures.values():
            stale.unlink()   # a figure of an earlier run (another pair count, an old name)
    notes += fig_notes

    machine = _machine(threads)
    machine["gpu"] = _gpu_name()
    doc = build_document(
        rows, constants, names,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine, threads=threads, quick=bool(args.quick), symmetric=symmetric,
        data={k: v for k, v in meta.items() if k != "label_names"},
        pair_subjects={p["name"]: p.get("subjects") for p in pairs},
        per_pair={k: v for k, v in records.items()},
        spike_rates=layer_rates(main_counts),
        mean_spike_rate=mean_spike_rate(main_counts),
        mean_spike_rate_basis=(f"neuron-weighted: all spikes / all (spiking neuron, step) pairs of the quantized "
                               f"network's {main_dep.replace('_', ' ')} registrations (read-out excluded)"),
        loihi2_deployment=main_dep,
        loihi2_variants=[{k: v for k, v in var.items() if not k.startswith("_")} for var in variants.values()],
        loihi2_sensitivity={"basis": ("the main Loihi 2 row (shared kernels, " + main_dep.replace("_", " ")
                                      + ") priced on the same mappings with each constant set"),
                            "presets": {k: d for k, (d, _) in PRESETS.items()},
                            **main["sensitivity"]},
        cpu_latency_ratio_vs_voxelmorph=cpu_latency_ratios(rows, f"CPU ({threads} thread(s))"),
        energy_ratio_vs_voxelmorph_gpu=energy_ratio_vs_gpu(
            rows, f"Loihi 2 (estimated; {ENCODING_LABELS['shared']}, {main_dep.replace('_', ' ')})"),
        label_names=label_names, dice_per_label=dice_per_label,
        loihi_sparse_mapping_json=sparse_json, partition_cache=pcache,
        energy_per_layer_mj=per_layer, gpu_record=gpu_record_info, figures=figures, figure_captions=captions, notes=notes,
        seconds=time.perf_counter() - t_start)
    doc = _clean(doc)
    atomic_write_text(out / "benchmark.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "benchmark.md", markdown(doc))
    atomic_write_text(out / "report.html", report_html(doc, out))
    print(printable(doc))
    print(ratio_line(doc["cpu_latency_ratio_vs_voxelmorph"]))
    print(energy_ratio_sentence(doc["energy_ratio_vs_voxelmorph_gpu"]))
    print(f"wrote {out / 'benchmark.json'}, {out / 'benchmark.md'}, {out / 'report.html'} and {len(figures)} "
          f"figures in {report} ({time.perf_counter() - t_start:.0f} s)")
    return 0


def _lava_rows(args, q, meta, mapping, patches_per_reg: float, log) -> List[Dict[str, Any]]:
    """The Lava CPU rows: one patch measured, the full volume extrapolated (estimated)."""
    from ..profiler.table import make_row, refusal_row

    plat = f"CPU, Lava Loihi2SimCfg fixed_pt, one {'x'.join(map(str, args.lava_patch))} patch (measured)"
    plat_full = "CPU, Lava, full registration (extrapolated)"
    if args.no_lava:
        return [refusal_row("SpikeReg (quantized)", plat, "skipped (--no-lava)"),
                refusal_row("SpikeReg (quantized)", plat_full, "skipped (--no-lava)")]
    try:
        from calibration.emulator import emulate
        from sim.cli import load_patch
        from sim.run import run_lava
        import torch

        payload, where = load_patch(q, 0, args.lava_patch, data=meta.get("dataset"))
        log(f"[benchmark] Lava CPU run of one {where['patch']} patch of {where['pair_subjects']} "
            f"at {where['patch_origin']} (timeout {args.lava_timeout:g} s)")
        t0 = time.perf_counter()
        res = run_lava(q, payload, timeout=float(args.lava_timeout))
        wall = time.perf_counter() - t0
        info = getattr(res, "info", {}) or {}
        ref = emulate(q, payload.to(torch.int64), record_spikes=True)
        equal = bool(torch.equal(res.readout_v.cpu(), ref.readout_v.cpu())) and all(
            torch.equal(res.spikes[k].cpu().bool(), ref.spikes[k].cpu().bool()) for k in ref.spikes)
    except Exception as e:
        why = f"the Lava run failed: {_first_line(e)}"
        log(f"[benchmark] {why}")
        return [refusal_row("SpikeReg (quantized)", plat, why), refusal_row("SpikeReg (quantized)", plat_full, why)]
    timings = info.get("timings", {})
    run_s = float(timings.get("run_s", wall))
    rows = [make_row(
        "SpikeReg (quantized)", plat, energy_note="no CPU energy counter (RAPL) readable on this machine",
        latency_ms=run_s * 1e3, latency_source="measured",
        dice=None, hd95=None, folding_pct=None,
        note=(f"measured on ONE {where['patch']} patch of the first pair, not a registration: run time of "
              f"{info.get('num_steps', '?')} simulated steps ({info.get('processes', '?')} Lava processes, "
              f"{info.get('neurons', '?')} neurons, {info.get('synapses', '?')} synapses); whole call incl. graph "
              f"build/compile/start {wall:.1f} s. Lava spikes and read-out equal the emulator's: {equal}. "
              "No Dice: one patch is not a registration."),
        details={"lava": {k: v for k, v in info.items() if k not in ("connections", "step_times_s")},
                 "wall_s": wall, "equal_to_emulator": equal, **where})]
    measured = _lava_full_row(args, q, meta, log)
    if measured is not None:
        rows.append(measured)
        return rows
    syn_full = float(mapping["totals"]["synapses"])
    syn_patch = float(info.get("synapses") or 0)
    if syn_patch > 0:
        factor = syn_full / syn_patch
        est_ms = run_s * 1e3 * factor * patches_per_reg
        rows.append(make_row(
            "SpikeReg (quantized)", plat_full, energy_note="no CPU energy counter (RAPL) readable on this machine",
            latency_ms=est_ms, latency_source="estimated",
            note=(f"ESTIMATED by extrapolation, not run: measured patch run time x (synapses of a "
                  f"{q.patch_size[0]}^3 patch / of the measured patch = {factor:.2f}) x {patches_per_reg:.0f} patches "
                  "per registration (graph build/compile once, not included). A measured full run replaces it: "
                  "--lava-run RUN_JSON (from `simulate --full --backend lava`) or --lava-full."),
            details={"factor": factor, "patches_per_registration": patches_per_reg}))
    else:
        rows.append(refusal_row("SpikeReg (quantized)", plat_full, "the Lava run reported no synapse count"))
    return rows


def _lava_full_row(args, q, meta, log) -> Optional[Dict[str, Any]]:
    """The MEASURED "Lava, full registration" row: from ``--lava-run RUN_JSON`` (a
    ``simulate --full --backend lava`` run.json) or measured here with ``--lava-full`` (pair 0;
    with ``--quick`` only its centred tile-sized crop, which the row says). None: keep the estimate."""
    from ..profiler.table import make_row

    path, run_here = getattr(args, "lava_run", None), getattr(args, "lava_full", False)
    if not path and not run_here:
        return None
    try:
        if path:
            doc = read_lava_run(path)
            how = f"`simulate --full` run.json {path}"
        else:
            from sim.cli import machine_info
            from sim.session import compare_full, register_full
            from sim.cli import load_pair
            pr, h5 = load_pair(q, 0, data=meta.get("dataset"))
            f, m = pr["fixed"], pr["moving"]
            crop = None
            if args.quick:
                crop = [min(int(t), int(n)) for t, n in zip(q.patch_size, f.shape)]
                o = [(n - c) // 2 for n, c in zip(f.shape, crop)]
                sl = tuple(slice(a, a + c) for a, c in zip(o, crop))
                f, m = f[sl], m[sl]
            log(f"[benchmark] Lava full registration of pair 0 {list(f.shape)} (timeout {args.lava_timeout:g} s)")
            res = register_full(q, f, m, backend="lava", tile=q.patch_size, stride=q.stride,
                                timeout=float(args.lava_timeout))
            ref = register_full(q, f, m, backend="emulator", tile=q.patch_size, stride=q.stride)
            c = compare_full(res, ref)
            doc = {"seconds": res.seconds, "patches": res.patches, "patches_per_iteration": res.patches_per_scale,
                   "volume_shape": [int(x) for x in f.shape], "crop": crop, "pair": 0, "tile": list(q.patch_size),
                   "stride": list(q.stride), "field_equal_emulator": bool(c["equal"]), "machine": machine_info(),
                   "lava": {"graph_builds": res.info.get("graph_builds")}}
            how = "measured here (--lava-full)"
    except Exception as e:
        log(f"[benchmark] no measured Lava full registration ({_first_line(e)}); keeping the estimate")
        return None
    mach = doc.get("machine") or {}
    vol = "x".join(map(str, doc.get("volume_shape", [])))
    part = (f"ONLY the centred {vol} crop of pair {doc.get('pair')} (--quick), not the whole volume"
            if doc.get("crop") else f"the whole {vol} pair {doc.get('pair')}")
    return make_row(
        "SpikeReg (quantized)", "CPU, Lava, full registration (measured)",
        energy_note="no CPU energy counter (RAPL) readable on this machine",
        latency_ms=float(doc["seconds"]) * 1e3, latency_source="measured",
        note=(f"MEASURED ({how}): {part}, {doc.get('patches')} patches {doc.get('patches_per_iteration')} over the "
              f"residual iterations, tiles {doc.get('tile')} stride {doc.get('stride')}, every patch through Lava "
              f"(one graph per patch shape, reused); wall clock incl. worker start, graph build and compile; "
              f"field equal to the emulator's: {doc.get('field_equal_emulator')}; on {mach.get('cpu', '?')} "
              f"({mach.get('usable_cpus', '?')} CPUs), {mach.get('date', '?')}."),
        details={k: doc.get(k) for k in ("seconds", "patches", "patches_per_iteration", "volume_shape", "crop",
                                         "pair", "tile", "stride", "field_equal_emulator", "machine", "net_sha256")}
        | {"source": how, "graph_builds": (doc.get("lava") or {}).get("graph_builds")})


__all__ = ["run_table", "obtain_qnet", "fast_calibration", "CountingEmulator", "emulator_registrations",
           "inference_label", "cpu_latency_ratios", "ratio_line", "WHOLE_VOLUME"]
