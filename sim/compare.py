"""Spike-for-spike comparison of two runs (Lava vs emulator, or any two EmulationResults)."""
from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from calibration.emulator import EmulationResult


def readout_sha256(readout_v) -> str:
    """sha256 of the integer read-out (little-endian int64, C order, shape ``(3, D, H, W)``;
    a leading batch dimension of 1 is dropped), so runs can be compared by a hash."""
    v = readout_v.detach().cpu().numpy() if isinstance(readout_v, torch.Tensor) else np.asarray(readout_v)
    if v.ndim == 5 and v.shape[0] == 1:
        v = v[0]
    return hashlib.sha256(np.ascontiguousarray(v.astype("<i8")).tobytes()).hexdigest()


def spikes_per_step(spikes) -> List[int]:
    """Spike count per local time step of a ``(..., T)`` spike (or graded payload) tensor."""
    s = spikes.detach().cpu().numpy() if isinstance(spikes, torch.Tensor) else np.asarray(spikes)
    return [int(x) for x in (s.reshape(-1, s.shape[-1]) != 0).sum(axis=0)]


def compare_results(a: EmulationResult, b: EmulationResult, layers: Sequence[str] = ()) -> Dict[str, Any]:
    """Mismatches per layer (entries ``(neuron, step)`` where exactly one run spiked, or, for
    graded spikes, where the payloads differ) and in the
    integer read-out. ``equal`` is True when everything matches (0 mismatches everywhere)."""
    names = list(layers) or list(a.spikes)
    out: Dict[str, Any] = {"layers": {}, "equal": True}
    missing = [n for n in names if n not in a.spikes or n not in b.spikes]
    if missing:
        raise KeyError(f"layers {missing} are missing from one of the runs")
    for n in names:
        pa, pb = a.spikes[n], b.spikes[n]
        x, y = pa.bool(), pb.bool()
        if x.shape != y.shape:
            raise ValueError(f"{n}: spike tensors differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        d = x ^ y
        if pa.dtype != torch.bool or pb.dtype != torch.bool:   # graded spikes: payloads must agree too
            d = d | (pa.to(torch.int64) != pb.to(torch.int64))
        per_step = d.reshape(-1, d.shape[-1]).sum(dim=0).tolist()
        row = {"mismatches": int(d.sum()), "entries": int(d.numel()), "spikes_a": int(x.sum()),
               "spikes_b": int(y.sum()), "mismatches_per_step": [int(v) for v in per_step]}
        out["layers"][n] = row
        out["equal"] &= row["mismatches"] == 0
    va, vb = a.readout_v.to(torch.int64), b.readout_v.to(torch.int64)
    if va.shape != vb.shape:
        raise ValueError(f"read-out shapes differ: {tuple(va.shape)} vs {tuple(vb.shape)}")
    diff = (va - vb).abs()
    out["readout"] = {"mismatches": int((diff != 0).sum()), "entries": int(diff.numel()),
                      "max_abs_diff": int(diff.max()) if diff.numel() else 0,
                      "sha256_a": readout_sha256(va), "sha256_b": readout_sha256(vb)}
    out["equal"] &= out["readout"]["mismatches"] == 0
    out["total_spike_mismatches"] = int(sum(r["mismatches"] for r in out["layers"].values()))
    return out


def format_comparison(c: Dict[str, Any]) -> str:
    lines = [f"{'layer':10s} {'mismatches':>10s} {'entries':>10s} {'spikes':>9s}"]
    for n, r in c["layers"].items():
        lines.append(f"{n:10s} {r['mismatches']:10d} {r['entries']:10d} {r['spikes_a']:9d}")
    r = c["readout"]
    lines.append(f"{'readout':10s} {r['mismatches']:10d} {r['entries']:10d}  max|dv| {r['max_abs_diff']}")
    lines.append("EQUAL (0 mismatches)" if c["equal"] else "DIFFERENT")
    return "\n".join(lines)


__all__ = ["readout_sha256", "spikes_per_step", "compare_results", "format_comparison"]
