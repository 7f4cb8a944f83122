"""Embedded data: template, synthetic subjects, HDF5 cache, pairs, NIfTI export (tiny grids)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from spikereg_neuro.data import (
    LABEL_NAMES,
    DataConfig,
    PairRecord,
    RegistrationPairs,
    SynthConfig,
    all_pairs,
    build_dataset,
    build_template,
    dataset_info,
    dataset_path,
    eval_pairs,
    export_demo,
    label_value,
    load_pair_record,
    load_pairs_numpy,
    read_learn2reg,
    read_nifti_pair,
    read_pair_folder,
    read_pairs_json,
    read_pairs_meta,
    split_seeds,
    subject_seed,
    synth_subject,
    template_paths,
    train_pairs,
    true_displacement,
)
from spikereg_neuro.io import load_labels, load_volume, save_volume

VS = 6.0
SHAPE = (24, 28, 24)


def tiny_config(**kw) -> DataConfig:
    base = dict(voxel_size_mm=VS, shape=SHAPE, n_train=3, n_val=2, n_test=3, seed=0)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture(scope="module")
def template():
    return build_template(VS, SHAPE)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfg = tiny_config()
    return cfg, cache, build_dataset(cfg, cache, progress=False)


def world(affine: np.ndarray, shape) -> np.ndarray:
    """(3, D, H, W) world coordinates of voxel centres."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape((3,) + tuple(shape))


def det_jacobian(disp: np.ndarray) -> np.ndarray:
    """det(I + grad u) by central differences, 2 voxels cropped at each border."""
    jac = np.empty(disp.shape[1:] + (3, 3))
    for k in range(3):
        grads = np.gradient(disp[k])
        for m in range(3):
            jac[..., k, m] = grads[m] + (1.0 if k == m else 0.0)
    return np.linalg.det(jac)[2:-2, 2:-2, 2:-2]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    scores = []
    for lab in LABEL_NAMES:
        sa, sb = a == lab, b == lab
        if sa.any() and sb.any():
            scores.append(2.0 * np.logical_and(sa, sb).sum() / (sa.sum() + sb.sum()))
    return float(np.mean(scores))


# ----------------------------------------------------------------------------- template
def test_template_files_come_from_nilearn():
    paths = template_paths()
    assert set(paths) == {"t1", "gm", "wm"}
    assert all(p.is_file() and "nilearn" in p.parts for p in paths.values())


def test_template_labels_and_hemispheres(template):
    t = template
    assert t.image.shape == t.labels.shape == t.mask.shape == SHAPE
    assert t.image.dtype == np.float32 and 0.0 <= t.image.min() and t.image.max() <= 1.0
    assert t.labels.dtype == np.uint8 and t.voxel_size == (VS, VS, VS)
    present = set(np.unique(t.labels)) - {0}
    assert len(LABEL_NAMES) == 18 and present == set(LABEL_NAMES)
    np.testing.assert_array_equal(t.mask, t.labels > 0)
    xyz = world(t.affine, SHAPE)
    for lab, name in LABEL_NAMES.items():
        x = xyz[0][t.labels == lab]
        assert (x < 0).all() if "_L_" in name else (x >= 0).all(), name
    # anterior zones lie in front of posterior zones (world y)
    for tissue in ("CSF", "GM", "WM"):
        for hemi in ("L", "R"):
            ys = [xyz[1][t.labels == label_value(tissue, hemi, z)].mean() for z in ("posterior", "middle", "anterior")]
            assert ys[0] < ys[1] < ys[2]
    # the MNI template is symmetric: hemispheres of similar size
    left = np.isin(t.labels, [k for k, n in LABEL_NAMES.items() if "_L_" in n]).sum()
    right = np.isin(t.labels, [k for k, n in LABEL_NAMES.items() if "_R_" in n]).sum()
    assert abs(left - right) < 0.1 * (left + right)


