"""Run a quantized network on one patch with the Lava CPU backend (or the emulator).

* :func:`run_graph` - compile a built :class:`sim.graph.SimGraph` with a lava RunConfig (default
  ``Loihi2SimCfg(select_tag="fixed_pt")``; ``loihi run`` passes ``Loihi2HwCfg``), start it and
  collect every monitor frame (the one monitor loop of the project);
* :func:`run_lava` - the guarded run: builds the graph and calls :func:`run_graph` in a WORKER
  SUBPROCESS started in its own session, under a wall-clock timeout. Lava starts one OS process
  per leaf process and ``stop()`` can hang after a child failure, so on timeout (or any failure)
  the whole process group - worker and every Lava child - is terminated (SIGTERM, then SIGKILL)
  and a :class:`SimTimeout` / :class:`SimError` is raised; nothing is left behind. Progress
  lines of the worker (one per simulated step) are forwarded to a callback;
* :func:`simulate_patch` - the entry for benchmark harnesses: (fixed, moving) patch in, timings,
  throughput, per-layer spike counts and the field out (:class:`PatchSimulation`);
* :func:`ensure_lava_runtime` - every in-process Lava entry point calls it first (lava's
  multiprocessing runtime sets the ``fork`` start method when imported and fails if it was fixed
  before).

:func:`run_lava` returns a :class:`LavaResult`, an :class:`calibration.emulator.EmulationResult`
(same fields: ``field``, ``readout_v`` ``(1, 3, D, H, W)`` int64, ``spikes[name]``
``(1, C, D, H, W, T_L)`` bool for every spiking layer, each in its own local time) plus ``info``
(timings, graph size, synapse memory, throughput), so :mod:`sim.compare` treats both backends
alike.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from calibration.emulator import EmulationResult, emulate
from calibration.netfile import QuantizedNet

ProgressFn = Callable[[str], None]
_PROGRESS = "@@sim-progress "
_ROOT = Path(__file__).resolve().parent.parent


class SimError(RuntimeError):
    """The Lava run failed (the worker's output tail is in the message)."""


class SimTimeout(SimError):
    """The Lava run did not finish within the timeout (all its processes were killed).
    ``pid`` is the worker's pid (= its process group id)."""

    def __init__(self, msg: str, pid: Optional[int] = None) -> None:
        super().__init__(msg)
        self.pid = pid


@dataclass
class LavaResult(EmulationResult):
    """An EmulationResult from the Lava backend, plus run information."""

    info: Dict[str, Any] = field(default_factory=dict)


# ============================================================================ in-process run
def _dead_actor_errors(runtime) -> Optional[str]:
    """Tracebacks of lava actor processes (one per process model) that died before the end of the
    run, or None while all are alive. lava's SystemProcess ships a child's exception through a
    pipe and the run would otherwise just block (the runtime service waits for every model)."""
    actors = getattr(getattr(runtime, "_messaging_infrastructure", None), "actors", None) or []
    dead = [a for a in actors if not a.is_alive()]
    if not dead:
        return None
    msgs = []
    for a in dead:
        conn = getattr(a, "_pconn", None)
        try:
            if conn is not None and conn.poll(0.5):
                item = conn.recv()
                if item:
                    msgs.append(str(item[1]))
        except (EOFError, OSError):  # pragma: no cover
            pass
    return "\n".join(msgs) or f"{len(dead)} lava process(es) exited early (exit codes {[a.exitcode for a in dead]})"


def _receive(ex, runtime, poll: float = 0.0005, grace: float = 5.0):
    """``Extractor.receive()`` that does not block forever when the run died: while the
    extractor's queue is empty it watches lava's actor processes (a model that raised has
    exited: its traceback is raised here as SimError) and the runtime services (a response -
    DONE or ERROR - while this monitor's frame is still missing ``grace`` seconds later). A hang
    without a dead process is left to :func:`run_lava`'s timeout."""
    port = ex.out_port.external_pipe_csp_recv_port
    last_check = time.perf_counter()
    ended_at = None
    while not port.probe():
        now = time.perf_counter()
        if ended_at is None and any(p.probe() for p in runtime.service_to_runtime):
            ended_at = now      # frames may still be in flight: give them time
        if ended_at is not None and now - ended_at > grace:
            runtime.wait()      # raises lava's error if a service reported ERROR
            raise SimError("the Lava run ended before every monitor frame was received")
        if now - last_check > 0.2:
            last_check = now
            err = _dead_actor_errors(runtime)
            if err:
                raise SimError("a Lava process failed during the run:\n" + err)
        time.sleep(poll)
        poll = min(2 * poll, 0.01)
    return ex.receive()


#: lava's multiprocessing runtime module: it calls ``multiprocessing.set_start_method('fork')``
#: when first imported and fails if the start method was fixed before
LAVA_MP_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"


def ensure_lava_runtime() -> None:
    """Import lava's multiprocessing runtime before anything else fixes the start method.

    Every in-process Lava entry point (the worker, ``loihi run``) calls this first. If the
    start method was already fixed to ``'fork'`` (e.g. by a library calling
    ``get_start_method()``), it is unset so that lava's import can set it again; any other start
    method is an error (lava's runtime needs ``fork``)."""
    if LAVA_MP_MODULE in sys.modules:
        return
    import importlib
    import multiprocessing as mp

    current = mp.get_start_method(allow_none=True)
    if current not in (None, "fork"):
        raise SimError(f"lava's CPU runtime needs the 'fork' multiprocessing start method, but this process "
                       f"already uses {current!r}; run the simulation in a fresh process (run_lava does)")
    if current == "fork":
        mp.set_start_method(None, force=True)       # lava's import sets 'fork' again
    importlib.import_module(LAVA_MP_MODULE)


def default_run_cfg(static_sparse: bool = False):
    """``Loihi2SimCfg(select_tag="fixed_pt")`` with the backend's process-model exceptions
    (:func:`sim.processes.exception_proc_model_map`); ``static_sparse`` also selects
    :class:`sim.processes.PyStaticSparseModelBitAcc` for ``Sparse`` (no first-step weight copy)."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    from .processes import exception_proc_model_map
    return Loihi2SimCfg(select_tag="fixed_pt",
                        exception_proc_model_map=exception_proc_model_map(static_sparse=static_sparse))


def describe_run_cfg(cfg) -> str:
    """A short description of a lava RunConfig, e.g. ``Loihi2SimCfg(select_tag='fixed_pt')``."""
    tag = getattr(cfg, "select_tag", None)
    return f"{type(cfg).__name__}(select_tag={tag!r})" if tag is not None else type(cfg).__name__


#: lava's ProcessModel search (compile) imports every module found next to a process's module as
#: a top-level module; for package-relative modules (ours) that fails harmlessly and lava says so
#: with one UserWarning per module ("Cannot import module ..."). Only these are silenced.
_SCAN_WARNING = r"Cannot import module"
_SCAN_MODULE = r"lava\.magma\.compiler\.compiler_graphs"


def compile_quietly(source, cfg):
    """``source.compile(cfg)`` with lava's module-scan warnings silenced (nothing else)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SCAN_WARNING, category=UserWarning, module=_SCAN_MODULE)
        return source.compile(cfg)


def run_graph(g, *, run_cfg=None, progress: Optional[ProgressFn] = None, log: Optional[ProgressFn] = None,
              stop_on_error: bool = True, stall_s: float = 0.0) -> Dict[str, Any]:
    """Compile, start and run a built :class:`sim.graph.SimGraph` in THIS process and collect every
    monitor frame (the monitor loop shared by ``simulate`` and ``loihi run``).

    ``run_cfg``: a lava RunConfig; default :func:`default_run_cfg`
    (``Loihi2SimCfg(select_tag="fixed_pt")``); ``loihi run`` passes ``Loihi2HwCfg``.
    Returns ``{"arrays": {"spikes/<layer>": bool (shape..., T_L), "readout_v": int64}, "info": {...}}``
    (timings: compile, start, run, stop; throughput = neurons x steps / run time).
    No timeout guard: use :func:`run_lava` for that.
    """
    from lava.magma.core.run_conditions import RunSteps

    ensure_lava_runtime()
    cfg = run_cfg if run_cfg is not None else default_run_cfg()
    cfg_name = describe_run_cfg(cfg)
    if log:
        log(f"compiling ({cfg_name})")
    t0 = time.perf_counter()
    exe = compile_quietly(g.source, cfg)
    t_compile = time.perf_counter() - t0
    models: Dict[str, str] = {}
    for proc, builder in exe.proc_builders.items():
        pm = getattr(builder, "proc_model", None)
        if pm is not None:
            models[type(proc).__name__] = f"{pm.__module__}.{pm.__name__}"
    if log:
        log(f"starting {g.num_processes} Lava processes")
    t0 = time.perf_counter()
    g.source.create_runtime(executable=exe)
    _ACTIVE["runtime"] = g.source.runtime
    t_init = time.perf_counter() - t0
    spikes: Dict[str, List[np.ndarray]] = {n: [] for n, p in g.plans.items() if not p.integrator}
    graded = {l.name for l in g.q.layers if l.graded_output}
    readout = None
    n_steps = g.num_steps
    step_t: List[float] = []          # time at which every monitor had delivered step k
    try:
        t0 = time.perf_counter()
        g.source.run(condition=RunSteps(num_steps=n_steps, blocking=False))
        rt = g.source.runtime
        for step in range(1, n_steps + 1):
            for name, ex in g.monitors.items():
                x = _receive(ex, rt)
                plan = g.plans[name]
                if plan.integrator:
                    if step == plan.t_end:
                        readout = np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)
                elif plan.t_start <= step <= plan.t_end:   # graded layers: int payloads
                    spikes[name].append(np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)
                                        if name in graded else np.asarray(x) != 0)
            step_t.append(time.perf_counter() - t0)
            if progress:
                progress(f"step {step}/{n_steps} ({step_t[-1]:.1f} s)")
            if stall_s and step == 1:      # test hook: a run that hangs (exercises the timeout)
                time.sleep(stall_s)
        g.source.wait()
        t_run = time.perf_counter() - t0
    except BaseException:
        if stop_on_error:      # lava's stop() can hang after a child failure: the worker skips it
            g.source.stop()
        raise
    t0 = time.perf_counter()
    g.source.stop()
    t_stop = time.perf_counter() - t0
    if readout is None:  # pragma: no cover - the monitor loop always reaches t_end
        raise SimError("no read-out frame was received")
    arrays: Dict[str, np.ndarray] = {}
    for name, frames in spikes.items():
        p = g.plans[name]
        arrays[f"spikes/{name}"] = np.stack(frames, axis=-1).reshape(*p.shape, len(frames))
    ro = g.plans[g.readout_name]
    arrays["readout_v"] = readout.reshape(ro.shape)
    cost = g.cost()
    neuron_steps = g.total_neurons * n_steps
    window_steps = sum(p.neurons * p.time_window for p in g.plans.values())
    info = {
        "backend": "lava", "patch": list(g.patch), "num_steps": n_steps,
        "run_cfg": cfg_name, "process_models": models,
        "processes": cost["processes"], "neurons": cost["neurons"], "synapses": cost["synapses"],
        "synapse_bytes": cost["synapse_bytes"], "connections": cost["connections"],
        "layers": {n: {"neurons": p.neurons, "shape": list(p.shape), "t_start": p.t_start, "t_end": p.t_end,
                       "time_window": p.time_window,
                       "neuron_process": "WindowedATRLIF" if p.windowed else "ATRLIF"}
                   for n, p in g.plans.items()},
        "timings": {"build_s": g.build_seconds, "compile_s": t_compile, "init_s": t_init,
                    "run_s": t_run, "stop_s": t_stop},
        "neuron_updates": neuron_steps, "window_neuron_updates": window_steps,
        "neuron_updates_per_s": neuron_steps / t_run if t_run > 0 else float("nan"),
        "window_neuron_updates_per_s": window_steps / t_run if t_run > 0 else float("nan"),
        "steps_per_s": n_steps / t_run if t_run > 0 else float("nan"),
        # steady state = steps 3..N: every connection process clips/truncates its weights in its
        # first run_spk (step 1), which delays the delivery of step 2
        "setup_steps_s": step_t[min(1, len(step_t) - 1)],
        "steady_neuron_updates_per_s": (g.total_neurons * (n_steps - 2) / (step_t[-1] - step_t[1])
                                        if n_steps > 2 and step_t[-1] > step_t[1] else float("nan")),
        "step_times_s": step_t,
    }
    return {"arrays": arrays, "info": info}


