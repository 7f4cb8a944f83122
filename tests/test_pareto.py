"""`benchmark pareto`: energy vs Dice of several benchmark runs (front, one basis, files)."""
import json

import pytest

from spikereg_neuro.cli import main
from spikereg_neuro.profiler import pareto


def _run(tmp_path, name, energy, dynamic, dice, rate, pairs=("pair_000",), e_synop=6.1):
    d = tmp_path / name
    d.mkdir()
    rows = [{"method": "VoxelMorph", "platform": "GPU (no GPU here: estimate)", "energy_mj": 6.4, "dynamic_mj": 5.8,
             "energy_source": "estimated", "dice": 0.69},
            {"method": "SpikeReg (quantized)", "platform": "Loihi 2 (estimated; shared kernels, whole)",
             "energy_mj": energy, "dynamic_mj": dynamic, "energy_source": "estimated", "latency_ms": 0.6, "dice": dice},
            {"method": "SpikeReg (quantized)", "platform": "Loihi 2 (estimated; explicit Sparse)",
             "energy_mj": 99.0, "dynamic_mj": 9.0, "energy_source": "estimated", "dice": dice},
            {"method": "SpikeReg (float SLAYER)", "platform": "CPU (1 thread(s))", "energy_mj": None, "dice": dice + 0.001},
            {"method": "identity (reference)", "platform": "CPU", "energy_mj": None, "dice": 0.66}]
    doc = {"rows": rows, "pairs": list(pairs), "data": {"source": "embedded", "split": "test"},
           "constants": {"e_synop_pj": {"value": e_synop, "citation": "x"}}, "mean_spike_rate": rate,
           "spike_rates": {"enc0": rate * 1.2, "dec0": rate * 0.5}}
    (d / "benchmark.json").write_text(json.dumps(doc))
    return d


def test_pareto_front_table_and_figure(tmp_path, capsys):
    a = _run(tmp_path, "a", 10.0, 6.0, 0.684, 0.09)
    b = _run(tmp_path, "b", 7.0, 4.0, 0.679, 0.055)
    c = _run(tmp_path, "c", 8.0, 5.0, 0.675, 0.06)        # dominated by b: more energy, lower Dice
    out = tmp_path / "p"
    assert main(["benchmark", "pareto", str(a), str(b), str(c), "--labels", "A,B,C", "--out", str(out)]) == 0
    doc = json.loads((out / "pareto.json").read_text())
    pts = {p["label"]: p for p in doc["points"]}
    assert [pts[k]["on_front"] for k in "ABC"] == [True, True, False]
    assert pts["B"]["energy_mj"] == 7.0 and pts["B"]["dice_quantized"] == 0.679      # the main Loihi 2 row
    assert pts["A"]["max_layer"] == "enc0" and pts["A"]["max_layer_rate"] == pytest.approx(0.108)
    assert doc["voxelmorph_gpu"]["energy_mj"] == 6.4 and doc["identity_dice"] == 0.66
    md = (out / "pareto.md").read_text()
    assert "| B | 7.00 | 4.00 |" in md and "pareto.png" in md
    assert (out / "pareto.png").stat().st_size > 1000
    capsys.readouterr()


