"""Training, inference and the model commands end to end on a tiny embedded dataset."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from spikereg_neuro.cli import main
from spikereg_neuro.config import Config, load_config
from spikereg_neuro.data import RegistrationPairs
from spikereg_neuro.inference import SpikeRegInference
from spikereg_neuro.model.unet import SpikeRegUNet
from spikereg_neuro.train.trainer import SpikeRegTrainer, random_patches, rate_penalty

TINY = {
    "data": {"voxel_size_mm": 8.0, "shape": [16, 24, 16], "n_train": 3, "n_val": 2, "n_test": 2, "seed": 3},
    "model": {"enc_channels": [4, 4, 8, 8], "dec_channels": [8, 4, 4], "enc_windows": [4, 3, 2, 2],
              "dec_window": 2, "scales": [2, 1]},
    "train": {"patch_size": 16, "batch_size": 1, "steps_per_epoch": 2, "epochs": 1, "seed": 0},
    "inference": {"patch_size": 16, "stride": 8, "batch_size": 2},
}


@pytest.fixture(scope="module")
def tiny(tiny_dataset):
    setup = tiny_dataset("tiny", TINY)
    root, cfg, h5 = setup["root"], setup["cfg"], setup["h5"]
    torch.manual_seed(0)
    net = SpikeRegUNet(cfg.model)
    trainer = SpikeRegTrainer(net, cfg, root / "run", progress=False)
    loader = torch.utils.data.DataLoader(RegistrationPairs(h5, "train"), batch_size=1, shuffle=True)
    val = torch.utils.data.DataLoader(RegistrationPairs(h5, "val"), batch_size=1)
    summary = trainer.train(loader, val)
    return {**setup, "summary": summary, "ckpt": root / "run" / "best.pt", "trainer": trainer}


def test_load_config_defaults_and_errors(tmp_path):
    cfg = load_config()
    assert isinstance(cfg, Config) and cfg.model.enc_windows == (8, 6, 4, 4)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  enc_chanels: [1, 2, 3, 4]\n")
    with pytest.raises(ValueError, match="enc_chanels"):
        load_config(bad)
    bad.write_text("trainer:\n  lr: 1\n")
    with pytest.raises(ValueError, match="unknown config sections"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "none.yaml")


def test_training_writes_checkpoints_log_and_resumes(tiny):
    run = tiny["root"] / "run"
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    rows = (run / "train_log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 2
    assert np.isfinite(tiny["summary"]["best_val_dice"])
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["config"]["model"] == tiny["cfg"].model.to_dict() and ck["epoch"] == 1
    # resume continues the epoch count and the log
    net = SpikeRegUNet(tiny["cfg"].model)
    tr = SpikeRegTrainer(net, tiny["cfg"], run, progress=False)
    tr.resume(run / "last.pt")
    assert tr.epoch == 1
    loader = torch.utils.data.DataLoader(RegistrationPairs(tiny["h5"], "train"), batch_size=1)
    tr.train(loader, None, num_epochs=1)
    assert tr.epoch == 2
    assert len((run / "train_log.csv").read_text().strip().splitlines()) == 3


def test_training_step_lowers_loss_on_a_fixed_batch(tiny):
    torch.manual_seed(1)
    cfg = tiny["cfg"]
    net = SpikeRegUNet(cfg.model)
    tr = SpikeRegTrainer(net, cfg, tiny["root"] / "run_fit", progress=False)
    ds = RegistrationPairs(tiny["h5"], "train")
    full = {k: v[None] for k, v in ds[0].items()}
    batch = random_patches(full, 1, 16, np.random.default_rng(0))
    first = tr.step(batch)["loss"]
    for _ in range(15):
        last = tr.step(batch)["loss"]
    assert last < first


def test_rate_penalty_band():
    r = {"a": torch.tensor(0.1), "b": torch.tensor(0.5), "c": torch.tensor(0.0)}
    assert torch.isclose(rate_penalty(r, (0.02, 0.3)), torch.tensor(0.2 ** 2 + 0.02 ** 2))


def test_inference_api_arrays_and_errors(tiny):
    reg = SpikeRegInference(tiny["ckpt"])
    rng = np.random.default_rng(0)
    f = rng.random((16, 24, 16)).astype(np.float32)
    m = rng.random((16, 24, 16)).astype(np.float32)
    u = reg.register(f, m)
    assert u.shape == (3, 16, 24, 16) and np.isfinite(u).all()
    assert set(reg.activity) >= {"enc0", "dec0"}
    # any size works (padding, tiling); odd sizes too
    u2 = reg.register(rng.random((13, 30, 9)), rng.random((13, 30, 9)))
    assert u2.shape == (3, 13, 30, 9)
    w = reg.apply_deformation(m, np.zeros_like(u))
    assert np.allclose(w, m, atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        reg.register(f, m[:8])
    with pytest.raises(ValueError, match="NaN"):
        reg.register(np.full_like(f, np.nan), m)
    with pytest.raises(ValueError, match="3D"):
        reg.register(f[0], m[0])
    with pytest.raises(ValueError, match="field shape"):
        reg.apply_deformation(m, u[:, :8])


def _write(path, arr, affine):
    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), affine), str(path))


def test_register_command_keeps_the_fixed_affine(tiny, tmp_path):
    rng = np.random.default_rng(1)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-10, 5, 3]
    _write(tmp_path / "f.nii.gz", rng.random((16, 24, 16)), aff)
    _write(tmp_path / "m.nii.gz", rng.random((16, 24, 16)), aff)
    _write(tmp_path / "ml.nii.gz", rng.integers(0, 4, (16, 24, 16)), aff)
    rc = main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"),
               "--out-warped", str(tmp_path / "w.nii.gz"), "--out-field", str(tmp_path / "u.nii.gz"),
               "--moving-labels", str(tmp_path / "ml.nii.gz"),
               "--out-warped-labels", str(tmp_path / "wl.nii.gz"), "--model", str(tiny["ckpt"])])
    assert rc == 0
    for name in ("w", "u", "wl"):
        img = nib.load(str(tmp_path / f"{name}.nii.gz"))
        assert np.allclose(img.affine, aff)
    assert nib.load(str(tmp_path / "u.nii.gz")).shape == (16, 24, 16, 1, 3)
    wl = np.asarray(nib.load(str(tmp_path / "wl.nii.gz")).dataobj)
    assert set(np.unique(wl)) <= {0, 1, 2, 3}
    # a moving image placed where it does not overlap the fixed one (another grid registers in
    # world space since issue 17; docs/register.md): clear error, nothing written
    aff2 = aff.copy()
    aff2[0, 3] += 1000
    _write(tmp_path / "m2.nii.gz", rng.random((16, 24, 16)), aff2)
    rc = main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "m2.nii.gz"),
               "--out-warped", str(tmp_path / "w2.nii.gz"), "--model", str(tiny["ckpt"])])
    assert rc == 1 and not (tmp_path / "w2.nii.gz").exists()
    rc = main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "missing.nii.gz"),
               "--out-warped", str(tmp_path / "w3.nii.gz"), "--model", str(tiny["ckpt"])])
    assert rc == 1 and not (tmp_path / "w3.nii.gz").exists()


def test_demo_command_prints_per_pair_metrics(tiny, tmp_path, capsys):
    rc = main(["demo", "--model", str(tiny["ckpt"]), "--cache", str(tiny["root"] / "cache"),
               "--out", str(tmp_path / "demo")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Dice before" in out and "mean" in out
    doc = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert len(doc["pairs"]) == 1 and 0 <= doc["mean"]["dice"] <= 1
    assert doc["mean"]["dice_before"] == pytest.approx(doc["pairs"][0]["dice_before"])


def test_train_command(tiny, tmp_path):
    rc = main(["train", "--config", str(tiny["cfg_path"]), "--out", str(tmp_path / "r"),
               "--steps", "1", "--cache", str(tiny["root"] / "cache"), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "r" / "best.pt").is_file() and (tmp_path / "r" / "summary.json").is_file()


@pytest.mark.parametrize("detach", [True, False])
def test_detach_warped_cuts_the_gradient_into_later_iterations_inputs(tiny, detach):
    cfg = load_config(tiny["cfg_path"])
    cfg.train.detach_warped = detach
    torch.manual_seed(0)
    net = SpikeRegUNet(cfg.model)
    seen = []
    forward = net.forward

    def spy(fixed, moving):
        seen.append(moving.requires_grad)
        return forward(fixed, moving)

    net.forward = spy
    tr = SpikeRegTrainer(net, cfg, tiny["root"] / f"run_detach_{detach}", progress=False)
    ds = RegistrationPairs(tiny["h5"], "train")
    batch = random_patches({k: v[None] for k, v in ds[0].items()}, 1, 16, np.random.default_rng(0))
    tr.step(batch)
    assert seen == [False, not detach]      # iteration 1 sees the raw moving image
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_similarity_mask_from_labels(tiny):
    cfg = load_config(tiny["cfg_path"])
    cfg.train.ncc_mask = "labels"
    cfg.train.ncc_mask_dilate = 1
    net = SpikeRegUNet(cfg.model)
    tr = SpikeRegTrainer(net, cfg, tiny["root"] / "run_mask", progress=False)
    ds = RegistrationPairs(tiny["h5"], "train")
    batch = random_patches({k: v[None] for k, v in ds[0].items()}, 1, 16, np.random.default_rng(0))
    mask = tr._similarity_mask(batch)
    fg = batch["fixed_labels"] > 0
    assert mask.shape == fg.shape and torch.all(mask[fg] == 1)     # covers the labels
    assert 0 < mask.sum() < mask.numel() and mask.sum() > fg.sum()  # dilated, not everything
    stats = tr.step(batch)
    assert np.isfinite(stats["loss"])
    with pytest.raises(ValueError, match="needs training labels"):
        tr._similarity_mask({k: v for k, v in batch.items() if "labels" not in k})
    with pytest.raises(ValueError, match="ncc_mask"):
        cfg.train.__class__(ncc_mask="brain")


def test_ncc_sigma_reaches_the_trainers_similarity(tiny):
    cfg = load_config(tiny["cfg_path"])
    cfg.train.ncc_sigma = 1.0
    tr = SpikeRegTrainer(SpikeRegUNet(cfg.model), cfg, tiny["root"] / "run_sigma", progress=False)
    assert tr.ncc.sigma == 1.0
    ds = RegistrationPairs(tiny["h5"], "train")
    batch = random_patches({k: v[None] for k, v in ds[0].items()}, 1, 16, np.random.default_rng(0))
    assert np.isfinite(tr.step(batch)["loss"])
    with pytest.raises(ValueError, match="ncc_sigma"):
        cfg.train.__class__(ncc_sigma=-0.5)


def test_true_fields_reach_the_patches_and_the_supervised_loss(tiny):
    """RegistrationPairs(true_fields=True) gives the exact pair field, random_patches crops it
    with the images, and train.w_field adds |u - u_true|^2 to the loss (and needs the field)."""
    from spikereg_neuro.data.dataset import true_displacement
    from spikereg_neuro.train.trainer import field_mse

    ds = RegistrationPairs(tiny["h5"], "train", true_fields=True)
    item = ds[1]
    i, j = ds.pairs[1]
    ref = true_displacement(tiny["h5"], "train", (i, j))
    assert np.allclose(item["true_field"].numpy(), ref, atol=1e-6) and np.abs(ref).max() > 0.1
    assert "true_field" not in RegistrationPairs(tiny["h5"], "train")[1]
    full = {k: v[None] for k, v in item.items()}
    batch = random_patches(full, 1, 16, np.random.default_rng(4))
    assert batch["true_field"].shape == (1, 3, 16, 16, 16)
    # the crop is the one of the images: find it by matching the fixed patch
    fx = full["fixed"][0, 0]
    hits = [o for o in range(fx.shape[1] - 15) if torch.equal(fx[:, o:o + 16], batch["fixed"][0, 0])]
    assert len(hits) == 1
    assert torch.equal(batch["true_field"][0], full["true_field"][0][:, :, hits[0]:hits[0] + 16])

    cfg = load_config(tiny["cfg_path"])
    cfg.train.w_field = 2.0
    torch.manual_seed(0)
    tr = SpikeRegTrainer(SpikeRegUNet(cfg.model), cfg, tiny["root"] / "run_field", progress=False)
    stats = tr.step(batch)
    assert stats["field_mse"] > 0 and np.isfinite(stats["loss"])
    with pytest.raises(ValueError, match="true fields"):
        tr.step({k: v for k, v in batch.items() if k != "true_field"})
    u = torch.zeros(1, 3, 4, 4, 4)
    assert float(field_mse(u, torch.ones_like(u))) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="differ in shape"):
        field_mse(u, torch.ones(1, 3, 4, 4, 5))
    with pytest.raises(ValueError, match="w_field"):
        cfg.train.__class__(w_field=-1)


def test_true_fields_need_stored_velocities(tiny, tmp_path):
    import shutil

    import h5py

    copy = tmp_path / "novel.h5"
    shutil.copy(tiny["h5"], copy)
    with h5py.File(copy, "r+") as f:
        del f["train"]["velocities"]
    with pytest.raises(ValueError, match="no velocities"):
        RegistrationPairs(copy, "train", true_fields=True)


def _loader(h5, seed):
    """The training loader ``spikereg-neuro train`` builds (shuffled by a seeded generator)."""
    return torch.utils.data.DataLoader(RegistrationPairs(h5, "train"), batch_size=1, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def test_resume_reproduces_an_uninterrupted_run_bitwise(tiny, tmp_path):
    """2 epochs in one go == 1 epoch, interrupted, then ``train --resume`` to the planned 2."""
    cache = str(tiny["root"] / "cache")
    rc = main(["train", "--config", str(tiny["cfg_path"]), "--out", str(tmp_path / "a"), "--epochs", "2",
               "--cache", cache, "--no-progress"])
    assert rc == 0
    # the interrupted run: planned for 2 epochs, stopped after the first (as the CLI builds it)
    cfg = load_config(tiny["cfg_path"])
    cfg.train.epochs = 2
    torch.manual_seed(cfg.train.seed)
    tr = SpikeRegTrainer(SpikeRegUNet(cfg.model), cfg, tmp_path / "b", progress=False)
    val = torch.utils.data.DataLoader(RegistrationPairs(tiny["h5"], "val"), batch_size=1)
    tr.train(_loader(tiny["h5"], cfg.train.seed), val, num_epochs=1)
    assert tr.epoch == 1
    rc = main(["train", "--resume", str(tmp_path / "b" / "last.pt"), "--out", str(tmp_path / "b"),
               "--cache", cache, "--no-progress"])  # no --config: the checkpoint's; no --epochs: its plan
    assert rc == 0
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert all(torch.equal(v[s], b["optimizer"]["state"][k][s]) for s in v), k
    assert a["scheduler"] == b["scheduler"] == {"kind": "cosine", "step": 4, "total_steps": 4,
                                                "base_lr": cfg.train.lr}
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    assert a["rng"]["numpy"] == b["rng"]["numpy"] and torch.equal(a["rng"]["loader"], b["rng"]["loader"])
    assert a["data"]["kind"] == "embedded" and a["data"]["data_config"] == cfg.data.to_dict()
    assert len((tmp_path / "b" / "train_log.csv").read_text().strip().splitlines()) == 3

    # --epochs on resume is the total to reach: 2 more than done is an error, not 2 extra
    rc = main(["train", "--resume", str(tmp_path / "a" / "last.pt"), "--out", str(tmp_path / "a"),
               "--epochs", "2", "--cache", cache, "--no-progress"])
    assert rc == 1
    # a longer plan moves the cosine's end to the new total; past its end the rate stays 0
    cfg.train.epochs = 3
    tr = SpikeRegTrainer(SpikeRegUNet(cfg.model), cfg, tmp_path / "c", progress=False)
    tr.resume(tmp_path / "a" / "last.pt")
    assert (tr.global_step, tr.total_steps) == (4, 6)
    assert tr.lr_at(4) == pytest.approx(cfg.train.lr * 0.25) and tr.lr_at(6) == tr.lr_at(60) == 0.0


@pytest.mark.parametrize("args, msg", [
    (["--epochs", "0"], "--epochs must be an integer >= 1"),
    (["--epochs", "-1"], "--epochs must be an integer >= 1"),
    (["--steps", "-3"], "--steps must be an integer >= 1"),
    (["--ddp", "0"], "--ddp must be an integer >= 1"),
    (["--config", "LR"], 'train.lr must be a number, got \'fast\''),
    (["--config", "EPOCHS"], "train.epochs must be an integer, got 1.5"),
])
def test_train_command_refuses_bad_values_in_one_line_before_any_work(tmp_path, capsys, args, msg):
    (tmp_path / "lr.yaml").write_text("train:\n  lr: fast\n")
    (tmp_path / "ep.yaml").write_text("train:\n  epochs: 1.5\n")
    args = [{"LR": str(tmp_path / "lr.yaml"), "EPOCHS": str(tmp_path / "ep.yaml")}.get(a, a) for a in args]
    rc = main(["train", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and msg in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_trainer_defaults_its_run_folder_and_validation_shows_progress(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tr = SpikeRegTrainer(SpikeRegUNet(tiny["cfg"].model), tiny["cfg"])
    assert tr.out.parent == Path("runs") and (tmp_path / tr.out).is_dir()
    val = torch.utils.data.DataLoader(RegistrationPairs(tiny["h5"], "val"), batch_size=1)
    state = torch.get_rng_state()
    res = tr.validate(val)
    assert np.isfinite(res["val_dice"]) and torch.equal(torch.get_rng_state(), state)
    err = capsys.readouterr().err
    assert "validate" in err and "1/1" in err  # a tqdm bar over the validation pairs


def test_train_on_a_learn2reg_folder_records_its_data(tiny, tmp_path):
    from spikereg_neuro.io.nifti import save_volume

    ds = RegistrationPairs(tiny["h5"], "train")
    root = tmp_path / "L2R"
    entries = []
    for i in range(3):
        save_volume(root / "imagesTr" / f"S_{i:04d}_0000.nii.gz", ds.images[i] * 300.0, ds.affine, dtype=np.float32)
        save_volume(root / "labelsTr" / f"S_{i:04d}_0000.nii.gz", ds.labels[i], ds.affine, dtype=np.uint8)
        entries.append({"image": f"./imagesTr/S_{i:04d}_0000.nii.gz"})  # labels found in labelsTr
    doc = {"training": entries, "registration_val": [{"fixed": entries[0]["image"], "moving": entries[1]["image"]}]}
    (root / "S_dataset.json").write_text(json.dumps(doc))
    rc = main(["train", "--config", str(tiny["cfg_path"]), "--data", str(root), "--out", str(tmp_path / "r"),
               "--steps", "1", "--no-progress"])
    assert rc == 0
    ck = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    d = ck["data"]
    assert d["kind"] == "folder" and d["format"] == "learn2reg" and d["path"].endswith("S_dataset.json")
    assert (d["train_pairs"], d["val_pairs"], d["labels"], d["shape"]) == (6, 1, True, [16, 24, 16])
    assert d["spacing_mm"] == pytest.approx([8.0] * 3)
    assert np.isfinite(ck["history"][-1]["val_dice"]) and ck["history"][-1]["dice_loss"] > 0
    # a pairs.json folder: its pairs, images scaled to [0, 1] as inference does
    from spikereg_neuro.data import export_demo
    from spikereg_neuro.train.folder_data import FolderPairs, folder_records

    export_demo(tmp_path / "demo", tiny["cfg"].data, tiny["root"] / "cache")
    train, val, info = folder_records(tmp_path / "demo")
    item = FolderPairs(train)[0]
    assert info["format"] == "pairs.json" and val == [] and len(train) == 1
    assert item["fixed"].shape == (1, 16, 24, 16) and 0 <= float(item["fixed"].min()) <= float(item["fixed"].max()) <= 1
    assert item["fixed_labels"].dtype == torch.int64
    rc = main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")])
    assert rc == 1 and not (tmp_path / "r2").exists()


def test_train_refuses_or_cleans_up_before_it_has_written_anything(tiny, tmp_path, capsys):
    """--init naming the run's own checkpoint is refused (it would be overwritten); a bad --init
    fails before the data and the run folder; a run failing in its first step leaves no folder."""
    import hashlib

    base = ["train", "--config", str(tiny["cfg_path"]), "--cache", str(tiny["root"] / "cache"), "--no-progress"]
    run = tiny["root"] / "run"
    before = hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert main([*base, "--out", str(run), "--init", str(run / "best.pt")]) == 1
    assert "is this run's best.pt" in capsys.readouterr().err
    assert hashlib.sha256((run / "best.pt").read_bytes()).hexdigest() == before
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    out = tmp_path / "new_run"
    assert main([*base, "--out", str(out), "--init", str(junk)]) == 1
    assert "junk.pt" in capsys.readouterr().err and not out.exists()
    big = tmp_path / "big_patch.yaml"
    big.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "patch_size": 32}}))
    assert main(["train", "--config", str(big), "--cache", str(tiny["root"] / "cache"), "--no-progress",
                 "--out", str(out)]) == 1
    assert "smaller than the patch" in capsys.readouterr().err and not out.exists()


def test_resume_refuses_other_data_and_leaves_no_folder(tiny, tmp_path, capsys):
    """--resume continues a run on its own data: a config with another data section, or a --data
    folder for a run of the embedded set, is one line, and the refused run leaves no folder."""
    last = tiny["root"] / "run" / "last.pt"
    other = tmp_path / "other_shape.yaml"
    other.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "shape": [16, 16, 16]},
                                     "train": {**TINY["train"], "epochs": 3}}))
    out = tmp_path / "resumed"
    base = ["train", "--cache", str(tiny["root"] / "cache"), "--no-progress", "--out", str(out), "--resume", str(last)]
    assert main([*base, "--config", str(other)]) == 1
    assert "the config's data section differs from the run's (data.shape)" in capsys.readouterr().err
    assert not out.exists()
    folder = tmp_path / "pairs"       # refused before the folder is read
    folder.mkdir()
    ck = torch.load(last, weights_only=True)
    ck["data"] = {"kind": "embedded", "path": "tiny.h5"}      # as `train` records it
    torch.save(ck, tmp_path / "last.pt")
    base[base.index(str(last))] = str(tmp_path / "last.pt")
    assert main([*base, "--epochs", "3", "--data", str(folder)]) == 1
    assert "the run trained on the embedded data" in capsys.readouterr().err and not out.exists()
