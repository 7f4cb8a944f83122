"""Training throughput (pytest-benchmark): one optimisation step of the packaged config.

Run::

    pytest benchmarks/test_bench_train.py --benchmark-only

A step is what ``spikereg-neuro train`` does per batch: ``batch_size`` 32^3 patch pairs (random
volumes with 19 random labels, so the Dice term runs), both residual iterations forward and
backward through the surrogate gradients, the losses, the optimizer. torch runs on one CPU
thread (benchmarks/conftest.py). Steps/s is ``1 / mean``.
"""
from __future__ import annotations

import tempfile

import torch


def training_step_fixture():
    """A trainer on the packaged config and one batch of random patches."""
    from spikereg_neuro.config import load_config
    from spikereg_neuro.model.unet import SpikeRegUNet
    from spikereg_neuro.train.trainer import SpikeRegTrainer

    cfg = load_config()
    torch.manual_seed(0)
    net = SpikeRegUNet(cfg.model)
    tr = SpikeRegTrainer(net, cfg, tempfile.mkdtemp(prefix="bench-train-"), progress=False)
    g = torch.Generator().manual_seed(0)
    n, p = cfg.train.batch_size, cfg.train.patch_size
    batch = {"fixed": torch.rand(n, 1, p, p, p, generator=g), "moving": torch.rand(n, 1, p, p, p, generator=g),
             "fixed_labels": torch.randint(0, 19, (n, 1, p, p, p), generator=g),
             "moving_labels": torch.randint(0, 19, (n, 1, p, p, p), generator=g)}
    return tr, batch


def test_training_step(benchmark):
    tr, batch = training_step_fixture()
    tr.step(batch)   # warm-up
    stats = benchmark.pedantic(lambda: tr.step(batch), rounds=3, iterations=1, warmup_rounds=0)
    assert all(v == v for v in stats.values())   # finite losses, no NaN
