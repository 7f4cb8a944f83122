"""Time one registration of a large random pair with the shipped model (default 160 x 192 x 224).

    /usr/bin/time -v python scripts/register_large.py [--shape D H W] [--threads 2] [--max-voxels N]

Prints the seconds, the network calls and the tiles per call; run it under ``/usr/bin/time -v``
for the peak resident memory.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spikereg_neuro.inference import SpikeRegInference, count_calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[160, 192, 224])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-voxels", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reg = SpikeRegInference(max_voxels=args.max_voxels)
    g = np.random.default_rng(0)
    f = g.random(args.shape, dtype=np.float32)
    m = np.roll(f, 2, axis=0)
    calls = count_calls(args.shape, reg.net.cfg.scales, reg.patch, reg.stride, reg.max_voxels, reg.multiple)
    t0 = time.perf_counter()
    u = reg.register(f, m)
    print(f"shape {tuple(args.shape)} threads {args.threads} max_voxels {reg.max_voxels}: "
          f"{time.perf_counter() - t0:.1f} s, {calls} network calls, |u| mean {np.linalg.norm(u, axis=0).mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