def test_template_affine_maps_voxels_to_mni_world():
    # at 1 mm with odd sizes the grid centre (the brain's bounding-box centre, integer mm in
    # MNI) is a source voxel centre, so every voxel coincides with a source voxel
    shape = (41, 51, 31)
    t = build_template(1.0, shape)
    np.testing.assert_allclose(t.affine[:3, :3], np.eye(3))
    src = nib.as_closest_canonical(nib.load(str(template_paths()["t1"])))
    src_data = np.asarray(src.dataobj, dtype=np.float32)
    to_src = np.linalg.inv(src.affine) @ t.affine
    rng = np.random.default_rng(0)
    for ijk in rng.integers(0, shape, size=(50, 3)):
        s = to_src @ np.r_[ijk, 1.0]
        assert np.allclose(s[:3], np.round(s[:3]), atol=1e-6)  # integer source voxel
        sv = src_data[tuple(np.round(s[:3]).astype(int))]
        assert (t.image[tuple(ijk)] > 0) == (sv > 0)
        if sv > 0:
            scale = sv / t.image[tuple(ijk)]
            assert 200 < scale < 256  # same voxel up to the robust normalisation constant
    # and the tiny grid keeps world coordinates: brain centres agree within half a voxel
    tiny = build_template(VS, SHAPE)
    centre_tiny = world(tiny.affine, SHAPE)[:, tiny.mask].mean(axis=1)
    idx = np.argwhere(src_data > 0)
    centre_src = (src.affine[:3, :3] @ idx.T + src.affine[:3, 3:4]).mean(axis=1)
    assert np.all(np.abs(centre_tiny - centre_src) < VS / 2)


# ----------------------------------------------------------------------------- synthesis
def test_subject_seed_reproducible(template):
    a = synth_subject(template.image, template.labels, 123)
    b = synth_subject(template.image, template.labels, 123)
    c = synth_subject(template.image, template.labels, 124)
    for field in ("image", "labels", "velocity", "displacement"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.displacement, c.displacement)
    assert a.image.dtype == np.float32 and 0.0 <= a.image.min() and a.image.max() <= 1.0
    assert a.labels.dtype == np.uint8 and set(np.unique(a.labels)) <= set(LABEL_NAMES) | {0}


def test_synthetic_warps_are_diffeomorphic(template):
    cfg = SynthConfig()
    for seed in range(4):
        s = synth_subject(template.image, template.labels, seed, cfg)
        peak = np.linalg.norm(s.displacement, axis=0).max()
        assert 0.5 * cfg.velocity_magnitude_vox < peak < 2.0 * cfg.velocity_magnitude_vox
        det = det_jacobian(s.displacement)
        assert (det <= 0).mean() == 0.0
        assert det.min() > 0.1


def test_split_seeds_disjoint_and_deterministic():
    cfg = DataConfig()
    seeds = split_seeds(cfg)
    sets = {k: set(v) for k, v in seeds.items()}
    assert [len(seeds[s]) for s in ("train", "val", "test")] == [40, 6, 6]
    assert all(len(sets[s]) == len(seeds[s]) for s in sets)
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert subject_seed(0, "val", 3) == seeds["val"][3] == subject_seed(0, "val", 3)
    assert subject_seed(1, "val", 3) != subject_seed(0, "val", 3)


# ----------------------------------------------------------------------------- config
def test_config_round_trip_and_unknown_keys():
    cfg = tiny_config(synth=SynthConfig(velocity_magnitude_vox=2.0, gamma_range=(0.9, 1.1)))
    d = json.loads(json.dumps(cfg.to_dict()))
    back = DataConfig.from_dict(d)
    assert back == cfg and back.params_json() == cfg.params_json()
    with pytest.raises(ValueError, match=r"unknown DataConfig key\(s\) \['voxel_size'\]"):
        DataConfig.from_dict({"voxel_size": 2.0})
    with pytest.raises(ValueError, match=r"unknown SynthConfig key\(s\) \['magnitude'\]"):
        DataConfig.from_dict({"synth": {"magnitude": 2.0}})
    with pytest.raises(ValueError, match="n_test must be >= 2"):
        tiny_config(n_test=1)
    assert DataConfig().with_voxel_size(2.5).shape == (64, 72, 64)
    assert DataConfig().with_voxel_size(2.0).shape == (80, 96, 80)


