"""``spikereg-neuro benchmark ...`` and ``spikereg-neuro baseline ...``.

* ``benchmark accuracy [--data DIR] --out DIR``: every registration method (identity,
  VoxelMorph, SpikeReg, ANTs SyN) on the same held-out pairs, evaluated one way
  (:func:`spikereg_neuro.evaluate.evaluate_registration`); writes ``accuracy.json`` and
  ``accuracy.md``.
* ``baseline train-voxelmorph --out DIR``: train the VoxelMorph baseline with SpikeReg's
  training budget (:func:`spikereg_neuro.baselines.voxelmorph.train_voxelmorph`).

* ``benchmark --out DIR [--pairs N] [--quick] ...`` (no sub-command): the benchmark table
  (:mod:`spikereg_neuro.commands.benchmark_table`): energy, latency, Dice, HD95 and folding of
  every method/platform on the same held-out pairs, each figure labelled measured / estimated;
  writes ``benchmark.json``, ``benchmark.md``, ``report.html`` and ``report/*.png``.

``benchmark`` is a parser with options of its own (the table) and sub-subcommands
(``accuracy``, added by :func:`add_accuracy_parser`).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
from pathlib import Path

from ..accuracy import (ACCURACY_FORMAT, ACCURACY_VERSION, EMBEDDED_SPLITS, METHODS, SpikeRegRegistrar,  # noqa: F401 (API)
                        _clean, _load_pair, _machine, accuracy_benchmark, accuracy_markdown, embedded_pairs,
                        evaluate_pair, folder_pairs, make_registrar, parse_methods, summarize, table_pairs,
                        write_accuracy)


# ============================================================================ parsers
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="the energy / latency / accuracy table (and 'benchmark accuracy')",
                       description="Without a sub-command: the benchmark table (VoxelMorph GPU/CPU, SpikeReg "
                                   "on Loihi 2 (estimated), GPU simulation, CPU, Lava CPU simulation, ANTs SyN, "
                                   "identity) on the same held-out pairs; writes benchmark.json, benchmark.md, "
                                   "report.html and report/*.png to --out and prints the table (docs/benchmark.md). "
                                   "'benchmark accuracy' compares the accuracy of every method only.")
    add_table_options(p)
    bsub = p.add_subparsers(dest="benchmark_command", metavar="BENCHMARK")
    p.set_defaults(func=run_table)
    add_accuracy_parser(bsub)
    add_pareto_parser(bsub)

    b = sub.add_parser("baseline", help="train the learned baselines (VoxelMorph)",
                       description="Baseline methods of the benchmark.")
    bs = b.add_subparsers(dest="baseline_command", metavar="BASELINE_COMMAND")
    b.set_defaults(func=lambda args, _p=b: (_p.print_help(), 2)[1])
    t = bs.add_parser("train-voxelmorph", help="train VoxelMorph with SpikeReg's training budget",
                      description="Train voxelmorph.nn.models.VxmPairwise on the embedded training pairs "
                                  "with the config's patch size, loss, optimiser and number of steps "
                                  "(epochs x steps_per_epoch). Writes best.pt, last.pt, train_log.csv and "
                                  "summary.json to --out.")
    t.add_argument("--config", default=None, help="YAML config (default: the packaged default.yaml)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--steps", type=int, help="total optimiser steps (default: epochs x steps_per_epoch)")
    t.add_argument("--cache", help="dataset cache directory (default $SPIKEREG_CACHE or ~/.cache/spikereg-neuro)")
    t.add_argument("--device", help="override train.device (cpu, cuda)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    t.add_argument("--init", help="fine-tune: start from this VoxelMorph checkpoint's weights (new optimiser and "
                                  "schedule, e.g. the shipped one)")
    t.add_argument("--resume", help="continue a run from its last.pt to the same schedule end (its own config "
                                    "unless --config is given)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=run_train_voxelmorph)


def add_accuracy_parser(bsub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    a = bsub.add_parser(
        "accuracy", help="Dice / HD95 / folding / SDlogJ / time of every method on held-out pairs",
        description="Register the same held-out pairs with every method and evaluate them one way. "
                    "Pairs: the embedded synthetic test pairs (default) or a --data folder (pairs.json "
                    "from 'spikereg-neuro data export', or a Learn2Reg dataset folder). Methods that cannot "
                    "run here (missing package or checkpoint) are skipped with a message. Writes "
                    "accuracy.json (one record per method per pair, plus means) and accuracy.md.")
    a.add_argument("--data", help="pairs.json folder or Learn2Reg dataset folder (default: embedded test pairs)")
    a.add_argument("--split", default=None,
                   help="which pairs: a Learn2Reg pair list of --data (default registration_val), or a split "
                        "of the embedded pairs: test (default) or val (for choosing a model without "
                        "looking at the test pairs)")
    a.add_argument("--out", required=True, help="output directory for accuracy.json and accuracy.md")
    a.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    a.add_argument("--voxelmorph-model", help="VoxelMorph checkpoint (default: the shipped one)")
    a.add_argument("--spikereg-model", help="SpikeReg checkpoint (default: the shipped default model)")
    a.add_argument("--pairs", type=int, help="use only the first N pairs")
    a.add_argument("--config", default=None, help="config whose data section defines the embedded pairs")
    a.add_argument("--cache", help="dataset cache directory (embedded data)")
    a.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch and ITK/ANTs (default 1, for comparable timings)")
    a.add_argument("--ants-transform", default="SyN", help="ants.registration type_of_transform (default SyN)")
    a.add_argument("--ants-iterations", help="SyN reg_iterations per level, e.g. 40,20,10 "
                                             "(default: ANTsPy's 40,20,0)")
    a.add_argument("--device", default="cpu", help="torch device of the network methods")
    a.add_argument("--symmetric", action="store_true",
                   help="run VoxelMorph and SpikeReg both ways and score the inverse-consistent mean of the two "
                        "fields (twice the work; ANTs SyN is symmetric already)")
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(func=run_accuracy)
    return a


def add_pareto_parser(bsub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``benchmark pareto RUN RUN ... --out DIR``: energy vs Dice of several benchmark runs."""
    a = bsub.add_parser("pareto", help="energy vs Dice of several SpikeReg models' benchmark runs",
                        description="Reads the benchmark.json of two or more `benchmark` runs (e.g. models trained "
                                    "with different firing-rate bands, on the same pairs and constants) and writes "
                                    "pareto.json, pareto.md and pareto.png (gross and dynamic Loihi 2 energy against "
                                    "the quantized Dice, the Pareto front joined, VoxelMorph GPU and the identity "
                                    "drawn) to --out.")
    a.add_argument("runs", nargs="+", help="benchmark output folders (or their benchmark.json); a pareto.json (or "
                                           "its folder) adds all of its points, to extend an earlier figure")
    a.add_argument("--labels", help="comma-separated names of the benchmark runs, in order (default: the folder "
                                    "names; a pareto.json's points keep theirs)")
    a.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="rename a point (e.g. one a pareto.json brings); repeatable")
    a.add_argument("--out", required=True, help="output directory")
    a.set_defaults(func=run_pareto)
    return a


