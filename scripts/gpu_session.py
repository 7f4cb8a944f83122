#!/usr/bin/env python
"""Measure the two GPU rows of the benchmark table with NVML and record them in the repository.

Run on a machine with a CUDA GPU (a lent H200: one short command, well inside 10 minutes)::

    python scripts/gpu_session.py [--out benchmarks/results/gpu_nvml.json] [--repeats 10] [--timeout-s 420]

For embedded test pair 0 (``spikereg_neuro.accuracy.embedded_pairs``; or a pair file
made beforehand with ``--prepare``, see below) it measures, each with
:func:`spikereg_neuro.profiler.gpu_energy.measure_gpu` (NVML energy counter before/after a loop
of calls, CUDA synchronized; gross energy and dynamic = minus the idle power measured just
before):

* ``voxelmorph``: the VoxelMorph checkpoint's whole-volume forward pass
  (``baselines.voxelmorph.predict_field``, as the table's "VoxelMorph / GPU" row);
* ``spikereg_slayer``: the float SpikeReg model's whole registration
  ``SpikeRegInference(device="cuda").register`` (the "GPU simulation (SLAYER)" row);

with the counted conv MACs of each (``count_conv_macs``, where it can count them), and writes
``--out``: the date (UTC), the machine (GPU, driver, torch / CUDA / cuDNN, hostname), the pair,
and per model its checkpoint path, sha256 and the measurement. The file is rewritten after each
model, so a run cut short still leaves what it measured. ``spikereg-neuro benchmark`` reads it
on a machine without a GPU, for the same model files only (sha256): docs/benchmark.md.

Without CUDA or a readable NVML energy counter it prints one line and exits 2.

Options: ``--timeout-s`` (the whole script's wall-clock budget; a model not finished by then is
recorded with its error), ``--repeats`` (at least this many timed calls per model; the loop is
lengthened to 2 s), ``--models`` (subset), ``--spikereg-model`` / ``--voxelmorph-model``
(default: the shipped ones), ``--train-steps N`` (off by default: afterwards, also
``spikereg-neuro train --device cuda`` for N optimiser steps into ``runs/gpu_train``, its
time recorded).

The GPU machine's Python may lack the project's pure-Python dependencies and nilearn's template
(the embedded data set). ``--prepare DIR`` (here, on the CPU) writes pair 0 to ``DIR/pair0.npz``
(about 2 MB) and copies SLAYER (lava-dl's ``lava/lib/dl``, without its trained object-detection weights),
voxelmorph, neurite, pystrum and nibabel from this environment to ``DIR/site`` (about 10 MB); carry
DIR and run there (docs/benchmark.md, "Recorded GPU measurements")::

    .venv/bin/python scripts/gpu_session.py --prepare gpu_prep                    # here
    PYTHONPATH=gpu_prep/site:. python3 scripts/gpu_session.py --pair gpu_prep/pair0.npz --out $OUT/gpu_nvml.json

Exit status: 0 every requested model measured; 1 some failed (recorded with the error); 2 no
CUDA/NVML here, or bad arguments.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECORD_FORMAT = "spikereg-neuro/gpu-nvml"
RECORD_VERSION = 1
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_nvml.json"
MODELS = ("voxelmorph", "spikereg_slayer")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_session.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="record file (default benchmarks/results/gpu_nvml.json)")
    p.add_argument("--repeats", type=int, default=10, help="at least this many timed calls per model (default 10)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="shortest timed loop per model (default 2 s)")
    p.add_argument("--idle-seconds", type=float, default=2.0, help="idle window of the idle power (default 2 s)")
    p.add_argument("--timeout-s", type=float, default=420.0, help="wall-clock budget of the whole script (default 420)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--spikereg-model", help="SpikeReg checkpoint (default: the shipped model)")
    p.add_argument("--voxelmorph-model", help="VoxelMorph checkpoint (default: the shipped one)")
    p.add_argument("--pair", help="pair file written by --prepare (default: embedded test pair 0, built here)")
    p.add_argument("--prepare", metavar="DIR", help="write DIR/pair0.npz (embedded test pair 0) and DIR/site (the "
                                                   "pure-Python packages the GPU machine may lack) and exit (CPU)")
    p.add_argument("--config", help="config whose data section defines the embedded pairs")
    p.add_argument("--cache", help="dataset cache directory")
    p.add_argument("--train-steps", type=int, default=0,
                   help="also run `spikereg-neuro train --device cuda` for N steps into --train-out (default: off)")
    p.add_argument("--train-out", default=str(ROOT / "runs" / "gpu_train"), help="run folder of --train-steps")
    a = p.parse_args(argv)
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in a.models if m not in MODELS]
    if bad or not a.models:
        p.error(f"--models: unknown {bad} (known: {', '.join(MODELS)})")
    if a.repeats < 1 or a.timeout_s <= 0 or a.train_steps < 0:
        p.error("--repeats must be >= 1, --timeout-s > 0 and --train-steps >= 0")
    return a


# ============================================================================ helpers
def why_no_gpu() -> Optional[str]:
    """None when CUDA and NVML's energy counter are usable here, else the reason (one line)."""
    import torch
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    try:
        import pynvml  # noqa: F401  (nvidia-ml-py)
    except ImportError:
        return "pynvml is not installed (pip install nvidia-ml-py)"
    from spikereg_neuro.profiler.gpu_energy import nvml_available
    if not nvml_available("cuda"):
        return "NVML's energy counter (nvmlDeviceGetTotalEnergyConsumption) is not readable on this GPU"
    return None