def test_pareto_refuses_runs_on_another_basis(tmp_path, capsys):
    a = _run(tmp_path, "a", 10.0, 6.0, 0.684, 0.09)
    b = _run(tmp_path, "b", 7.0, 4.0, 0.679, 0.055, pairs=("pair_000", "pair_001"))
    c = _run(tmp_path, "c", 7.0, 4.0, 0.679, 0.055, e_synop=23.6)
    with pytest.raises(ValueError, match="pairs"):
        pareto.build([a, b])
    with pytest.raises(ValueError, match="constants"):
        pareto.build([a, c])
    assert main(["benchmark", "pareto", str(a), str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "no benchmark.json" in err and len(err.strip().splitlines()) == 1


def test_point_from_a_run_in_progress_matches_its_written_file(tmp_path):
    """The table's --pareto-with puts the running benchmark's own point (its rows in memory)
    next to finished runs: the same numbers as reading its benchmark.json, one basis."""
    a = _run(tmp_path, "a", 10.0, 6.0, 0.684, 0.09)
    b = _run(tmp_path, "b", 7.0, 4.0, 0.679, 0.055)
    doc = json.loads((a / "benchmark.json").read_text())
    this = pareto.point_from_doc(doc, "this run")
    same, = pareto.read_points(a, "this run")
    assert {k: v for k, v in this.items() if k != "path"} == {k: v for k, v in same.items() if k != "path"}
    out = pareto.build_points([this, *pareto.read_points(b)])
    assert [p["on_front"] for p in out["points"]] == [True, True]
    assert pareto.figure(tmp_path / "p.png", out).stat().st_size > 1000


def test_table_refuses_a_missing_pareto_run_before_any_work(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["benchmark", "--out", str(out), "--no-progress", "--pareto-with", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "no benchmark.json" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_pareto_json_extends_with_new_runs(tmp_path, capsys):
    """A finished figure's pareto.json brings all its points (labels kept) next to a new run; its
    constants are checked like a run's, and a version-1 file (none recorded) is taken on the new
    run's with a note."""
    a = _run(tmp_path, "a", 10.0, 6.0, 0.684, 0.09)
    b = _run(tmp_path, "b", 7.0, 4.0, 0.679, 0.055)
    first = tmp_path / "first"
    assert main(["benchmark", "pareto", str(a), str(b), "--labels", "A,B", "--out", str(first)]) == 0
    new = _run(tmp_path, "new", 6.0, 3.5, 0.70, 0.05)
    out = tmp_path / "ext"
    assert main(["benchmark", "pareto", str(new), str(first / "pareto.json"), "--labels", "N",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "pareto.json").read_text())
    assert [p["label"] for p in doc["points"]] == ["N", "A", "B"]
    assert [p["on_front"] for p in doc["points"]] == [True, False, False]   # N: less energy, more Dice
    assert doc["constants"] == {"e_synop_pj": 6.1} and "notes" not in doc
    other = _run(tmp_path, "other", 6.0, 3.5, 0.70, 0.05, e_synop=23.6)
    with pytest.raises(ValueError, match="constants"):
        pareto.build([other, first / "pareto.json"])
    v1 = json.loads((first / "pareto.json").read_text())
    v1.pop("constants")
    v1["version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "pareto.json").write_text(json.dumps(v1))
    doc1 = pareto.build([new, tmp_path / "v1"])
    assert len(doc1["points"]) == 3 and "not recorded" in doc1["notes"][0]
    by_content = pareto.build([new, tmp_path / "v1.json"], ["N"])    # a pareto document by its content, any name
    assert [p["label"] for p in by_content["points"]] == ["N", "A", "B"]
    assert "Note:" in pareto.markdown(doc1)
    with pytest.raises(ValueError, match="labels"):
        pareto.build([new, first / "pareto.json"], ["N", "A"])
    assert main(["benchmark", "pareto", str(new), str(first), "--labels", "N", "--rename", "A=A (before)",
                 "--out", str(out)]) == 0
    assert [p["label"] for p in json.loads((out / "pareto.json").read_text())["points"]] == ["N", "A (before)", "B"]
    assert main(["benchmark", "pareto", str(new), str(first), "--rename", "Z=Y", "--out", str(out)]) == 1
    before = (first / "pareto.json").read_bytes()
    for given in (first, first / "pareto.json"):     # an output may not replace an input
        assert main(["benchmark", "pareto", str(new), str(given), "--out", str(first)]) == 1
    assert (first / "pareto.json").read_bytes() == before
    assert "would replace the input" in capsys.readouterr().err
    capsys.readouterr()


def test_a_run_named_like_a_recorded_point_replaces_it(tmp_path):
    """Pricing a model again: the run's point takes the place of the pareto.json point of its name
    (and the references are the run's, the first input); two runs of one name are refused."""
    a = _run(tmp_path, "a", 10.0, 6.0, 0.684, 0.09)
    b = _run(tmp_path, "b", 7.0, 4.0, 0.679, 0.055)
    first = tmp_path / "first"
    first.mkdir()
    (first / "pareto.json").write_text(json.dumps(pareto.build([a, b], ["A", "B"])))
    again = _run(tmp_path, "again", 9.0, 5.5, 0.684, 0.085)
    doc = pareto.build([again, first / "pareto.json"], ["A"])
    assert [(p["label"], p["energy_mj"]) for p in doc["points"]] == [("A", 9.0), ("B", 7.0)]
    assert any("replaced" in n and n.startswith("A:") for n in doc["notes"])
    with pytest.raises(ValueError, match="both named 'A'"):
        pareto.build([again, a, first / "pareto.json"], ["A", "A"])