def run_lava_in_process(q: QuantizedNet, payload: np.ndarray, progress: Optional[ProgressFn] = None,
                        log: Optional[ProgressFn] = None, stop_on_error: bool = True,
                        stall_s: float = 0.0, run_cfg=None, static_sparse: bool = False) -> Dict[str, Any]:
    """Build the Lava graph of one patch and run it in THIS process (:func:`run_graph`; no timeout
    guard: use :func:`run_lava`). ``run_cfg`` defaults to ``Loihi2SimCfg(select_tag="fixed_pt")``
    (:func:`default_run_cfg`, with ``static_sparse``). Returns plain numpy arrays and the run
    information."""
    ensure_lava_runtime()
    from .graph import build_graph

    if run_cfg is None and static_sparse:
        run_cfg = default_run_cfg(static_sparse=True)
    t_all = time.perf_counter()
    g = build_graph(q, payload, log=log)
    out = run_graph(g, run_cfg=run_cfg, progress=progress, log=log, stop_on_error=stop_on_error,
                    stall_s=stall_s)
    out["info"]["timings"]["total_s"] = time.perf_counter() - t_all
    return out


def to_result(q: QuantizedNet, arrays: Dict[str, np.ndarray], info: Dict[str, Any]) -> LavaResult:
    """A :class:`LavaResult` (torch tensors, batch of 1) from :func:`run_graph`'s arrays and info."""
    v = torch.from_numpy(np.asarray(arrays["readout_v"], dtype=np.int64)).unsqueeze(0)
    field_ = (v.to(torch.float64) * q.readout.output_scale).to(torch.float32)
    graded = {l.name for l in q.layers if l.graded_output}
    spikes = {}
    for k, a in arrays.items():
        if k.startswith("spikes/"):
            name = k.split("/", 1)[1]
            spikes[name] = torch.from_numpy(np.asarray(a, dtype=np.int64 if name in graded else bool)).unsqueeze(0)
    order = [l.name for l in q.layers if l.name in spikes]
    return LavaResult(field=field_, readout_v=v, spikes={k: spikes[k] for k in order}, info=info)