# ----------------------------------------------------------------------------- build / cache
def test_build_writes_expected_layout(built):
    cfg, _, path = built
    assert path == dataset_path(cfg, built[1]) and path.suffix == ".h5"
    with h5py.File(path, "r") as f:
        assert json.loads(f.attrs["params"])["config"] == cfg.to_dict()
        assert int(f.attrs["format_version"]) == 1
        for split, n in (("train", 3), ("val", 2), ("test", 3)):
            assert f[split]["images"].shape == (n,) + SHAPE and f[split]["images"].dtype == np.float32
            assert f[split]["labels"].shape == (n,) + SHAPE and f[split]["labels"].dtype == np.uint8
            np.testing.assert_array_equal(f[split]["seeds"][:], split_seeds(cfg)[split])
        np.testing.assert_array_equal(f["test"]["pairs"][:], [[0, 1], [1, 2]])
        tpl = build_template(VS, SHAPE)
        np.testing.assert_allclose(f["affine"][:], tpl.affine)
        np.testing.assert_array_equal(f["template"]["labels"][:], tpl.labels)
        # the stored subject is the one its seed generates
        s = synth_subject(tpl.image, tpl.labels, int(f["val"]["seeds"][1]), cfg.synth)
        np.testing.assert_array_equal(f["val"]["images"][1], s.image)
        np.testing.assert_array_equal(f["val"]["labels"][1], s.labels)
    info = dataset_info(path)
    assert info["config"] == cfg and info["n_subjects"] == {"train": 3, "val": 2, "test": 3}
    assert info["label_names"] == LABEL_NAMES and info["spacing"] == (VS, VS, VS)


def test_cache_reused_and_regenerated(tmp_path):
    cfg = tiny_config(n_train=2, n_test=2)
    p1 = build_dataset(cfg, tmp_path, progress=False)
    m1 = p1.stat().st_mtime_ns
    p2 = build_dataset(tiny_config(n_train=2, n_test=2), tmp_path, progress=False)
    assert p2 == p1 and p2.stat().st_mtime_ns == m1  # reused, not rewritten
    # other parameters -> other file, generated
    p3 = build_dataset(tiny_config(n_train=2, n_test=2, seed=5), tmp_path, progress=False)
    assert p3 != p1 and p3.exists() and p1.stat().st_mtime_ns == m1
    with h5py.File(p1, "r") as a, h5py.File(p3, "r") as b:
        assert not np.array_equal(a["train"]["images"][0], b["train"]["images"][0])
    # a file whose stored parameters differ is regenerated in place
    with h5py.File(p1, "r+") as f:
        f.attrs["params"] = "{}"
    os.utime(p1, ns=(m1 - 10**9, m1 - 10**9))
    p4 = build_dataset(cfg, tmp_path, progress=False)
    assert p4 == p1 and p4.stat().st_mtime_ns != m1 - 10**9
    with h5py.File(p4, "r") as f:
        assert f.attrs["params"] == cfg.params_json()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# ----------------------------------------------------------------------------- pairs
def test_pair_lists():
    assert eval_pairs(4) == [(0, 1), (1, 2), (2, 3)]
    assert len(all_pairs(5)) == 20 and all(i != j for i, j in all_pairs(5))
    e0, e1 = train_pairs(5, 0), train_pairs(5, 1)
    assert sorted(e0) == sorted(all_pairs(5)) and e0 != e1 and e0 == train_pairs(5, 0)
    assert len(train_pairs(5, 0, max_pairs=7)) == 7


