"""The recorded GPU measurements (scripts/gpu_session.py -> benchmarks/results/gpu_nvml.json): the
script refuses without CUDA, and the table's selection of a record (fake records and fake sha256s;
the benchmark itself is not run)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spikereg_neuro.commands.benchmark import add_table_options
from spikereg_neuro.commands.benchmark_table import (GPU_RECORD_FORMAT, default_gpu_record, gpu_record_row,
                                                     load_gpu_record, resolve_gpu_record)
from spikereg_neuro.profiler.table import build_document, make_row, markdown, report_html

ROOT = Path(__file__).resolve().parent.parent
SHA_VXM, SHA_SR, SHA_OTHER = "a" * 64, "b" * 64, "c" * 64
SHAPE = (64, 72, 64)
CONST = {"e_x_pj": {"value": 1.0, "unit": "pJ", "citation": "a paper, Table 1", "kind": "published"}}


def _measurement(gross, dynamic, ms):
    return {"device": "GPU NVIDIA H200", "source": "measured", "energy_mj": gross, "energy_basis": "gross",
            "dynamic_mj": dynamic, "energy_source": "measured", "latency_ms": ms, "latency_source": "measured",
            "idle_power_w": 75.0, "n_calls": 40, "loop_seconds": 2.1, "constants": {}}


def _record():
    return {"format": GPU_RECORD_FORMAT, "version": 1, "date": "2026-01-02T03:04:05+00:00",
            "machine": {"gpu": "NVIDIA H200", "driver": "580.1", "torch": "2.11.0", "cuda": "13.0", "hostname": "gpu1"},
            "pair": {"name": "pair_000", "subjects": [0, 1], "shape": list(SHAPE), "source": "embedded"},
            "models": {"voxelmorph": {"checkpoint": "spikereg_neuro/models/voxelmorph_default.pt", "sha256": SHA_VXM,
                                      "what": "predict_field", "measurement": _measurement(120.0, 40.0, 1.5)},
                       "spikereg_slayer": {"checkpoint": "spikereg_neuro/models/default.pt", "sha256": SHA_SR,
                                           "error": "RuntimeError: out of memory"}},
            "_path": "benchmarks/results/gpu_nvml.json"}


def _estimate(method="VoxelMorph", platform="GPU (no GPU here: estimate)"):
    row = make_row(method, platform, energy_mj=5.0, dynamic_mj=2.0, energy_source="estimated", latency_ms=0.1,
                   latency_source="estimated", dice=0.71, hd95=3.2, folding_pct=0.01, note="ESTIMATED: MACs x pJ.",
                   details={"macs": 1e9})
    row["inference"] = "whole volume"
    return row


def test_script_refuses_without_cuda_in_one_line(tmp_path):
    out = tmp_path / "gpu_nvml.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_session.py"), "--out", str(out)],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert r.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("gpu_session: refused:"), lines
    assert not out.exists()


def test_matching_record_gives_a_measured_row_labelled_with_date_and_gpu(tmp_path):
    est = _estimate()
    row = gpu_record_row(est, _record(), "voxelmorph", SHA_VXM, SHAPE)
    assert row["energy_source"] == row["latency_source"] == "measured"
    assert (row["energy_mj"], row["dynamic_mj"], row["latency_ms"]) == (120.0, 40.0, 1.5)
    assert "recorded 2026-01-02 on NVIDIA H200" in row["platform"] and "scripts/gpu_session.py" in row["platform"]
    # accuracy from this run's CPU registrations; the estimate kept beside the measurement
    assert (row["dice"], row["hd95"], row["folding_pct"]) == (0.71, 3.2, 0.01)
    assert row["details"]["estimate"]["energy_mj"] == 5.0 and row["details"]["estimate"]["energy_source"] == "estimated"
    assert row["details"]["gpu_record"]["used"] and row["details"]["gpu_record"]["sha256"] == SHA_VXM
    assert row["inference"] == "whole volume"
    doc = build_document([row], CONST, ["pair_000"], machine={"cpu": "x", "cpu_count": 2, "threads": 1})
    assert row["platform"] in markdown(doc) and "meas." in markdown(doc)
    assert "recorded 2026-01-02 on NVIDIA H200" in report_html(doc, tmp_path)


@pytest.mark.parametrize("sha, shape, said", [
    (SHA_OTHER, SHAPE, "is for another model"),
    (None, SHAPE, "is for another model"),
    (SHA_VXM, (32, 32, 32), "was measured on a 64x72x64 pair"),
])
def test_mismatching_record_keeps_the_estimate_with_a_note(sha, shape, said):
    est = _estimate()
    row = gpu_record_row(est, _record(), "voxelmorph", sha, shape)
    assert row["energy_source"] == row["latency_source"] == "estimated"
    assert (row["energy_mj"], row["latency_ms"], row["platform"]) == (5.0, 0.1, est["platform"])
    assert row["note"].startswith("ESTIMATED: MACs x pJ.") and said in row["note"] and "kept the estimate" in row["note"]
    assert row["details"]["gpu_record"]["used"] is False and row["details"]["macs"] == 1e9
    assert est["note"] == "ESTIMATED: MACs x pJ."   # the estimate row itself is not changed


def test_record_without_a_measurement_of_the_model_keeps_the_estimate():
    est = _estimate("SpikeReg", "GPU simulation (SLAYER; no GPU here: estimate)")
    row = gpu_record_row(est, _record(), "spikereg_slayer", SHA_SR, SHAPE)
    assert row["energy_source"] == "estimated" and "out of memory" in row["note"]
    assert gpu_record_row(est, None, "spikereg_slayer", SHA_SR, SHAPE) is est


def test_resolve_and_load_the_record_file(tmp_path):
    p = argparse.ArgumentParser()
    add_table_options(p)
    rec = {k: v for k, v in _record().items() if k != "_path"}
    f = tmp_path / "gpu_nvml.json"
    f.write_text(json.dumps(rec))
    got, info = resolve_gpu_record(p.parse_args(["--gpu-record", str(f)]), log=lambda s: None)
    assert got["models"]["voxelmorph"]["sha256"] == SHA_VXM and info["gpu"] == "NVIDIA H200"
    assert info["date"] == rec["date"] and info["used_for"] == []
    with pytest.raises(ValueError, match="exclude each other"):
        resolve_gpu_record(p.parse_args(["--gpu-record", str(f), "--no-gpu-record"]))
    assert resolve_gpu_record(p.parse_args(["--no-gpu-record"]))[0] is None
    with pytest.raises(FileNotFoundError):
        resolve_gpu_record(p.parse_args(["--gpu-record", str(tmp_path / "missing.json")]))
    with pytest.raises(FileNotFoundError, match="a directory"):
        resolve_gpu_record(p.parse_args(["--gpu-record", str(tmp_path)]))
    # well-formed but damaged inside: refused when read, before any work
    for damage, said in ((lambda r: r["models"].update(voxelmorph="x"), "model 'voxelmorph' must be a mapping"),
                         (lambda r: r.update(pair="p"), "'pair' must be a mapping"),
                         (lambda r: r["pair"].update(shape=[64, "a", 64]), "pair shape must be 3 positive"),
                         (lambda r: r["models"]["voxelmorph"]["measurement"].update(energy_mj="lots"),
                          "measurement energy_mj must be a finite number")):
        broken = json.loads(json.dumps(rec))
        damage(broken)
        f.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=said):
            load_gpu_record(f)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else", "models": {}}))
    with pytest.raises(ValueError, match="not a scripts/gpu_session.py record"):
        load_gpu_record(bad)
    # the default: the checkout's benchmarks/results/gpu_nvml.json (read only if it exists)
    assert default_gpu_record() == ROOT / "benchmarks" / "results" / "gpu_nvml.json"
    got, info = resolve_gpu_record(p.parse_args([]), log=lambda s: None)
    assert (got is None) == (not default_gpu_record().is_file())
