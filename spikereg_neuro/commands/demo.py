"""``spikereg-neuro demo``: the main job on the embedded data and the shipped model."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the embedded demo set and register its held-out pairs",
                       description="Build (or reuse) the embedded demo dataset, register every held-out "
                                   "test pair with the shipped SpikeReg model and print Dice before/after, "
                                   "HD95 and folding per pair and their mean.")
    p.add_argument("--model", help="SpikeReg checkpoint (default: the shipped model)")
    p.add_argument("--config", help="YAML config whose data section defines the demo set (default: the model's)")
    p.add_argument("--cache", help="dataset cache directory")
    p.add_argument("--out", default="out/demo", help="where demo_results.json goes (default out/demo)")
    p.add_argument("--pairs", type=int, default=0, help="register only the first N pairs (0: all)")
    p.set_defaults(func=run)


def _fmt(x: float, nd: int = 3) -> str:
    return "  nan" if x != x else f"{x:.{nd}f}"


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import DEFAULT_MODEL, read_checkpoint
    from ..config import load_config
    from ..data import build_dataset, load_pairs_numpy
    from ..data.dataset import DataConfig
    from ..evaluate import evaluate_registration, mean_metrics
    from ..inference import SpikeRegInference
    from ..io.atomic import atomic_write_text
    from ..io.paths import check_output_dir, check_outputs

    if args.pairs < 0:
        raise ValueError(f"--pairs must be >= 0 (0: all pairs), got {args.pairs}")
    model = Path(args.model) if args.model else DEFAULT_MODEL
    out_dir = check_output_dir("--out", args.out)
    check_outputs(inputs={"--model": model, "--config": args.config},
                  outputs={"--out demo_results.json": out_dir / "demo_results.json"})
    if args.config:
        data_cfg = load_config(args.config).data
    elif model.is_file():
        data_cfg = DataConfig.from_dict(read_checkpoint(model).get("data_config") or {})
    else:
        data_cfg = load_config().data
    t0 = time.time()
    quiet = bool(getattr(args, "quiet", False))   # cli._unify_quiet: -q / --no-progress, before or after demo
    h5 = build_dataset(data_cfg, args.cache, progress=not quiet)
    print(f"demo data: {h5} ({time.time() - t0:.1f} s)")
    pairs = load_pairs_numpy(h5, "test")
    if args.pairs:
        pairs = pairs[: args.pairs]
    if not model.is_file():
        raise FileNotFoundError(f"no SpikeReg model at {model}: train one with `spikereg-neuro train` "
                                "and pass --model")
    reg = SpikeRegInference(model, progress=not quiet)
    print(f"model: {model}")
    header = f"{'pair':>9} {'Dice before':>11} {'Dice after':>10} {'HD95 before':>11} {'HD95 after':>10} " \
             f"{'fold %':>7} {'sec':>6}"
    print(header)
    print("-" * len(header))
    records = []
    for p in pairs:
        t = time.time()
        field = reg.register(p["fixed"], p["moving"])
        secs = time.time() - t
        wl = reg.apply_deformation(p["moving_labels"], field, labels=True)
        r = evaluate_registration(p["fixed_labels"], p["moving_labels"], wl, field, p["spacing"])
        r.update(pair=list(p["pair"]), seconds=secs)
        records.append(r)
        name = f"{p['pair'][0]}->{p['pair'][1]}"
        print(f"{name:>9} {_fmt(r['dice_before']):>11} {_fmt(r['dice']):>10} {_fmt(r['hd95_before'], 2):>11} "
              f"{_fmt(r['hd95'], 2):>10} {_fmt(r['folding_pct'], 3):>7} {secs:>6.1f}")
    mean = mean_metrics(records)
    print("-" * len(header))
    print(f"{'mean':>9} {_fmt(mean['dice_before']):>11} {_fmt(mean['dice']):>10} {_fmt(mean['hd95_before'], 2):>11} "
          f"{_fmt(mean['hd95'], 2):>10} {_fmt(mean['folding_pct'], 3):>7} {mean['seconds']:>6.1f}")
    print("Dice: mean over 18 foreground labels; HD95 in mm; folding: % voxels with det J <= 0 "
          "(2-voxel border cropped); CPU wall time per pair.")
    out = Path(args.out)
    doc = {"model": str(model), "data": str(h5), "pairs": records, "mean": mean,
           "voxel_size_mm": data_cfg.voxel_size_mm, "shape": list(data_cfg.shape)}
    atomic_write_text(out / "demo_results.json", json.dumps(doc, indent=2, default=float))
    print(f"wrote {out / 'demo_results.json'}")
    return 0
