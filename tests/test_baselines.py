"""Baselines (identity, VoxelMorph, ANTs SyN) and ``benchmark accuracy`` on tiny data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from spikereg_neuro.baselines import IdentityRegistrar, Registrar
from spikereg_neuro.config import Config, TrainConfig
from spikereg_neuro.data import DataConfig, build_dataset, load_pairs_numpy
from spikereg_neuro.registration.transform import identity_grid, warp, warp_labels

TINY_DATA = dict(voxel_size_mm=8.0, shape=(16, 24, 16), n_train=3, n_val=2, n_test=2, seed=0)
TINY_VXM = dict(nb_features=(8, 8, 8), integration_steps=4)  # size multiple 8, fast


def inside_mask(field: np.ndarray) -> np.ndarray:
    """Voxels whose pull position x + u(x) lies inside the volume (padding modes agree there)."""
    shape = field.shape[1:]
    pos = identity_grid(shape)[0].numpy() + field
    return np.all((pos >= 0) & (pos <= np.array(shape).reshape(3, 1, 1, 1) - 1), axis=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfg = DataConfig(**TINY_DATA)
    h5 = build_dataset(cfg, cache, progress=False)
    return cfg, cache, h5


@pytest.fixture(scope="module")
def tiny_pair(tiny):
    return load_pairs_numpy(tiny[2], "test")[0]


# ----------------------------------------------------------------------------- identity
def test_identity_zero_field_and_unchanged_dice(tiny_pair):
    from spikereg_neuro.commands.benchmark import evaluate_pair

    reg = IdentityRegistrar()
    assert isinstance(reg, Registrar)
    assert reg.available() == (True, "")
    u = reg.register(tiny_pair["fixed"], tiny_pair["moving"], tiny_pair["affine"])
    assert u.shape == (3, *tiny_pair["fixed"].shape) and u.dtype == np.float32
    assert not u.any()
    m = evaluate_pair(tiny_pair, u)
    assert m["dice"] == pytest.approx(m["dice_before"])
    assert m["hd95"] == pytest.approx(m["hd95_before"])
    assert m["folding_pct"] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        reg.register(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


# ----------------------------------------------------------------------------- VoxelMorph
def test_symmetric_registrar_runs_both_ways_and_keeps_the_wrapped_one():
    from spikereg_neuro.baselines import SymmetricRegistrar

    class Shift:
        name, checkpoint = "shift", "ckpt.pt"
        calls = []

        def register(self, fixed, moving, affine=None):
            self.calls.append((float(fixed.flat[0]), float(moving.flat[0])))
            u = np.zeros((3, *fixed.shape), np.float32)
            u[0] = 0.5 + (fixed.flat[0] < moving.flat[0])      # a bias of 0.5, plus 1 one way only
            return u

        def info(self):
            return {"kind": "shift"}

    f, m = np.zeros((8, 8, 8), np.float32), np.ones((8, 8, 8), np.float32)
    reg = SymmetricRegistrar(Shift())
    u = reg.register(f, m)
    assert Shift.calls == [(0.0, 1.0), (1.0, 0.0)]
    # (1.5 + inverse of 0.5) / 2: the shared 0.5 cancels, half of the one-way 1 is left
    assert np.allclose(u[0], 0.5) and np.allclose(u[1:], 0)
    assert reg.name == "shift" and reg.checkpoint == "ckpt.pt" and reg.info() == {"kind": "shift", "symmetric": True}


def test_symmetric_spikereg_runs_both_ways_in_its_own_inference_only():
    """--symmetric: SpikeReg's inference registers both ways itself (never wrapped twice), and
    without it SpikeReg runs one way whatever a checkpoint says."""
    import argparse

    from spikereg_neuro.accuracy import SpikeRegRegistrar, make_registrar
    from spikereg_neuro.baselines import SymmetricRegistrar

    both = make_registrar("spikereg", argparse.Namespace(symmetric=True, spikereg_model=None, device="cpu"))
    one = make_registrar("spikereg", argparse.Namespace(symmetric=False, spikereg_model=None, device="cpu"))
    assert isinstance(both, SpikeRegRegistrar) and both.load().symmetric and both.info()["symmetric"] is True
    assert not one.load().symmetric and "symmetric" not in one.info()
    vm = make_registrar("voxelmorph", argparse.Namespace(symmetric=True, voxelmorph_model=None, device="cpu"))
    assert isinstance(vm, SymmetricRegistrar)


def test_voxelmorph_field_convention_matches_its_own_transformer():
    """Warping the moving image with our ``warp`` and VxmPairwise's displacement reproduces
    VxmPairwise's own warped source (anisotropic shape: a channel/axis mix-up would fail)."""
    vxm = pytest.importorskip("voxelmorph")
    from spikereg_neuro.baselines.voxelmorph import VoxelMorphConfig, build_voxelmorph

    torch.manual_seed(0)
    net = build_voxelmorph(VoxelMorphConfig(**TINY_VXM))
    with torch.no_grad():  # a visibly non-zero, different field per channel
        torch.nn.init.normal_(net.flow_layer.conv0.weight, std=0.5)
    shape = (16, 24, 32)
    src, tgt = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
    with torch.no_grad():
        u, warped_vxm = net(src, tgt, return_warped_source=True)
    ours = warp(src, u)
    assert u.shape == (1, 3, *shape)
    per_axis = u.abs().mean(dim=(0, 2, 3, 4))
    assert (per_axis > 0.05).all(), per_axis
    mask = torch.from_numpy(inside_mask(u[0].numpy()))[None, None]
    assert mask.float().mean() > 0.5
    assert torch.allclose(ours[mask], warped_vxm[mask], atol=1e-4)

    # a pure translation along axis 2 only: channel 2, +2 voxels, pull
    v = torch.zeros(1, 3, *shape)
    v[:, 2] = 2.0
    st = vxm.nn.modules.SpatialTransformer()
    assert torch.allclose(st(src, v)[..., :-2], warp(src, v)[..., :-2], atol=1e-5)
    assert torch.allclose(warp(src, v)[..., :-2], src[..., 2:], atol=1e-5)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    pytest.importorskip("voxelmorph")
    from spikereg_neuro.baselines.voxelmorph import VoxelMorphConfig, train_voxelmorph

    cfg, cache, _ = tiny
    conf = Config(data=cfg, train=TrainConfig(patch_size=16, batch_size=2, steps_per_epoch=1, epochs=2,
                                              ncc_window=5, seed=0))
    out = tmp_path_factory.mktemp("vxm_run")
    summary = train_voxelmorph(conf, out, steps=2, vxm_config=VoxelMorphConfig(**TINY_VXM),
                               cache_dir=cache, progress=False)
    return conf, out, summary