# ============================================================================ guarded run
def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """End the worker and every Lava process it started (they share its process group).

    First SIGTERM to the worker alone: its handler kills its Lava actors and shuts lava's
    shared-memory manager down (which unlinks the /dev/shm segments; a plain SIGKILL would leak
    them). Then SIGKILL to whatever is left in the group."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass
    deadline = time.monotonic() + 5.0        # orphans of the group are reaped by init: wait for it
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _wait_worker(proc: subprocess.Popen, timeout: float, startup_timeout: Optional[float],
                 first_step: threading.Event, first_step_at: List[float]) -> Tuple[Optional[int], str]:
    """Wait for the worker: ``(exit code, "")``, or ``(None, why)`` when a limit passed.

    Without ``startup_timeout`` the worker has ``timeout`` seconds in all; with it, ``startup_timeout``
    seconds to deliver its first step and ``timeout`` seconds from that step on."""
    if startup_timeout is None:
        try:
            return proc.wait(timeout=timeout), ""
        except subprocess.TimeoutExpired:
            return None, f"did not finish within {timeout:g} s"
    start_deadline = time.monotonic() + float(startup_timeout)
    while not first_step.is_set():
        left = start_deadline - time.monotonic()
        if left <= 0:
            return None, f"did not reach its first step within {startup_timeout:g} s"
        try:
            return proc.wait(timeout=min(left, 0.2)), ""
        except subprocess.TimeoutExpired:
            pass
    try:
        return proc.wait(timeout=max(0.0, first_step_at[0] + timeout - time.monotonic())), ""
    except subprocess.TimeoutExpired:
        return None, f"did not finish within {timeout:g} s of its first step"


def run_lava(q: QuantizedNet, payload, *, timeout: float = 600.0, progress: Optional[ProgressFn] = None,
             log: Optional[ProgressFn] = None, static_sparse: bool = False,
             startup_timeout: Optional[float] = None, _stall_s: float = 0.0) -> LavaResult:
    """Run one patch on the Lava CPU backend in a guarded worker subprocess.

    ``payload``: integer ``(1, C_in, D, H, W)`` or ``(C_in, D, H, W)`` (numpy or torch).
    ``static_sparse``: :class:`sim.processes.PyStaticSparseModelBitAcc` for every ``Sparse``
    (lava's model without its first-step weight copy; default: lava's ``PySparseModelBitAcc``).
    Raises :class:`SimTimeout` after ``timeout`` seconds (all Lava processes killed) and
    :class:`SimError` if the worker fails. With ``startup_timeout``, ``timeout`` counts from the
    first simulated step and the start-up before it (interpreter, lowering, compile, Lava process
    start: the part that grows with machine load) has ``startup_timeout`` seconds of its own.
    """
    pl = payload.detach().cpu().numpy() if isinstance(payload, torch.Tensor) else np.asarray(payload)
    with tempfile.TemporaryDirectory(prefix="spikereg-sim-") as tmp:
        tmp_p = Path(tmp)
        with open(tmp_p / "job.pkl", "wb") as f:
            pickle.dump({"q": q, "payload": pl, "stall_s": float(_stall_s), "static_sparse": bool(static_sparse)},
                        f, protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen([sys.executable, "-m", "sim.run", "--worker", str(tmp_p)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=env, cwd=str(_ROOT), start_new_session=True)
        tail: List[str] = []
        first_step, first_step_at = threading.Event(), []

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(_PROGRESS):
                    if not first_step.is_set():
                        first_step_at.append(time.monotonic())
                        first_step.set()
                    if progress:
                        progress(line[len(_PROGRESS):])
                else:
                    if log and line.startswith("@@sim-log "):
                        log(line[len("@@sim-log "):])
                    tail.append(line)
                    del tail[:-60]

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        try:
            rc, expired = _wait_worker(proc, timeout, startup_timeout, first_step, first_step_at)
        except BaseException:
            _kill_group(proc)
            raise
        if rc is None:
            _kill_group(proc)
            th.join(timeout=5)
            raise SimTimeout(f"the Lava run {expired}; its processes were killed. Output tail:\n"
                             + "\n".join(tail[-20:]), pid=proc.pid)
        _kill_group(proc, grace=1.0)      # no-op unless a Lava process outlived the worker
        th.join(timeout=5)
        res_npz, res_json = tmp_p / "result.npz", tmp_p / "result.json"
        if rc != 0 or not res_json.is_file():
            raise SimError(f"the Lava worker failed (exit code {rc}). Output tail:\n" + "\n".join(tail[-30:]))
        info = json.loads(res_json.read_text())
        with np.load(res_npz) as z:
            arrays = {k: z[k] for k in z.files}
    return to_result(q, arrays, info)


def run_emulator(q: QuantizedNet, payload) -> EmulationResult:
    """The reference: :func:`calibration.emulator.emulate` with every layer's spikes recorded."""
    pl = torch.as_tensor(np.asarray(payload) if not isinstance(payload, torch.Tensor) else payload)
    if pl.dim() == 4:
        pl = pl.unsqueeze(0)
    return emulate(q, pl.to(torch.int64), record_spikes=True)


