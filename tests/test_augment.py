"""Training-time augmentation (data/augment.py) and fine-tuning from a checkpoint (--init)."""
import numpy as np
import pytest
import torch
import yaml

from spikereg_neuro.checkpoint import read_checkpoint, save_checkpoint
from spikereg_neuro.cli import main
from spikereg_neuro.config import Config, load_config
from spikereg_neuro.data import RegistrationPairs, build_dataset
from spikereg_neuro.data.augment import AugmentConfig, augment_pair, random_transform, synth_contrast
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.unet import SpikeRegUNet
from spikereg_neuro.registration.metrics import jacobian_determinant
from spikereg_neuro.train.run import init_weights
from spikereg_neuro.train.trainer import SpikeRegTrainer

SHAPE = (16, 24, 16)


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(1, 1, *SHAPE, dtype=torch.int64)
    lab[..., 4:12, 6:18, 4:12] = 1
    lab[..., 6:10, 9:15, 6:10] = 2
    lab[..., 8:12, 6:10, 4:8] = 3
    img = lab.float() / 3 + 0.05 * torch.rand(1, 1, *SHAPE, generator=g)
    return {"fixed": img, "moving": img.clone(), "fixed_labels": lab, "moving_labels": lab.clone(),
            "pair": torch.tensor([[0, 1]])}


def test_config_validation():
    with pytest.raises(ValueError, match="p_deform"):
        AugmentConfig(p_deform=1.5)
    with pytest.raises(ValueError, match="velocity"):
        AugmentConfig(velocity=[[0.5, 1.0]])
    with pytest.raises(ValueError, match="velocity"):
        AugmentConfig(velocity=[3])
    with pytest.raises(ValueError, match="enabled"):
        AugmentConfig(enabled="yes")
    with pytest.raises(ValueError, match="unknown keys in 'augment'"):
        AugmentConfig.from_dict({"rotate": 3})
    c = AugmentConfig.from_dict(AugmentConfig(enabled=True, rotation_deg=2).to_dict())
    assert c.enabled and c.rotation_deg == 2
    assert Config.from_dict({"augment": {"enabled": True}}).augment.enabled
    assert not Config().augment.enabled          # off unless a config turns it on


def test_zero_magnitudes_give_the_identity_and_shift_a_translation():
    rng = np.random.default_rng(0)
    still = AugmentConfig(velocity=[[8, 0.0]], rotation_deg=0, scale=0, shift_vox=0)
    assert torch.count_nonzero(random_transform(SHAPE, still, rng)) == 0
    shift = AugmentConfig(velocity=[[8, 0.0]], rotation_deg=0, scale=0, shift_vox=2.0)
    u = random_transform(SHAPE, shift, rng)
    t = u[0, :, 0, 0, 0]
    assert torch.allclose(u, t.view(1, 3, 1, 1, 1).expand_as(u), atol=1e-4)    # one vector everywhere
    assert float(t.abs().max()) <= 2.0 + 1e-4 and float(t.abs().max()) > 0


def test_random_transforms_are_folding_free_and_sized_by_the_config():
    rng = np.random.default_rng(1)
    cfg = AugmentConfig()
    mags = []
    for _ in range(4):
        u = random_transform(SHAPE, cfg, rng)
        assert u.shape == (1, 3, *SHAPE)
        assert float(jacobian_determinant(u[0].numpy()).min()) > 0
        mags.append(float(u.norm(dim=1).max()))
    bound = sum(m for _, m in cfg.velocity) + cfg.shift_vox * 3 ** 0.5 + 0.5 * max(SHAPE) * (
        cfg.scale + np.deg2rad(cfg.rotation_deg) * 3)
    assert 0 < max(mags) < bound


def test_augment_pair_keeps_labels_integer_and_is_reproducible():
    cfg = AugmentConfig(enabled=True, p_deform=1.0, p_contrast=1.0)
    b = _pair()
    a1 = augment_pair(b, cfg, np.random.default_rng(5))
    a2 = augment_pair(b, cfg, np.random.default_rng(5))
    for k in ("fixed", "moving", "fixed_labels", "moving_labels"):
        assert torch.equal(a1[k], a2[k]), k
    assert a1["fixed_labels"].dtype == torch.int64
    assert set(a1["moving_labels"].unique().tolist()) <= {0, 1, 2, 3}
    assert not torch.equal(a1["fixed_labels"], a1["moving_labels"])    # each side deformed anew
    for k in ("fixed", "moving"):
        assert float(a1[k].min()) >= 0 and float(a1[k].max()) <= 1
    assert torch.equal(a1["pair"], b["pair"])
    with pytest.raises(ValueError, match="true field"):
        augment_pair({**b, "true_field": torch.zeros(1, 3, *SHAPE)}, cfg, np.random.default_rng(0))


