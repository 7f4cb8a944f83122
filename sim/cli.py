"""``spikereg-neuro simulate``: run the quantized network on a real patch with the Lava CPU
backend (or the bit-accurate emulator) and write ``run.json``.

``run.json`` (written atomically)::

    {"backend": "lava" | "emulator",
     "layers": [{"name", "spikes_per_step": [...], "spikes", "neurons", "time_window"}, ...],
     "readout_sha256": sha256 of the integer read-out (int64 little-endian, (3, D, H, W) C order),
     "readout": {"name", "shape", "output_scale", "v": [flat integer read-out], field stats},
     "net", "net_sha256", "pair", "pair_subjects", "patch", "patch_origin", "payload_sha256",
     "pair_name", "source" (a --data folder's or a --fixed/--moving pair; pair_subjects null there),
     "lava": {timings, processes, synapses, throughput}        (lava backend only),
     "comparison": {per-layer mismatches vs the other backend}  (--compare only)}

Two runs compare with ``diff`` (or by their ``readout_sha256``).

``--full`` registers the whole pair instead (every patch of both residual iterations of the host
pipeline, :func:`sim.session.register_full`) and writes the field (``.npy``) and a run.json with
``seconds``, ``patches`` and ``field_equal_emulator`` (:func:`simulate_full`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

# the patch a run reads and the run.json it writes live in sim.harness (library code, shared with
# `loihi run` and the benchmark); re-exported here for callers of the command module
from .harness import load_pair, load_patch, machine_info, run_json  # noqa: F401


def add_patch_arguments(p: argparse.ArgumentParser) -> None:
    """``--net``, ``--pair``, ``--patch``, ``--origin``: which network runs on which real patch
    (shared by ``simulate`` and ``loihi run``, read by :func:`load_patch`)."""
    p.add_argument("--net", required=True, help="quantized network (net.h5)")
    p.add_argument("--pair", type=int, default=0, help="demo test pair index (default 0)")
    p.add_argument("--patch", type=int, nargs=3, default=[16, 16, 16], metavar=("D", "H", "W"),
                   help="patch size (default 16 16 16; divisible by the net's size multiple)")
    p.add_argument("--origin", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="patch corner (default: the centred patch)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="run net.h5 on a real patch with the Lava CPU backend or the emulator",
        description="Run the quantized network (net.h5 from `calibrate`) on a centred patch of demo "
                    "test pair N (or a --data folder's evaluation pair N, or --fixed/--moving), with lava-nc processes under Loihi2SimCfg(select_tag='fixed_pt') "
                    "(--backend lava) or the bit-accurate emulator (--backend emulator). Writes run.json "
                    "with per-layer spike counts per time step and the integer read-out (and its "
                    "sha256). See docs/simulation.md.")
    add_patch_arguments(p)
    p.add_argument("--backend", choices=("lava", "emulator"), default="lava")
    p.add_argument("--out", default="run.json", help="output JSON (default run.json)")
    p.add_argument("--compare", action="store_true",
                   help="also run the other backend and report mismatches per layer (exit 3 if any)")
    p.add_argument("--data", help="dataset HDF5, or a Learn2Reg / pairs.json folder (--pair N: its N-th evaluation "
                                  "pair, registration_val or the pairs.json list; at the net's spacing) "
                                  "(default: the data set recorded in net.h5)")
    p.add_argument("--fixed", help="simulate your own NIfTI pair instead: FIXED image (with --moving; one grid at "
                                   "the net's spacing, read as `register` reads a same-grid pair)")
    p.add_argument("--moving", help="MOVING image of --fixed")
    p.add_argument("--cache", help="dataset cache directory")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="wall-clock limit of the Lava run in seconds (default 1800)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    f = p.add_argument_group("full registration (--full)")
    f.add_argument("--full", action="store_true",
                   help="register the whole pair: every patch of both residual iterations of the host "
                        "pipeline through the backend (Lava: one graph per patch shape, reused); writes the "
                        "field and run.json with seconds, patches, field_equal_emulator")
    f.add_argument("--tile", type=int, nargs=3, metavar=("D", "H", "W"),
                   help="tiling patch of --full (default: the net's inference patch_size)")
    f.add_argument("--stride", type=int, nargs=3, metavar=("D", "H", "W"),
                   help="tiling stride of --full (default: the net's inference stride)")
    f.add_argument("--batch-size", type=int, default=4, help="patches per predictor call of --full (default 4)")
    f.add_argument("--field", help="where --full writes the field, float32 (3, D, H, W) voxels as .npy "
                                   "(default: --out with .field.npy)")
    p.set_defaults(func=run)


def simulate(net: str, *, backend: str = "lava", pair: int = 0, patch: Sequence[int] = (16, 16, 16),
             origin: Optional[Sequence[int]] = None, out: Optional[str] = "run.json", compare: bool = False,
             data: Optional[str] = None, cache: Optional[str] = None, timeout: float = 1800.0,
             progress: bool = True, log=print, fixed: Optional[str] = None,
             moving: Optional[str] = None) -> Dict[str, Any]:
    """The simulate command as a function; returns the run.json dictionary (written to ``out``)."""
    from calibration.netfile import load_qnet
    from spikereg_neuro.io.atomic import atomic_write_text
    from spikereg_neuro.io.hashing import file_sha256

    from .compare import compare_results, format_comparison
    from .run import run_backend

    from spikereg_neuro.io.paths import check_outputs
    from spikereg_neuro.train.folder_data import data_files

    if out:
        check_outputs(inputs={"--net": net, "--fixed": fixed, "--moving": moving, **data_files(data)},
                      outputs={"--out": out})

    def err(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    q = load_qnet(net)
    payload, where = load_patch(q, pair, patch, origin, data, cache, fixed, moving)
    which = (f"pair {where['pair']} {where['pair_subjects']} of {where['dataset']}" if "pair_name" not in where
             else f"pair {where['pair_name']}" + (f" ({where['pair']} of {where['dataset']})"
                                                  if where["pair"] is not None else ""))
    log(f"net {net} ({len(q.layers)} layers); {which}; patch {where['patch']} at {where['patch_origin']}")

    def go(b: str):
        t0 = time.perf_counter()
        r = run_backend(b, q, payload, timeout=timeout,
                        progress=(lambda s: err(f"simulate [{b}] {s}")) if progress else None,
                        log=(lambda s: err(f"simulate [{b}] {s}")) if progress else None)
        return r, time.perf_counter() - t0

    res, secs = go(backend)
    extra: Dict[str, Any] = {"net": str(net), "net_sha256": file_sha256(net), **where,
                             "payload_sha256": hashlib.sha256(payload.numpy().astype("<i8").tobytes()).hexdigest(),
                             "wall_s": secs}
    if backend == "lava":
        extra["lava"] = getattr(res, "info", {})
    doc = run_json(backend, q, res, extra=extra)
    for row in doc["layers"]:
        log(f"  {row['name']:8s} {row['neurons']:8d} neurons  spikes per step {row['spikes_per_step']}")
    log(f"  read-out sha256 {doc['readout_sha256'][:16]}..., |field| mean {doc['readout']['field_mean_abs_vox']:.4f} "
        f"max {doc['readout']['field_max_abs_vox']:.4f} vox ({backend}, {secs:.1f} s)")
    if backend == "lava":
        info = doc["lava"]
        log(f"  lava: {info['processes']} processes, {info['neurons']} neurons, {info['synapses']} synapses, "
            f"{info['num_steps']} steps in {info['timings']['run_s']:.2f} s "
            f"-> {info['neuron_updates_per_s']:.3g} neuron updates/s "
            f"(steady state {info['steady_neuron_updates_per_s']:.3g}) "
            f"(compile {info['timings']['compile_s']:.1f} s, start {info['timings']['init_s']:.1f} s)")
    if compare:
        other = "emulator" if backend == "lava" else "lava"
        res2, secs2 = go(other)
        c = compare_results(res, res2)
        doc["comparison"] = {"against": other, "equal": c["equal"], "readout": c["readout"],
                             "total_spike_mismatches": c["total_spike_mismatches"],
                             "layers": {k: {kk: v[kk] for kk in ("mismatches", "entries", "spikes_a", "spikes_b")}
                                        for k, v in c["layers"].items()},
                             "other_wall_s": secs2}
        if other == "lava":
            doc["comparison"]["lava"] = getattr(res2, "info", {})
        log(f"{backend} vs {other}:\n" + format_comparison(c))
    if out:
        atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
        log(f"wrote {out}")
    return doc


def simulate_full(net: str, *, backend: str = "lava", pair: int = 0, tile: Optional[Sequence[int]] = None,
                  stride: Optional[Sequence[int]] = None, out: Optional[str] = "run.json",
                  field_path: Optional[str] = None, batch_size: int = 4, data: Optional[str] = None,
                  cache: Optional[str] = None, timeout: float = 1800.0, progress: bool = True,
                  log=print, crop: Optional[Sequence[int]] = None, fixed: Optional[str] = None,
                  moving: Optional[str] = None) -> Dict[str, Any]:
    """``simulate --full`` as a function: the whole registration of demo test pair ``pair`` with
    ``backend`` as the patch predictor of the host pipeline (both residual iterations, tiling
    ``tile``/``stride``, default the net's inference ``patch_size``/``stride``), and the emulator
    through the same tiling as the reference (for ``backend="lava"``). Writes the field
    (float32 ``(3, D, H, W)`` voxels, ``.npy``) and run.json; returns the run.json dictionary.
    ``crop`` (``(D, H, W)``) registers only the centred sub-volume of that size (say so: the
    run.json records ``volume_shape`` and ``crop``)."""
    import hashlib

    import numpy as np

    from calibration.netfile import load_qnet
    from spikereg_neuro.io.atomic import atomic_write, atomic_write_text
    from spikereg_neuro.io.hashing import file_sha256

    from .session import compare_full, count_patches, register_full

    if backend not in ("lava", "emulator"):
        raise ValueError(f"unknown backend {backend!r} (lava or emulator)")
    if batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    from spikereg_neuro.io.paths import check_outputs
    from spikereg_neuro.train.folder_data import data_files

    outs = {k: v for k, v in (("--out", out), ("--field", field_path)) if v}
    if outs:
        check_outputs(inputs={"--net": net, "--fixed": fixed, "--moving": moving, **data_files(data)}, outputs=outs)
    q = load_qnet(net)
    tile = [int(x) for x in (tile or q.patch_size)]
    stride = [int(x) for x in (stride or q.stride)]
    pr, h5 = load_pair(q, pair, data, cache, fixed, moving)
    nifti = bool(fixed)
    fixed, moving = pr["fixed"], pr["moving"]
    from .harness import _where
    where = _where(pr, pair, h5)
    if nifti:
        where["pair"] = None
    full_shape = [int(x) for x in fixed.shape]
    if crop:
        crop = [int(x) for x in crop]
        if any(c < 1 or c > n for c, n in zip(crop, full_shape)):
            raise ValueError(f"crop {crop} does not fit the volume {full_shape}")
        o = [(n - c) // 2 for n, c in zip(full_shape, crop)]
        sl = tuple(slice(a, a + c) for a, c in zip(o, crop))
        fixed, moving = np.ascontiguousarray(fixed[sl]), np.ascontiguousarray(moving[sl])
    per_scale = count_patches(q, fixed.shape, tile, stride)
    total = sum(per_scale)
    which = (f"pair {pair} {where['pair_subjects']} of {h5.name}" if "pair_name" not in where
             else f"pair {where['pair_name']}")
    log(f"net {net}; {which}, volume {list(fixed.shape)}"
        f"{f' (centred crop of {full_shape})' if crop else ''}; tiling {tile} stride {stride}, scales "
        f"{list(q.scales)}: {per_scale} patches per iteration ({total}), backend {backend}")

    def bar(desc: str):
        if not progress:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit="patch", file=sys.stderr, leave=True)

    def err(s: str) -> None:
        if progress:
            print(f"simulate [{backend}] {s}", file=sys.stderr, flush=True)

    b = bar(f"{backend} full registration")
    try:
        res = register_full(q, fixed, moving, backend=backend, tile=tile, stride=stride, batch_size=batch_size,
                            timeout=timeout, on_patch=b.update if b is not None else None, log=err)
    finally:
        if b is not None:
            b.close()
    log(f"{backend}: {res.patches} patches in {res.seconds:.1f} s")
    doc: Dict[str, Any] = {
        "backend": backend, "mode": "full registration", "net": str(net), "net_sha256": file_sha256(net),
        **where, "volume_shape": [int(x) for x in fixed.shape], "crop": list(crop) if crop else None,
        "full_volume_shape": full_shape, "tile": tile, "stride": stride, "scales": list(q.scales),
        "integration_steps": int(q.integration_steps), "batch_size": int(batch_size),
        "seconds": res.seconds, "patches": res.patches, "patches_per_iteration": res.patches_per_scale,
        "readouts_sha256": hashlib.sha256(b"".join(v.astype("<i8").tobytes() for v in res.readouts)).hexdigest(),
        "field_mean_abs_vox": float(np.abs(res.field).mean()), "field_max_abs_vox": float(np.abs(res.field).max()),
        "machine": machine_info()}
    if backend == "lava":
        doc["lava"] = res.info
        b = bar("emulator reference")
        try:
            ref = register_full(q, fixed, moving, backend="emulator", tile=tile, stride=stride,
                                batch_size=batch_size, on_patch=b.update if b is not None else None)
        finally:
            if b is not None:
                b.close()
        c = compare_full(res, ref)
        doc["field_equal_emulator"] = bool(c["equal"])
        doc["comparison"] = {"against": "emulator (same tiling, same pair)", "emulator_seconds": ref.seconds, **c}
        log(f"emulator reference: {ref.patches} patches in {ref.seconds:.1f} s; read-outs equal for "
            f"{c['patches_equal']}/{res.patches} patches, field bitwise equal: {c['field_equal']} "
            f"-> field_equal_emulator {doc['field_equal_emulator']}")
    else:
        doc["field_equal_emulator"] = None
        doc["note"] = "the emulator is the reference itself"
    if out:
        fp = Path(field_path) if field_path else Path(out).with_suffix(".field.npy")
        with atomic_write(fp) as tmp, open(tmp, "wb") as fh:
            np.save(fh, res.field.astype(np.float32))
        doc["field"] = str(fp)
        doc["field_format"] = "npy, float32 (3, D, H, W), displacement in voxels (z, y, x)"
        atomic_write_text(out, json.dumps(doc, indent=1, default=float) + "\n")
        log(f"wrote {fp} and {out}")
    return doc


def run(args: argparse.Namespace) -> int:
    from .run import SimError

    if not args.timeout > 0:   # also NaN
        print(f"spikereg-neuro simulate: error: --timeout must be a number of seconds > 0, got {args.timeout:g}",
              file=sys.stderr)
        return 1
    if (args.fixed or args.moving) and args.pair:
        print("spikereg-neuro simulate: error: --pair selects a pair of --data; drop it with --fixed/--moving",
              file=sys.stderr)
        return 1

    if args.full:
        if args.compare:
            print("spikereg-neuro simulate: error: --full always compares with the emulator; drop --compare",
                  file=sys.stderr)
            return 1
        try:
            doc = simulate_full(args.net, backend=args.backend, pair=args.pair, tile=args.tile, stride=args.stride,
                                out=args.out, field_path=args.field, batch_size=args.batch_size, data=args.data,
                                cache=args.cache, timeout=args.timeout, progress=not args.quiet,
                                fixed=args.fixed, moving=args.moving)
        except (SimError, ValueError, FileNotFoundError) as exc:
            first = str(exc).splitlines()[0] if str(exc).strip() else repr(exc)
            print(f"spikereg-neuro simulate: error: {first}", file=sys.stderr)
            if len(str(exc).splitlines()) > 1:
                print("\n".join(str(exc).splitlines()[1:]), file=sys.stderr)
            return 1
        return 0 if doc.get("field_equal_emulator") in (True, None) else 3
    try:
        doc = simulate(args.net, backend=args.backend, pair=args.pair, patch=args.patch, origin=args.origin,
                       out=args.out, compare=args.compare, data=args.data, cache=args.cache,
                       timeout=args.timeout, progress=not args.quiet, fixed=args.fixed, moving=args.moving)
    except SimError as exc:
        print(f"spikereg-neuro simulate: error: {exc}", file=sys.stderr)
        return 1
    if args.compare and not doc["comparison"]["equal"]:
        return 3
    return 0
