"""The benchmark report: report.html (self-contained, every figure embedded, the identity row,
gross / dynamic / basis / sources, variants and sensitivity tables, what the numbers rest on),
benchmark.md linking its figures, the figures' shared colour scales, and the partition cache
(fast: tiny arrays, a tiny quantized net)."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

from spikereg_neuro.profiler import figures as figs
from spikereg_neuro.profiler.table import (basis_paragraph, build_document, identity_warnings, make_row, markdown,
                                           report_html, sensitivity_table, variant_table)

torch.set_num_threads(1)

CONSTANTS = {
    "e_synop_pj": {"value": 6.1, "unit": "pJ", "kind": "derived",
                   "citation": "DERIVED from Intel newsroom: Hala Point, 1,152 Loihi 2 processors"},
    "e_neuron_update_inactive_pj": {"value": 6.2, "unit": "pJ", "kind": "derived",
                                    "citation": "DERIVED: e_synop_pj x 52 / 81, ratio of Davies et al. Table 2"},
    "e_graded_synop_pj": {"value": 6.1, "unit": "pJ", "kind": "assumed",
                          "citation": "assumed equal to e_synop_pj: nothing published on Loihi 1 or Loihi 2"},
    "t_barrier_ns": {"value": 465.0, "unit": "ns", "kind": "published", "citation": "Davies et al. 2018, Table 2"},
    "static_power_w": {"value": 0.232, "unit": "W", "kind": "measured", "citation": "lava-dl PilotNet notebook"},
    "cores_per_chip": {"value": 128.0, "unit": "cores", "kind": "published", "citation": "Intel Loihi 2 brief"},
    "h100_idle_power_w_lower_bound": {"value": 26.0, "unit": "W", "kind": "published", "citation": "a paper"},
}


def _doc(tmp_path, n_pairs=2):
    """A benchmark document as run_table builds it (rows, variants, bracket, figures on disk)."""
    rows = [
        make_row("VoxelMorph", "GPU (no GPU here: estimate)", energy_mj=6.4, dynamic_mj=5.8, energy_source="estimated",
                 latency_ms=0.02, latency_source="estimated", dice=0.696, hd95=3.1, folding_pct=0.0),
        make_row("SpikeReg (quantized)", "Loihi 2 (estimated; shared kernels, whole)", energy_mj=15.2, dynamic_mj=10.4,
                 energy_source="estimated", latency_ms=0.86, latency_source="estimated", dice=0.682, hd95=3.4,
                 folding_pct=0.0),
        make_row("Bad method", "CPU", energy_note="no counter", latency_ms=5.0, latency_source="measured",
                 dice=0.600, hd95=4.0, folding_pct=1.0),
        make_row("identity (reference)", "CPU", energy_note="nothing to measure", latency_ms=0.9,
                 latency_source="measured", dice=0.679, hd95=3.39, folding_pct=0.0),
    ]
    variants = [dict(encoding=e, deployment=d, energy_mj=10.0 * (i + 1) + j, dynamic_mj=5.0 * (i + 1), latency_ms=0.5,
                     chips=3 + j, cores=100 * (j + 1), dice=0.68 + 0.001 * i)
                for i, d in enumerate(("whole", "tiles_no_overlap", "tiles")) for j, e in enumerate(("shared", "sparse"))]
    rep = tmp_path / "report"
    rng = np.random.default_rng(0)
    f, m = rng.random((8, 9, 10)), rng.random((8, 9, 10))
    u = rng.normal(scale=0.3, size=(3, 8, 9, 10))
    names = {"identity": "identity", "A": "A"}
    paths = {f"overlays_pair_{k:03d}": figs.overlay_figure(rep / f"overlays_pair_{k:03d}.png", f, m, {"A": m})
             for k in range(n_pairs)}
    paths["field"] = figs.field_figure(rep / "field_detj.png", {"identity": np.zeros_like(u), "A": u})
    per_label = {n: {"Left-Hippocampus": [0.5] * n_pairs, "Right-Putamen": [0.7] * n_pairs} for n in names.values()}
    paths["dice_per_label"] = figs.dice_per_label_figure(rep / "dice_per_label.png", per_label)
    paths["energy"] = figs.energy_breakdown_figure(rep / "energy.png", rows, 0.679)
    figures = {k: str(p.relative_to(tmp_path)) for k, p in paths.items()}
    doc = build_document(rows, CONSTANTS, [f"pair_{k:03d}" for k in range(n_pairs)],
                         machine={"cpu": "x", "cpu_count": 2, "threads": 1}, created="2026-01-01T00:00:00+00:00",
                         loihi2_deployment="whole", loihi2_variants=variants,
                         loihi2_sensitivity={"basis": "the main row", "presets": {"hala_point": "default",
                                                                                  "loihi1_table2": "Loihi 1"},
                                             "hala_point": {"energy_mj": 15.2, "dynamic_mj": 10.4, "static_mj": 4.8,
                                                            "latency_ms": 0.86},
                                             "loihi1_table2": {"energy_mj": 88.0, "dynamic_mj": 42.8,
                                                               "static_mj": 45.2, "latency_ms": 8.1}},
                         figures=figures, figure_captions={k: f"caption of {k}" for k in figures})
    return json.loads(json.dumps(doc, allow_nan=False))


def test_report_html_is_self_contained_and_embeds_every_figure(tmp_path):
    doc = _doc(tmp_path)
    html = report_html(doc, tmp_path)
    for key, rel in doc["figures"].items():
        b64 = base64.b64encode((tmp_path / rel).read_bytes()).decode()
        assert f"data-file='{rel}'" in html and b64 in html, key
        assert f"caption of {key}" in html
    # nothing to fetch: no remote or relative resources, no scripts
    srcs = re.findall(r"src='([^']*)'", html)
    assert len(srcs) == len(doc["figures"]) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html and "<script" not in html and "<link" not in html
    # one overlay figure per pair
    assert sum(k.startswith("overlays_") for k in doc["figures"]) == len(doc["pairs"])
    # the table: identity row, gross + dynamic columns, basis and sources as in benchmark.json
    assert "<tr class=identity><td>identity (reference)</td>" in html
    assert "energy, gross (mJ)" in html and "dynamic (mJ)" in html and "energy basis" in html
    assert "<td>gross</td>" in html and "<span class=est>estimated</span>" in html and "<td>measured</td>" in html
    assert "<td>not available</td>" in html
    # a method below the identity is flagged, the others are not
    assert identity_warnings(doc["rows"]) == ["Bad method / CPU: Dice 0.6000 <= identity 0.6790"]
    assert html.count("&#9888; &le; identity") == 1
    # variants (deployments x mappings) and the bracket
    head, body = variant_table(doc)
    assert len(body) == 3 and len(head) == 4 and body[0][0] == "whole (table rows)"
    assert "20.00 / 10.00, 0.5, 3, 100" in html and "21.00 / 10.00, 0.5, 4, 200" in html  # tiles_no_overlap
    assert [r[0] for r in sensitivity_table(doc)[1]] == ["hala_point", "loihi1_table2"]
    assert "88.00" in html and "8.10" in html
    # what the numbers rest on, from the constants
    p = basis_paragraph(doc)
    assert "Measured on Loihi 2: `static_power_w`" in p
    assert "Hala Point's published system totals (Loihi 2 at full load): `e_synop_pj`" in p
    assert "used for Loihi 2: `t_barrier_ns`" in p
    assert "scaled by a Loihi 1 ratio: `e_neuron_update_inactive_pj`" in p
    assert "Assumed: `e_graded_synop_pj`" in p
    assert "host I/O" in p and "congestion" in p
    assert "What the numbers rest on" in html


def test_markdown_links_every_figure_and_the_html(tmp_path):
    doc = _doc(tmp_path, n_pairs=1)
    md = markdown(doc)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(doc["figures"].values())
    assert all((tmp_path / rel).is_file() for rel in links)
    assert "[report.html](report.html)" in md
    assert "## Loihi 2 variants" in md and "## Sensitivity bracket" in md and "## What the numbers rest on" in md
    assert "**Not above the identity:** Bad method / CPU" in md


def test_field_figure_one_shared_colour_scale_with_identity():
    rng = np.random.default_rng(1)
    small, big = rng.normal(scale=0.1, size=(3, 6, 7, 8)), rng.normal(scale=3.0, size=(3, 6, 7, 8))
    fig = figs.field_fig({"identity": np.zeros_like(small), "small": small, "big": big})
    titles = [a.get_title() for a in fig.axes]
    assert titles[0].startswith("identity: |u| max 0.00")
    umaps = [a.images[0] for a in fig.axes if a.get_title().endswith("vox") and a.images]
    assert len(umaps) == 3
    clims = {im.get_clim() for im in umaps}
    vmax = max(float(np.sqrt((u ** 2).sum(0)).max()) for u in (small, big))
    assert len(clims) == 1 and next(iter(clims)) == (0.0, pytest.approx(vmax))
    assert len([a for a in fig.axes if "|u|" in a.get_ylabel()]) == 1          # one |u| colour bar
    assert len([a for a in fig.axes if a.get_ylabel() == "det J"]) == 1        # one det J colour bar
    assert any(a.get_xlabel().startswith("det J") for a in fig.axes)            # the histogram
    figs._plt().close(fig)


def test_overlay_figure_shows_fixed_and_moving_once():
    rng = np.random.default_rng(2)
    f, m = rng.random((6, 7, 8)), rng.random((6, 7, 8))
    fig = figs.overlay_fig(f, m, {"A": m, "B": f})
    titles = [a.get_title() for a in fig.axes]
    assert titles.count("fixed") == 1 and titles.count("moving (no registration)") == 1
    assert titles.count("A") == 1 and titles.count("B") == 1
    diffs = [a.images[0] for a in fig.axes if a.get_title().startswith("mean ") and a.images]
    assert len(diffs) == 3 and len({im.get_clim() for im in diffs}) == 1     # moving, A, B: one scale
    assert len([a for a in fig.axes if "|image - fixed|" in a.get_ylabel()]) == 1
    figs._plt().close(fig)


def test_dice_per_label_and_energy_figures():
    fig = figs.dice_per_label_fig({"identity": {"Left-X": [0.5, 0.6], "Right-Y": [0.7, 0.8]},
                                   "M": {"Left-X": [0.55, 0.65], "Right-Y": [0.75, None]}})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Left-X", "Right-Y"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["identity", "M"]
    figs._plt().close(fig)
    rows = [{"method": "A", "platform": "x", "energy_mj": 10.0, "dynamic_mj": 6.0, "energy_source": "estimated",
             "dice": 0.7},
            {"method": "B", "platform": "y", "energy_mj": 3.0, "dynamic_mj": None, "energy_source": "measured",
             "dice": 0.6},
            {"method": "C", "platform": "z", "energy_mj": None, "dynamic_mj": None, "energy_source": "not available",
             "dice": 0.5}]
    fig = figs.energy_breakdown_fig(rows, identity_dice=0.65)
    bars = fig.axes[0]
    labels = [t.get_text() for t in bars.get_legend().get_texts()]
    assert labels == ["static / idle", "dynamic", "gross (not split)"]
    widths = sorted(round(p.get_width(), 6) for p in bars.patches)
    assert widths == [3.0, 4.0, 6.0]                                       # B gross; A static 4 + dynamic 6
    figs._plt().close(fig)


def test_partition_cache_reads_back_the_same_partition(tmp_path):
    from calibration.quantize import quantize_network
    from loihi.limits import CoreLimits
    from loihi.mapping import mapping_dict
    from loihi.partition import CACHE_STATS, partition_cache, partition_network
    from loihi.resources import NetworkResources, layers_from_qnet
    from spikereg_neuro.model.config import ModelConfig
    from spikereg_neuro.model.neuron import NeuronConfig
    from spikereg_neuro.model.unet import SpikeRegUNet

    torch.manual_seed(0)
    cfg = ModelConfig(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2,
                      readout_scale=0.5, weight_gain=8.0, readout_levels=1,  # the defaults it was written for
                      neuron=NeuronConfig(graded_spike=False))
    q = quantize_network(SpikeRegUNet(cfg).eval(), source_checkpoint="tiny", patch_size=(16, 16, 16),
                         stride=(16, 16, 16))
    res = NetworkResources(layers_from_qnet(q), (16, 16, 16))

    def same(a, b):
        da, db = (mapping_dict(x, res) for x in (a, b))
        da.pop("created", None), db.pop("created", None)
        return json.dumps(da, sort_keys=True, default=str) == json.dumps(db, sort_keys=True, default=str)

    for enc in ("shared", "sparse"):
        L = CoreLimits(encoding=enc)
        ref = partition_network(res, L)                       # no cache active
        h0, m0 = CACHE_STATS["hits"], CACHE_STATS["misses"]
        with partition_cache(tmp_path / "c"):
            first = partition_network(res, L)
            second = partition_network(res, L)
            capped = partition_network(res, L, neuron_caps={"enc0": 64})
        assert (CACHE_STATS["misses"] - m0, CACHE_STATS["hits"] - h0) == (2, 1)
        assert same(ref, first) and same(ref, second) and not same(ref, capped)
    files = sorted((tmp_path / "c").glob("*.json"))
    assert len(files) == 4                                    # 2 encodings x (no caps, caps)
    files[0].write_text("{broken")
    with partition_cache(tmp_path / "c"):
        for enc in ("shared", "sparse"):
            partition_network(res, CoreLimits(encoding=enc))
    assert any("unreadable" in e for e in CACHE_STATS["errors"])
    # outside the block nothing is cached
    n = len(list((tmp_path / "c").glob("*.json")))
    partition_network(res, CoreLimits(encoding="shared"), neuron_caps={"enc0": 32})
    assert len(list((tmp_path / "c").glob("*.json"))) == n