def run_pareto(args: argparse.Namespace) -> int:
    from ..profiler import pareto

    labels = None if args.labels is None else [x.strip() for x in args.labels.split(",")]
    renames = [tuple(r.split("=", 1)) if "=" in r else (r, None) for r in args.rename]
    olds = [old for old, _ in renames]
    twice = next((old for old in olds if olds.count(old) > 1), None)
    if twice is not None:
        raise ValueError(f"--rename {twice!r} is given twice: rename each point once")
    pareto.check_outputs(args.out, args.runs)
    doc = pareto.build(args.runs, labels)
    pareto.rename(doc, dict(renames))
    paths = pareto.write(args.out, doc)
    print(pareto.markdown(doc))
    print(f"wrote {paths['json']}, {paths['md']} and {paths['png']}")
    return 0


def add_table_options(p: argparse.ArgumentParser) -> None:
    """Options of the default ``benchmark`` command (the table)."""
    p.add_argument("--out", help="output directory: benchmark.json, benchmark.md, report/ (required for the table)")
    p.add_argument("--data", help="Learn2Reg dataset folder or pairs.json folder of NIfTI pairs with label maps, at the "
                                  "model's voxel size (default: the embedded held-out test pairs)")
    p.add_argument("--split", default="registration_val",
                   help="Learn2Reg pair list of --data (default registration_val; a pairs.json folder has one list)")
    p.add_argument("--pairs", type=int, default=0, help="use the first N held-out test pairs (default: all; --quick: 1)")
    p.add_argument("--quick", action="store_true",
                   help="1 pair, 16^3 Lava patch (what `make demo` runs); figures are the same kind")
    p.add_argument("--net", help="quantized network net.h5 for the Loihi 2 row (default: DIR/net.h5, made by a "
                                 "fast calibration of the SpikeReg model and cached per model sha256)")
    p.add_argument("--calib-pairs", type=int, default=1,
                   help="training pairs of that fast calibration (default 1; `spikereg-neuro calibrate` uses 2)")
    p.add_argument("--spikereg-model", help="SpikeReg checkpoint (default: the shipped model)")
    p.add_argument("--voxelmorph-model", help="VoxelMorph checkpoint (default: the shipped one)")
    p.add_argument("--constants", help="YAML overriding Loihi 2 model constants (see constants_loihi2.yaml)")
    p.add_argument("--gpu-basis", default="h100_sxm_tf32_peak_pj_per_mac",
                   help="energy per MAC of the GPU estimate when no GPU is present "
                        "(h100_sxm_tf32_peak_pj_per_mac (default: PyTorch's cuDNN convs run TF32), "
                        "h100_sxm_fp32_peak_pj_per_mac or horowitz_fp32_mac_pj)")
    p.add_argument("--gpu-record", metavar="FILE",
                   help="NVML measurements recorded on a GPU machine by scripts/gpu_session.py (default: the "
                        "checkout's benchmarks/results/gpu_nvml.json, if there): without a GPU here, the VoxelMorph "
                        "GPU and SLAYER GPU simulation rows use them (measured, labelled with the record's date and "
                        "GPU) when the record is of the same model file (sha256), else keep the estimate")
    p.add_argument("--no-gpu-record", action="store_true",
                   help="do not read a GPU record: without a GPU the GPU rows are the estimates")
    p.add_argument("--loihi-deployment", choices=("whole", "tiles_no_overlap", "tiles"), default="whole",
                   help="how the Loihi 2 rows cover a volume: the whole volume mapped at once on a multi-chip "
                        "system (default), non-overlapping patch tiles, or the overlapping tiles of the CPU "
                        "inference (stride = patch / 2); benchmark.json's loihi2_variants prices all three")
    p.add_argument("--lava-patch", type=int, nargs=3, metavar=("D", "H", "W"), default=[16, 16, 16],
                   help="patch of the Lava CPU run (default 16 16 16)")
    p.add_argument("--lava-timeout", type=float, default=600.0, help="wall-clock limit of the Lava run (s)")
    p.add_argument("--no-lava", action="store_true", help="skip the Lava CPU run (its rows say so)")
    p.add_argument("--lava-run", metavar="RUN_JSON",
                   help="run.json of a measured `simulate --full --backend lava`: the 'Lava, full registration' "
                        "row reads it (measured) instead of the extrapolation (estimated)")
    p.add_argument("--lava-full", action="store_true",
                   help="measure the 'Lava, full registration' row here: pair 0 through Lava (minutes; with "
                        "--quick only a tile-sized centred crop, and the row says so)")
    p.add_argument("--pareto-with", nargs="+", metavar="RUN",
                   help="other benchmark runs (output folders) of other SpikeReg models on the same pairs and "
                        "constants: the report gets an energy-vs-Dice figure of this run's model and theirs "
                        "(report/pareto.png; `benchmark pareto` makes the same from finished runs)")
    p.add_argument("--no-ants", action="store_true", help="skip ANTs SyN (its row says so)")
    p.add_argument("--symmetric", action="store_true",
                   help="VoxelMorph and SpikeReg (float, emulator, Loihi 2 counts, GPU estimates) register each pair "
                        "both ways, the inverse-consistent mean of the two fields: twice the calls and energy")
    p.add_argument("--ants-iterations", help="SyN reg_iterations per level, e.g. 40,20,10 (default ANTsPy's)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the timed runs (default 1)")
    p.add_argument("--config", default=None, help="config whose data section defines the embedded pairs")
    p.add_argument("--cache", help="dataset cache directory")
    p.add_argument("--no-partition-cache", action="store_true",
                   help="cut every Loihi 2 mapping afresh instead of reading DIR/cache/partitions (keyed by the "
                        "network's resources, input shape, limits and the mapper's source)")
    p.add_argument("--no-progress", action="store_true")