def test_registration_pairs_dataset(built):
    _, _, path = built
    train = RegistrationPairs(path, "train")
    assert len(train) == 6
    item = train[0]
    assert item["fixed"].shape == item["moving"].shape == (1,) + SHAPE
    assert item["fixed"].dtype == torch.float32 and item["fixed_labels"].dtype == torch.int64
    i, j = item["pair"].tolist()
    assert i != j
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(item["moving"][0].numpy(), f["train"]["images"][j])
        np.testing.assert_array_equal(item["fixed_labels"][0].numpy(), f["train"]["labels"][i])
    train.resample(epoch=3)
    assert train.pairs == train_pairs(3, 3)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=2)))
    assert batch["fixed"].shape == (2, 1) + SHAPE and batch["pair"].shape == (2, 2)
    test = RegistrationPairs(path, "test")
    assert test.pairs == [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="distinct"):
        RegistrationPairs(path, "test", pairs=[(1, 1)])
    with pytest.raises(ValueError, match="out of range"):
        RegistrationPairs(path, "val", pairs=[(0, 2)])
    with pytest.raises(ValueError, match="unknown split"):
        RegistrationPairs(path, "training")

    arrays = load_pairs_numpy(path, "test")
    assert [a["pair"] for a in arrays] == [(0, 1), (1, 2)]
    np.testing.assert_array_equal(arrays[1]["fixed"], test[1]["fixed"][0].numpy())
    np.testing.assert_array_equal(arrays[1]["moving_labels"], test[1]["moving_labels"][0].numpy())
    assert arrays[0]["spacing"] == (VS, VS, VS) and arrays[0]["affine"].shape == (4, 4)


def test_true_displacement_aligns_labels(built):
    _, _, path = built
    rec = load_pairs_numpy(path, "train", pairs=[(0, 2)])[0]
    fixed = rec["fixed_labels"]
    u = torch.from_numpy(true_displacement(path, "train", (0, 2)))[None]
    from spikereg_neuro.registration.transform import warp_labels

    warped = warp_labels(torch.from_numpy(rec["moving_labels"])[None, None], u)[0, 0].numpy()
    assert dice(fixed, warped) > dice(fixed, rec["moving_labels"]) + 0.05


# ----------------------------------------------------------------------------- export / readers
def test_export_demo_round_trip(built, tmp_path):
    cfg, cache, path = built
    m = path.stat().st_mtime_ns
    pairs_json = export_demo(tmp_path / "demo", cfg, cache)
    assert path.stat().st_mtime_ns == m  # used the cached file
    assert pairs_json == tmp_path / "demo" / "pairs.json"
    doc = json.loads(pairs_json.read_text())
    assert [p["fixed"] for p in doc["pairs"]] == ["pair_000/fixed.nii.gz", "pair_001/fixed.nii.gz"]
    records = read_pairs_json(tmp_path / "demo")
    assert records == read_pair_folder(tmp_path / "demo") == read_pairs_json(pairs_json)
    assert all(isinstance(r, PairRecord) and r.has_labels for r in records)
    meta = read_pairs_meta(tmp_path / "demo")
    assert meta["label_names"] == LABEL_NAMES and meta["voxel_size_mm"] == [VS, VS, VS]
    ref = load_pairs_numpy(path, "test")
    info = dataset_info(path)
    for rec, exp in zip(records, ref):
        img = nib.load(str(rec.fixed))
        np.testing.assert_allclose(img.affine, info["affine"], atol=1e-5)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        got = load_pair_record(rec)
        for key in ("fixed", "moving", "fixed_labels", "moving_labels"):
            np.testing.assert_array_equal(got[key], exp[key])
        np.testing.assert_allclose(got["affine"], info["affine"], atol=1e-5)
        assert got["spacing"] == pytest.approx((VS, VS, VS))
    # rewrite via PairRecord.to_dict / from_dict keeps the records
    again = [PairRecord.from_dict(r.to_dict(root=tmp_path / "demo"), tmp_path / "demo") for r in records]
    assert again == records


