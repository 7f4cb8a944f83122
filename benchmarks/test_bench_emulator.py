"""The bit-accurate integer emulator (``calibration.emulator``): the fast engine against the
reference step loop, on the shipped network (pytest-benchmark, and a plain script for
whole-process timing).

Run::

    pytest benchmarks/test_bench_emulator.py --benchmark-only                 # fast engine, ~1 min
    SPIKEREG_BENCH_EMULATOR_REFERENCE=1 pytest benchmarks/test_bench_emulator.py --benchmark-only
    python benchmarks/test_bench_emulator.py --case pair --engine fast        # one run, prints seconds

Cases
    * ``patch``: one 32^3 patch (the centred patch of demo test pair 0), batch 1;
    * ``pair``: the whole 64x72x64 pair through ``register_tensors`` (residual scales (2, 1),
      32^3 tiles at stride 16: 38 patches, batches of 4) - today's host pipeline;
    * ``volume``: the network work of whole-volume inference: one call on the pair at scale 2
      (32x40x32, zero-padded to the size multiple) and one at scale 1 (64x72x64), no tiling;
    * ``whole``: the pair through ``register_tensors(..., max_voxels=...)``: each residual
      iteration runs the emulator once on the whole (padded 64x80x64 / 32x40x32) volume.

The network is ``SPIKEREG_BENCH_NET`` (a net.h5 from ``spikereg-neuro calibrate``) when set, else
``out/calibration/net.h5`` if present, else the shipped model quantized with the default weight
exponents. torch runs on one thread (``SPIKEREG_BENCH_THREADS``). The reference cases are opt-in
(``SPIKEREG_BENCH_EMULATOR_REFERENCE=1``: ~1 s a patch, ~40 s a tiled pair on one core).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Tuple

import pytest
import torch
import torch.nn.functional as F

PATCH = (32, 32, 32)
#: whole-volume inference's per-call budget in the ``whole`` case (4.5 M voxels, the default)
WHOLE_MAX_VOXELS = 4_500_000
REFERENCE = os.environ.get("SPIKEREG_BENCH_EMULATOR_REFERENCE") == "1"
ROOT = Path(__file__).resolve().parents[1]


def load_bench_qnet(path: str = ""):
    """The network to time and where it came from (see the module docstring)."""
    from calibration.netfile import load_qnet
    from calibration.quantize import quantize_network
    from spikereg_neuro.checkpoint import DEFAULT_MODEL, load_network

    path = path or os.environ.get("SPIKEREG_BENCH_NET", "")
    if not path and (ROOT / "out" / "calibration" / "net.h5").is_file():
        path = str(ROOT / "out" / "calibration" / "net.h5")
    if path:
        return load_qnet(path), path
    net, _ = load_network(DEFAULT_MODEL)
    return quantize_network(net.eval(), source_checkpoint=str(DEFAULT_MODEL)), "shipped model, default exponents"


def load_bench_pair(q) -> Tuple[torch.Tensor, torch.Tensor]:
    """Demo test pair 0 of the network's data set, normalised, ``(1, 1, D, H, W)`` each."""
    from spikereg_neuro.data import build_dataset, load_pairs_numpy
    from spikereg_neuro.data.dataset import DataConfig
    from spikereg_neuro.inference import normalize_intensity

    params = (q.calibration or {}).get("dataset_params")
    h5 = build_dataset(DataConfig.from_dict(params) if params else DataConfig(), progress=False)
    pr = load_pairs_numpy(h5, "test")[0]
    f = torch.from_numpy(normalize_intensity(pr["fixed"]))[None, None]
    m = torch.from_numpy(normalize_intensity(pr["moving"]))[None, None]
    return f, m


