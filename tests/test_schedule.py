"""The learning-rate schedule shared by the SpikeReg trainer and the VoxelMorph baseline (tiny data)."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from spikereg_neuro.config import Config, TrainConfig
from spikereg_neuro.data import DataConfig, build_dataset
from spikereg_neuro.train.schedule import LRSchedule, cosine_lr, resumed_total

TINY_DATA = dict(voxel_size_mm=8.0, shape=(16, 24, 16), n_train=3, n_val=2, n_test=2, seed=0)
TINY_VXM = dict(nb_features=(4, 4, 4), integration_steps=2)  # size multiple 8, fast


def test_cosine_values_and_constant():
    """Cosine from the base to 0 at the end, 0 past it; constant stays at the base."""
    s = LRSchedule("cosine", 1e-3, 4)
    assert [s.lr_at(k) for k in range(6)] == pytest.approx([1e-3, 1e-3 * (1 + math.cos(math.pi / 4)) / 2,
                                                           5e-4, 1e-3 * (1 - math.cos(math.pi / 4)) / 2,
                                                           0.0, 0.0])
    assert s.lr_at(-1) == 1e-3 and cosine_lr(2.0, 3, 0) == 2.0
    assert LRSchedule("constant", 3e-4, 4).lr_at(99) == 3e-4
    groups = [{"lr": 1.0}, {"lr": 2.0}]
    assert s.apply(groups, 2) == pytest.approx(5e-4) and all(g["lr"] == s.lr_at(2) for g in groups)
    assert s.state(2) == {"kind": "cosine", "step": 2, "total_steps": 4, "base_lr": 1e-3}
    with pytest.raises(ValueError, match="lr_schedule"):
        LRSchedule("linear", 1e-3, 4)


def test_from_train_and_resumed_total():
    """The config keys of both trainers; a resume keeps the end, a longer plan moves it."""
    tc = TrainConfig(steps_per_epoch=5, epochs=3, lr=2e-4)
    s = LRSchedule.from_train(tc)
    assert (s.kind, s.base_lr, s.total_steps) == ("cosine", 2e-4, 15)
    assert resumed_total(10, 2, 3, 5) == 15 and resumed_total(10, 2, 4, 5) == 20
    assert resumed_total(10, 2, 1, 5) == 10  # plan already passed: the end is now


def test_spikereg_trainer_uses_the_schedule(tmp_path):
    from spikereg_neuro.model.unet import SpikeRegUNet
    from spikereg_neuro.train.trainer import SpikeRegTrainer

    cfg = Config(train=TrainConfig(steps_per_epoch=3, epochs=2, lr=1e-3))
    tr = SpikeRegTrainer(SpikeRegUNet(cfg.model), cfg, out_dir=tmp_path, progress=False)
    ref = LRSchedule("cosine", 1e-3, 6)
    assert tr.schedule == ref and [tr.lr_at(k) for k in range(8)] == [ref.lr_at(k) for k in range(8)]
    assert tr._extra()["scheduler"] == ref.state(0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("voxelmorph")
    cache = tmp_path_factory.mktemp("cache")
    cfg = DataConfig(**TINY_DATA)
    build_dataset(cfg, cache, progress=False)
    return cfg, cache


def _conf(data: DataConfig, epochs: int = 2) -> Config:
    return Config(data=data, train=TrainConfig(patch_size=8, batch_size=1, steps_per_epoch=2, epochs=epochs,
                                               ncc_window=3, lr=1e-3, val_pairs=1, seed=0))


def _train(tiny, out, **kw):
    from spikereg_neuro.baselines.voxelmorph import VoxelMorphConfig, train_voxelmorph

    data, cache = tiny
    kw.setdefault("config", _conf(data))
    return train_voxelmorph(out_dir=out, vxm_config=VoxelMorphConfig(**TINY_VXM), cache_dir=cache,
                            progress=False, **kw)


def _lrs(out):
    with open(out / "train_log.csv") as fh:
        return [float(r["lr"]) for r in csv.DictReader(fh)]


def test_voxelmorph_lr_follows_the_schedule(tiny, tmp_path):
    """The logged per-epoch mean rate is the schedule's, cosine over epochs x steps_per_epoch."""
    s = _train(tiny, tmp_path / "a")
    ref = LRSchedule("cosine", 1e-3, 4)
    assert s["schedule"] == ref.state(4) and s["steps"] == s["steps_run"] == 4
    assert _lrs(tmp_path / "a") == pytest.approx([(ref.lr_at(0) + ref.lr_at(1)) / 2,
                                                 (ref.lr_at(2) + ref.lr_at(3)) / 2])
    ckpt = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert "resume" not in ckpt  # best.pt: weights + record only
    conf = _conf(tiny[0])
    conf.train.lr_schedule = "constant"
    _train(tiny, tmp_path / "c", config=conf, steps=2)
    assert _lrs(tmp_path / "c") == [1e-3]


