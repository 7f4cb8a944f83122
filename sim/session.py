"""Many patches through ONE Lava graph per patch shape: the Lava backend of a full registration.

:class:`LavaSession` (host side) starts one guarded worker subprocess (own session/process
group, as :func:`sim.run.run_lava`). For every patch shape the worker builds the reusable graph
(:func:`sim.graph.build_reusable_graph`: a :class:`sim.processes.PatchInjector` input, periodic
windowed ATRLIF populations, the usual Sparse/DelaySparse connections, an Extractor on the
read-out), compiles it and starts its Lava processes ONCE; every later batch of patches of that
shape runs on the same running processes: the host sends one payload frame per patch through the
injector while the runtime steps ``num_steps`` lava steps per patch, and reads the read-out voltage
at the read-out's last step. Nothing is rebuilt per patch (the lowering is computed once per
(net, shape) by a :class:`sim.lowering.LoweringCache`, the graph and its processes are reused).
The connections use :class:`sim.processes.PyStaticSparseModelBitAcc` (lava's Sparse model
without the first-step copy of already valid weights) unless ``static_sparse=False``.

:func:`register_full` runs a whole registration (every patch of every residual iteration of
:func:`spikereg_neuro.inference.register_tensors`) with the Lava session or the emulator as the
patch predictor, and compares the two read-out for read-out.

Protocol (worker stdin/stdout, data in the job directory): host writes ``req_<n>.npy`` (int32
payloads ``(B, C, D, H, W)``) and the line ``run <n>``; the worker writes ``res_<n>.npy`` (int64
read-outs ``(B, 3, D, H, W)``) and prints ``@@sim-done <n> <json>``; ``stop`` ends it (its
statistics in the reply). Progress: ``@@sim-progress patch <k> ...`` after every patch.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from calibration.netfile import QuantizedNet

from .run import SimError, SimTimeout, _kill_group, kill_runtimes_and_exit, worker_main

_ROOT = Path(__file__).resolve().parent.parent
_DONE = "@@sim-done "
_PROGRESS = "@@sim-progress "
_LOG = "@@sim-log "


# ============================================================================ host side
class LavaSession:
    """A running Lava worker that simulates batches of patches, one graph per patch shape.

    >>> with LavaSession(q, timeout=1800) as s:
    ...     v = s.run_payloads(payload)          # (N, C, D, H, W) int -> (N, 3, D, H, W) int64
    ...     predict = s.predictor()              # (fixed, moving) -> field, for register_tensors

    ``timeout`` bounds the whole session (wall clock from the start); past it every Lava process
    is killed and :class:`sim.run.SimTimeout` raised; a failing worker raises
    :class:`sim.run.SimError`. ``on_patch(k)`` is called (in the caller's thread) after each
    simulated patch; ``log`` gets the worker's build/compile lines. After :meth:`close`,
    :attr:`info` holds the worker's statistics (graph builds per shape, lowering builds,
    timings, process models).
    """

    def __init__(self, q: QuantizedNet, *, timeout: float = 1800.0, static_sparse: bool = True,
                 on_patch: Optional[Callable[[int], None]] = None, log: Optional[Callable[[str], None]] = None,
                 _stall_s: float = 0.0) -> None:
        import pickle

        self.q = q
        self.timeout = float(timeout)
        self.on_patch = on_patch
        self.log = log
        self.readouts: List[np.ndarray] = []      # every patch's read-out, in call order
        self.info: Dict[str, Any] = {}
        self._n = 0
        self._t0 = time.perf_counter()
        self._tmp = tempfile.TemporaryDirectory(prefix="spikereg-session-")
        self._dir = Path(self._tmp.name)
        with open(self._dir / "job.pkl", "wb") as f:
            pickle.dump({"q": q, "static_sparse": bool(static_sparse), "stall_s": float(_stall_s)}, f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        self._proc = subprocess.Popen([sys.executable, "-m", "sim.session", "--worker", str(self._dir)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, bufsize=1, env=env, cwd=str(_ROOT), start_new_session=True)
        self._events: "queue.Queue[Tuple[str, str]]" = queue.Queue()
        self._tail: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._closed = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(_DONE):
                self._events.put(("done", line[len(_DONE):]))
            elif line.startswith(_PROGRESS):
                self._events.put(("progress", line[len(_PROGRESS):]))
            else:
                if line.startswith(_LOG):
                    self._events.put(("log", line[len(_LOG):]))
                self._tail.append(line)
                del self._tail[:-60]
        self._events.put(("eof", ""))

    def _fail(self, exc: SimError) -> None:
        _kill_group(self._proc)
        self._closed = True
        raise exc

    def _wait_done(self, tag: str) -> Dict[str, Any]:
        while True:
            left = self.timeout - (time.perf_counter() - self._t0)
            if left <= 0:
                self._fail(SimTimeout(f"the Lava session did not finish within {self.timeout:g} s; its processes "
                                      "were killed. Output tail:\n" + "\n".join(self._tail[-20:]), pid=self.pid))
            try:
                kind, text = self._events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if kind == "done":
                n, _, rest = text.partition(" ")
                if n != tag:
                    self._fail(SimError(f"the Lava worker answered {n!r} to request {tag!r}"))
                return json.loads(rest) if rest else {}
            if kind == "progress":
                if self.on_patch and text.startswith("patch "):
                    self.on_patch(1)
            elif kind == "log":
                if self.log:
                    self.log(text)
            elif kind == "eof":
                self._proc.wait(timeout=10)
                self._fail(SimError(f"the Lava worker failed (exit code {self._proc.returncode}). Output tail:\n"
                                    + "\n".join(self._tail[-30:])))

    def _send(self, line: str) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._wait_done("__never__")      # raises the worker's failure

    def run_payloads(self, payload) -> np.ndarray:
        """Simulate a batch: integer payloads ``(N, C_in, D, H, W)`` (numpy or torch) in
        ``[0, 2**input_bits - 1]`` -> integer read-outs ``(N, 3, D, H, W)`` (int64)."""
        if self._closed:
            raise SimError("the Lava session is closed")
        pl = payload.detach().cpu().numpy() if isinstance(payload, torch.Tensor) else np.asarray(payload)
        if pl.ndim == 4:
            pl = pl[None]
        if pl.ndim != 5 or pl.shape[1] != self.q.in_channels:
            raise ValueError(f"payload must be (N, {self.q.in_channels}, D, H, W), got {pl.shape}")
        if not np.issubdtype(pl.dtype, np.integer):
            raise ValueError("payload must be integer (use calibration.emulator.payload_of)")
        hi = 2 ** self.q.input_bits - 1
        if pl.size and (pl.min() < 0 or pl.max() > hi):
            raise ValueError(f"payload outside [0, {hi}]")
        m = self.q.size_multiple
        if any(int(x) % m for x in pl.shape[2:]):
            raise ValueError(f"patch {tuple(pl.shape[2:])} must be divisible by {m}")
        tag = str(self._n)
        self._n += 1
        np.save(self._dir / f"req_{tag}.npy", pl.astype(np.int32))
        self._send(f"run {tag}")
        self._wait_done(tag)
        res = self._dir / f"res_{tag}.npy"
        v = np.load(res)
        res.unlink()
        self.readouts.extend(v[i].copy() for i in range(v.shape[0]))
        return v

    def predictor(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A patch predictor ``(fixed, moving) (N, 1, D, H, W) -> field (N, 3, D, H, W)`` for
        :func:`spikereg_neuro.inference.register_tensors`, computed like the emulator's
        (``output_scale * v`` in float64, then float32)."""
        from calibration.emulator import payload_of

        scale = float(self.q.readout.output_scale)

        def predict(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
            v = self.run_payloads(payload_of(self.q, fixed.cpu(), moving.cpu()))
            f = (torch.from_numpy(v).to(torch.float64) * scale).to(torch.float32)
            return f.to(fixed.device)

        return predict

    def close(self) -> Dict[str, Any]:
        """Stop the Lava processes and the worker; returns (and keeps in :attr:`info`) its statistics."""
        if self._closed:
            return self.info
        try:
            self._send("stop")
            self.info = self._wait_done("stop")
            try:
                self._proc.wait(timeout=max(1.0, min(30.0, self.timeout - (time.perf_counter() - self._t0))))
            except subprocess.TimeoutExpired:
                pass
        finally:
            _kill_group(self._proc, grace=1.0)
            self._closed = True
            self._tmp.cleanup()
        self.info["session_s"] = time.perf_counter() - self._t0
        return self.info

    def __enter__(self) -> "LavaSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            if not self._closed:
                _kill_group(self._proc)
                self._closed = True
            self._tmp.cleanup()


# ============================================================================ full registration
@dataclass
class FullRegistration:
    """One registration through :func:`register_full`."""

    backend: str
    field: np.ndarray                    # (3, D, H, W) float32 voxels
    readouts: List[np.ndarray]           # every patch's integer read-out, in predictor call order
    seconds: float                       # wall clock of the registration (worker start to stop for Lava)
    patches_per_scale: List[int]
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def patches(self) -> int:
        return len(self.readouts)


def count_patches(q: QuantizedNet, shape: Sequence[int], tile: Sequence[int], stride: Sequence[int]) -> List[int]:
    """Patches :func:`register_tensors` asks for at each scale of ``q.scales`` (volume ``shape``)."""
    from spikereg_neuro.tiling import count_tiles

    k = max(q.scales)
    padded = [-(-int(n) // k) * k for n in shape]
    return [count_tiles([n // s for n in padded], tile, stride) for s in q.scales]


def register_full(q: QuantizedNet, fixed, moving, *, backend: str, tile: Sequence[int], stride: Sequence[int],
                  batch_size: int = 4, timeout: float = 1800.0, on_patch: Optional[Callable[[int], None]] = None,
                  log: Optional[Callable[[str], None]] = None, static_sparse: bool = True) -> FullRegistration:
    """Register a whole (fixed, moving) pair ``(D, H, W)`` (intensities in [0, 1]) with the host
    pipeline (:func:`spikereg_neuro.inference.register_tensors`: both residual iterations, the
    explicit tiling ``tile``/``stride``, blending) and ``backend`` as the patch predictor:
    ``"lava"`` (a :class:`LavaSession`) or ``"emulator"`` (:func:`calibration.emulator.emulate_pair`,
    what :func:`calibration.emulator.emulator_predictor` calls, with the read-outs recorded)."""
    from calibration.emulator import emulate_pair
    from spikereg_neuro.inference import register_tensors

    f = torch.as_tensor(np.asarray(fixed, dtype=np.float32))[None, None]
    m = torch.as_tensor(np.asarray(moving, dtype=np.float32))[None, None]
    if f.shape != m.shape or f.dim() != 5:
        raise ValueError(f"fixed {tuple(f.shape[2:])} and moving {tuple(m.shape[2:])} must be equal 3-D shapes")
    tile = [int(x) for x in tile]
    stride = [int(x) for x in stride]
    mult = q.size_multiple
    if any(t % mult for t in tile):
        raise ValueError(f"tile {tile} must be a multiple of the net's size multiple {mult}")
    if any(s < 1 or s > t for s, t in zip(stride, tile)):
        raise ValueError(f"stride {stride} must be in [1, tile {tile}]")
    per_scale = count_patches(q, f.shape[2:], tile, stride)
    t0 = time.perf_counter()
    if backend == "emulator":
        readouts: List[np.ndarray] = []

        def predict(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            res = emulate_pair(q, a.cpu(), b.cpu())
            readouts.extend(res.readout_v[i].numpy().astype(np.int64) for i in range(res.readout_v.shape[0]))
            if on_patch:
                on_patch(res.readout_v.shape[0])
            return res.field.to(a.device)

        u = register_tensors(predict, q.scales, f, m, tile, stride, batch_size,
                             integration_steps=q.integration_steps)
        return FullRegistration("emulator", u[0].numpy().astype(np.float32), readouts,
                                time.perf_counter() - t0, per_scale, {})
    if backend != "lava":
        raise ValueError(f"unknown backend {backend!r} (lava or emulator)")
    with LavaSession(q, timeout=timeout, on_patch=on_patch, log=log, static_sparse=static_sparse) as s:
        u = register_tensors(s.predictor(), q.scales, f, m, tile, stride, batch_size,
                             integration_steps=q.integration_steps)
        info = s.close()
        readouts = s.readouts
    return FullRegistration("lava", u[0].numpy().astype(np.float32), readouts, time.perf_counter() - t0,
                            per_scale, info)


def compare_full(a: FullRegistration, b: FullRegistration) -> Dict[str, Any]:
    """Patch-by-patch comparison of two registrations of the same pair: equal integer read-outs
    for every patch, and the float fields bitwise equal."""
    n = min(a.patches, b.patches)
    diff = [i for i in range(n) if a.readouts[i].shape != b.readouts[i].shape
            or not np.array_equal(a.readouts[i], b.readouts[i])]
    field_equal = a.field.shape == b.field.shape and bool(np.array_equal(a.field, b.field))
    return {"patches": [a.patches, b.patches], "patches_equal": n - len(diff) if a.patches == b.patches else 0,
            "unequal_patches": diff[:20], "readouts_equal": a.patches == b.patches and not diff,
            "field_equal": field_equal,
            "field_max_abs_diff": (float(np.abs(a.field - b.field).max()) if a.field.shape == b.field.shape
                                   else float("nan")),
            "equal": field_equal and a.patches == b.patches and not diff}


# ============================================================================ worker
_RUNTIMES: List[Any] = []


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - runs in the worker on timeout
    """Kill every Lava actor of every graph of this worker, unlink lava's shared memory, exit."""
    kill_runtimes_and_exit(_RUNTIMES)


class _Worker:
    """The worker's state: one started graph per patch shape."""

    def __init__(self, q: QuantizedNet, static_sparse: bool, stall_s: float = 0.0) -> None:
        from .lowering import LoweringCache

        self.q = q
        self.static_sparse = static_sparse
        self.stall_s = stall_s
        self.cache = LoweringCache(max_entries=1)
        self.graphs: Dict[Tuple[int, ...], Any] = {}
        self.stats: Dict[str, Dict[str, Any]] = {}
        self.patches = 0

    @staticmethod
    def out(prefix: str, text: str) -> None:
        print(prefix + text, flush=True)

    def graph(self, shape: Tuple[int, ...]):
        from .graph import build_reusable_graph
        from .run import compile_quietly, default_run_cfg, describe_run_cfg

        if shape in self.graphs:
            return self.graphs[shape]
        key = "x".join(map(str, shape))
        log = lambda s: self.out(_LOG, f"[{key}] {s}")        # noqa: E731
        t0 = time.perf_counter()
        low = self.cache.get(self.q, shape)
        t_low = time.perf_counter() - t0
        log(f"lowered once for this shape: {sum(c.synapses for cs in low.values() for c in cs)} synapses "
            f"({t_low:.1f} s)")
        g = build_reusable_graph(self.q, shape, lowered=low, log=log)
        g.lowered = None
        self.cache.clear()      # the Sparse processes hold their own copies; the graph is reused
        del low
        cfg = default_run_cfg(static_sparse=self.static_sparse)
        log(f"compiling ({describe_run_cfg(cfg)})")
        t1 = time.perf_counter()
        exe = compile_quietly(g.source, cfg)
        t_compile = time.perf_counter() - t1
        models = {type(p).__name__: f"{b.proc_model.__module__}.{b.proc_model.__name__}"
                  for p, b in exe.proc_builders.items() if getattr(b, "proc_model", None) is not None}
        log(f"starting {g.num_processes} Lava processes (once for this shape)")
        t1 = time.perf_counter()
        g.source.create_runtime(executable=exe)
        _RUNTIMES.append(g.source.runtime)
        t_init = time.perf_counter() - t1
        cost = g.cost()
        self.stats[key] = {"graph_builds": 1, "lowering_s": t_low, "build_s": g.build_seconds, "compile_s": t_compile,
                           "init_s": t_init, "processes": cost["processes"], "neurons": cost["neurons"],
                           "synapses": cost["synapses"], "synapse_bytes": cost["synapse_bytes"],
                           "steps_per_patch": g.num_steps, "process_models": models, "patches": 0, "batches": 0,
                           "run_s": 0.0, "steps": 0}
        self.graphs[shape] = g
        return g

    def run_batch(self, payloads: np.ndarray) -> np.ndarray:
        from lava.magma.core.run_conditions import RunSteps

        from .run import _receive

        shape = tuple(int(x) for x in payloads.shape[2:])
        g = self.graph(shape)
        st = self.stats["x".join(map(str, shape))]
        P, n = g.num_steps, int(payloads.shape[0])
        ro = g.plans[g.readout_name]
        ex = g.monitors[g.readout_name]
        others = [(k, e) for k, e in g.monitors.items() if k != g.readout_name]
        flat = payloads.reshape(n, -1).astype(np.int32)
        out = np.zeros((n, *ro.shape), dtype=np.int64)
        t0 = time.perf_counter()
        g.source.run(condition=RunSteps(num_steps=n * P, blocking=False))
        rt = g.source.runtime
        g.source.send(flat[0])
        for j in range(n):
            if j + 1 < n:
                g.source.send(flat[j + 1])       # one frame ahead (injector buffer of 2)
            for t in range(1, P + 1):
                x = _receive(ex, rt)
                if t == ro.t_end:
                    out[j] = np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64).reshape(ro.shape)
                for _, e in others:
                    _receive(e, rt)
                if self.stall_s and self.patches == 0 and t == 1:   # test hook: a run that hangs
                    time.sleep(self.stall_s)
            self.patches += 1
            self.out(_PROGRESS, f"patch {self.patches} ({time.perf_counter() - t0:.1f} s in this batch)")
        g.source.wait()
        st["run_s"] += time.perf_counter() - t0
        st["patches"] += n
        st["batches"] += 1
        st["steps"] += n * P
        return out

    def stop(self) -> Dict[str, Any]:
        t0 = time.perf_counter()
        for g in self.graphs.values():
            g.source.stop()
        return {"patches": self.patches, "graphs": self.stats,
                "graph_builds": {k: v["graph_builds"] for k, v in self.stats.items()},
                "lowering_builds": self.cache.builds, "lowering_hits": self.cache.hits,
                "static_sparse": self.static_sparse, "stop_s": time.perf_counter() - t0}


def _worker(job_dir: str) -> int:
    """Worker subprocess: serve ``run <n>`` / ``stop`` requests (see the module docstring)."""
    import pickle

    from .run import ensure_lava_runtime

    ensure_lava_runtime()
    signal.signal(signal.SIGTERM, _on_sigterm)
    d = Path(job_dir)
    with open(d / "job.pkl", "rb") as f:
        job = pickle.load(f)
    w = _Worker(job["q"], job["static_sparse"], job.get("stall_s", 0.0))
    try:
        for line in sys.stdin:
            cmd, _, tag = line.strip().partition(" ")
            if cmd == "run":
                pl = np.load(d / f"req_{tag}.npy")
                (d / f"req_{tag}.npy").unlink()
                v = w.run_batch(pl)
                tmp = d / f"res_{tag}.tmp.npy"
                np.save(tmp, v)
                os.replace(tmp, d / f"res_{tag}.npy")
                print(f"{_DONE}{tag}", flush=True)
            elif cmd == "stop":
                info = w.stop()
                print(f"{_DONE}stop {json.dumps(info, default=float)}", flush=True)
                return 0
            elif cmd:
                raise SimError(f"unknown request {line.strip()!r}")
    except BaseException:     # no lava stop() (it can hang): report and leave; the parent kills the group
        import traceback
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        os._exit(1)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through LavaSession
    worker_main("sim.session", _worker)


__all__ = ["LavaSession", "FullRegistration", "register_full", "compare_full", "count_patches"]
