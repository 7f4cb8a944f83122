"""What a simulation run reads and writes, shared by ``simulate``, ``loihi run`` and the benchmark.

* :func:`load_pair` / :func:`load_patch` - a demo test pair of the data set recorded in net.h5 (or
  of a Learn2Reg / pairs.json folder, or the user's NIfTI pair), and the integer input payload of
  one patch of it;
* :func:`run_json` - the ``run.json`` document of one result (per-layer spikes per step, the
  integer read-out and its sha256);
* :func:`machine_info` - where a measurement was taken.

Library code: the command modules (:mod:`sim.cli`, :mod:`loihi.cli`) call it, never the reverse.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence


#: what simulate says when a pair cannot run as it is
_RESAMPLE_HINT = ("simulate runs a pair on one grid at the net's spacing as it is; `spikereg-neuro register` "
                  "resamples any two scans")


def net_spacing(q):
    """The isotropic spacing (mm) the quantized network's model runs at, and where it came from:
    net.h5's calibration record (``model_voxel_size_mm``, or its embedded data set's
    ``voxel_size_mm``), else the packaged default config's."""
    cal = q.calibration or {}
    if cal.get("model_voxel_size_mm"):
        return float(cal["model_voxel_size_mm"]), "net.h5 (calibration.model_voxel_size_mm)"
    vs = (cal.get("dataset_params") or {}).get("voxel_size_mm")
    if vs is not None:
        import numpy as np
        return float(np.asarray(vs, dtype=float).ravel()[0]), "net.h5 (its calibration data set)"
    from spikereg_neuro.config import load_config
    return float(load_config().data.voxel_size_mm), "the packaged default config (net.h5 records no spacing)"


def load_pair(q, pair: int, data: Optional[str] = None, cache: Optional[str] = None,
              fixed: Optional[str] = None, moving: Optional[str] = None):
    """The pair a run reads (``{"fixed", "moving", "pair", ...}`` numpy, intensities in [0, 1]) and
    where it came from (a path):

    * ``fixed`` and ``moving``: that NIfTI pair (canonical RAS+, one grid at the net's spacing,
      scaled to [0, 1] as ``register`` does; anything else is a one-line ``ValueError``);
    * ``data`` a Learn2Reg / pairs.json folder: its evaluation pair ``pair`` (``registration_val``,
      or the ``pairs.json`` list), read the same way;
    * else demo test pair ``pair`` of the embedded data set: ``data`` (HDF5), or the one recorded in
      net.h5 (``calibration.dataset_params``; a net calibrated on a folder reads that folder), else
      the default DataConfig.

    Folder and NIfTI pairs have ``pair`` ``None`` and a ``name``."""
    from spikereg_neuro.data import build_dataset, load_pairs_numpy, read_pair_folder
    from spikereg_neuro.data.dataset import DataConfig
    from spikereg_neuro.train.folder_data import FolderPairList, embedded_h5, is_folder_data, load_pair_at

    if bool(fixed) != bool(moving):
        raise ValueError("--fixed and --moving go together")
    if fixed:
        if data:
            raise ValueError("--data and --fixed/--moving exclude each other")
        mm, _ = net_spacing(q)
        pr = load_pair_at(fixed, moving, mm, name=f"{Path(fixed).name} <- {Path(moving).name}",
                          hint=_RESAMPLE_HINT)
        pr["pair"] = None
        return pr, Path(fixed)
    folder = None
    if data and is_folder_data(data):
        folder = data
    elif not data:
        rec = (q.calibration or {}).get("data") or {}
        if rec.get("kind") == "folder":
            folder = rec.get("path")
            if not folder or not Path(folder).exists():
                raise FileNotFoundError(f"net.h5 was calibrated on the folder {folder}, which is not there; "
                                        f"pass --data")
    if folder is not None:
        mm, _ = net_spacing(q)
        records = read_pair_folder(folder, split="registration_val")
        pairs = FolderPairList(records, mm, _RESAMPLE_HINT)
        if not 0 <= int(pair) < len(pairs):
            raise ValueError(f"--pair {pair} out of range: {folder} has {len(pairs)} evaluation pairs "
                             f"(0..{len(pairs) - 1})")
        pr = pairs[int(pair)]
        pr["pair"] = None
        return pr, Path(folder)
    if data:
        h5 = embedded_h5(data)
    else:
        params = (q.calibration or {}).get("dataset_params")
        dc = DataConfig.from_dict(params) if params else DataConfig()
        h5 = build_dataset(dc, cache, progress=False)
    pairs = load_pairs_numpy(h5, "test")
    if not 0 <= int(pair) < len(pairs):
        raise ValueError(f"--pair {pair} out of range: the test split has {len(pairs)} demo pairs "
                         f"(0..{len(pairs) - 1})")
    return pairs[int(pair)], Path(h5)


