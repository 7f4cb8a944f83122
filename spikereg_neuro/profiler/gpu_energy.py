"""GPU energy/latency: measured with NVML when a GPU is present, otherwise an estimate that says so.
CPU wall time is always measured.

Measurement (:func:`measure_gpu`): NVML's ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the
driver loaded; Volta and newer) read before and after a loop of calls long enough for the
counter's coarse updates (at least ``min_seconds``, default 2 s), with ``torch.cuda.synchronize``
around the loop. The GPU's idle power is measured the same way over an idle window just before,
and ``idle power x loop time`` is subtracted for ``dynamic_mj`` (the energy the workload added on
top of an idle GPU, per call); ``energy_mj`` is the gross energy per call (``energy_basis =
"gross"``; also ``gross_energy_mj``).

Estimate (:func:`estimate_gpu`): counted MACs x an energy per MAC from a named, cited constant
(default TF32 tensor-core peak: PyTorch runs cuDNN convolutions in TF32 by default on Ampere and
newer), plus an idle power x the estimated latency, so that ``energy_mj`` is GROSS like every
other row (``energy_basis = "gross"``, ``dynamic_mj`` without the idle part). The latency
(:func:`estimate_gpu_latency`) is a best-case roofline from datasheet figures: per dispatched
kernel (:func:`count_gpu_kernels`) the largest of MACs / peak MAC rate, bytes moved / HBM bandwidth
and a cited per-kernel floor; or, where no kernels were counted, per layer the larger of the first
two.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .constants import Constant

_H100 = ("NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column: 'TF32 Tensor Core 989 teraFLOPS*' (* with "
         "sparsity, so 494.5 dense), 'FP32 67 teraFLOPS', 'GPU memory bandwidth 3.35TB/s', 'Max thermal design "
         "power (TDP) up to 700W'")
GPU_CONSTANTS: Dict[str, Constant] = {
    "h100_sxm_tf32_peak_pj_per_mac": Constant(
        2.831, "pJ",
        f"derived from {_H100}: 700 W / (494.5e12 / 2 MAC/s) = 2.831 pJ per MAC at dense TF32 tensor-core peak "
        "(the default: PyTorch's cuDNN convolutions use TF32 on Ampere and newer unless disabled). Board power "
        "at peak throughput; below peak the energy per MAC is higher.", "derived"),
    "horowitz_fp32_mac_pj": Constant(
        4.6, "pJ",
        "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, energy "
        "table for 45 nm at 0.9 V: 32-bit float multiply 3.7 pJ + 32-bit float add 0.9 pJ = 4.6 pJ "
        "per MAC. Arithmetic only: no memory access, data movement, control or idle power, so an "
        "estimate from it is a LOWER BOUND for any real GPU.", "derived"),
    "h100_sxm_fp32_peak_pj_per_mac": Constant(
        20.9, "pJ",
        "derived from the NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): FP32 67 TFLOPS and max "
        "TDP 700 W -> 700 W / (67e12 / 2 MAC/s) = 20.9 pJ per MAC. Board power at full FP32 "
        "(non-tensor-core) throughput; real convolutions run below peak throughput, so the true "
        "energy per MAC is usually higher, and tensor-core (TF32/FP16) paths are lower.", "derived"),
}

ESTIMATE_BASES = tuple(GPU_CONSTANTS)

#: the default estimate basis (energy per MAC and peak MAC rate)
DEFAULT_GPU_BASIS = "h100_sxm_tf32_peak_pj_per_mac"
DEFAULT_GPU_THROUGHPUT = "h100_sxm_tf32_peak_macs_per_s"

#: idle power added to the estimated energy (idle x latency): the GPU's gross energy
GPU_IDLE: Dict[str, Constant] = {
    "h100_idle_power_w_lower_bound": Constant(
        26.0, "W",
        "LOWER BOUND of an H100's idle power while a process holds a CUDA context: Vadari, 'The Model Parking "
        "Tax: Quantifying the Hidden Energy Cost of Always-On GPU Model Deployment', arXiv:2605.23918 (2026), "
        "abstract: the CUDA context 'forces a discrete DVFS transition consuming +26-66 W over bare idle (26-50 W "
        "on HBM architectures)'; the smallest figure, without the bare idle itself (so the GPU's gross energy is "
        "underestimated, in its favour).", "published"),
}
DEFAULT_GPU_IDLE = "h100_idle_power_w_lower_bound"

#: peak throughput for a best-case (lower-bound) GPU latency estimate from counted MACs
GPU_THROUGHPUT: Dict[str, Constant] = {
    "h100_sxm_tf32_peak_macs_per_s": Constant(
        247.25e12, "MAC/s", f"derived from {_H100}: 494.5 dense TF32 teraFLOPS / 2. Peak tensor-core rate: a "
                            "latency from it is a LOWER BOUND.", "derived"),
    "h100_sxm_hbm_bytes_per_s": Constant(
        3.35e12, "B/s", f"{_H100}: 3.35 TB/s HBM3 bandwidth (the memory side of the roofline latency).",
        "published"),
    "h100_sxm_fp32_peak_macs_per_s": Constant(
        33.5e12, "MAC/s",
        "derived from the NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): FP32 67 TFLOPS = "
        "33.5e12 MAC/s. Peak arithmetic throughput: a latency from it is a LOWER BOUND (no kernel "
        "launch, memory-bound layers, host transfers or tiling overhead).", "derived"),
}

#: the time one small kernel takes on a GPU, back to back in a CUDA graph: the per-kernel floor of
#: the best-case latency (a mean, not a hard minimum)
GPU_KERNEL_FLOOR: Dict[str, Constant] = {
    "cuda_graph_kernel_floor_s": Constant(
        0.875e-6, "s",
        "derived from the CUDA.jl documentation, 'CUDA graphs' (https://cuda.juliagpu.org/dev/usage/graphs/): "
        "'Integrating a small ODE for 10 steps with RK4 (80 broadcast kernels) goes from 260 us to 70 us' when "
        "launched as one CUDA graph: 70 us / 80 = 0.875 us per small kernel with the CPU's launch cost removed "
        "(eager launches: 3.25 us each). The GPU is not named there, and the figure is a mean over small "
        "kernels (their work included), not a hard minimum. PyTorch's eager mode, as the benchmark runs "
        "VoxelMorph, pays the eager launch cost: the graph figure keeps the latency a BEST CASE.",
        "derived"),
}
DEFAULT_GPU_KERNEL_FLOOR = "cuda_graph_kernel_floor_s"


def conv_macs(in_elements: int, out_elements: int, channels_per_group: int, kernel: Sequence[int],
              transposed: bool = False) -> int:
    """Multiply-accumulates of one convolution, padding taps included (the convention of FLOP
    counters): output elements x C_in / groups x prod(kernel); transposed: input elements x
    C_out / groups x prod(kernel). ``channels_per_group`` is C_in / groups (C_out / groups)."""
    return int((in_elements if transposed else out_elements) * int(channels_per_group)
               * math.prod(int(k) for k in kernel))


def count_conv_macs(model: Any, run: Callable[[], Any]) -> Dict[str, Any]:
    """MACs of the modules of ``model`` while ``run()`` executes (e.g. one forward pass):
    every Conv/ConvTranspose 1-3D and Linear.

    Convolutions count ``output elements x C_in / groups x prod(kernel)`` (padding taps included,
    the convention of FLOP counters); linear layers ``output elements x in_features``; per layer
    also the bytes it moves (input + output + parameters, ``bytes_per_layer``; ``layers`` lists
    ``(macs, bytes)`` per module for :func:`estimate_gpu_latency`; a module whose input is a list of
    tensor parts, like SpikeReg's synapses, counts the bytes of every part). Other
    layers (activations, upsampling, the spatial transformer) are not counted and are listed in
    ``uncounted``.
    """
    import torch

    macs = [0]
    per: Dict[str, int] = {}
    per_bytes: Dict[str, int] = {}
    uncounted = set()
    conv_types = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                  torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)

    def hook(mod, args, out, name=""):
        if isinstance(mod, conv_types):
            transposed = isinstance(mod, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))
            n = conv_macs(args[0].numel(), out.numel(),
                          (mod.out_channels if transposed else mod.in_channels) // mod.groups, mod.kernel_size,
                          transposed)
        elif isinstance(mod, torch.nn.Linear):
            n = out.numel() * mod.in_features
        else:
            return
        macs[0] += int(n)
        per[name] = per.get(name, 0) + int(n)
        nbytes = _tensor_bytes(args[0]) + _tensor_bytes(out) + sum(
            p.numel() * p.element_size() for p in mod.parameters(recurse=False))
        per_bytes[name] = per_bytes.get(name, 0) + int(nbytes)

    handles = []
    for name, mod in model.named_modules():
        if len(list(mod.children())) == 0:
            if isinstance(mod, conv_types + (torch.nn.Linear,)):
                handles.append(mod.register_forward_hook(lambda m, a, o, name=name: hook(m, a, o, name)))
            elif sum(p.numel() for p in mod.parameters(recurse=False)):
                uncounted.add(type(mod).__name__)
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return {"macs": macs[0], "per_layer": per, "bytes_per_layer": per_bytes,
            "layers": [(per[k], per_bytes[k]) for k in per], "uncounted": sorted(uncounted)}


def _tensor_bytes(x: Any) -> int:
    """Bytes of the tensors in ``x``: a tensor, or a (named) tuple / list of them, as a synapse
    reads a list of parts (``Upsampled``, ``Impulse``); other values count nothing."""
    import torch
    if isinstance(x, torch.Tensor):
        return int(x.numel() * x.element_size())
    if isinstance(x, (tuple, list)):
        return sum(_tensor_bytes(v) for v in x)
    return 0


#: ATen operations that change only metadata or allocate: no kernel (with the views, ``is_view``)
NO_KERNEL_OPS = frozenset({
    "aten.empty", "aten.empty_like", "aten.empty_strided", "aten.new_empty", "aten.new_empty_strided",
    "aten._unsafe_view", "aten.unsqueeze_", "aten.squeeze_", "aten.transpose_", "aten.t_", "aten.as_strided_",
    "aten.detach_", "aten.resize_", "aten.set_", "aten.lift_fresh", "aten.lift_fresh_copy", "aten._to_copy_noop"})


def count_gpu_kernels(run: Callable[[], Any], warmup: bool = True) -> Dict[str, Any]:
    """The operations ``run()`` dispatches to PyTorch's kernels (no grad), each ``(macs, bytes)``.

    Every ATen operation that is not a view or alias (``OpOverload.is_view``) nor in
    :data:`NO_KERNEL_OPS` counts as one kernel, fewer than eager CUDA launches (cuDNN can launch
    several per convolution). ``macs``: convolutions ``output elements x C_in / groups x
    prod(kernel)`` (transposed: input elements x C_out / groups x prod(kernel)), matrix products
    ``n x k x m``, else 0; ``bytes``: the tensors read and written, each storage once per operation
    and at most its own size (an expanded input is read once). ``warmup`` runs ``run()`` once
    first, so that what a model builds once and caches (a sampling grid) is not counted.
    Operator names and counts are in ``ops``. Dispatch is the same on the CPU, so a CPU run counts
    what a CUDA run would launch.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    if warmup:
        with torch.no_grad():
            run()
    kernels = []
    ops: Dict[str, int] = {}

    def bytes_of(tensors: Sequence[Any]) -> int:
        seen: Dict[Tuple[int, int], int] = {}
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.numel():
                st = t.untyped_storage()
                key = (st.data_ptr(), st.nbytes())
                distinct = math.prod(n for n, step in zip(t.shape, t.stride()) if step != 0)  # expanded dims once
                seen[key] = max(seen.get(key, 0), min(int(distinct * t.element_size()), int(st.nbytes())))
        return sum(seen.values())

    def macs_of(func, args, out) -> int:
        name = func.overloadpacket.__name__
        if name == "convolution":   # weight (C_out, C_in / groups, k...), transposed (C_in, C_out / groups, k...)
            x, w, transposed = args[0], args[1], bool(args[6])
            return conv_macs(x.numel(), out.numel(), int(w.shape[1]), w.shape[2:], transposed)
        if name in ("mm", "bmm", "addmm", "baddbmm"):
            a = args[1] if name in ("addmm", "baddbmm") else args[0]
            return int(out.numel() * int(a.shape[-1]))
        return 0

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = str(func.overloadpacket)
            if not func.is_view and name not in NO_KERNEL_OPS:
                ops[name] = ops.get(name, 0) + 1
                kernels.append((macs_of(func, args, out), bytes_of(tree_flatten((args, kwargs, out))[0])))
            return out

    with torch.no_grad(), _Count():
        run()
    return {"kernels": len(kernels), "macs": sum(m for m, _ in kernels), "bytes": sum(b for _, b in kernels),
            "per_kernel": kernels, "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1]))}


def estimate_gpu_latency(macs: float, basis: str = DEFAULT_GPU_THROUGHPUT,
                         layers: Optional[Sequence[Tuple[float, float]]] = None,
                         bandwidth: str = "h100_sxm_hbm_bytes_per_s",
                         kernels: Optional[Sequence[Tuple[float, float]]] = None,
                         floor: str = DEFAULT_GPU_KERNEL_FLOOR) -> Dict[str, Any]:
    """ESTIMATED best-case GPU latency from datasheet peaks.

    With ``kernels`` (``(macs, bytes)`` per dispatched kernel, :func:`count_gpu_kernels`): the sum
    over kernels of ``max(macs / peak, bytes / HBM bandwidth, floor)``, the floor being the cited
    time per small kernel of a CUDA-graph replay (:data:`GPU_KERNEL_FLOOR`): a best case
    (``lower_bound`` False: a kernel can beat that mean, a tensor held in L2 can beat HBM
    bandwidth). Else with ``layers`` (``(macs, bytes moved)`` per layer): the roofline sum over
    layers of ``max(macs / peak, bytes / HBM bandwidth)``, kernel launches not counted. Else
    ``macs / peak MAC rate`` (a lower bound). Host transfers and below-peak efficiency are never
    counted.
    """
    if basis not in GPU_THROUGHPUT:
        raise ValueError(f"basis must be one of {tuple(GPU_THROUGHPUT)}, got {basis!r}")
    const = GPU_THROUGHPUT[basis]
    consts = {basis: const.to_dict()}
    if kernels:
        bw, fl = GPU_THROUGHPUT[bandwidth], GPU_KERNEL_FLOOR[floor]
        consts[bandwidth], consts[floor] = bw.to_dict(), fl.to_dict()
        secs = sum(max(float(m) / const.value, float(b) / bw.value, fl.value) for m, b in kernels)
        how = (f"roofline with a launch floor: sum over {len(kernels)} dispatched kernels of max(MACs / {basis}, "
               f"bytes / {bandwidth}, {floor})")
    elif layers:
        bw = GPU_THROUGHPUT[bandwidth]
        consts[bandwidth] = bw.to_dict()
        secs = sum(max(float(m) / const.value, float(b) / bw.value) for m, b in layers)
        how = f"roofline: sum over {len(layers)} layers of max(MACs / {basis}, bytes / {bandwidth})"
    else:
        secs = float(macs) / const.value
        how = f"MACs / {basis}"
    return {"latency_ms": secs * 1e3, "latency_source": "estimated", "lower_bound": not kernels and not layers,
            "best_case": True, "latency_basis": how, "constants": consts}


def _sync(device) -> None:
    import torch
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def nvml_available(device: Any = "cuda") -> bool:
    """True when CUDA, NVML and the energy counter are usable for ``device``."""
    try:
        import torch
        if not torch.cuda.is_available():
            return False
        import pynvml
        handle = _nvml_handle(device)
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        finally:
            pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def _nvml_handle(device: Any):
    """The NVML handle of a torch CUDA device (matched by UUID when torch exposes it)."""
    import pynvml
    import torch
    pynvml.nvmlInit()
    dev = torch.device(device)
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(idx)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        want = str(uuid).lower().replace("gpu-", "")
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            got = pynvml.nvmlDeviceGetUUID(h)
            got = (got.decode() if isinstance(got, bytes) else got).lower().replace("gpu-", "")
            if got == want:
                return h
    import os
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        first = visible.split(",")[idx].strip()
        if first.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(first))
        return pynvml.nvmlDeviceGetHandleByUUID(first)
    return pynvml.nvmlDeviceGetHandleByIndex(idx)


def measure_gpu(fn: Callable[[], Any], n_repeats: int = 10, device: Any = "cuda",
                min_seconds: float = 2.0, idle_seconds: float = 2.0, warmup: int = 3) -> Dict[str, Any]:
    """Measured GPU energy and latency per call of ``fn`` (NVML energy counter, CUDA synced).

    ``fn`` is called ``warmup`` times, then the idle power is measured over ``idle_seconds``,
    then ``fn`` runs in a loop of at least ``n_repeats`` calls and at least ``min_seconds``
    (the number of calls is raised from a timed probe so that the loop lasts that long).
    Raises RuntimeError when no CUDA GPU with an NVML energy counter is present.
    """
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU: use estimate_gpu() (labelled 'estimated') instead")
    import pynvml
    handle = _nvml_handle(device)
    try:
        return _measure(fn, handle, n_repeats, device, min_seconds, idle_seconds, warmup)
    finally:
        pynvml.nvmlShutdown()


def _measure(fn, handle, n_repeats, device, min_seconds, idle_seconds, warmup) -> Dict[str, Any]:
    import pynvml
    energy = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # noqa: E731  (mJ)
    name = pynvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else name
    for _ in range(max(1, warmup)):
        fn()
    _sync(device)
    # idle power over a window (counter-based, robust to the counter's update period)
    e0, t0 = energy(), time.perf_counter()
    time.sleep(idle_seconds)
    e1, t1 = energy(), time.perf_counter()
    idle_w = (e1 - e0) * 1e-3 / (t1 - t0)
    # probe the call time, then size the loop
    t0 = time.perf_counter()
    fn()
    _sync(device)
    probe = max(time.perf_counter() - t0, 1e-6)
    n = max(int(n_repeats), int(min_seconds / probe) + 1)
    _sync(device)
    e0, t0 = energy(), time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    e1, t1 = energy(), time.perf_counter()
    dt = t1 - t0
    gross_mj = float(e1 - e0)
    net_mj = gross_mj - idle_w * dt * 1e3
    return {
        "device": f"GPU {name}",
        "source": "measured",
        "energy_mj": gross_mj / n,
        "energy_basis": "gross",
        "dynamic_mj": net_mj / n,
        "energy_source": "measured",
        "latency_ms": dt * 1e3 / n,
        "latency_source": "measured",
        "gross_energy_mj": gross_mj / n,
        "idle_power_w": idle_w,
        "mean_power_w": gross_mj * 1e-3 / dt,
        "n_calls": n,
        "loop_seconds": dt,
        "idle_seconds": idle_seconds,
        "method": ("NVML nvmlDeviceGetTotalEnergyConsumption before/after a loop of n_calls "
                   "(CUDA synchronized), minus idle power x loop time; idle power from the same "
                   "counter over an idle window"),
        "constants": {},
    }


def estimate_gpu(macs: float, basis: str = DEFAULT_GPU_BASIS,
                 pj_per_mac: Optional[float] = None, citation: Optional[str] = None,
                 latency_ms: Optional[float] = None, idle: Optional[str] = DEFAULT_GPU_IDLE) -> Dict[str, Any]:
    """ESTIMATED GPU energy of ``macs`` multiply-accumulates.

    ``basis`` picks a cited constant of :data:`GPU_CONSTANTS`; ``pj_per_mac`` (with a
    ``citation``) replaces it. With ``latency_ms`` (e.g. :func:`estimate_gpu_latency`) the idle
    power ``idle`` (:data:`GPU_IDLE`; None: none) x latency is added: ``energy_mj`` is then gross
    (``energy_basis = "gross"``) and ``dynamic_mj`` the MAC part. Without a latency the row has
    no latency and ``energy_mj`` is the dynamic part only (``energy_basis = "dynamic"``).
    """
    if pj_per_mac is not None:
        if not citation:
            raise ValueError("a custom pj_per_mac needs a citation")
        const = Constant(float(pj_per_mac), "pJ", citation, "override")
        basis = "custom"
    else:
        if basis not in GPU_CONSTANTS:
            raise ValueError(f"basis must be one of {ESTIMATE_BASES}, got {basis!r}")
        const = GPU_CONSTANTS[basis]
    if idle is not None and idle not in GPU_IDLE:
        raise ValueError(f"idle must be one of {tuple(GPU_IDLE)} or None, got {idle!r}")
    dynamic = float(macs) * const.value * 1e-9
    consts = {basis: const.to_dict()}
    idle_mj = 0.0
    if latency_ms is not None and idle is not None:
        consts[idle] = GPU_IDLE[idle].to_dict()
        idle_mj = GPU_IDLE[idle].value * float(latency_ms)
    gross = latency_ms is not None
    return {
        "device": "GPU (estimate)",
        "energy_mj": dynamic + idle_mj,
        "energy_basis": "gross" if gross else "dynamic",
        "dynamic_mj": dynamic,
        "idle_mj": idle_mj,
        "energy_source": "estimated",
        "latency_ms": None if latency_ms is None else float(latency_ms),
        "latency_source": "estimated" if gross else "not measured",
        "source": "estimated",
        "macs": float(macs),
        "energy_per_mac_basis": basis,
        "lower_bound": basis == "horowitz_fp32_mac_pj",
        "label": (f"estimated: {float(macs):.4g} counted MACs x {const.value:g} pJ/MAC ({basis})"
                  + (f" + {GPU_IDLE[idle].value:g} W idle x {float(latency_ms):.3g} ms" if gross and idle else "")
                  + "; no GPU was measured"),
        "constants": consts,
    }


def measure_cpu(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Dict[str, Any]:
    """Measured CPU wall time per call (``time.perf_counter``), after ``warmup`` calls."""
    import torch
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = [t * 1e3 for t in times]
    return {
        "device": "CPU",
        "source": "measured",
        "latency_ms": statistics.median(ms),
        "latency_source": "measured",
        "latency_ms_mean": statistics.fmean(ms),
        "latency_ms_min": min(ms),
        "latency_ms_std": statistics.pstdev(ms),
        "repeats": len(ms),
        "torch_threads": torch.get_num_threads(),
        "energy_mj": None,
        "energy_source": "not measured",
        "constants": {},
    }
