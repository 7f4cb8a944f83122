"""Inference time of each network at fixed sizes (pytest-benchmark).

Run::

    pytest benchmarks/ --benchmark-only                     # patch and whole-volume cases
    SPIKEREG_BENCH_VOLUME=1 pytest benchmarks/ --benchmark-only   # + SpikeReg by 32^3 tiles (slow)

Each network uses its shipped checkpoint when it exists and untrained weights of the default
architecture otherwise (the time does not depend on the weights much). torch runs on one CPU
thread (benchmarks/conftest.py), like ``benchmark accuracy``'s default.

Cases
    * ``patch``: one network call on a 32^3 (fixed, moving) patch pair, batch 1;
    * ``volume``: the whole default 64x72x64 volume as a method registers it: VoxelMorph in one
      pass (padded to 64x80x64), SpikeReg with its residual scales (2, 1), one network call per
      scale on the volume padded to 64x80x64 (``inference.max_voxels``);
    * ``volume_tiled`` (opt-in): SpikeReg by 32^3 tiles of stride 16 (38 network calls), the
      way calibration, Lava and the Loihi cost model run it.
"""
from __future__ import annotations

import os

import pytest
import torch

PATCH = (32, 32, 32)
VOLUME = (64, 72, 64)


def _pair(shape):
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 1, *shape, generator=g), torch.rand(1, 1, *shape, generator=g)


@pytest.fixture(scope="module")
def vxm_net():
    pytest.importorskip("voxelmorph")
    from spikereg_neuro.baselines.voxelmorph import (DEFAULT_VOXELMORPH_MODEL, build_voxelmorph,
                                                     load_voxelmorph)

    if DEFAULT_VOXELMORPH_MODEL.is_file():
        net, _ = load_voxelmorph(DEFAULT_VOXELMORPH_MODEL)
    else:
        net = build_voxelmorph().eval()
    return net


@pytest.fixture(scope="module")
def spikereg_net():
    from spikereg_neuro.checkpoint import DEFAULT_MODEL, load_network
    from spikereg_neuro.config import load_config
    from spikereg_neuro.model.unet import SpikeRegUNet

    if DEFAULT_MODEL.is_file():
        net, _ = load_network(DEFAULT_MODEL)
    else:
        net = SpikeRegUNet(load_config().model)
    return net.eval()


def _run(benchmark, fn, rounds=3, warmup=1):
    with torch.no_grad():
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)


def test_voxelmorph_patch(benchmark, vxm_net):
    from spikereg_neuro.baselines.voxelmorph import predict_field

    f, m = _pair(PATCH)
    u = _run(benchmark, lambda: predict_field(vxm_net, f, m), rounds=5)
    assert u.shape == (1, 3, *PATCH)


def test_voxelmorph_volume(benchmark, vxm_net):
    from spikereg_neuro.baselines.voxelmorph import predict_field

    f, m = _pair(VOLUME)
    u = _run(benchmark, lambda: predict_field(vxm_net, f, m))
    assert u.shape == (1, 3, *VOLUME)


def test_spikereg_patch(benchmark, spikereg_net):
    f, m = _pair(PATCH)
    u = _run(benchmark, lambda: spikereg_net(f, m))
    assert u.shape == (1, 3, *PATCH)


def test_spikereg_volume(benchmark, spikereg_net):
    from spikereg_neuro.config import DEFAULT_MAX_VOXELS
    from spikereg_neuro.inference import register_tensors

    f, m = _pair(VOLUME)
    u = _run(benchmark, lambda: register_tensors(spikereg_net, spikereg_net.cfg.scales, f, m,
                                                 [32] * 3, [16] * 3, 4,
                                                 integration_steps=spikereg_net.cfg.integration_steps,
                                                 max_voxels=DEFAULT_MAX_VOXELS, multiple=8))
    assert u.shape == (1, 3, *VOLUME)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SPIKEREG_BENCH_VOLUME") != "1",
                    reason="several seconds per call on one core; set SPIKEREG_BENCH_VOLUME=1")
def test_spikereg_volume_tiled(benchmark, spikereg_net):
    from spikereg_neuro.inference import register_tensors

    f, m = _pair(VOLUME)
    u = _run(benchmark, lambda: register_tensors(spikereg_net, spikereg_net.cfg.scales, f, m,
                                                 [32] * 3, [16] * 3, 4,
                                                 integration_steps=spikereg_net.cfg.integration_steps),
             rounds=1, warmup=0)
    assert u.shape == (1, 3, *VOLUME)
