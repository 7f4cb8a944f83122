"""The benchmark table: row contract, refusal rows, per-layer energy on hand numbers, MAC
counting, figures, and the CLI wiring (fast, tiny inputs; the full command is run by `make demo`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spikereg_neuro.profiler import (GPU_KERNEL_FLOOR, NetworkCounter, count_conv_macs, count_gpu_kernels,
                                     energy_per_layer, estimate_gpu_latency, estimate_loihi2, load_constants)
from spikereg_neuro.profiler import figures as figs
from spikereg_neuro.profiler.table import (CONTRACT_ROW_KEYS, NOT_AVAILABLE, build_document,
                                           make_row, markdown, printable, refusal_row,
                                           validate_document)

CONST = {"e_x_pj": {"value": 1.0, "unit": "pJ", "citation": "a paper, Table 1", "kind": "published"}}


def _rows():
    return [
        make_row("A", "Loihi 2 (estimated)", energy_mj=1.5, energy_source="estimated", latency_ms=2.0,
                 latency_source="estimated", dice=0.7, hd95=3.0, folding_pct=0.0, note="model"),
        make_row("B", "CPU", energy_note="no energy counter", latency_ms=10.0, latency_source="measured",
                 dice=0.6, hd95=float("nan"), folding_pct=0.1),
        refusal_row("C", "CPU", "ANTs is not installed"),
    ]


def test_rows_meet_the_contract_and_missing_figures_say_why():
    rows = _rows()
    doc = build_document(rows, CONST, ["pair_000"], machine={"cpu": "x", "cpu_count": 2, "threads": 1})
    for r in doc["rows"]:
        assert all(k in r for k in CONTRACT_ROW_KEYS)
        for what, key in (("energy", "energy_mj"), ("latency", "latency_ms")):
            if r[key] is None:
                assert r[f"{what}_source"] == NOT_AVAILABLE
                assert r.get(f"{what}_note") or r.get("why")
            else:
                assert r[f"{what}_source"] in ("measured", "estimated")
    assert doc["rows"][1]["hd95"] is None              # NaN -> null, never a number
    assert doc["rows"][2]["why"] == "ANTs is not installed"
    assert doc["rows"][2]["dice"] is None and doc["rows"][2]["latency_ms"] is None
    json.dumps(doc, allow_nan=False)                    # JSON-safe
    md = markdown(doc)
    assert "| A | Loihi 2 (estimated) | 1.50 | n/a | est. | 2.00 | est. | 0.700 |" in md
    assert all(r["energy_basis"] == "gross" for r in doc["rows"])
    bad = dict(doc, rows=[dict(doc["rows"][0], energy_basis="dynamic")])
    with pytest.raises(ValueError, match="energy_basis"):
        validate_document(bad)
    with pytest.raises(ValueError, match="exceeds the gross"):
        make_row("A", "x", energy_mj=1.0, dynamic_mj=2.0, energy_source="estimated", latency_ms=1.0,
                 latency_source="estimated")
    assert "ANTs is not installed" in md and "a paper, Table 1" in md
    assert "not produced: ANTs is not installed" in printable(doc)


def test_rows_refuse_numbers_without_source_and_gaps_without_reason():
    with pytest.raises(ValueError, match="source"):
        make_row("A", "x", energy_mj=1.0, energy_source="guessed", latency_ms=1.0, latency_source="measured")
    with pytest.raises(ValueError, match="say why"):
        make_row("A", "x", latency_ms=1.0, latency_source="measured")   # energy missing, no reason
    with pytest.raises(ValueError):
        refusal_row("A", "x", "")
    with pytest.raises(ValueError, match="citation"):
        build_document(_rows(), {"k": {"value": 1.0}}, ["p"])
    with pytest.raises(ValueError, match="pairs"):
        build_document(_rows(), CONST, [])
    bad = build_document(_rows(), CONST, ["p"])
    bad["rows"][0]["energy_source"] = "not available"
    with pytest.raises(ValueError):
        validate_document(bad)


def _tiny_layers():
    w0 = np.ones((2, 1, 3, 3, 3), dtype=np.int64)
    w1 = np.ones((1, 2, 1, 1, 1), dtype=np.int64)
    return [
        {"name": "l0", "type": "conv3d", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 3, 3],
         "stride": [1, 1, 1], "padding": [1, 1, 1], "weight": w0, "inputs": ["input"], "time_window": 2,
         "neuron_kind": "alif"},
        {"name": "ro", "type": "readout3d", "in_channels": 2, "out_channels": 1, "kernel_size": [1, 1, 1],
         "stride": [1, 1, 1], "padding": [0, 0, 0], "weight": w1, "inputs": ["l0"], "time_window": 1,
         "neuron_kind": "integrator"},
    ]


def test_energy_per_layer_on_hand_numbers():
    counter = NetworkCounter(_tiny_layers(), (1, 1, 1))
    # one voxel: l0 has 2 neurons, ro 1; graded input non-zero; l0 neuron 0 spikes on both steps
    spikes = {"l0": torch.zeros(1, 2, 1, 1, 1, 2)}
    spikes["l0"][0, 0, 0, 0, 0, :] = 1
    counts = counter.count_spikes(spikes, torch.full((1, 1, 1, 1, 1), 7))
    c = load_constants(overrides={"e_synop_pj": 10.0, "e_graded_synop_pj": 20.0, "e_neuron_update_active_pj": 100.0,
                                  "e_neuron_update_inactive_pj": 50.0, "e_spike_within_tile_pj": 1.0})
    e = energy_per_layer(counts, c)
    # l0: 2 graded MACs per step (1 centre tap x 2 outputs) x 2 steps x 20 pJ = 80; 2 neurons x 2 steps x 100 = 400;
    #     idle 0; messages: 1 payload event x 2 steps x 1 pJ = 2  -> 482 pJ
    assert e["l0"]["synaptic_ops"] == pytest.approx(80e-9)
    assert e["l0"]["neuron_updates"] == pytest.approx(400e-9)
    assert e["l0"]["idle_neuron_updates"] == 0
    assert e["l0"]["total"] == pytest.approx(482e-9)
    # ro (window 1, last step): 1 spike of l0 at step 1 -> 1 AC x 10 pJ; 1 update x 100; 1 idle x 50; 1 message x 1
    assert e["ro"]["total"] == pytest.approx((10 + 100 + 50 + 1) * 1e-9)
    est = estimate_loihi2(counts, c)
    dyn = sum(v["total"] for v in e.values())
    assert est["dynamic_energy_mj"] == pytest.approx(dyn)   # no tile hops without a mapping


def test_count_conv_macs_and_gpu_latency():
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1))
    x = torch.zeros(1, 2, 4, 4, 4)
    r = count_conv_macs(net, lambda: net(x))
    assert r["macs"] == 64 * 4 * 2 * 27 + 64 * 3 * 4
    # bytes moved per conv: input + output + weights and bias, float32
    assert [b for _, b in r["layers"]] == [4 * (128 + 256 + 4 * 2 * 27 + 4), 4 * (256 + 192 + 3 * 4 + 3)]
    lat = estimate_gpu_latency(33.5e12, basis="h100_sxm_fp32_peak_macs_per_s")
    assert lat["latency_ms"] == pytest.approx(1000.0) and lat["lower_bound"]
    assert "datasheet" in next(iter(lat["constants"].values()))["citation"]


def test_counted_kernels_give_the_conv_macs_and_a_launch_floor():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ConvTranspose3d(4, 3, 2, stride=2)

        def forward(self, x):
            y = torch.relu(self.a(x)).permute(0, 1, 4, 3, 2).view(1, 4, 4, 4, 4)   # two views: no kernels
            return self.b(y) * 2.0

    net, x = Net(), torch.rand(1, 2, 4, 4, 4)
    k = count_gpu_kernels(lambda: net(x))
    assert k["ops"] == {"aten.convolution": 2, "aten.relu": 1, "aten.mul": 1}
    assert k["macs"] == count_conv_macs(net, lambda: net(x))["macs"] == 64 * 4 * 2 * 27 + 64 * 3 * 4 * 8
    # the relu reads and writes one 4-channel 4^3 frame (float32)
    assert (0, 2 * 4 * 256) in k["per_kernel"]
    floor = GPU_KERNEL_FLOOR["cuda_graph_kernel_floor_s"]
    assert "juliagpu" in floor.citation and floor.unit == "s"
    lat = estimate_gpu_latency(k["macs"], kernels=k["per_kernel"])
    # tiny kernels: each costs the floor, more than its roofline
    assert lat["latency_ms"] == pytest.approx(4 * floor.value * 1e3) and lat["best_case"] and not lat["lower_bound"]
    assert "cuda_graph_kernel_floor_s" in lat["constants"] and "4 dispatched kernels" in lat["latency_basis"]
    big = estimate_gpu_latency(0, kernels=[(0, 3.35e9), (247.25e12, 0)])   # 1 ms of HBM, 1 s of MACs
    assert big["latency_ms"] == pytest.approx(1001.0)
    # no kernel for allocations and in-place views; a storage read twice or expanded counts once
    x = torch.rand(4, 4)
    k = count_gpu_kernels(lambda: (torch.empty(8), x.clone().unsqueeze_(0), x * x, x[:1].expand(4, 4) + 1.0))
    assert k["ops"] == {"aten.clone": 1, "aten.mul": 1, "aten.add": 1}
    assert (0, 2 * 64) in k["per_kernel"]            # x * x: 64 bytes read (once), 64 written
    assert (0, 16 + 64) in k["per_kernel"]           # the expanded row: its 16 bytes, then 64 written


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    f, m = rng.random((8, 9, 8)), rng.random((8, 9, 8))
    u = rng.normal(scale=0.3, size=(3, 8, 9, 8))
    paths = [figs.overlay_figure(tmp_path / "o.png", f, m, {"A": m, "B": f}),
             figs.field_figure(tmp_path / "f.png", {"A": u}),
             figs.spike_rate_figure(tmp_path / "s.png", {"l0": 0.2, "l1": 0.05, "ro": None}),
             figs.energy_figure(tmp_path / "e.png", {"l0": {"synaptic_ops": 1e-3, "neuron_updates": 2e-3}},
                                static_mj=0.5)]
    for p in paths:
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".tmp-*"))


def test_cli_benchmark_default_is_the_table_and_accuracy_still_parses():
    from spikereg_neuro.cli import build_parser
    from spikereg_neuro.commands.benchmark import run_accuracy, run_table

    p = build_parser()
    a = p.parse_args(["benchmark", "--out", "x", "--quick"])
    assert a.func is run_table and a.quick and a.out == "x"
    b = p.parse_args(["benchmark", "accuracy", "--out", "y", "--pairs", "2"])
    assert b.func is run_accuracy and b.out == "y" and b.pairs == 2
    with pytest.raises(ValueError, match="--out"):
        run_table(p.parse_args(["benchmark"]))


def test_inference_label_says_whole_volume_or_tiles():
    from spikereg_neuro.commands.benchmark_table import WHOLE_VOLUME, inference_label

    assert inference_label((64, 72, 64), (2, 1), (32, 32, 32), (16, 16, 16), 0) == "tiles 32^3 stride 16"
    assert inference_label((64, 72, 64), (2, 1), (32, 32, 32), (16, 16, 16), 4_500_000, 4) == WHOLE_VOLUME
    assert inference_label((64, 72, 64), (2, 1), (32, 32, 32), (16, 16, 16), 100_000, 4).startswith("fewest tiles")


def test_cpu_latency_ratios_equal_the_rows_latencies():
    from spikereg_neuro.commands.benchmark_table import RATIO_ROWS, cpu_latency_ratios, ratio_line

    plat = "CPU (1 thread(s))"
    rows = [make_row("VoxelMorph", plat, energy_note="x", latency_ms=500.0, latency_source="measured"),
            make_row("SpikeReg (float SLAYER)", plat, energy_note="x", latency_ms=900.0, latency_source="measured"),
            make_row("SpikeReg (quantized emulator)", plat, energy_note="x", latency_ms=1200.0,
                     latency_source="measured"),
            make_row("VoxelMorph", "GPU", energy_note="x", latency_ms=1.0, latency_source="estimated")]
    for r in rows[:3]:
        r["inference"] = "whole volume"
    r = cpu_latency_ratios(rows, plat)
    assert set(RATIO_ROWS) <= set(r)
    assert r["spikereg_float"] == pytest.approx(rows[1]["latency_ms"] / rows[0]["latency_ms"])
    assert r["quantized_emulator"] == pytest.approx(rows[2]["latency_ms"] / rows[0]["latency_ms"])
    assert r["inference"] == {"voxelmorph": "whole volume", "spikereg_float": "whole volume",
                              "quantized_emulator": "whole volume"}
    assert "1.80x" in ratio_line(r) and "2.40x" in ratio_line(r)
    doc = build_document(rows, CONST, ["p"], cpu_latency_ratio_vs_voxelmorph=r)
    json.dumps(doc, allow_nan=False)
    assert "SpikeReg float 1.80x" in markdown(doc)
    # a missing row gives a null ratio, never a number
    assert cpu_latency_ratios(rows[1:], plat)["spikereg_float"] is None


def test_energy_ratio_against_the_voxelmorph_gpu_row_names_both_sources():
    from spikereg_neuro.commands.benchmark_table import energy_ratio_vs_gpu

    plat = "Loihi 2 (estimated; shared kernels, whole)"
    rows = [make_row("VoxelMorph", "GPU (no GPU here: estimate)", energy_mj=12.0, dynamic_mj=6.0,
                     energy_source="estimated", latency_ms=0.2, latency_source="estimated"),
            make_row("SpikeReg (quantized)", "Loihi 2 (estimated; explicit Sparse, conservative bound, whole)",
                     energy_mj=99.0, dynamic_mj=9.0, energy_source="estimated", latency_ms=1.0,
                     latency_source="estimated"),
            make_row("SpikeReg (quantized)", plat, energy_mj=3.0, dynamic_mj=2.0, energy_source="estimated",
                     latency_ms=1.0, latency_source="estimated")]
    r = energy_ratio_vs_gpu(rows, plat)
    assert r["gross"] == pytest.approx(0.25) and r["dynamic"] == pytest.approx(1 / 3)
    assert r["spikereg"]["platform"] == plat and r["voxelmorph"]["source"] == "estimated"
    doc = build_document(rows, CONST, ["p"], energy_ratio_vs_voxelmorph_gpu=r)
    assert "gross 0.25x, dynamic 0.33x" in markdown(doc)
    # no GPU row with an energy: null ratios, never a number
    none = energy_ratio_vs_gpu(rows[1:], plat)
    assert none["gross"] is None and none["dynamic"] is None and "n/a" in markdown(
        build_document(rows[1:], CONST, ["p"], energy_ratio_vs_voxelmorph_gpu=none))


def _tiny_qnet_and_pair(stride: int):
    """A tiny untrained quantized net (16^3 patches at ``stride``) and a smooth 32^3 pair."""
    import torch.nn.functional as F

    from calibration.quantize import quantize_network
    from spikereg_neuro.model.config import ModelConfig
    from spikereg_neuro.model.unet import SpikeRegUNet

    torch.manual_seed(0)
    cfg = ModelConfig(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
    q = quantize_network(SpikeRegUNet(cfg).eval(), source_checkpoint="tiny", patch_size=(16, 16, 16),
                         stride=(stride,) * 3)
    g = torch.Generator().manual_seed(1)
    f = F.avg_pool3d(torch.rand(1, 1, 32, 32, 32, generator=g), 3, 1, 1)[0, 0].numpy()
    return q, f, np.roll(f, 1, axis=0)


def test_emulator_registrations_tiled_counts_and_whole_volume(monkeypatch):
    """Both quantized passes on a tiny net and volume: the tiled one feeds the counts (one
    counter per 16^3 patch shape), the whole-volume one runs one call per residual iteration
    and equals the plain emulator on the whole volume."""
    import calibration.emulator as E
    from spikereg_neuro.commands.benchmark_table import (CountingEmulator, WHOLE_VOLUME, emulator_registrations,
                                                         inference_label)

    q, f, m = _tiny_qnet_and_pair(stride=16)
    calls = []
    real = E.emulator_predictor

    def spy(qq):
        p = real(qq)
        return lambda a, b: (calls.append(tuple(a.shape[2:])), p(a, b))[1]

    monkeypatch.setattr(E, "emulator_predictor", spy)
    emu = CountingEmulator(q)
    mult = q.size_multiple                 # the network's own multiple (8), as run_table uses
    r = emulator_registrations(q, emu, f, m, max_voxels=10**6, multiple=mult)
    assert r["tiled_field"].shape == r["whole_field"].shape == (3, 32, 32, 32)
    assert r["whole_seconds"] > 0 and r["tiled_seconds"] > 0 and r["count_seconds"] >= 0
    assert set(emu.counters) == {(16, 16, 16)} and emu.counts.samples == 1 + 8   # scale 2: 1 tile, scale 1: 8
    assert calls == [(16, 16, 16), (32, 32, 32)]                                # one whole call per scale
    assert inference_label(f.shape, q.scales, q.patch_size, q.stride, 10**6, mult) == WHOLE_VOLUME


def test_loihi2_deployments_priced_per_input_shape():
    """Whole volume (one call per scale, two input shapes) and non-overlapping tiles through the
    counting emulator; each shape mapped once, shared kernels and explicit Sparse; gross = dynamic
    + static on the largest mapping's chips; the bracket and the neuron-weighted mean rate."""
    from spikereg_neuro.commands.benchmark_table import (CountingEmulator, mean_spike_rate, price_loihi2,
                                                         register_deployment)
    from spikereg_neuro.profiler.loihi2_energy import PRESETS

    q, f, m = _tiny_qnet_and_pair(stride=8)
    whole, tiles = CountingEmulator(q), CountingEmulator(q)
    assert register_deployment(q, whole, f, m, max_voxels=10 ** 6, multiple=q.size_multiple).shape == (3, 32, 32, 32)
    register_deployment(q, tiles, f, m, stride=q.patch_size)
    assert set(whole.by_shape) == {(16, 16, 16), (32, 32, 32)} and set(tiles.by_shape) == {(16, 16, 16)}
    assert tiles.counts.samples == 1 + 8                           # stride = patch: no overlap
    with pytest.raises(ValueError, match="by_shape"):
        whole.counts
    c = load_constants()
    bracket = {n: load_constants(preset=n) for n in PRESETS}
    for enc in ("shared", "sparse"):
        v = price_loihi2(whole.layers, whole.by_shape, c, enc, 1, {"kind": "test"}, sensitivity=bracket)
        assert v["energy_basis"] == "gross" and v["source"] == "estimated"
        assert v["energy_mj"] == pytest.approx(v["dynamic_mj"] + v["static_mj"])
        assert v["chips"] == max(x["chips"] for x in v["shapes"].values()) and v["calls_per_registration"] == 2
        assert v["static_mj"] == pytest.approx(c.value("static_power_w") * v["chips"] * v["latency_ms"])
        assert set(v["sensitivity"]) == set(PRESETS)
        t2 = v["sensitivity"]["loihi1_table2"]
        assert t2["energy_mj"] > v["energy_mj"] and t2["latency_ms"] > v["latency_ms"]
    rate = mean_spike_rate(whole.by_shape.values())
    spk = sum(float(l.spikes.sum()) for cc in whole.by_shape.values() for l in cc.layers.values() if l.spiking)
    steps = sum(l.neurons * l.window * cc.samples for cc in whole.by_shape.values() for l in cc.layers.values()
                if l.spiking)
    assert rate == pytest.approx(spk / steps) and 0 <= rate <= 1
