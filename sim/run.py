"""Run a quantized network on one patch with the Lava CPU backend (or the emulator).

:func:`run_lava` builds the graph (:mod:`sim.graph`), compiles it with
``Loihi2SimCfg(select_tag="fixed_pt")`` and runs it in a WORKER SUBPROCESS started in its own
session, under a wall-clock timeout: Lava starts one OS process per leaf process and
``stop()`` can hang after a child failure, so on timeout (or any failure) the whole process
group - worker and every Lava child - is terminated (SIGTERM, then SIGKILL) and a
:class:`SimTimeout` / :class:`SimError` is raised; nothing is left behind. Progress lines of the
worker (one per simulated step) are forwarded to a callback.

The result is a :class:`LavaResult`, an :class:`calibration.emulator.EmulationResult` (same
fields: ``field``, ``readout_v`` ``(1, 3, D, H, W)`` int64, ``spikes[name]``
``(1, C, D, H, W, T_L)`` bool for every spiking layer, each in its own local time) plus
``info`` (timings, graph size, synapse memory, throughput), so :mod:`sim.compare` treats both
backends alike.
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
from typing import Any, Callable, Dict, List, Optional

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


def run_lava_in_process(q: QuantizedNet, payload: np.ndarray, progress: Optional[ProgressFn] = None,
                        log: Optional[ProgressFn] = None, stop_on_error: bool = True,
                        stall_s: float = 0.0) -> Dict[str, Any]:
    """Build, compile and run the Lava graph in THIS process (no timeout guard: use
    :func:`run_lava`). Returns plain numpy arrays and the run information."""
    from lava.magma.core.run_conditions import RunSteps

    from .graph import build_graph

    t_all = time.perf_counter()
    g = build_graph(q, payload, log=log)
    cfg = g.run_cfg()
    if log:
        log("compiling (Loihi2SimCfg, select_tag='fixed_pt')")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # lava's ProcessModel search re-imports every module of the sim/ package as a top-level
        # module; the relative imports of the others fail harmlessly ("Cannot import module")
        warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
        exe = g.source.compile(cfg)
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
                elif plan.t_start <= step <= plan.t_end:
                    spikes[name].append(np.asarray(x) != 0)
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
        "run_cfg": "Loihi2SimCfg(select_tag='fixed_pt')", "process_models": models,
        "processes": cost["processes"], "neurons": cost["neurons"], "synapses": cost["synapses"],
        "synapse_bytes": cost["synapse_bytes"], "connections": cost["connections"],
        "layers": {n: {"neurons": p.neurons, "shape": list(p.shape), "t_start": p.t_start, "t_end": p.t_end,
                       "time_window": p.time_window,
                       "neuron_process": "WindowedATRLIF" if p.windowed else "ATRLIF"}
                   for n, p in g.plans.items()},
        "timings": {"build_s": g.build_seconds, "compile_s": t_compile, "init_s": t_init,
                    "run_s": t_run, "stop_s": t_stop, "total_s": time.perf_counter() - t_all},
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


def _to_result(q: QuantizedNet, arrays: Dict[str, np.ndarray], info: Dict[str, Any]) -> LavaResult:
    v = torch.from_numpy(np.asarray(arrays["readout_v"], dtype=np.int64)).unsqueeze(0)
    field_ = (v.to(torch.float64) * q.readout.output_scale).to(torch.float32)
    spikes = {k.split("/", 1)[1]: torch.from_numpy(np.asarray(a, dtype=bool)).unsqueeze(0)
              for k, a in arrays.items() if k.startswith("spikes/")}
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


def run_lava(q: QuantizedNet, payload, *, timeout: float = 600.0, progress: Optional[ProgressFn] = None,
             log: Optional[ProgressFn] = None, _stall_s: float = 0.0) -> LavaResult:
    """Run one patch on the Lava CPU backend in a guarded worker subprocess.

    ``payload``: integer ``(1, C_in, D, H, W)`` or ``(C_in, D, H, W)`` (numpy or torch).
    Raises :class:`SimTimeout` after ``timeout`` seconds (all Lava processes killed) and
    :class:`SimError` if the worker fails.
    """
    pl = payload.detach().cpu().numpy() if isinstance(payload, torch.Tensor) else np.asarray(payload)
    with tempfile.TemporaryDirectory(prefix="spikereg-sim-") as tmp:
        tmp_p = Path(tmp)
        with open(tmp_p / "job.pkl", "wb") as f:
            pickle.dump({"q": q, "payload": pl, "stall_s": float(_stall_s)}, f, protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen([sys.executable, "-m", "sim.run", "--worker", str(tmp_p)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=env, cwd=str(_ROOT), start_new_session=True)
        tail: List[str] = []

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(_PROGRESS):
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
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            th.join(timeout=5)
            raise SimTimeout(f"the Lava run did not finish within {timeout:g} s; its processes were "
                             "killed. Output tail:\n" + "\n".join(tail[-20:]), pid=proc.pid)
        except BaseException:
            _kill_group(proc)
            raise
        _kill_group(proc, grace=1.0)      # no-op unless a Lava process outlived the worker
        th.join(timeout=5)
        res_npz, res_json = tmp_p / "result.npz", tmp_p / "result.json"
        if rc != 0 or not res_json.is_file():
            raise SimError(f"the Lava worker failed (exit code {rc}). Output tail:\n" + "\n".join(tail[-30:]))
        info = json.loads(res_json.read_text())
        with np.load(res_npz) as z:
            arrays = {k: z[k] for k in z.files}
    return _to_result(q, arrays, info)


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


# ============================================================================ worker
_ACTIVE: Dict[str, Any] = {}


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - runs in the worker on timeout
    """Kill this worker's Lava actors, unlink lava's shared memory, exit."""
    try:
        mi = getattr(_ACTIVE.get("runtime"), "_messaging_infrastructure", None)
        if mi is not None:
            for a in list(mi.actors):
                try:
                    a.kill()
                except Exception:
                    pass
            import multiprocessing as mp
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


def _worker(job_dir: str) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    d = Path(job_dir)
    with open(d / "job.pkl", "rb") as f:
        job = pickle.load(f)
    try:
        out = run_lava_in_process(job["q"], job["payload"],
                                  progress=lambda s: print(_PROGRESS + s, flush=True),
                                  log=lambda s: print("@@sim-log " + s, flush=True), stop_on_error=False,
                                  stall_s=job.get("stall_s", 0.0))
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
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    print("usage: python -m sim.run --worker JOB_DIR", file=sys.stderr)
    sys.exit(2)


__all__ = ["SimError", "SimTimeout", "LavaResult", "run_lava", "run_lava_in_process", "run_emulator",
           "run_backend"]
