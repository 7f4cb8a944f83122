"""``spikereg-neuro loihi run``: the Lava graph of ``simulate`` on Loihi 2 hardware (lava-loihi only).

Loihi 2 hardware is reached only through Intel's **lava-loihi** extension (the compiler for
neuro-cores, the board drivers and the ``lava.utils.loihi2_profiler`` power / execution-time
probes), which Intel gives to members of the Intel Neuromorphic Research Community (INRC); it is
not on any package registry. :func:`loihi_available` asks lava-nc's own check,
``lava.utils.loihi.is_installed()`` (it looks for ``lava.utils.loihi2_profiler``).

Without lava-loihi, :func:`run_on_loihi` raises :class:`LoihiUnavailable` and the command exits
with status 2 and :data:`INRC_MESSAGE`. Nothing is simulated in its place.

With lava-loihi (UNTESTED here: no INRC system was available to this project), the command
builds exactly the graph ``spikereg-neuro simulate --backend lava`` runs (:func:`sim.graph.build_graph`
on the same demo patch), selects the host with ``lava.utils.loihi.use_slurm_host`` (INRC SLURM
partitions) unless ``--no-slurm``, runs it with ``Loihi2HwCfg`` and, if ``--profile``, the
``Loihi2Power`` / ``Loihi2ExecutionTime`` probes, and writes a ``run.json`` in ``simulate``'s
format (plus ``loihi``: run configuration and whatever the probes report), so the two files can be
compared layer by layer and by ``readout_sha256``. Processes that lava-loihi has no neuro-core
model for (the input ``RingBuffer``, the ``Extractor`` monitors, the window-gated
``WindowedATRLIF`` of :mod:`sim.processes`) fall back to their Python models on the host under
``Loihi2HwCfg``; whether ATRLIF itself has a neuro-core model depends on the lava-loihi release.
See docs/deployment.md.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

INRC_MESSAGE = (
    "Loihi hardware runs need Intel's lava-loihi extension, which Intel distributes only to members "
    "of the Intel Neuromorphic Research Community (INRC); it is not installed in this environment "
    "(lava.utils.loihi.is_installed() is False). Join the INRC and run this command on an INRC "
    "Loihi 2 system (see docs/deployment.md), or run the same network bit-accurately on the CPU "
    "with: spikereg-neuro simulate --net NET.h5 --backend lava")
#: exit status of ``loihi run`` when lava-loihi is missing
EXIT_NO_LOIHI = 2


class LoihiUnavailable(RuntimeError):
    """lava-loihi (INRC only) is not installed."""


def loihi_available() -> bool:
    """lava-nc's own test for the lava-loihi extension (``lava.utils.loihi.is_installed``)."""
    try:
        from lava.utils.loihi import is_installed
    except ImportError:  # pragma: no cover - lava-nc is a dependency
        return False
    return bool(is_installed())


def _probe_results(obj) -> Dict[str, Any]:
    """Public numeric results of a lava-loihi profiler object (names differ between releases)."""
    import numpy as np
    out = {}
    for k in dir(obj):
        if k.startswith("_"):
            continue
        try:
            v = getattr(obj, k)
        except Exception:  # noqa: BLE001 - a probe property may fail before/after a run
            continue
        if callable(v):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, np.ndarray) and v.dtype.kind in "iuf" and v.size:
            out[k] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
    return out


def run_on_loihi(net: str | Path, *, pair: int = 0, patch: Sequence[int] = (16, 16, 16),
                 origin: Optional[Sequence[int]] = None, out: Optional[str | Path] = "loihi_run.json",
                 partition: Optional[str] = None, board: Optional[str] = None, slurm: bool = True,
                 profile: bool = True, data: Optional[str] = None, cache: Optional[str] = None,
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run ``net`` (a calibrated net.h5) on one demo patch on Loihi 2; returns the run.json dict.

    Raises :class:`LoihiUnavailable` (with :data:`INRC_MESSAGE`) before touching the network when
    lava-loihi is not installed.
    """
    if not loihi_available():
        raise LoihiUnavailable(INRC_MESSAGE)
    # ---- from here on: only reachable with lava-loihi (not run in this project) ----------------
    import numpy as np
    import torch
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2HwCfg
    from lava.utils import loihi as lava_loihi

    from calibration.netfile import load_qnet
    from sim.cli import load_patch, run_json
    from sim.graph import build_graph
    from sim.processes import exception_proc_model_map
    from sim.run import LavaResult

    if slurm:
        lava_loihi.use_slurm_host(partition=partition, board=board)
    q = load_qnet(net)
    payload, where = load_patch(q, pair, patch, origin, data, cache)
    g = build_graph(q, payload.numpy() if hasattr(payload, "numpy") else payload, log=log)
    callbacks = []
    probes: Dict[str, Any] = {}
    if profile:
        from lava.utils import loihi2_profiler
        probes = {"power": loihi2_profiler.Loihi2Power(num_steps=g.num_steps),
                  "execution_time": loihi2_profiler.Loihi2ExecutionTime()}
        callbacks = list(probes.values())
    cfg = Loihi2HwCfg(exception_proc_model_map=exception_proc_model_map(), callback_fxs=callbacks)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
        exe = g.source.compile(cfg)
    t_compile = time.perf_counter() - t0
    g.source.create_runtime(executable=exe)
    spikes = {n: [] for n, p in g.plans.items() if not p.integrator}
    readout = None
    try:
        t0 = time.perf_counter()
        g.source.run(condition=RunSteps(num_steps=g.num_steps, blocking=False))
        for step in range(1, g.num_steps + 1):
            for name, ex in g.monitors.items():
                x = ex.receive()
                p = g.plans[name]
                if p.integrator:
                    if step == p.t_end:
                        readout = np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)
                elif p.t_start <= step <= p.t_end:
                    spikes[name].append(np.asarray(x) != 0)
        g.source.wait()
        t_run = time.perf_counter() - t0
    finally:
        g.source.stop()
    if readout is None:
        raise RuntimeError("no read-out frame was received from the board")
    ro = g.plans[g.readout_name]
    v = torch.from_numpy(readout.reshape(ro.shape)).unsqueeze(0)
    sp = {n: torch.from_numpy(np.stack(f, axis=-1).reshape(*g.plans[n].shape, len(f))).unsqueeze(0)
          for n, f in spikes.items()}
    res = LavaResult(field=(v.to(torch.float64) * q.readout.output_scale).to(torch.float32), readout_v=v,
                     spikes={l.name: sp[l.name] for l in q.layers if l.name in sp})
    info = {"run_cfg": "Loihi2HwCfg", "partition": partition, "board": board, "num_steps": g.num_steps,
            "timings": {"build_s": g.build_seconds, "compile_s": t_compile, "run_s": t_run},
            "probes": {k: _probe_results(p) for k, p in probes.items()}, "graph": g.cost()}
    extra = {"net": str(net), "net_sha256": hashlib.sha256(Path(net).read_bytes()).hexdigest(), **where,
             "payload_sha256": hashlib.sha256(np.asarray(payload).astype("<i8").tobytes()).hexdigest(),
             "loihi": info}
    doc = run_json("loihi2", q, res, extra=extra)
    if out:
        from spikereg_neuro.io.atomic import atomic_write_text
        atomic_write_text(out, json.dumps(doc, indent=1, default=float) + "\n")
        log(f"wrote {out}")
    return doc


__all__ = ["INRC_MESSAGE", "EXIT_NO_LOIHI", "LoihiUnavailable", "loihi_available", "run_on_loihi"]