def run_table(args: argparse.Namespace) -> int:
    """``spikereg-neuro benchmark --out DIR``: see :mod:`spikereg_neuro.commands.benchmark_table`."""
    from .benchmark_table import run_table as _run
    return _run(args)


def run_accuracy(args: argparse.Namespace) -> int:
    from ..devices import check_threads
    threads = check_threads(args.threads)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(threads))
    import torch
    torch.set_num_threads(threads)

    names = parse_methods(args.methods)
    if args.pairs is not None and args.pairs < 1:
        raise ValueError("--pairs must be >= 1")
    from ..io.paths import check_output_dir
    check_output_dir("--out", args.out)  # before any registration
    progress = not args.no_progress
    if args.data:
        pairs, meta = folder_pairs(args.data, args.split or "registration_val")
    else:
        split = args.split or "test"
        if split not in EMBEDDED_SPLITS:
            raise ValueError(f"--split {split!r}: the embedded pairs have the splits {list(EMBEDDED_SPLITS)} "
                             f"(Learn2Reg pair lists need --data)")
        from ..config import load_config
        pairs, meta = embedded_pairs(load_config(args.config), args.cache, split=split, progress=progress,
                                     max_pairs=args.pairs)
    if args.pairs is not None:
        pairs = pairs[: args.pairs]
    if not pairs:
        raise ValueError("no pairs to evaluate")
    registrars = [make_registrar(n, args) for n in names]
    methods, skipped = accuracy_benchmark(pairs, registrars, progress=progress)
    if not methods:
        raise ValueError("no method could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    doc = {
        "format": ACCURACY_FORMAT,
        "version": ACCURACY_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {**meta, "n_pairs": len(pairs),
                 "pairs": [p["name"] if isinstance(p, dict) else p.name for p in pairs]},
        "threads": threads,
        "machine": _machine(threads),
        "methods": methods,
        "skipped": skipped,
    }
    j, md = write_accuracy(args.out, doc)
    print(accuracy_markdown(_clean(doc)).split("\n\nDice:")[0])
    print(f"wrote {j} and {md}")
    return 0