def run_backend(backend: str, q: QuantizedNet, payload, *, timeout: float = 600.0,
                progress: Optional[ProgressFn] = None, log: Optional[ProgressFn] = None) -> EmulationResult:
    """``backend`` = ``"lava"`` or ``"emulator"``."""
    if backend == "lava":
        return run_lava(q, payload, timeout=timeout, progress=progress, log=log)
    if backend == "emulator":
        return run_emulator(q, payload)
    raise ValueError(f"unknown backend {backend!r} (lava or emulator)")


# ============================================================================ harness entry
@dataclass
class PatchSimulation:
    """One patch through the Lava CPU backend, as :func:`simulate_patch` measured it.

    ``field``/``readout_v``: ``(3, D, H, W)`` (voxels, float32 / integer read-out);
    ``spikes_per_step[layer]``: spikes per local step of every spiking layer (execution order);
    ``timings`` (seconds): ``build_s`` (lowering + graph), ``compile_s``, ``init_s`` (start of
    the Lava processes), ``run_s`` (the simulated steps: what throughput is measured on),
    ``stop_s``, ``worker_s`` (the worker from import to stop) and ``wall_s`` (this call, with the
    worker's interpreter start and result transfer); ``emulator_mismatches`` is set with
    ``check=True`` (spike entries + read-out values that differ from the emulator; 0 = equal).
    """

    field: np.ndarray
    readout_v: np.ndarray
    readout_sha256: str
    spikes_per_step: Dict[str, List[int]]
    neurons: Dict[str, int]
    num_steps: int
    timings: Dict[str, float]
    neuron_updates: int
    neuron_updates_per_s: float
    emulator_mismatches: Optional[int] = None
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def spikes(self) -> Dict[str, int]:
        """Total spikes per spiking layer."""
        return {k: int(sum(v)) for k, v in self.spikes_per_step.items()}