def test_train_voxelmorph_runs_and_checkpoint_round_trips(trained, tiny_pair):
    from spikereg_neuro.baselines.voxelmorph import VoxelMorphRegistrar, load_voxelmorph

    conf, out, summary = trained
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    assert len(summary["history"]) == 2 and all(np.isfinite(h["val_dice"]) for h in summary["history"])
    for name in ("best.pt", "last.pt", "train_log.csv", "summary.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["steps"] == 2

    net, ckpt = load_voxelmorph(out / "last.pt")
    assert ckpt["vxm_config"] == {"nb_features": [8, 8, 8], "integration_steps": 4}
    assert ckpt["train_config"]["train"]["patch_size"] == 16
    net2, _ = load_voxelmorph(out / "last.pt")
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert torch.equal(a, b), k

    reg = VoxelMorphRegistrar(out / "best.pt")
    assert reg.available() == (True, "")
    u = reg.register(tiny_pair["fixed"], tiny_pair["moving"])  # 16x24x16: padded to 16x24x16 (x8)
    assert u.shape == (3, 16, 24, 16) and np.isfinite(u).all()
    u_odd = reg.register(tiny_pair["fixed"][:15, :21, :13], tiny_pair["moving"][:15, :21, :13])  # padded
    assert u_odd.shape == (3, 15, 21, 13)
    u_tiled = VoxelMorphRegistrar(out / "best.pt", tile=(16, 8)).register(tiny_pair["fixed"], tiny_pair["moving"])
    assert u_tiled.shape == (3, 16, 24, 16) and np.isfinite(u_tiled).all()


def test_voxelmorph_checkpoint_errors(trained, tmp_path):
    from spikereg_neuro.baselines.voxelmorph import VoxelMorphConfig, VoxelMorphRegistrar, load_voxelmorph

    _, out, _ = trained
    with pytest.raises(FileNotFoundError):
        load_voxelmorph(tmp_path / "missing.pt")
    ok, why = VoxelMorphRegistrar(tmp_path / "missing.pt").available()
    assert not ok and "train-voxelmorph" in why
    bad = tmp_path / "spikereg_like.pt"
    torch.save({"format": "spikereg-neuro/checkpoint", "state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a spikereg-neuro VoxelMorph checkpoint"):
        load_voxelmorph(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_voxelmorph(garbage)
    with pytest.raises(ValueError, match="expected"):
        load_voxelmorph(out / "last.pt", expect=VoxelMorphConfig())
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["vxm_config"] = {"nb_features": [8, 16, 8], "integration_steps": 4}  # weights no longer fit
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not match"):
        load_voxelmorph(tmp_path / "mismatch.pt")


# ----------------------------------------------------------------------------- ANTs
def test_ants_field_reproduces_ants_label_warp(tiny_pair):
    """Our pull warp with the converted ANTs field equals antsApplyTransforms (nearest
    neighbour / linear) wherever the sample point is inside the volume (ANTs pads with 0,
    we replicate the border), for an affine with permuted and flipped axes."""
    pytest.importorskip("ants")
    from spikereg_neuro.baselines.ants import AntsSyNRegistrar

    affine = np.array([[0.0, -8.0, 0.0, 10.0], [0.0, 0.0, 6.0, -5.0], [-7.0, 0.0, 0.0, 1.0], [0, 0, 0, 1]])
    reg = AntsSyNRegistrar()  # ANTsPy's SyN defaults: affine + deformable, seeded, 1 thread
    assert reg.available() == (True, "")
    out = reg.register_full(tiny_pair["fixed"], tiny_pair["moving"], affine, tiny_pair["moving_labels"])
    u = out["field"]
    assert u.shape == (3, 16, 24, 16) and np.abs(u).max() > 0.5
    ml = torch.from_numpy(tiny_pair["moving_labels"])[None, None]
    wl = warp_labels(ml, torch.from_numpy(u)[None])[0, 0].numpy()
    wi = warp(torch.from_numpy(tiny_pair["moving"])[None, None], torch.from_numpy(u)[None])[0, 0].numpy()
    inside = inside_mask(u)
    assert inside.mean() > 0.5
    assert (wl == out["warped_labels"])[inside].mean() > 0.99
    assert np.abs(wi - out["warped"])[inside].max() < 1e-3
    # seeded and single-threaded: reproducible
    assert np.array_equal(reg.register(tiny_pair["fixed"], tiny_pair["moving"], affine), u)
    with pytest.raises(ValueError, match="nonzero"):
        AntsSyNRegistrar(seed=0)


def test_ants_geometry_from_affine():
    from spikereg_neuro.baselines.ants import affine_to_ants_geometry, ants_displacement_to_voxels

    aff = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 20], [0, 0, 4.0, 5], [0, 0, 0, 1]])
    g = affine_to_ants_geometry(aff)
    assert g["spacing"] == (2.0, 3.0, 4.0)
    assert g["origin"] == (10.0, -20.0, 5.0)  # RAS -> LPS
    np.testing.assert_allclose(g["direction"], np.diag([-1.0, -1.0, 1.0]))
    d = np.zeros((2, 2, 2, 3))
    d[..., 0] = -2.0  # 2 mm towards L... i.e. -x in LPS = +x in RAS = +1 voxel along axis 0
    d[..., 2] = 8.0
    u = ants_displacement_to_voxels(d, g)
    np.testing.assert_allclose(u[0], 1.0)
    np.testing.assert_allclose(u[1], 0.0)
    np.testing.assert_allclose(u[2], 2.0)