def run_train_voxelmorph(args: argparse.Namespace) -> int:
    import torch

    from ..baselines.voxelmorph import train_voxelmorph
    from ..config import load_config

    if args.threads is not None:
        from ..devices import check_threads
        torch.set_num_threads(check_threads(args.threads))
    if args.steps is not None and args.steps < 1:
        raise ValueError("--steps must be >= 1")
    init, resume = getattr(args, "init", None), getattr(args, "resume", None)
    if init and resume:
        raise ValueError("--init and --resume exclude each other")
    for flag, path in (("--init", init), ("--resume", resume)):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{flag}: no checkpoint at {path}")
    cfg = None if (resume and not args.config) else load_config(args.config)
    if args.device:
        if cfg is None:
            raise ValueError("--device with --resume needs --config (the run's config is read from the checkpoint)")
        cfg.train.device = args.device
    from ..devices import check_device
    check_device(cfg.train.device if cfg is not None else "cpu", "train.device")
    s = train_voxelmorph(cfg, args.out, steps=args.steps, cache_dir=args.cache, progress=not args.no_progress,
                         init=init, resume=resume)
    print(f"VoxelMorph: {s['steps']} steps in {s['seconds']:.0f} s, final loss {s['final_loss']:.4f}, "
          f"best validation Dice {s['best_val_dice']:.4f} (step {s['best_step']}); checkpoints in {args.out}")
    return 0
