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


def _refused(tmp_path, capsys, argv, problem):
    """``benchmark pareto ARGV --out O`` exits 1 with one error line naming ``problem``, no file in O."""
    out = tmp_path / "out"
    assert main(["benchmark", "pareto", *map(str, argv), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0] and "internal error" not in err[0], err
    assert not out.exists() or not any(out.iterdir())


def _damaged(tmp_path, name, edit):
    """A run whose benchmark.json has had ``edit(doc)`` applied (NaN written as JSON's NaN)."""
    d = _run(tmp_path, name, 7.0, 4.0, 0.679, 0.055)
    doc = json.loads((d / "benchmark.json").read_text())
    edit(doc)
    (d / "benchmark.json").write_text(json.dumps(doc))
    return d


def _set(key, value, row=None):
    def edit(doc):
        (doc["rows"][row] if row is not None else doc)[key] = value
    return edit


@pytest.mark.parametrize("name,edit,problem", [
    ("nan", _set("energy_mj", float("nan"), 1), "rows[1].energy_mj: nan is out of range"),
    ("neg", _set("energy_mj", -5, 1), "rows[1].energy_mj: -5 is out of range"),
    ("estr", _set("energy_mj", "lots", 1), "rows[1].energy_mj: expected a number, got 'lots'"),
    ("dicebig", _set("dice", 7.0, 1), "rows[1].dice: 7.0 is out of range"),
    ("dicestr", _set("dice", "good", 1), "rows[1].dice: expected a number"),
    ("rowsstr", _set("rows", "oops"), "rows: expected a list of rows"),
    ("rowitem", lambda doc: doc["rows"].insert(0, "row"), "rows[0]: expected a row"),
    ("rowsempty", _set("rows", []), "no Loihi 2 row with an energy"),
    ("pairsint", _set("pairs", 5), "pairs: expected a list"),
    ("rates", lambda doc: doc["spike_rates"].update(enc0="x"), "spike_rates.enc0: expected a number"),
])
def test_pareto_refuses_a_damaged_benchmark_json(tmp_path, capsys, name, edit, problem):
    good = _run(tmp_path, "good", 10.0, 6.0, 0.684, 0.09)
    bad = _damaged(tmp_path, name, edit)
    _refused(tmp_path, capsys, [bad, good], f"{bad / 'benchmark.json'}: {problem}")
    with pytest.raises(ValueError, match="expected|out of range|no Loihi 2"):
        pareto.read_points(bad)        # what `benchmark --pareto-with` reads


def _pareto_json(tmp_path, name, edit):
    a = _run(tmp_path, f"{name}_a", 10.0, 6.0, 0.684, 0.09)
    b = _run(tmp_path, f"{name}_b", 7.0, 4.0, 0.679, 0.055)
    doc = pareto.build([a, b], ["A", "B"])
    edit(doc)
    (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    return tmp_path / f"{name}.json"


def _point(key, value):
    def edit(doc):
        if value is None:
            doc["points"][0].pop(key)
        else:
            doc["points"][0][key] = value
    return edit


@pytest.mark.parametrize("name,edit,problem", [
    ("pstr", _set("points", "x"), "points: expected a list of points"),
    ("pints", _set("points", [1, 2]), "points[0]: expected a point"),
    ("estr", _point("energy_mj", "x"), "points[0].energy_mj: expected a number, got 'x'"),
    ("enone", _point("energy_mj", None), "points[0].energy_mj: expected a number, got nothing"),
    ("nolabel", _point("label", None), "points[0].label: expected a non-empty name, got nothing"),
    ("intlabel", _point("label", 5), "points[0].label: expected a non-empty name, got 5"),
    ("dup", _point("label", "B"), "two points are labelled 'B'"),
    ("v99", _set("version", 99), "pareto.json version 99 is not supported"),
    ("pairs", _set("pairs", 3), "pairs: expected a list"),
])
def test_pareto_refuses_a_damaged_pareto_json(tmp_path, capsys, name, edit, problem):
    p = _pareto_json(tmp_path, name, edit)
    new = _run(tmp_path, "new", 6.0, 3.5, 0.70, 0.05)
    _refused(tmp_path, capsys, [new, p], f"{p}: {problem}")


def test_pareto_refuses_repeated_or_empty_names(tmp_path, capsys):
    a = _run(tmp_path, "a", 10.0, 6.0, 0.684, 0.09)
    b = _run(tmp_path, "b", 7.0, 4.0, 0.679, 0.055)
    first = tmp_path / "first"
    assert main(["benchmark", "pareto", str(a), str(b), "--labels", "A,B", "--out", str(first)]) == 0
    capsys.readouterr()
    _refused(tmp_path, capsys, [first, first], "two points are labelled 'A'")
    for given in ("x,", " ,y", ",", ""):
        _refused(tmp_path, capsys, [a, b, "--labels", given], "a name is empty")
    _refused(tmp_path, capsys, [a, b, "--rename", "a=b"], "two points would be labelled 'b'")
    _refused(tmp_path, capsys, [a, b, "--rename", "a=X", "--rename", "a=Y"], "--rename 'a' is given twice")
    assert main(["benchmark", "pareto", str(a), str(b), "--rename", "a=b", "--rename", "b=a",
                 "--out", str(tmp_path / "swap")]) == 0       # a swap keeps the names distinct
    assert [p["label"] for p in json.loads((tmp_path / "swap" / "pareto.json").read_text())["points"]] == ["b", "a"]
    capsys.readouterr()


def test_pareto_write_is_all_or_nothing(tmp_path, monkeypatch):
    a = _run(tmp_path, "a", 10.0, 6.0, 0.684, 0.09)
    b = _run(tmp_path, "b", 7.0, 4.0, 0.679, 0.055)
    doc = pareto.build([a, b])
    bad = {**doc, "identity_dice": float("nan")}       # not JSON: refused before anything is drawn
    with pytest.raises(ValueError, match="pareto.json"):
        pareto.write(tmp_path / "o", bad)
    assert not (tmp_path / "o").exists()
    from spikereg_neuro.io import atomic

    real = atomic.atomic_write_text

    def fail_on_md(path, text, *a, **k):
        if str(path).endswith(".md"):
            raise OSError(f"{path}: No space left on device")
        return real(path, text, *a, **k)

    monkeypatch.setattr(atomic, "atomic_write_text", fail_on_md)
    with pytest.raises(OSError, match="No space"):
        pareto.write(tmp_path / "o2", doc)      # the figure and json written first are removed
    assert not any((tmp_path / "o2").iterdir())
