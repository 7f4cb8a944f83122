"""Lava CPU backend: the default network on a real patch, spike for spike against the emulator,
and the Lava simulation throughput (pytest-benchmark).

Run::

    pytest benchmarks/test_bench_sim.py --benchmark-only -s                 # 16^3 patch, ~30 s
    SPIKEREG_BENCH_SIM_PATCH=32 pytest benchmarks/test_bench_sim.py --benchmark-only -s   # ~2 min, ~6.3 GB

Two cases: the equivalence check (Lava vs emulator, every spike of every layer and the read-out,
with the full timing breakdown) and the harness entry :func:`sim.run.simulate_patch` (what
``spikereg-neuro benchmark`` times for its Lava CPU row).

The network is ``SPIKEREG_BENCH_NET`` (a net.h5 from ``calibrate``) when set, else the shipped
model quantized with the default weight exponents (the untrained default architecture if no
model is shipped). The patch is the centred patch of demo test pair 0 of the network's data set.
Throughput = neurons x simulated steps / wall time of the Lava run phase (all layers step every
lava time step); the "window" figure counts only each layer's own T_L steps.
"""
from __future__ import annotations

import os
import time

import pytest
import torch

PATCH = int(os.environ.get("SPIKEREG_BENCH_SIM_PATCH", "16"))
TIMEOUT = float(os.environ.get("SPIKEREG_BENCH_SIM_TIMEOUT", "900"))


@pytest.fixture(scope="module")
def bench_qnet():
    from calibration.netfile import load_qnet
    from calibration.quantize import quantize_network
    from spikereg_neuro.checkpoint import DEFAULT_MODEL, load_network
    from spikereg_neuro.model.unet import SpikeRegUNet

    path = os.environ.get("SPIKEREG_BENCH_NET")
    if path:
        return load_qnet(path), path
    if DEFAULT_MODEL.is_file():
        net, _ = load_network(DEFAULT_MODEL)
        src = str(DEFAULT_MODEL)
    else:
        torch.manual_seed(0)
        net, src = SpikeRegUNet(), "untrained default architecture"
    return quantize_network(net.eval(), source_checkpoint=src), src


def test_bench_lava_default_net_equals_emulator(benchmark, bench_qnet):
    from calibration.emulator import emulate
    from sim.cli import load_patch
    from sim.compare import compare_results, format_comparison
    from sim.run import run_lava

    q, src = bench_qnet
    payload, where = load_patch(q, 0, (PATCH,) * 3)
    torch.set_num_threads(1)
    res = benchmark.pedantic(lambda: run_lava(q, payload, timeout=TIMEOUT), rounds=1, iterations=1)
    t0 = time.perf_counter()
    ref = emulate(q, payload, record_spikes=True)
    t_emu = time.perf_counter() - t0
    c = compare_results(ref, res)
    info = res.info
    t = info["timings"]
    lines = [f"net: {src}; pair {where['pair']} {where['pair_subjects']} of {where['dataset']}, "
             f"patch {where['patch']} at {where['patch_origin']}",
             format_comparison(c),
             f"lava graph: {info['processes']} processes, {info['neurons']} neurons, {info['synapses']} synapses "
             f"({info['synapse_bytes'] / 2 ** 20:.1f} MiB CSR), {info['num_steps']} steps",
             f"time: lowering+build {t['build_s']:.1f} s, compile {t['compile_s']:.1f} s, start {t['init_s']:.1f} s, "
             f"run {t['run_s']:.2f} s, stop {t['stop_s']:.1f} s (worker total {t['total_s']:.1f} s); "
             f"emulator (torch, 1 thread) {t_emu:.2f} s",
             f"throughput: {info['neuron_updates_per_s']:.3g} neuron updates/s "
             f"({info['neuron_updates']} = neurons x {info['num_steps']} steps), "
             f"{info['window_neuron_updates_per_s']:.3g} in-window neuron updates/s, "
             f"{info['steps_per_s']:.2f} steps/s; steady state (steps 3..{info['num_steps']}, after the "
             f"connections' one-time weight clipping) {info['steady_neuron_updates_per_s']:.3g} neuron updates/s"]
    print("\n" + "\n".join(lines))
    benchmark.extra_info.update({
        "patch": where["patch"], "net": src, "neurons": info["neurons"], "synapses": info["synapses"],
        "num_steps": info["num_steps"], "run_s": t["run_s"], "neuron_updates_per_s": info["neuron_updates_per_s"],
        "steady_neuron_updates_per_s": info["steady_neuron_updates_per_s"],
        "window_neuron_updates_per_s": info["window_neuron_updates_per_s"],
        "mismatches": {k: v["mismatches"] for k, v in c["layers"].items()},
        "readout_mismatches": c["readout"]["mismatches"], "emulator_s": t_emu})
    for name, row in c["layers"].items():
        assert row["mismatches"] == 0, (name, row)
    assert c["readout"]["mismatches"] == 0
    assert sum(r["spikes_a"] for r in c["layers"].values()) > 0


def test_bench_simulate_patch_harness_entry(benchmark, bench_qnet):
    """:func:`sim.run.simulate_patch` (the benchmark table's entry) on the same patch: its
    throughput and per-layer spike counts, checked against the emulator."""
    from sim.cli import load_patch
    from sim.run import simulate_patch

    q, src = bench_qnet
    _, where = load_patch(q, 0, (PATCH,) * 3)
    pairs = _demo_pair(q)
    sl = tuple(slice(o, o + PATCH) for o in where["patch_origin"])
    torch.set_num_threads(1)
    r = benchmark.pedantic(lambda: simulate_patch(q, pairs["fixed"][sl], pairs["moving"][sl], timeout=TIMEOUT,
                                                  check=True), rounds=1, iterations=1)
    t = r.timings
    print(f"\nsimulate_patch: net {src}, patch {where['patch']} at {where['patch_origin']}: "
          f"{sum(r.neurons.values())} neurons x {r.num_steps} steps in {t['run_s']:.2f} s -> "
          f"{r.neuron_updates_per_s:.3g} neuron updates/s; build {t['build_s']:.1f} s, compile {t['compile_s']:.1f} s, "
          f"start {t['init_s']:.1f} s, call {t['wall_s']:.1f} s; spikes {r.spikes}; "
          f"mismatches vs emulator {r.emulator_mismatches}")
    benchmark.extra_info.update({"patch": where["patch"], "net": src, "timings": t,
                                 "neuron_updates_per_s": r.neuron_updates_per_s, "spikes": r.spikes,
                                 "emulator_mismatches": r.emulator_mismatches})
    assert r.emulator_mismatches == 0


def _demo_pair(q):
    """Demo test pair 0 of the network's data set (as ``simulate`` loads it)."""
    from spikereg_neuro.data import build_dataset, load_pairs_numpy
    from spikereg_neuro.data.dataset import DataConfig

    params = (q.calibration or {}).get("dataset_params")
    h5 = build_dataset(DataConfig.from_dict(params) if params else DataConfig(), None, progress=False)
    return load_pairs_numpy(h5, "test")[0]