def _fake_learn2reg(root: Path) -> None:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    training = []
    for k in range(3):
        img = f"./imagesTr/TOY_{k:04d}_0000.nii.gz"
        lab = f"./labelsTr/TOY_{k:04d}_0000.nii.gz"
        save_volume(root / img, rng.random((6, 7, 8)).astype(np.float32), aff)
        save_volume(root / lab, rng.integers(0, 4, (6, 7, 8)), aff, dtype=np.uint8)
        training.append({"image": img, "label": lab})
    doc = {
        "name": "TOY",
        "training": training,
        "registration_val": [
            {"fixed": "./imagesTr/TOY_0000_0000.nii.gz", "moving": "./imagesTr/TOY_0001_0000.nii.gz"},
            {"fixed": "./imagesTr/TOY_0001_0000.nii.gz", "moving": "./imagesTr/TOY_0002_0000.nii.gz"},
        ],
    }
    (root / "TOY_dataset.json").write_text(json.dumps(doc))


def test_learn2reg_reader(tmp_path):
    _fake_learn2reg(tmp_path)
    records = read_learn2reg(tmp_path)
    assert len(records) == 2 and records == read_pair_folder(tmp_path)
    assert records == read_learn2reg(tmp_path / "TOY_dataset.json", split="val")
    r = records[1]
    assert r.fixed == tmp_path / "imagesTr" / "TOY_0001_0000.nii.gz"
    assert r.moving_labels == tmp_path / "labelsTr" / "TOY_0002_0000.nii.gz"
    pair = load_pair_record(r)
    assert pair["fixed"].shape == (6, 7, 8) and pair["moving_labels"].dtype == np.int64
    np.testing.assert_array_equal(pair["fixed_labels"], load_labels(r.fixed_labels)[0])
    with pytest.raises(KeyError, match="registration_test.*registration_val"):
        read_learn2reg(tmp_path, split="registration_test")
    (tmp_path / "labelsTr" / "TOY_0002_0000.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="1 file\\(s\\) missing.*TOY_0002"):
        read_learn2reg(tmp_path)
    with pytest.raises(FileNotFoundError, match="no Learn2Reg dataset JSON"):
        read_learn2reg(tmp_path / "imagesTr")


def test_read_nifti_pair_checks_grids(tmp_path):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    save_volume(tmp_path / "f.nii.gz", np.zeros((4, 4, 4), np.float32), aff)
    save_volume(tmp_path / "m.nii.gz", np.zeros((4, 4, 4), np.float32), aff)
    out = read_nifti_pair(tmp_path / "f.nii.gz", tmp_path / "m.nii.gz")
    assert out["fixed_labels"] is None and out["spacing"] == (2.0, 2.0, 2.0)
    shifted = aff.copy()
    shifted[:3, 3] = 4.0
    save_volume(tmp_path / "s.nii.gz", np.zeros((4, 4, 4), np.float32), shifted)
    with pytest.raises(ValueError, match="affine mismatch"):
        read_nifti_pair(tmp_path / "f.nii.gz", tmp_path / "s.nii.gz")
    save_volume(tmp_path / "l.nii.gz", np.zeros((4, 4, 5), np.uint8), aff)
    with pytest.raises(ValueError, match="does not match its image.*shape mismatch"):
        read_nifti_pair(tmp_path / "f.nii.gz", tmp_path / "m.nii.gz", fixed_labels=tmp_path / "l.nii.gz")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_nifti_pair(tmp_path / "f.nii.gz", tmp_path / "missing.nii.gz")


# ----------------------------------------------------------------------------- CLI
def test_cli_build_and_export(tmp_path, capsys, monkeypatch):
    from spikereg_neuro.cli import main

    monkeypatch.setenv("SPIKEREG_CACHE", str(tmp_path / "envcache"))
    assert main(["data", "build", "--voxel-size", "10", "-q"]) == 0
    out = capsys.readouterr().out
    path = Path(out.splitlines()[0])
    assert path.parent == tmp_path / "envcache" and path.exists()
    assert "16x24x16 voxels of 10x10x10 mm" in out and "train: 40 subjects" in out
    assert main(["data", "export-demo", str(tmp_path / "demo"), "--voxel-size", "10", "-q"]) == 0
    assert len(read_pairs_json(tmp_path / "demo")) == 5
    assert load_volume(tmp_path / "demo" / "pair_004" / "moving.nii.gz")[0].shape == (16, 24, 16)
