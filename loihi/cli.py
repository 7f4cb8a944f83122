"""``spikereg-neuro loihi map | export | run``."""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Tuple

from sim.cli import add_patch_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loihi", help="Loihi 2: resource mapping, deployable export, hardware run",
                       description="Loihi 2 deployment. 'map' places the network on neuro-cores and "
                                   "chips under documented limits (mapping.json + summary); 'export' "
                                   "writes the deployable network file; 'run' runs net.h5 on Loihi 2 "
                                   "(needs Intel's lava-loihi, INRC only). See docs/deployment.md.")
    ls = p.add_subparsers(dest="loihi_command", metavar="LOIHI_COMMAND")
    p.set_defaults(func=lambda args, _p=p: (_p.print_help(), 2)[1])

    m = ls.add_parser("map", help="map the network onto Loihi 2 cores and chips (mapping.json)",
                      description="Per-layer neurons, synapses, fan-in/fan-out and synaptic memory; a "
                                  "greedy partition onto neuro-cores and chips under the limits of "
                                  "loihi/limits.py. Writes mapping.json and mapping_summary.txt to --out.")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--net", help="a calibrated net.h5 or a SpikeReg checkpoint (.pt)")
    src.add_argument("--untrained", action="store_true",
                     help="the default model configuration with random initial weights (seed --seed)")
    m.add_argument("--seed", type=int, default=0, help="seed of --untrained (default 0)")
    m.add_argument("--out", required=True, help="output directory")
    m.add_argument("--patch", type=int, nargs=3, metavar=("D", "H", "W"),
                   help="patch shape (default: the network's inference patch, 32^3)")
    m.add_argument("--encoding", choices=("shared", "sparse", "dense"), default="shared",
                   help="synapse storage model: shared (Loihi 2 convolutional kernels, default), sparse "
                        "(explicit non-zero synapses with Loihi 1 axon limits: the conservative bound), "
                        "dense; see loihi/limits.py")
    m.add_argument("--no-axon-limits", action="store_true",
                   help="do not enforce the ASSUMED (Loihi 1) fan-in/fan-out axon limits")
    m.add_argument("--reserve", type=int, default=0,
                   help="bytes per core reserved for routing tables / microcode (default 0)")
    m.add_argument("--no-sensitivity", action="store_true",
                   help="skip the encoding x axon-limit sensitivity table (saves ~10 s at 32^3)")
    m.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    m.set_defaults(func=run_map)

    e = ls.add_parser("export", help="write the deployable network file (netx where possible, ours otherwise)",
                      description="Check every layer against what lava-dl netx can express (for SpikeReg: "
                                  "none) and write the network in the documented spikereg-neuro/loihi-deploy "
                                  "HDF5 format (populations, per-connection int8 kernels, Sparse lowering, "
                                  "delays, neuron parameters).")
    e.add_argument("--net", required=True, help="a calibrated net.h5 (or a .pt checkpoint: default weight "
                                                "exponents, not data-calibrated)")
    e.add_argument("--out", required=True, help="output file (.h5)")
    e.add_argument("--patch", type=int, nargs=3, metavar=("D", "H", "W"),
                   help="patch shape (default: the network's patch)")
    e.set_defaults(func=run_export)

    r = ls.add_parser("run", help="run net.h5 on Loihi 2 hardware (lava-loihi, INRC only)",
                      description="Build the same Lava graph as `simulate --backend lava` and run it with "
                                  "Loihi2HwCfg. Needs Intel's lava-loihi (INRC members only); without it "
                                  "exits with status 2 and says so. Writes run.json in simulate's format.")
    add_patch_arguments(r)
    r.add_argument("--out", default="loihi_run.json", help="output JSON (default loihi_run.json)")
    r.add_argument("--partition", help="INRC SLURM partition (e.g. oheogulch)")
    r.add_argument("--board", help="INRC SLURM board (instead of --partition)")
    r.add_argument("--no-slurm", action="store_true", help="do not select a SLURM host (host set up already)")
    r.add_argument("--no-profile", action="store_true", help="no Loihi2Power / Loihi2ExecutionTime probes")
    r.add_argument("--data", help="dataset HDF5 (default: the data set recorded in net.h5)")
    r.add_argument("--cache", help="dataset cache directory")
    r.set_defaults(func=run_run)


