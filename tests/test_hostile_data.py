"""Hostile inputs to ``data build``, ``data export-demo`` and ``demo``, and duplicate pair names:
one error line (exit 1) before any work, nothing written, no input replaced; the global ``-q``."""
from __future__ import annotations

import json

import pytest

from cli_errors import one_error_line
from spikereg_neuro.cli import main


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def _fails(capsys, argv, cmd, expect):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    line = one_error_line(err, cmd)
    assert expect in line, line
    return line


# ----------------------------------------------------------------- --voxel-size bounds
@pytest.mark.parametrize("vs,expect", [
    ("50", "--voxel-size 50 is too coarse"), ("100", "--voxel-size 100 is too coarse"),
    ("1000", "too coarse"), ("0.01", "--voxel-size 0.01 is too fine"),
    ("inf", "--voxel-size must be a finite number"), ("nan", "--voxel-size must be"),
    ("0", "--voxel-size must be"), ("-2", "--voxel-size must be"),
])
def test_build_voxel_size_refused_up_front(tmp_path, capsys, vs, expect):
    cache = tmp_path / "cache"
    _fails(capsys, ["data", "build", "--voxel-size", vs, "--cache", str(cache), "-q"], "data build", expect)
    assert not cache.exists()


def test_template_refuses_too_coarse_or_too_large_before_loading():
    from spikereg_neuro.data import template
    from spikereg_neuro.registration.world import MAX_WORKING_VOXELS

    assert template.MAX_TEMPLATE_VOXELS == MAX_WORKING_VOXELS
    with pytest.raises(ValueError, match="too coarse"):
        template.build_template(50.0, (64, 72, 64))
    with pytest.raises(ValueError, match="voxels, more than"):
        template.build_template(1.0, (1000, 1000, 1000))


# ----------------------------------------------------------------- export-demo DIR
def test_export_empty_dir_name_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["data", "export-demo", "", "--cache", str(tmp_path / "c")], "data export-demo", "DIR is empty")
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_file_refused_before_building(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("mine")
    _fails(capsys, ["data", "export-demo", str(f), "--cache", str(tmp_path / "c")], "data export-demo",
           "is a file, not a directory")
    assert f.read_text() == "mine" and not (tmp_path / "c").exists()


@pytest.mark.parametrize("content", [
    {"pairs.json": json.dumps({"format": "spikereg-neuro-pairs", "version": 1, "pairs": []})},
    {"pairs.json": "not json"},
    {"notes.txt": "mine"},
    {"pair_000/fixed.nii.gz": "x", "pair_000/mine.txt": "y"},
])
def test_export_into_a_users_folder_refused(tmp_path, capsys, content):
    d = tmp_path / "user"
    for name, text in content.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    before = _snapshot(d)
    _fails(capsys, ["data", "export-demo", str(d), "--cache", str(tmp_path / "c")], "data export-demo", f"DIR {d}")
    assert _snapshot(d) == before and not (tmp_path / "c").exists()


def test_export_reruns_over_its_own_folder_and_global_quiet(tmp_path, capsys):
    d, cache = tmp_path / "e", tmp_path / "c"
    args = ["data", "export-demo", str(d), "--voxel-size", "20", "--cache", str(cache)]
    assert main(["-q", *args]) == 0            # global -q: no "synthetic subjects" bar
    _, err = capsys.readouterr()
    assert "synthetic subjects" not in err, err
    assert (d / "pairs.json").is_file() and (d / "pair_000" / "fixed.nii.gz").is_file()
    assert main([*args, "-q"]) == 0            # its own previous export: replaced
    _, err = capsys.readouterr()
    assert err.strip() == "", err


# ----------------------------------------------------------------- demo --out
def test_demo_empty_out_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["demo", "--out", "", "--cache", str(tmp_path / "c")], "demo", "--out is empty")
    assert list(tmp_path.iterdir()) == []


def test_global_quiet_reaches_the_demo_dataset_build(tmp_path, capsys, monkeypatch):
    from spikereg_neuro import data as data_pkg

    seen = {}

    def fake_build(cfg, cache=None, *, force=False, progress=True):
        seen["progress"] = progress
        raise ValueError("stop here")

    monkeypatch.setattr(data_pkg, "build_dataset", fake_build)
    _fails(capsys, ["-q", "demo", "--out", str(tmp_path / "o")], "demo", "stop here")
    assert seen == {"progress": False} and not (tmp_path / "o").exists()


# ----------------------------------------------------------------- duplicate pair names
def test_duplicate_pair_names_refused(tmp_path):
    from spikereg_neuro.data.learn2reg import read_pairs_json

    for n in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / n).write_bytes(b"")
    pairs = [{"fixed": "a.nii.gz", "moving": "b.nii.gz", "name": "a"},
             {"fixed": "b.nii.gz", "moving": "a.nii.gz", "name": "a"}]
    pj = tmp_path / "pairs.json"
    pj.write_text(json.dumps({"format": "spikereg-neuro-pairs", "version": 1, "pairs": pairs}))
    with pytest.raises(ValueError, match=r"pairs.json: duplicate pair name 'a'") as exc:
        read_pairs_json(pj)
    assert "\n" not in str(exc.value)