def _as_volume(x, name: str) -> torch.Tensor:
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dim() == 5 and tuple(t.shape[:2]) == (1, 1):
        t = t[0, 0]
    if t.dim() != 3:
        raise ValueError(f"{name} must be a (D, H, W) patch (or (1, 1, D, H, W)), got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int32, torch.int64)):
        raise ValueError(f"{name} must be a real-valued intensity patch in [0, 1], got dtype {t.dtype}")
    return t.to(torch.float32)[None, None]


def simulate_patch(net: Union[str, os.PathLike, QuantizedNet], fixed, moving, *, timeout: float = 600.0,
                   check: bool = False, progress: Optional[ProgressFn] = None) -> PatchSimulation:
    """Run one (fixed, moving) patch through the Lava CPU simulation and time it.

    ``net``: a calibrated ``net.h5`` path or a loaded :class:`calibration.netfile.QuantizedNet`;
    ``fixed``/``moving``: ``(D, H, W)`` intensities in [0, 1] (numpy or torch; sizes multiples of
    the net's size multiple), encoded exactly as the model does (``round(x * 255)``). The graph is
    built, compiled and run with ``Loihi2SimCfg(select_tag="fixed_pt")`` in a guarded worker
    process (:func:`run_lava`; :class:`SimTimeout` after ``timeout`` s, :class:`SimError` on
    failure). ``check=True`` also runs the bit-accurate emulator and counts mismatches.
    """
    from calibration.emulator import payload_of
    from calibration.netfile import load_qnet

    from .compare import compare_results, readout_sha256, spikes_per_step

    q = net if isinstance(net, QuantizedNet) else load_qnet(net)
    f, m = _as_volume(fixed, "fixed"), _as_volume(moving, "moving")
    if f.shape != m.shape:
        raise ValueError(f"fixed {tuple(f.shape[2:])} and moving {tuple(m.shape[2:])} differ in shape")
    payload = payload_of(q, f, m)
    t0 = time.perf_counter()
    res = run_lava(q, payload, timeout=timeout, progress=progress)
    wall = time.perf_counter() - t0
    info = res.info
    t = dict(info["timings"])
    t["worker_s"] = t.pop("total_s", float("nan"))
    t["wall_s"] = wall
    mism = None
    if check:
        c = compare_results(run_emulator(q, payload), res)
        mism = c["total_spike_mismatches"] + c["readout"]["mismatches"]
    v = res.readout_v[0].numpy().astype(np.int64)
    return PatchSimulation(
        field=res.field[0].numpy(), readout_v=v, readout_sha256=readout_sha256(v),
        spikes_per_step={k: spikes_per_step(s) for k, s in res.spikes.items()},
        neurons={k: int(info["layers"][k]["neurons"]) for k in info["layers"]},
        num_steps=int(info["num_steps"]), timings=t, neuron_updates=int(info["neuron_updates"]),
        neuron_updates_per_s=float(info["neuron_updates_per_s"]), emulator_mismatches=mism, info=info)


# ============================================================================ worker
_ACTIVE: Dict[str, Any] = {}


def kill_runtimes_and_exit(runtimes) -> None:  # pragma: no cover - runs in a worker on timeout
    """Kill every Lava actor of ``runtimes`` (None entries skipped), unlink lava's shared
    memory, and exit the process (128 + SIGTERM): a worker's SIGTERM handler."""
    import multiprocessing as mp
    try:
        for rt in runtimes:
            mi = getattr(rt, "_messaging_infrastructure", None)
            if mi is None:
                continue
            for a in list(mi.actors):
                try:
                    a.kill()
                except Exception:
                    pass
            for a in list(mi.actors):
                mp.Process.join(a, 1.0)     # lava's SystemProcess.join() takes no timeout
            if mi.smm is not None:
                mi.smm.shutdown()
    except BaseException:
        import traceback
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
    finally:
        os._exit(128 + signal.SIGTERM)


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - runs in the worker on timeout
    """Kill this worker's Lava actors, unlink lava's shared memory, exit."""
    kill_runtimes_and_exit([_ACTIVE.get("runtime")])


def worker_main(module: str, worker: Callable[[str], int]) -> None:  # pragma: no cover - in workers
    """``python -m <module> --worker JOB_DIR``: exit with ``worker(JOB_DIR)``'s code (a usage
    message and exit code 2 for anything else)."""
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2]))
    print(f"usage: python -m {module} --worker JOB_DIR", file=sys.stderr)
    sys.exit(2)