# ----------------------------------------------------------------------------- benchmark
def test_benchmark_accuracy_end_to_end(tiny, trained, tmp_path, capsys):
    from spikereg_neuro.cli import main

    cfg, cache, _ = tiny
    _, run, _ = trained
    conf = tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump({"data": {**cfg.to_dict(), "shape": list(cfg.shape)}}))
    out = tmp_path / "bench"
    rc = main(["benchmark", "accuracy", "--config", str(conf), "--cache", str(cache), "--out", str(out),
               "--methods", "identity,voxelmorph,spikereg", "--voxelmorph-model", str(run / "best.pt"),
               "--spikereg-model", str(tmp_path / "no_such_model.pt"), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "skipping spikereg" in text and "no SpikeReg checkpoint" in text
    doc = json.loads((out / "accuracy.json").read_text())
    assert set(doc["methods"]) == {"identity", "voxelmorph"}
    assert "spikereg" in doc["skipped"]
    assert doc["data"]["n_pairs"] == 1  # n_test = 2 subjects -> 1 chained pair
    for name, m in doc["methods"].items():
        for key in ("dice_mean", "hd95_mean", "folding_pct_mean", "sdlogj_mean", "seconds_per_pair"):
            assert isinstance(m[key], float), (name, key)
        assert len(m["pairs"]) == 1
        rec = m["pairs"][0]
        assert rec["pair"] == "pair_000" and rec["seconds"] >= 0
        assert rec["dice_per_label"] and all(k.isdigit() for k in rec["dice_per_label"])
    ident = doc["methods"]["identity"]
    assert ident["dice_mean"] == pytest.approx(ident["dice_before_mean"])
    # synthetic pairs carry their true field: the identity's endpoint error is the true field's size
    assert ident["epe_mean"] == pytest.approx(ident["epe_before_mean"]) and ident["epe_mean"] > 0.1
    assert ident["folding_pct_mean"] == 0.0
    md = (out / "accuracy.md").read_text()
    assert "| identity |" in md and "| voxelmorph |" in md and "spikereg" in md
    assert "EPE vox (before)" in md
    assert doc["methods"]["voxelmorph"]["dice_gain"]["n"] == 1
    assert "Gain over the unregistered" not in md   # one pair: no interval to report

    # --symmetric: the learned methods run both ways (reported so), the identity as always
    sym = tmp_path / "bench_sym"
    assert main(["benchmark", "accuracy", "--config", str(conf), "--cache", str(cache), "--out", str(sym),
                 "--methods", "identity,voxelmorph", "--voxelmorph-model", str(run / "best.pt"), "--symmetric",
                 "--no-progress"]) == 0
    sdoc = json.loads((sym / "accuracy.json").read_text())
    assert sdoc["methods"]["voxelmorph"]["info"]["symmetric"] is True
    assert "symmetric" not in sdoc["methods"]["identity"]["info"]
    assert sdoc["methods"]["voxelmorph"]["epe_mean"] != doc["methods"]["voxelmorph"]["epe_mean"]
    assert "| voxelmorph (both ways) |" in (sym / "accuracy.md").read_text()

    # unknown method names are a one-line user error
    assert main(["benchmark", "accuracy", "--out", str(out), "--methods", "identity,elastix"]) == 1

    # --split val: the embedded validation pairs (other subjects than the test pairs)
    val = tmp_path / "bench_val"
    assert main(["benchmark", "accuracy", "--config", str(conf), "--cache", str(cache), "--out", str(val),
                 "--methods", "identity", "--split", "val", "--no-progress"]) == 0
    vdoc = json.loads((val / "accuracy.json").read_text())
    assert vdoc["data"]["split"] == "val" and doc["data"]["split"] == "test"
    assert vdoc["methods"]["identity"]["dice_before_mean"] != ident["dice_before_mean"]
    capsys.readouterr()
    assert main(["benchmark", "accuracy", "--config", str(conf), "--cache", str(cache), "--out", str(val),
                 "--methods", "identity", "--split", "registration_val", "--no-progress"]) == 1
    assert "the embedded pairs have the splits ['test', 'val']" in capsys.readouterr().err


def test_benchmark_accuracy_on_a_pairs_folder(tiny, tmp_path):
    from spikereg_neuro.cli import main
    from spikereg_neuro.data import export_demo

    cfg, cache, _ = tiny
    export_demo(tmp_path / "demo", cfg, cache)
    out = tmp_path / "bench"
    assert main(["benchmark", "accuracy", "--data", str(tmp_path / "demo"), "--methods", "identity",
                 "--out", str(out), "--pairs", "1", "--no-progress"]) == 0
    doc = json.loads((out / "accuracy.json").read_text())
    assert doc["data"]["source"].endswith("demo") and doc["data"]["pairs"] == ["pair_000"]
    m = doc["methods"]["identity"]
    assert m["dice_mean"] == pytest.approx(m["dice_before_mean"]) and m["n_pairs"] == 1


def test_true_field_registers_the_synthetic_pair(tiny):
    """The embedded pairs' true field is the pull field of our convention: warping with it beats
    the identity's Dice, and its own endpoint error is zero (the identity's is its size)."""
    from spikereg_neuro.commands.benchmark import embedded_pairs, evaluate_pair
    from spikereg_neuro.config import Config

    cfg, cache, _ = tiny
    pairs, _ = embedded_pairs(Config(data=cfg), cache, progress=False)
    p = pairs[0]
    assert p["true_field"].shape == (3, *p["fixed"].shape)
    exact = evaluate_pair(p, p["true_field"])
    ident = evaluate_pair(p, np.zeros_like(p["true_field"]))
    assert exact["epe"] == 0.0 and ident["epe"] == pytest.approx(ident["epe_before"])
    assert ident["epe"] > 0.1
    assert exact["dice"] > ident["dice"] + 0.02


def test_accuracy_report_paired_gain_section():
    """Three pairs: the report's paired section has the mean gain, interval and improved count."""
    from spikereg_neuro.commands.benchmark import accuracy_markdown, summarize

    def rec(d, d0, e, e0):
        return {"pair": "p", "seconds": 1.0, "dice": d, "dice_before": d0, "hd95": 3.0, "hd95_before": 3.0,
                "folding_pct": 0.0, "sdlogj": 0.1, "epe": e, "epe_before": e0, "dice_per_label": {"1": d}}

    recs = [rec(0.70, 0.66, 0.9, 1.1), rec(0.69, 0.67, 1.0, 1.1), rec(0.64, 0.65, 1.2, 1.1)]
    m = summarize(recs)
    assert m["dice_gain"]["mean"] == pytest.approx(0.05 / 3) and m["dice_gain"]["n_better"] == 2
    assert m["epe_gain"]["mean"] == pytest.approx(-0.2 / 3) and m["epe_gain"]["n_better"] == 2
    doc = {"methods": {"net": m}, "data": {"n_pairs": 3, "source": "test"}, "threads": 1,
           "created": "now", "machine": {"platform": "x", "cpu_count": 2}}
    md = accuracy_markdown(doc)
    row = next(l for l in md.splitlines() if l.startswith("| net | +"))
    assert "| +0.0167 |" in row and "| 2 / 3 |" in row and "-0.067" in row
    assert "Gain over the unregistered pairs" in md
