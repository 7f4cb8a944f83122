"""Profiler: exact operation counts, a Loihi 2 energy/latency model, GPU/CPU measurements.

Counting (exact, from the network's layer descriptions and spike tensors)::

    from spikereg_neuro.profiler import NetworkCounter, count_patch, register_and_count
    counts = count_patch(net, fixed, moving)           # ProfileCounts of one batch of patches
    field, counts = register_and_count(reg, f, m)      # whole registration, exact
    counts.neurobench()                                 # effective MACs/ACs, sparsities, footprint

Energy and latency (rows carry energy_mj, energy_source, latency_ms, latency_source, constants)::

    from spikereg_neuro.profiler import estimate_loihi2, load_constants, estimate_gpu, measure_gpu
    row = estimate_loihi2(counts, load_constants("my_constants.yaml"))   # "estimated"
    row = measure_gpu(lambda: net(f, m), device="cuda")                  # "measured" (NVML)
    row = estimate_gpu(counts.totals()["ann_macs_per_sample"])           # "estimated"
    row = measure_cpu(lambda: net(f, m))                                 # wall time, "measured"

Formulas, constants and their sources: docs/profiler.md.
"""
from ..connections import Connection
from .constants import Constant
from .counting import (VARIANTS, ConnectionCounts, ExactCountRecorder, LayerCounts, LayerInfo,
                       NetworkCounter, ProfileCounts, count_patch, counts_from_inference,
                       patches_per_scale, record_spikes, register_and_count)
from .gpu_energy import (GPU_CONSTANTS, GPU_IDLE, GPU_KERNEL_FLOOR, GPU_THROUGHPUT, count_conv_macs,
                         count_gpu_kernels, estimate_gpu, estimate_gpu_latency, measure_cpu, measure_gpu, nvml_available)
from .loihi2_energy import (DEFAULT_CONSTANTS_YAML, PILOTNET_MEASURED, PRESETS, Loihi2Constants,
                            calibration_check, default_constants, energy_per_layer, estimate_loihi2,
                            load_constants,
                            naive_mapping, step_times_us)

__all__ = [
    "Constant", "VARIANTS", "Connection", "ConnectionCounts", "ExactCountRecorder", "LayerCounts", "LayerInfo",
    "NetworkCounter", "ProfileCounts", "count_patch", "counts_from_inference",
    "patches_per_scale", "record_spikes", "register_and_count",
    "GPU_CONSTANTS", "GPU_IDLE", "GPU_KERNEL_FLOOR", "GPU_THROUGHPUT", "count_conv_macs", "count_gpu_kernels", "estimate_gpu", "estimate_gpu_latency", "measure_cpu", "measure_gpu", "nvml_available",
    "DEFAULT_CONSTANTS_YAML", "PILOTNET_MEASURED", "PRESETS", "Loihi2Constants", "calibration_check",
    "default_constants", "energy_per_layer", "estimate_loihi2", "load_constants", "naive_mapping", "step_times_us",
]
