"""``--data DIR`` (Learn2Reg / pairs.json folders) for calibrate, simulate and benchmark accuracy,
and ``simulate --fixed/--moving`` on the user's NIfTI pair (issue 17), on tiny volumes."""
import json

import numpy as np
import pytest
import torch

from calibration.netfile import load_qnet
from spikereg_neuro.checkpoint import save_checkpoint
from spikereg_neuro.cli import main
from spikereg_neuro.data import RegistrationPairs, build_dataset, export_demo
from spikereg_neuro.data.dataset import DataConfig
from spikereg_neuro.io.nifti import save_volume
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.unet import SpikeRegUNet

torch.set_num_threads(1)

TINY = ModelConfig(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
DC = DataConfig(voxel_size_mm=8.0, shape=(16, 24, 16), n_train=3, n_val=2, n_test=2, seed=3)


def _learn2reg(root, ds, n=3, affine=None, val=True):
    """A Learn2Reg folder of ``n`` training images (labels in labelsTr), registration_val 0 <- 1."""
    aff = ds.affine if affine is None else affine
    entries = []
    for i in range(n):
        save_volume(root / "imagesTr" / f"S_{i:04d}_0000.nii.gz", ds.images[i] * 300.0, aff, dtype=np.float32)
        save_volume(root / "labelsTr" / f"S_{i:04d}_0000.nii.gz", ds.labels[i], aff, dtype=np.uint8)
        entries.append({"image": f"./imagesTr/S_{i:04d}_0000.nii.gz"})
    doc = {"training": entries}
    if val:
        doc["registration_val"] = [{"fixed": entries[0]["image"], "moving": entries[1]["image"]}]
    (root / "S_dataset.json").write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    cache = root / "cache"
    h5 = build_dataset(DC, cache, progress=False)
    ds = RegistrationPairs(h5, "train")
    torch.manual_seed(1)
    net = SpikeRegUNet(TINY)
    ckpt = save_checkpoint(root / "tiny.pt", net, {"data_config": DC.to_dict(),
                                                   "inference": {"patch_size": 16, "stride": 8, "batch_size": 2}})
    l2r = _learn2reg(root / "L2R", ds)
    export_demo(root / "demo", DC, cache)
    out = root / "cal" / "net.h5"
    rc = main(["calibrate", "--model", str(ckpt), "--out", str(out), "--data", str(l2r),
               "--calib-pairs", "2", "--max-calib-patches", "2"])
    assert rc == 0
    return {"root": root, "cache": cache, "ds": ds, "ckpt": ckpt, "l2r": l2r, "demo": root / "demo", "net": out}


def test_calibrate_on_a_learn2reg_folder_records_its_data(setup):
    rep = json.loads((setup["net"].parent / "calibration_report.json").read_text())
    d = rep["calibration"]["data"]
    assert d["kind"] == "folder" and d["format"] == "learn2reg" and d["path"].endswith("S_dataset.json")
    assert len(d["calibration_pairs"]) == 2 and d["evaluation"] == "registration_val"
    assert d["evaluation_pairs"] == ["S_0000_0000__S_0001_0000"]
    assert rep["calibration"]["model_voxel_size_mm"] == 8.0 and rep["dataset"].endswith("S_dataset.json")
    assert len(rep["pairs"]) == 1 and isinstance(rep["dice_float"], float)
    q = load_qnet(setup["net"])
    assert q.calibration["data"] == d and q.calibration["model_voxel_size_mm"] == 8.0


def test_calibrate_on_a_pairs_json_folder(setup, tmp_path, capsys):
    out = tmp_path / "net.h5"
    assert main(["calibrate", "--model", str(setup["ckpt"]), "--out", str(out), "--data", str(setup["demo"]),
                 "--calib-pairs", "1", "--max-calib-patches", "2"]) == 0
    rep = json.loads((tmp_path / "calibration_report.json").read_text())
    d = rep["calibration"]["data"]
    assert d["format"] == "pairs.json" and d["calibration_pairs"] == ["pair_000"]
    assert d["evaluation"].startswith("every pair")          # one pair: calibration used it
    assert "pairs.json" in capsys.readouterr().out


def test_calibrate_refuses_a_bad_folder_in_one_line(setup, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["calibrate", "--model", str(setup["ckpt"]), "--out", str(tmp_path / "n.h5")]
    assert main(args + ["--data", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "no Learn2Reg dataset JSON" in err and len(err.strip().splitlines()) == 1
    # at another spacing than the model's 8 mm
    coarse = _learn2reg(tmp_path / "coarse", setup["ds"], affine=np.diag([4.0, 4.0, 4.0, 1.0]))
    assert main(args + ["--data", str(coarse)]) == 1
    err = capsys.readouterr().err
    assert "voxel size 4x4x4 mm, not the model's 8 mm" in err and len(err.strip().splitlines()) == 1
    # no labelled evaluation pair
    nolab = _learn2reg(tmp_path / "nolab", setup["ds"])
    for f in (nolab / "labelsTr").iterdir():
        f.unlink()
    assert main(args + ["--data", str(nolab)]) == 1
    assert "no evaluation pair with label maps" in capsys.readouterr().err
    assert not (tmp_path / "n.h5").exists()


def _sim(net, out, *extra):
    return main(["simulate", "--net", str(net), "--backend", "emulator", "--out", str(out), "--quiet", *extra])


def test_simulate_a_folder_and_a_nifti_pair(setup, tmp_path, capsys):
    ds = setup["ds"]
    # the folder's evaluation pair (registration_val) ...
    assert _sim(setup["net"], tmp_path / "a.json", "--data", str(setup["l2r"])) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["pair_name"] == "S_0000_0000__S_0001_0000" and a["pair_subjects"] is None
    assert a["volume_shape"] == [16, 24, 16] and a["source"].endswith("L2R")
    # ... is also the default of a net calibrated on that folder
    assert _sim(setup["net"], tmp_path / "b.json") == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["readout_sha256"] == a["readout_sha256"] and b["payload_sha256"] == a["payload_sha256"]
    # the same images as a NIfTI pair: the same payload and read-out
    img = setup["l2r"] / "imagesTr"
    f, m = img / "S_0000_0000.nii.gz", img / "S_0001_0000.nii.gz"
    assert _sim(setup["net"], tmp_path / "c.json", "--fixed", str(f), "--moving", str(m)) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["payload_sha256"] == a["payload_sha256"] and c["readout_sha256"] == a["readout_sha256"]
    assert c["fixed"] == str(f) and c["pair"] is None
    # a pairs.json folder, pair 0
    assert _sim(setup["net"], tmp_path / "d.json", "--data", str(setup["demo"])) == 0
    assert json.loads((tmp_path / "d.json").read_text())["pair_name"] == "pair_000"
    capsys.readouterr()
    # refusals, one line each
    other = tmp_path / "other"
    save_volume(other / "small.nii.gz", ds.images[1][:, :16] * 300.0, ds.affine, dtype=np.float32)
    save_volume(other / "fine.nii.gz", ds.images[1] * 300.0, np.diag([4.0, 4.0, 4.0, 1.0]), dtype=np.float32)
    save_volume(other / "fine_f.nii.gz", ds.images[0] * 300.0, np.diag([4.0, 4.0, 4.0, 1.0]), dtype=np.float32)
    cases = [(["--fixed", str(f), "--moving", str(other / "small.nii.gz")], "not on one grid"),
             (["--fixed", str(other / "fine_f.nii.gz"), "--moving", str(other / "fine.nii.gz")],
              "not the model's 8 mm"),
             (["--fixed", str(f)], "--fixed and --moving go together"),
             (["--fixed", str(f), "--moving", str(m), "--data", str(setup["l2r"])], "exclude each other"),
             (["--data", str(setup["l2r"]), "--pair", "3"], "1 evaluation pairs"),
             (["--data", str(tmp_path / "nothing")], "dataset not found")]
    for extra, msg in cases:
        assert _sim(setup["net"], tmp_path / "x.json", *extra) == 1, extra
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (extra, err)
        if "--fixed" in extra and msg != "--fixed and --moving go together" and "--data" not in extra:
            assert "register" in err
    assert not (tmp_path / "x.json").exists()


def test_simulate_full_on_a_nifti_pair(setup, tmp_path, capsys):
    img = setup["l2r"] / "imagesTr"
    rc = main(["simulate", "--net", str(setup["net"]), "--backend", "emulator", "--full", "--quiet",
               "--fixed", str(img / "S_0000_0000.nii.gz"), "--moving", str(img / "S_0001_0000.nii.gz"),
               "--out", str(tmp_path / "full.json")])
    assert rc == 0
    doc = json.loads((tmp_path / "full.json").read_text())
    assert doc["pair_name"].startswith("S_0000_0000") and doc["volume_shape"] == [16, 24, 16]
    assert np.load(doc["field"]).shape == (3, 16, 24, 16)


def test_benchmark_accuracy_on_a_learn2reg_folder(setup, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "accuracy", "--data", str(setup["l2r"]), "--methods", "identity",
                 "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "accuracy.json").read_text())
    assert doc["data"]["split"] == "registration_val" and doc["data"]["pairs"] == ["S_0000_0000__S_0001_0000"]
    assert np.isfinite(doc["methods"]["identity"]["dice_mean"])
    capsys.readouterr()
    nov = _learn2reg(tmp_path / "noval", setup["ds"], val=False)
    assert main(["benchmark", "accuracy", "--data", str(nov), "--methods", "identity",
                 "--out", str(tmp_path / "b2"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no 'registration_val' list of pairs" in err and len(err.strip().splitlines()) == 1


def test_benchmark_table_on_a_learn2reg_folder(setup, tmp_path, capsys):
    """`benchmark --data DIR` (the table): the folder's pairs in every row, a fast calibration on
    the folder's training pairs (not the embedded data's, and not a cache made from them)."""
    out = tmp_path / "table"
    args = ["benchmark", "--data", str(setup["l2r"]), "--spikereg-model", str(setup["ckpt"]), "--no-lava",
            "--no-ants", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    doc = json.loads((out / "benchmark.json").read_text())
    assert doc["pairs"] == ["S_0000_0000__S_0001_0000"]
    assert doc["data"]["source"] == str(setup["l2r"].resolve()) and doc["data"]["split"] == "registration_val"
    assert "S_dataset.json" in (out / "benchmark.md").read_text() or str(setup["l2r"].resolve()) in (
        out / "benchmark.md").read_text()
    dice = {r["method"]: r["dice"] for r in doc["rows"] if r.get("dice") is not None}
    assert dice and all(np.isfinite(v) for v in dice.values())
    cal = load_qnet(out / "net.h5").calibration
    assert cal["data_source"] == str(setup["l2r"].resolve()) and cal["data"]["kind"] == "folder"
    capsys.readouterr()
    # the same --out on the embedded pairs must not reuse the folder's calibration
    from spikereg_neuro.commands.benchmark_table import obtain_qnet
    from pathlib import Path
    logs = []
    q, info = obtain_qnet(Path(setup["ckpt"]), None, out, 1, str(setup["cache"]), logs.append, data=None)
    assert info["made_by"].startswith("fast calibration") and q.calibration["data_source"] == "embedded"
    # bad input: one line naming the problem
    assert main(["benchmark", "--data", str(tmp_path / "nowhere"), "--spikereg-model", str(setup["ckpt"]),
                 "--out", str(tmp_path / "t2"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and len(err.strip().splitlines()) == 1