def test_synth_contrast_draws_one_intensity_table_for_both_volumes():
    b = _pair()
    cfg = AugmentConfig(noise_std=0.0, blur_sigma=0.0, bias_strength=0.0, gamma_range=(1.0, 1.0))
    f, m = synth_contrast([b["fixed_labels"], b["moving_labels"]], cfg, np.random.default_rng(2))
    lab = b["fixed_labels"]
    for k in range(4):    # without noise, blur, bias and gamma: one value per label, the same in both
        vals = f[lab == k]
        assert float(vals.max() - vals.min()) < 1e-6
        assert torch.allclose(vals, m[b["moving_labels"] == k][: vals.numel()])


def test_init_weights_takes_the_trained_synapses_and_keeps_the_new_neurons(tmp_path):
    small = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
    torch.manual_seed(0)
    src = SpikeRegUNet(ModelConfig(**small))
    save_checkpoint(tmp_path / "src.pt", src, {})
    dst = SpikeRegUNet(ModelConfig(**small, input_once=True))
    init_weights(dst, str(tmp_path / "src.pt"))
    s, d = dict(src.named_parameters()), dict(dst.named_parameters())
    assert torch.equal(d["enc.1.synapse.weight"], s["enc.1.synapse.weight"])
    # the held input current is 1/current_decay (2x) smaller than the re-sent one: weights doubled
    assert torch.equal(d["enc.0.synapse.weight"], (2 * s["enc.0.synapse.weight"]).clamp(-4, 254 / 64))
    assert dst.enc[0].neuron.device_params["iDecay"] == 1       # the new model's own neuron
    other = SpikeRegUNet(ModelConfig(**{**small, "enc_channels": (4, 4, 8, 16)}))
    with pytest.raises(ValueError, match="differs from the config"):
        init_weights(other, str(tmp_path / "src.pt"))


def test_augmented_training_resumes_bitwise_and_init_conflicts_with_resume(tmp_path):
    conf = {
        "data": {"voxel_size_mm": 8.0, "shape": [16, 24, 16], "n_train": 3, "n_val": 2, "n_test": 2, "seed": 3},
        "model": {"enc_channels": [4, 4, 8, 8], "dec_channels": [8, 4, 4], "enc_windows": [4, 3, 2, 2],
                  "dec_window": 2, "scales": [1], "input_once": True},
        "train": {"patch_size": 16, "batch_size": 1, "steps_per_epoch": 2, "epochs": 2, "seed": 0,
                  "val_pairs": 1},
        "inference": {"patch_size": 16, "stride": 8, "batch_size": 2},
        "augment": {"enabled": True, "p_deform": 1.0, "p_contrast": 0.5},
    }
    cfg_path = tmp_path / "aug.yaml"
    cfg_path.write_text(yaml.safe_dump(conf))
    cache = str(tmp_path / "cache")
    common = ["--cache", cache, "--no-progress"]
    assert main(["train", "--config", str(cfg_path), "--out", str(tmp_path / "a")] + common) == 0
    # the interrupted run: planned for 2 epochs, stopped after the first, resumed by the CLI
    cfg = load_config(cfg_path)
    h5 = build_dataset(cfg.data, cache, progress=False)
    torch.manual_seed(cfg.train.seed)
    tr = SpikeRegTrainer(SpikeRegUNet(cfg.model), cfg, tmp_path / "b", progress=False)
    loader = torch.utils.data.DataLoader(RegistrationPairs(h5, "train"), batch_size=1, shuffle=True,
                                         generator=torch.Generator().manual_seed(cfg.train.seed))
    tr.train(loader, torch.utils.data.DataLoader(RegistrationPairs(h5, "val"), batch_size=1), num_epochs=1)
    assert main(["train", "--resume", str(tmp_path / "b" / "last.pt"), "--out", str(tmp_path / "b")] + common) == 0
    a, b = read_checkpoint(tmp_path / "a" / "last.pt"), read_checkpoint(tmp_path / "b" / "last.pt")
    assert a["rng"]["augment"] == b["rng"]["augment"]
    # the second half saw the same augmented pairs, so the same losses
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert main(["train", "--config", str(cfg_path), "--init", str(tmp_path / "a" / "last.pt"),
                 "--resume", str(tmp_path / "a" / "last.pt"), "--out", str(tmp_path / "c")] + common) == 1
    assert cfg.augment.enabled and cfg.model.input_once