def machine_info() -> Dict[str, Any]:
    """GPU name, driver, torch / CUDA / cuDNN versions, hostname (and a few NVML figures)."""
    import torch
    info: Dict[str, Any] = {"hostname": socket.gethostname(), "python": platform.python_version(),
                            "platform": platform.platform(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                            "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
                            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    try:
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(gpu=torch.cuda.get_device_name(idx), gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    gpu_sm_count=props.multi_processor_count, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    except Exception as e:  # pragma: no cover - GPU only
        info["gpu_error"] = str(e)
    try:
        import pynvml
        from spikereg_neuro.profiler.gpu_energy import _nvml_handle
        h = _nvml_handle("cuda")
        try:
            dec = (lambda v: v.decode() if isinstance(v, bytes) else v)
            info["driver"] = dec(pynvml.nvmlSystemGetDriverVersion())
            info["gpu_nvml_name"] = dec(pynvml.nvmlDeviceGetName(h))
            for key, fn in (("power_limit_w", lambda: pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1e3),
                            ("max_sm_clock_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)),
                            ("temperature_c", lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))):
                try:
                    info[key] = fn()
                except Exception:
                    pass
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # pragma: no cover - GPU only
        info["nvml_error"] = str(e)
    return info


def rel(path: Path) -> str:
    """``path`` relative to the repository root when inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def load_pair(args: argparse.Namespace) -> Dict[str, Any]:
    """Pair 0: from ``--pair`` (DIR/pair0.npz of --prepare) or built from the embedded data set."""
    import numpy as np
    if args.pair:
        with np.load(args.pair, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return {**meta, "fixed": z["fixed"].astype(np.float32), "moving": z["moving"].astype(np.float32),
                    "file": rel(Path(args.pair))}
    from spikereg_neuro.accuracy import embedded_pairs
    from spikereg_neuro.config import load_config
    pairs, meta = embedded_pairs(load_config(args.config), args.cache, progress=False, max_pairs=1)
    p = pairs[0]
    return {"name": p["name"], "subjects": p.get("subjects"), "split": meta.get("split"),
            "source": meta.get("source"), "dataset": Path(str(meta.get("dataset"))).name,
            "dataset_params": meta.get("dataset_params"), "fixed": p["fixed"], "moving": p["moving"]}


def pair_summary(pair: Dict[str, Any]) -> Dict[str, Any]:
    import hashlib
    import numpy as np
    out = {k: v for k, v in pair.items() if k not in ("fixed", "moving")}
    out["shape"] = [int(x) for x in pair["fixed"].shape]
    h = hashlib.sha256()
    for k in ("fixed", "moving"):
        h.update(np.ascontiguousarray(pair[k], dtype=np.float32).tobytes())
    out["arrays_sha256"] = h.hexdigest()
    return out


#: pure-Python packages the GPU machine's image lacks: (import name, folder under site/)
SITE_PACKAGES = (("lava.lib.dl", "lava/lib/dl"), ("voxelmorph", "voxelmorph"), ("neurite", "neurite"),
                 ("pystrum", "pystrum"), ("nibabel", "nibabel"))


def prepare(args: argparse.Namespace) -> int:
    """``--prepare DIR``: pair 0 as DIR/pair0.npz and DIR/site (see the module's docstring)."""
    import importlib
    import shutil
    import numpy as np
    out = Path(args.prepare)
    pair = load_pair(argparse.Namespace(pair=None, config=args.config, cache=args.cache))
    meta = {k: v for k, v in pair.items() if k not in ("fixed", "moving")}
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "pair0.npz", fixed=pair["fixed"].astype(np.float32),
                        moving=pair["moving"].astype(np.float32), meta=np.array(json.dumps(meta)))
    print(f"wrote {out / 'pair0.npz'} ({pair['name']}, subjects {pair.get('subjects')}, "
          f"shape {list(pair['fixed'].shape)})")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "*.pt")   # no trained YOLO weights
    for mod, folder in SITE_PACKAGES:
        src = Path(list(importlib.import_module(mod).__path__)[0])
        dst = out / "site" / folder
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=skip)
    size = sum(f.stat().st_size for f in (out / "site").rglob("*") if f.is_file())
    print(f"copied {', '.join(m for m, _ in SITE_PACKAGES)} to {out / 'site'} ({size / 2 ** 20:.1f} MiB)")
    return 0


def start_watchdog(seconds: float, out: Path, record: Dict[str, Any], state: Dict[str, Any]) -> threading.Timer:
    """At ``seconds``: record the model in flight (``state["model"]``) as stopped, write ``out``
    with what was measured, and end the process (exit 1). A timer thread, not a signal: an
    exception raised into the main thread could be swallowed by a library's import guard."""
    def fire():  # pragma: no cover - timing
        name = state.get("model")
        try:
            why = f"stopped: --timeout-s {seconds:g} s ran out ({state.get('step', 'running')})"
            if name and name not in record.setdefault("models", {}):
                record["models"][name] = {"error": why}
            record["stopped"] = why
            record["seconds"] = seconds
            write_record(out, _clean(json.loads(json.dumps(record, default=str))))
            print(f"[gpu_session] --timeout-s {seconds:g} s ran out in {name}; wrote {out}", flush=True)
        finally:
            os._exit(1)
    t = threading.Timer(float(seconds), fire)
    t.daemon = True
    t.start()
    return t


def write_record(path: Path, record: Dict[str, Any]) -> None:
    from spikereg_neuro.io.atomic import atomic_write_text
    atomic_write_text(path, json.dumps(record, indent=2, allow_nan=False, default=str) + "\n")


def _clean(v: Any) -> Any:
    import math
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


# ============================================================================ the two models
def measure_voxelmorph(args, pair, kw) -> Dict[str, Any]:
    import torch
    from spikereg_neuro.baselines.voxelmorph import DEFAULT_VOXELMORPH_MODEL, load_voxelmorph, predict_field
    from spikereg_neuro.checkpoint import file_sha256
    from spikereg_neuro.inference import normalize_intensity
    from spikereg_neuro.profiler.gpu_energy import count_conv_macs, measure_gpu

    path = Path(args.voxelmorph_model) if args.voxelmorph_model else DEFAULT_VOXELMORPH_MODEL
    entry: Dict[str, Any] = {"checkpoint": rel(path), "sha256": file_sha256(path),
                             "what": "predict_field: one whole-volume forward pass (torch.no_grad), inputs on the "
                                     "GPU (normalize_intensity'd on the host before the loop)"}
    net, _ = load_voxelmorph(path)
    net = net.to("cuda").eval()
    ft = torch.from_numpy(normalize_intensity(pair["fixed"]))[None, None].cuda()
    mt = torch.from_numpy(normalize_intensity(pair["moving"]))[None, None].cuda()

    def call():
        with torch.no_grad():
            return predict_field(net, ft, mt)

    try:
        macs = count_conv_macs(net, call)
        entry["macs"] = {"macs": macs["macs"], "uncounted_modules": macs["uncounted"]}
    except Exception as e:
        entry["macs"] = {"error": f"{type(e).__name__}: {e}"}
    entry["measurement"] = measure_gpu(call, **kw)
    return entry


def measure_spikereg(args, pair, kw) -> Dict[str, Any]:
    from spikereg_neuro.checkpoint import DEFAULT_MODEL, file_sha256
    from spikereg_neuro.inference import SpikeRegInference
    from spikereg_neuro.profiler.gpu_energy import count_conv_macs, measure_gpu

    path = Path(args.spikereg_model) if args.spikereg_model else DEFAULT_MODEL
    entry: Dict[str, Any] = {"checkpoint": rel(path), "sha256": file_sha256(path),
                             "what": "SpikeRegInference(device='cuda').register(fixed, moving): a whole registration "
                                     "from the host's numpy arrays to the field on the host (normalisation, "
                                     "coarse-to-fine scales, transfers included)"}
    inf = SpikeRegInference(path, device="cuda")
    entry.update(max_voxels=inf.max_voxels, patch=list(inf.patch), stride=list(inf.stride),
                 scales=list(inf.net.cfg.scales))
    f, m = pair["fixed"], pair["moving"]
    call = (lambda: inf.register(f, m))
    try:
        macs = count_conv_macs(inf.net, call)
        entry["macs"] = {"macs": macs["macs"], "uncounted_modules": macs["uncounted"],
                                  "basis": "count_conv_macs hooks on the synapses over one registration: output elements "
                                  "(every time step) x C_in x k^3, the dense convention of the table's SLAYER "
                                  "estimate (an input constant over time, convolved once by the code, is counted "
                                  "on every step)"}
    except Exception as e:
        entry["macs"] = {"error": f"{type(e).__name__}: {e}"}
    entry["measurement"] = measure_gpu(call, **{**kw, "warmup": 2})
    return entry


def run_training(args, deadline: float) -> Dict[str, Any]:
    left = deadline - time.monotonic()
    out = Path(args.train_out)
    cmd = [sys.executable, "-m", "spikereg_neuro.cli", "train", "--device", "cuda", "--epochs", "1",
           "--steps", str(args.train_steps), "--out", str(out), "--no-progress"]
    if args.config:
        cmd += ["--config", args.config]
    if args.cache:
        cmd += ["--cache", args.cache]
    rec: Dict[str, Any] = {"command": " ".join(cmd[1:]), "steps": args.train_steps, "out": rel(out)}
    if left < 30:
        return {**rec, "error": f"skipped: only {left:.0f} s of --timeout-s left"}
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=str(ROOT), timeout=left, capture_output=True, text=True)
        rec.update(returncode=r.returncode, stderr_tail=r.stderr[-2000:])
    except subprocess.TimeoutExpired:
        rec["error"] = f"stopped after {left:.0f} s (--timeout-s)"
    rec["seconds"] = time.perf_counter() - t0
    summary = out / "summary.json"
    if summary.is_file():
        try:
            rec["summary"] = json.loads(summary.read_text())
        except ValueError:
            pass
    return rec


