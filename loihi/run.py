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
partitions) unless ``--no-slurm``, runs it through ``simulate``'s own run loop
(:func:`sim.run.run_graph` with ``run_cfg=Loihi2HwCfg(...)``) and, if ``--profile``, the
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
    from sim.run import ensure_lava_runtime
    ensure_lava_runtime()             # before anything else fixes the multiprocessing start method
    import numpy as np
    from lava.magma.core.run_configs import Loihi2HwCfg
    from lava.utils import loihi as lava_loihi

    from calibration.netfile import load_qnet
    from sim.harness import load_patch, run_json
    from sim.graph import build_graph
    from sim.processes import exception_proc_model_map
    from sim.run import run_graph, to_result

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
    # the same compile / start / monitor loop as `simulate` (sim.run.run_graph), on the board
    ran = run_graph(g, run_cfg=cfg, log=log)
    res = to_result(q, ran["arrays"], ran["info"])
    info = {"run_cfg": ran["info"]["run_cfg"], "partition": partition, "board": board,
            "num_steps": g.num_steps, "timings": ran["info"]["timings"],
            "process_models": ran["info"]["process_models"],
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