def run_map(args: argparse.Namespace) -> int:
    import torch

    from .limits import CoreLimits
    from .mapping import build_mapping, load_layers, sensitivity, write_mapping
    from .resources import NetworkResources

    from spikereg_neuro.io.paths import check_output_dir, check_outputs

    out_dir = check_output_dir("--out", args.out)
    check_outputs(inputs={"--net": args.net},
                  outputs={"--out mapping.json": out_dir / "mapping.json",
                           "--out mapping_summary.txt": out_dir / "mapping_summary.txt"})
    from spikereg_neuro.devices import check_threads
    torch.set_num_threads(check_threads(args.threads))
    t0 = time.time()
    layers, meta = load_layers(args.net, untrained=args.untrained, seed=args.seed)
    patch = check_patch(args.patch, _size_multiple(layers)) if args.patch else tuple(meta["patch"])
    lim = CoreLimits(encoding=args.encoding, memory_reserved_bytes=int(args.reserve),
                     **({"fan_in_axons_per_core": None, "fan_out_axons_per_core": None}
                        if args.no_axon_limits else {}))
    res = NetworkResources(layers, patch)
    m = build_mapping(layers, patch, lim, source=meta, resources=res)
    if not args.no_sensitivity:
        m["sensitivity"] = sensitivity(res, lim)
    paths = write_mapping(m, args.out)
    t = m["totals"]
    print(f"loihi map: {t['cores']} cores on {t['chips']} chip(s) for a {'x'.join(map(str, patch))} patch "
          f"({args.encoding} synapses, valid={m['valid']}); wrote {paths['json']} and {paths['summary']} "
          f"({time.time() - t0:.1f} s)")
    return 0 if m["valid"] else 1


def check_patch(patch, multiple: int) -> Tuple[int, int, int]:
    """``--patch`` as three ints: each a positive multiple of the network's size multiple, and
    no larger in all than the largest volume the toolkit registers (a one-line ``ValueError``)."""
    from spikereg_neuro.registration.world import MAX_WORKING_VOXELS

    p = tuple(int(x) for x in patch)
    if any(x < 1 or x % multiple for x in p):
        raise ValueError(f"--patch {' '.join(map(str, p))}: every side must be a positive multiple of {multiple} "
                         "(the network's size multiple: 2 per stride-2 layer)")
    if math.prod(p) > MAX_WORKING_VOXELS:
        raise ValueError(f"--patch {' '.join(map(str, p))}: {math.prod(p):,} voxels, above the "
                         f"{MAX_WORKING_VOXELS:,} of the largest volume this toolkit registers")
    return p


def _size_multiple(layers) -> int:
    """2 per stride-2 layer of an exported network (the encoder's downsampling)."""
    return math.prod(int(l["stride"][0]) for l in layers)


def run_export(args: argparse.Namespace) -> int:
    from spikereg_neuro.io.paths import H5_SUFFIXES, check_input_file, check_outputs

    path = check_input_file(args.net, "network (net.h5 or .pt)")
    check_outputs(inputs={"--net": path}, outputs={"--out": args.out}, suffixes={"--out": H5_SUFFIXES})
    from .export import export_deployable

    from spikereg_neuro.checkpoint import file_sha256
    if path.suffix in (".h5", ".hdf5"):
        from calibration.netfile import load_qnet
        q = load_qnet(path)
    else:
        from calibration.quantize import quantize_network
        from spikereg_neuro.checkpoint import load_network
        net, ckpt = load_network(path)
        from spikereg_neuro.config import InferenceConfig
        q = quantize_network(net, source_checkpoint=str(path), source_sha256=file_sha256(path),
                             patch_size=InferenceConfig.from_checkpoint(ckpt).patch3)
        print("loihi export: note: a checkpoint was given: default weight exponents, NOT data-calibrated "
              "(use `spikereg-neuro calibrate` and export its net.h5 for deployment)", file=sys.stderr)
    if args.patch:
        check_patch(args.patch, q.size_multiple)
    info = export_deployable(q, args.out, patch_shape=args.patch, source_file=str(path),
                             source_sha256=file_sha256(path))
    n_netx = len(info["netx_expressible_layers"])
    print(f"loihi export: wrote {info['path']} ({info['format']}, patch {info['patch_shape']}, "
          f"{info['neurons']} neurons, {info['stored_synapses']} synapses); netx-expressible layers: "
          f"{n_netx} of {len(info['netx'])}, so no netx file was written")
    return 0


def run_run(args: argparse.Namespace) -> int:
    from spikereg_neuro.io.paths import check_outputs

    from .run import EXIT_NO_LOIHI, LoihiUnavailable, run_on_loihi

    check_outputs(inputs={"--net": args.net, "--data": args.data}, outputs={"--out": args.out})
    try:
        run_on_loihi(args.net, pair=args.pair, patch=args.patch, origin=args.origin, out=args.out,
                     partition=args.partition, board=args.board, slurm=not args.no_slurm,
                     profile=not args.no_profile, data=args.data, cache=args.cache)
    except LoihiUnavailable as exc:
        print(f"spikereg-neuro loihi run: {exc}", file=sys.stderr)
        return EXIT_NO_LOIHI
    return 0
