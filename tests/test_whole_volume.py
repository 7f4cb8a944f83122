"""Whole-volume inference (``inference.max_voxels``) and the tile plan beyond it."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikereg_neuro.checkpoint import save_checkpoint
from spikereg_neuro.config import InferenceConfig
from spikereg_neuro.inference import SpikeRegInference, count_calls, register_tensors
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.neuron import NeuronConfig
from spikereg_neuro.model.policy import residual_registration
from spikereg_neuro.model.unet import SpikeRegUNet
from spikereg_neuro.tiling import count_tiles, plan_tiles

TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)


def _net():
    torch.manual_seed(0)
    # readout_scale, readout_levels and binary spikes: the dataclass defaults it was written with
    return SpikeRegUNet(ModelConfig(**TINY, weight_gain=3.0, readout_scale=0.5, readout_levels=1,
                                    neuron=NeuronConfig(graded_spike=False))).eval()


def _pair(shape):
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 1, *shape, generator=g), torch.rand(1, 1, *shape, generator=g)


def test_whole_volume_is_one_call_per_scale_on_the_padded_volume():
    net = _net()
    f, m = _pair((20, 17, 16))
    calls = []

    def predict(a, b):
        calls.append(tuple(a.shape[2:]))
        return net(a, b)

    with torch.inference_mode():
        u = register_tensors(predict, (2, 1), f, m, [16] * 3, [8] * 3, max_voxels=10 ** 6, multiple=8)
        # the same as the policy on the volume zero-padded to a multiple of 16 (8 x scale 2)
        fp, mp = F.pad(f, [0, 0, 0, 15, 0, 12]), F.pad(m, [0, 0, 0, 15, 0, 12])
        ref, _ = residual_registration(net, fp, mp, (2, 1))
    assert calls == [(16, 16, 8), (32, 32, 16)]
    assert u.shape == (1, 3, 20, 17, 16)
    assert torch.equal(u, ref[..., :20, :17, :16])
    assert count_calls((20, 17, 16), (2, 1), [16] * 3, [8] * 3, max_voxels=10 ** 6) == 2


def test_beyond_the_budget_the_fewest_tiles_that_fit_are_used():
    patch, stride = plan_tiles((160, 192, 224), 4_500_000, 8)
    assert np.prod(patch) <= 4_500_000 and all(p % 8 == 0 for p in patch)
    assert count_tiles((160, 192, 224), patch, stride) <= 4
    assert plan_tiles((64, 80, 64), 10 ** 6, 8) == ([64, 80, 64], [64, 80, 64])   # fits: one tile
    with pytest.raises(ValueError, match="max_voxels"):
        plan_tiles((64, 64, 64), 1000, 8, halo=16)
    net = _net()
    f, m = _pair((96, 64, 64))
    seen = []

    def predict(a, b):
        seen.append(a.shape[0] * a.shape[2:].numel())   # voxels in this call
        return net(a, b)

    with torch.inference_mode():
        u = register_tensors(predict, (1,), f, m, [16] * 3, [8] * 3, max_voxels=200_000, multiple=8)
    assert u.shape == (1, 3, 96, 64, 64) and torch.isfinite(u).all()
    assert len(seen) > 1 and max(seen) <= 200_000      # every call within the budget


def test_inference_settings_from_checkpoint_and_api(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _net(), {"inference": {"patch_size": 16, "stride": 8}})
    reg = SpikeRegInference(path)
    assert reg.max_voxels == InferenceConfig().max_voxels and reg.patch == [16] * 3
    assert SpikeRegInference(path, patch_size=16).max_voxels == 0        # explicit tiles
    assert SpikeRegInference(path, max_voxels=0).max_voxels == 0
    rng = np.random.default_rng(0)
    f, m = rng.random((20, 17, 16)).astype(np.float32), rng.random((20, 17, 16)).astype(np.float32)
    whole, tiled = reg.register(f, m), SpikeRegInference(path, max_voxels=0).register(f, m)
    assert whole.shape == tiled.shape == (3, 20, 17, 16)
    assert np.isfinite(whole).all() and not np.array_equal(whole, tiled)
    for bad in ({"max_voxels": -1}, {"stride": 40}, {"batch_size": 0}, {"max_voxels": 1.5}):
        with pytest.raises(ValueError, match="inference"):
            InferenceConfig(**bad)


def test_inference_config_from_checkpoint_rule():
    # one rule for every stage: recorded keys over the defaults; a recorded patch without a
    # stride tiles at half the patch (older checkpoints)
    assert InferenceConfig.from_checkpoint({}) == InferenceConfig()
    old = InferenceConfig.from_checkpoint({"inference": {"patch_size": 24}})
    assert (old.patch3, old.stride3) == ([24] * 3, [12] * 3)
    new = InferenceConfig.from_checkpoint({"inference": {"patch_size": 24, "stride": 24, "batch_size": 2}})
    assert (new.stride3, new.batch_size) == ([24] * 3, 2)
    with pytest.raises(ValueError, match="inference"):
        InferenceConfig.from_checkpoint({"inference": {"patch_size": 24, "tile": 3}})
