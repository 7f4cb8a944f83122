"""Whole-volume vs tiled inference of the shipped model on the embedded test pairs.

    python scripts/compare_tiling.py [--threads 1] [--out out/compare_tiling.json]

Per pair: Dice of both, the mean and maximum difference of the two fields (voxels), and the
seconds of each registration (one thread by default). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spikereg_neuro.commands.benchmark import embedded_pairs, evaluate_pair
from spikereg_neuro.inference import SpikeRegInference


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="out/compare_tiling.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs, _ = embedded_pairs(progress=False)
    regs = {"whole": SpikeRegInference(), "tiled": SpikeRegInference(max_voxels=0)}
    rows = []
    for p in pairs:
        row = {"pair": p["name"], "subjects": p["subjects"]}
        fields = {}
        for name, reg in regs.items():
            t0 = time.perf_counter()
            fields[name] = reg.register(p["fixed"], p["moving"])
            row[f"{name}_seconds"] = time.perf_counter() - t0
            row[f"{name}_dice"] = evaluate_pair(p, fields[name])["dice"]
        d = np.linalg.norm(fields["whole"] - fields["tiled"], axis=0)
        row.update(field_diff_mean=float(d.mean()), field_diff_max=float(d.max()))
        rows.append(row)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("pair", "subjects")}
    print("mean", " ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "pairs": rows, "mean": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