def _worker(job_dir: str) -> int:
    """Worker subprocess: run the pickled job in ``job_dir``, write result.npz/result.json."""
    ensure_lava_runtime()          # before anything else fixes the multiprocessing start method
    signal.signal(signal.SIGTERM, _on_sigterm)
    d = Path(job_dir)
    with open(d / "job.pkl", "rb") as f:
        job = pickle.load(f)
    try:
        out = run_lava_in_process(job["q"], job["payload"],
                                  progress=lambda s: print(_PROGRESS + s, flush=True),
                                  log=lambda s: print("@@sim-log " + s, flush=True), stop_on_error=False,
                                  stall_s=job.get("stall_s", 0.0), static_sparse=job.get("static_sparse", False))
    except BaseException:    # no lava stop() (it can hang): report and leave; the parent kills the group
        import traceback
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        os._exit(1)
    tmp_npz = d / "result.tmp.npz"
    np.savez(tmp_npz, **out["arrays"])
    os.replace(tmp_npz, d / "result.npz")
    tmp_json = d / "result.tmp.json"
    tmp_json.write_text(json.dumps(out["info"], default=float))
    os.replace(tmp_json, d / "result.json")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through run_lava
    worker_main("sim.run", _worker)


__all__ = ["SimError", "SimTimeout", "LavaResult", "PatchSimulation", "simulate_patch", "run_lava",
           "run_lava_in_process", "run_graph", "to_result", "default_run_cfg", "describe_run_cfg",
           "compile_quietly", "ensure_lava_runtime", "run_emulator", "run_backend"]