@pytest.mark.parametrize("stop", [2, 3])  # at an epoch end, inside an epoch
def test_voxelmorph_resume_is_bitwise(tiny, tmp_path, stop):
    """``stop`` steps of the 4-step plan, then ``resume`` == 4 steps in one go (same cosine end)."""
    from spikereg_neuro.baselines.voxelmorph import train_voxelmorph

    a = _train(tiny, tmp_path / "a")
    _train(tiny, tmp_path / "b", steps=stop)
    b = train_voxelmorph(resume=tmp_path / "b" / "last.pt", out_dir=tmp_path / "b", cache_dir=tiny[1],
                         progress=False)  # no config: the checkpoint's; no steps: its plan
    assert b["steps"] == 4 and b["steps_run"] == 4 - stop and b["schedule"] == a["schedule"]
    ka = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    kb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k, v in ka["state_dict"].items():
        assert torch.equal(v, kb["state_dict"][k]), k
    for k, v in ka["resume"]["optimizer"]["state"].items():
        assert all(torch.equal(v[n], kb["resume"]["optimizer"]["state"][k][n]) for n in v), k
    assert ka["resume"]["rng"]["numpy"] == kb["resume"]["rng"]["numpy"]
    assert torch.equal(ka["resume"]["rng"]["loader_epoch_start"], kb["resume"]["rng"]["loader_epoch_start"])
    assert ka["scheduler"] == kb["scheduler"] == {"kind": "cosine", "step": 4, "total_steps": 4, "base_lr": 1e-3}
    if stop == 2:  # resumed at an epoch end: the same log, the csv appended
        assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
        assert _lrs(tmp_path / "b") == _lrs(tmp_path / "a")


def test_voxelmorph_resume_errors(tiny, tmp_path):
    from spikereg_neuro.baselines.voxelmorph import train_voxelmorph

    _train(tiny, tmp_path / "a", steps=2)
    with pytest.raises(ValueError, match="holds no optimiser"):
        train_voxelmorph(resume=tmp_path / "a" / "best.pt", out_dir=tmp_path / "x", cache_dir=tiny[1],
                         progress=False)
    with pytest.raises(ValueError, match="not both"):
        _train(tiny, tmp_path / "x", init=tmp_path / "a" / "best.pt", resume=tmp_path / "a" / "last.pt")
    with pytest.raises(ValueError, match="already at step 2"):
        train_voxelmorph(resume=tmp_path / "a" / "last.pt", out_dir=tmp_path / "x", steps=2,
                         cache_dir=tiny[1], progress=False)


def test_cli_train_voxelmorph_init_resume_flags_refuse_in_one_line(tmp_path, capsys):
    from spikereg_neuro.cli import main

    ck = tmp_path / "a.pt"
    ck.write_bytes(b"x")
    assert main(["baseline", "train-voxelmorph", "--out", str(tmp_path / "o"), "--init", str(ck),
                 "--resume", str(ck)]) == 1
    assert "exclude each other" in capsys.readouterr().err
    assert main(["baseline", "train-voxelmorph", "--out", str(tmp_path / "o"), "--init", str(tmp_path / "no.pt")]) == 1
    err = capsys.readouterr().err
    assert "--init: no checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