# ============================================================================ main
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.prepare:
        return prepare(args)
    why = why_no_gpu()
    if why:
        print(f"gpu_session: refused: {why}; nothing measured, {args.out} not written", file=sys.stderr)
        return 2
    deadline = time.monotonic() + float(args.timeout_s)
    out = Path(args.out)
    t_start = time.perf_counter()
    record: Dict[str, Any] = {
        "format": RECORD_FORMAT, "version": RECORD_VERSION,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "script": "scripts/gpu_session.py", "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": machine_info(),
        "method": "spikereg_neuro.profiler.gpu_energy.measure_gpu: NVML nvmlDeviceGetTotalEnergyConsumption "
                  "before/after a loop of at least --repeats calls and --min-seconds (CUDA synchronized); "
                  "energy_mj = gross per call, dynamic_mj = minus idle power x loop time (idle power from the "
                  "same counter over an idle window just before); latency_ms = loop time / calls",
        "models": {},
    }
    status = 0
    state: Dict[str, Any] = {"model": None, "step": "loading the pair"}
    dog = start_watchdog(float(args.timeout_s), out, record, state)
    pair = load_pair(args)
    record["pair"] = pair_summary(pair)
    kw = {"n_repeats": int(args.repeats), "min_seconds": float(args.min_seconds),
          "idle_seconds": float(args.idle_seconds)}
    runners: Dict[str, Callable] = {"voxelmorph": measure_voxelmorph, "spikereg_slayer": measure_spikereg}
    for name in args.models:
        t0 = time.perf_counter()
        state.update(model=name, step="measuring")
        try:
            entry = runners[name](args, pair, kw)
        except Exception as e:  # recorded, the next model still runs
            entry = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
            status = 1
        entry["seconds"] = time.perf_counter() - t0
        record["models"][name] = entry
        state.update(model=None, step="between models")
        write_record(out, _clean(record))
        m = entry.get("measurement")
        print(f"[gpu_session] {name}: " + (
            f"{m['energy_mj']:.4g} mJ gross, {m['dynamic_mj']:.4g} mJ dynamic, {m['latency_ms']:.4g} ms per call "
            f"({m['n_calls']} calls, idle {m['idle_power_w']:.1f} W)" if m else entry["error"]), flush=True)
    state.update(model=None, step="writing")
    dog.cancel()
    if args.train_steps:
        record["train"] = run_training(args, deadline)
        status = status or (0 if record["train"].get("returncode") == 0 else 1)
    record["seconds"] = time.perf_counter() - t_start
    write_record(out, _clean(record))
    print(f"[gpu_session] wrote {out} ({record['seconds']:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
