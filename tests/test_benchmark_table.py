"""The benchmark table: row contract, refusal rows, per-layer energy on hand numbers, MAC
counting, figures, and the CLI wiring (fast, tiny inputs; the full command is run by `make demo`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spikereg_neuro.profiler import (NetworkCounter, count_conv_macs, energy_per_layer,
                                     estimate_gpu_latency, estimate_loihi2, load_constants)
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
    assert "| A | Loihi 2 (estimated) | 1.50 | est. | 2.00 | est. | 0.700 |" in md
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
    lat = estimate_gpu_latency(33.5e12)
    assert lat["latency_ms"] == pytest.approx(1000.0) and lat["lower_bound"]
    assert "datasheet" in next(iter(lat["constants"].values()))["citation"]


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