def _where(pr, pair, source) -> Dict[str, Any]:
    """The run.json keys naming the pair a run read."""
    out: Dict[str, Any] = {"dataset": Path(source).name, "pair": int(pair),
                           "pair_subjects": [int(x) for x in pr["pair"]] if pr.get("pair") is not None else None}
    if pr.get("pair") is None:
        out["pair_name"] = pr.get("name")
        out["source"] = str(source)
    return out


def load_patch(q, pair: int, patch: Sequence[int], origin: Optional[Sequence[int]] = None,
               data: Optional[str] = None, cache: Optional[str] = None,
               fixed: Optional[str] = None, moving: Optional[str] = None):
    """Integer payload ``(1, C_in, D, H, W)`` of a patch of demo test pair ``pair`` and where it
    came from (the data set as :func:`load_pair`)."""
    import torch

    from calibration.emulator import payload_of

    pr, h5 = load_pair(q, pair, data, cache, fixed, moving)
    vol = pr["fixed"].shape
    patch = tuple(int(x) for x in patch)
    m = q.size_multiple
    if any(p < 1 or p % m for p in patch):
        raise ValueError(f"--patch {list(patch)} must be positive multiples of {m}")
    if any(p > v for p, v in zip(patch, vol)):
        raise ValueError(f"--patch {list(patch)} larger than the volume {list(vol)}")
    if origin is None:
        origin = tuple((v - p) // 2 for v, p in zip(vol, patch))
    origin = tuple(int(o) for o in origin)
    if any(o < 0 or o + p > v for o, p, v in zip(origin, patch, vol)):
        raise ValueError(f"--origin {list(origin)} + patch {list(patch)} leaves the volume {list(vol)}")
    sl = tuple(slice(o, o + p) for o, p in zip(origin, patch))
    f = torch.from_numpy(pr["fixed"][sl].copy())[None, None].float()
    mv = torch.from_numpy(pr["moving"][sl].copy())[None, None].float()
    payload = payload_of(q, f, mv)
    where = {**_where(pr, pair, h5), "patch": list(patch), "patch_origin": list(origin),
             "volume_shape": [int(x) for x in vol]}
    if fixed:
        where.update(pair=None, fixed=str(fixed), moving=str(moving))
    return payload, where


def run_json(backend: str, q, res, *, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The run.json dictionary of one result (EmulationResult or LavaResult)."""
    import numpy as np

    from .compare import readout_sha256, spikes_per_step

    shapes = {}
    layers = []
    for l in q.layers:
        if l.neuron == "integrator":
            continue
        s = res.spikes[l.name]
        per = spikes_per_step(s)
        shapes[l.name] = list(s.shape[1:-1])
        layers.append({"name": l.name, "spikes_per_step": per, "spikes": int(sum(per)),
                       "neurons": int(np.prod(s.shape[1:-1])), "time_window": int(s.shape[-1])})
    v = res.readout_v[0].cpu().numpy().astype(np.int64)
    fld = res.field[0].cpu().numpy().astype(np.float64)
    out: Dict[str, Any] = {"backend": backend, "layers": layers, "readout_sha256": readout_sha256(v)}
    out["readout"] = {"name": q.readout.name, "shape": list(v.shape), "output_scale": float(q.readout.output_scale),
                      "v_min": int(v.min()), "v_max": int(v.max()),
                      "field_mean_abs_vox": float(np.abs(fld).mean()), "field_max_abs_vox": float(np.abs(fld).max()),
                      "v": [int(x) for x in v.reshape(-1)]}
    if extra:
        out.update(extra)
    return out


def machine_info() -> Dict[str, Any]:
    """Where a measurement was taken: host CPU model, logical CPUs usable by this process, memory,
    load average, Python and lava-nc versions, UTC date."""
    import datetime as dt
    import os
    import platform

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal"))) / 2 ** 20
    except (OSError, StopIteration, ValueError):
        pass
    try:
        from importlib.metadata import version
        lava = version("lava-nc")
    except Exception:
        lava = None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gib": round(mem, 1) if mem else None,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "lava_nc": lava,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


__all__ = ["load_pair", "load_patch", "net_spacing", "run_json", "machine_info"]