def _centre(x: torch.Tensor, size) -> torch.Tensor:
    o = [(n - s) // 2 for n, s in zip(x.shape[2:], size)]
    return x[..., o[0]:o[0] + size[0], o[1]:o[1] + size[1], o[2]:o[2] + size[2]].contiguous()


def _pad_to_multiple(x: torch.Tensor, k: int) -> torch.Tensor:
    pads = []
    for n in reversed(x.shape[2:]):
        pads += [0, -(-n // k) * k - n]
    return F.pad(x, pads)


def predictor(q, engine: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``emulator_predictor`` for ``engine='fast'``; the same predictor on the reference loop."""
    from calibration.emulator import emulate_reference, emulator_predictor, payload_of

    if engine == "fast":
        return emulator_predictor(q)
    if engine != "reference":
        raise ValueError(f"engine must be fast or reference, got {engine!r}")
    return lambda f, m: emulate_reference(q, payload_of(q, f.cpu(), m.cpu())).field.to(f.device)


def run_case(q, case: str, engine: str, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """One timed unit of work: the field it produces."""
    from spikereg_neuro.inference import register_tensors

    pred = predictor(q, engine)
    if case == "patch":
        return pred(_centre(f, PATCH), _centre(m, PATCH))
    if case == "pair":
        return register_tensors(pred, q.scales, f, m, q.patch_size, q.stride, 4,
                                integration_steps=q.integration_steps)
    if case == "whole":
        return register_tensors(pred, q.scales, f, m, q.patch_size, q.stride, 1,
                                integration_steps=q.integration_steps, max_voxels=WHOLE_MAX_VOXELS,
                                multiple=q.size_multiple)
    if case == "volume":
        k = q.size_multiple
        out = None
        for s in sorted(q.scales, reverse=True):
            fs = F.avg_pool3d(f, s) if s > 1 else f
            ms = F.avg_pool3d(m, s) if s > 1 else m
            out = pred(_pad_to_multiple(fs, k), _pad_to_multiple(ms, k))
        return out
    raise ValueError(f"case must be patch, pair, whole or volume, got {case!r}")


# ============================================================================ pytest-benchmark
@pytest.fixture(scope="module")
def bench():
    q, src = load_bench_qnet()
    f, m = load_bench_pair(q)
    return q, src, f, m


def _bench(benchmark, bench, case: str, engine: str, rounds: int) -> torch.Tensor:
    q, src, f, m = bench
    with torch.no_grad():
        u = benchmark.pedantic(lambda: run_case(q, case, engine, f, m), rounds=rounds, iterations=1,
                               warmup_rounds=1 if case == "patch" else 0)
    benchmark.extra_info.update({"net": src, "case": case, "engine": engine, "threads": torch.get_num_threads(),
                                 "volume": list(f.shape[2:])})
    return u


def test_emulator_patch(benchmark, bench):
    u = _bench(benchmark, bench, "patch", "fast", 5)
    assert u.shape == (1, 3, *PATCH)


def test_emulator_pair_tiled(benchmark, bench):
    u = _bench(benchmark, bench, "pair", "fast", 2)
    assert u.shape == (1, 3, *bench[2].shape[2:])


def test_emulator_pair_whole_volume(benchmark, bench):
    u = _bench(benchmark, bench, "whole", "fast", 2)
    assert u.shape == (1, 3, *bench[2].shape[2:])


def test_emulator_volume_whole(benchmark, bench):
    u = _bench(benchmark, bench, "volume", "fast", 2)
    assert u.shape[2:] == _pad_to_multiple(bench[2], bench[0].size_multiple).shape[2:]


@pytest.mark.skipif(not REFERENCE, reason="reference loop: set SPIKEREG_BENCH_EMULATOR_REFERENCE=1")
def test_emulator_patch_reference(benchmark, bench):
    u = _bench(benchmark, bench, "patch", "reference", 3)
    q, _, f, m = bench
    assert torch.equal(u, run_case(q, "patch", "fast", f, m))   # the same field, bit for bit


@pytest.mark.slow
@pytest.mark.skipif(not REFERENCE, reason="reference loop: set SPIKEREG_BENCH_EMULATOR_REFERENCE=1")
def test_emulator_pair_tiled_reference(benchmark, bench):
    u = _bench(benchmark, bench, "pair", "reference", 1)
    q, _, f, m = bench
    assert torch.equal(u, run_case(q, "pair", "fast", f, m))


# ============================================================================ script
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Time one emulator case once (whole-process timing).")
    ap.add_argument("--case", choices=("patch", "pair", "whole", "volume"), default="pair")
    ap.add_argument("--engine", choices=("fast", "reference"), default="fast")
    ap.add_argument("--net", default="", help="net.h5 (default: see the module docstring)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    q, src = load_bench_qnet(a.net)
    f, m = load_bench_pair(q)
    t0 = time.perf_counter()
    with torch.no_grad():
        u = run_case(q, a.case, a.engine, f, m)
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"{a.case} {a.engine}: {secs:.3f} s, field {tuple(u.shape)} sum|u| {float(u.abs().sum()):.6f}, "
          f"peak RSS {rss:.2f} GiB, net {src}, {a.threads} thread(s)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
