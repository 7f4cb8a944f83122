"""``spikereg-neuro calibrate``: quantize a trained model to Loihi 2 fixed point, write net.h5 and
the fidelity report (calibration_report.json + .md)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="quantize a model to Loihi 2 fixed point (net.h5 + fidelity report)",
        description="Calibrate on training pairs, quantize the network to lava-nc's bit-accurate "
                    "ATRLIF / Sparse fixed-point rules, write net.h5 and compare float vs quantized "
                    "(bit-accurate emulator) Dice on the held-out demo pairs. Without --model the "
                    "shipped model is used. See docs/calibration.md.")
    p.add_argument("--model", help="SpikeReg checkpoint (default: the shipped model)")
    p.add_argument("--out", required=True, help="where net.h5 goes (the report goes next to it)")
    p.add_argument("--report-dir", help="directory for calibration_report.json/.md (default: --out's directory)")
    p.add_argument("--data", help="embedded dataset HDF5, or a Learn2Reg / pairs.json folder of NIfTI pairs at the "
                                  "model's spacing (calibration on its training pairs, evaluation on "
                                  "registration_val or the pairs.json pairs left over; default: build/reuse the "
                                  "embedded data set the model was trained on)")
    p.add_argument("--cache", help="dataset cache directory")
    p.add_argument("--calib-pairs", type=int, default=2, help="training pairs for calibration (default 2)")
    p.add_argument("--max-calib-patches", type=int, default=32,
                   help="patches re-run for the float-vs-emulator spike comparison (default 32; 0: all)")
    p.add_argument("--eval-pairs", type=int, default=0, help="evaluate only the first N test pairs (0: all)")
    p.add_argument("--headroom-bits", type=float, default=1.0,
                   help="bits of 24-bit state headroom required when choosing weight exponents (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration pair choice")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=run)


def calibrate_model(
    model: Optional[str | Path],
    out: str | Path,
    *,
    report_dir: Optional[str | Path] = None,
    data: Optional[str | Path] = None,
    cache: Optional[str | Path] = None,
    calib_pairs: int = 2,
    max_calib_patches: int = 32,
    eval_pairs: int = 0,
    headroom_bits: float = 1.0,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """The whole calibrate command as a function; returns the report dictionary.

    Writes ``out`` (net.h5), ``calibration_report.json`` and ``calibration_report.md`` (each
    atomically, all three only after everything was computed).
    """
    import torch

    from spikereg_neuro.checkpoint import DEFAULT_MODEL, file_sha256, load_network
    from spikereg_neuro.data import build_dataset, load_pairs_numpy
    from spikereg_neuro.data.dataset import DataConfig, dataset_info, train_pairs
    from spikereg_neuro.io.paths import H5_SUFFIXES, check_outputs

    t_start = time.time()
    model_path = Path(model) if model else DEFAULT_MODEL
    if not model_path.is_file():
        raise FileNotFoundError(f"no SpikeReg model at {model_path}" + (
            " (the shipped default model is missing: train one and pass --model)" if not model else ""))
    out = Path(out)
    rdir = Path(report_dir) if report_dir else out.parent
    if calib_pairs < 1:
        raise ValueError("--calib-pairs must be >= 1")
    if max_calib_patches < 0:
        raise ValueError(f"--max-calib-patches must be >= 0 (0: all), got {max_calib_patches}")
    if eval_pairs < 0:
        raise ValueError(f"--eval-pairs must be >= 0 (0: all test pairs), got {eval_pairs}")
    if not 0 <= headroom_bits < 23:  # False for NaN; 23: no state value would be allowed
        raise ValueError(f"--headroom-bits must be in [0, 23) (bits of the 24-bit signed state kept "
                         f"free), got {headroom_bits}")
    from spikereg_neuro.train.folder_data import data_files, embedded_h5, is_folder_data
    check_outputs(inputs={"--model": model_path, **data_files(data)},
                  outputs={"--out": out, "report (json)": rdir / "calibration_report.json",
                           "report (md)": rdir / "calibration_report.md"},
                  suffixes={"--out": H5_SUFFIXES})
    if data and not is_folder_data(data):
        dataset_info(embedded_h5(data))     # a file that is not a data set fails here, before the model loads

    # the heavy modules only after the cheap checks above
    from .calibrate import choose_weight_exps, collect_float_stats, summarize_stats, verify
    from .emulator import lava_schedule
    from .netfile import save_qnet
    from .quantize import quantize_network, weight_errors
    from .report import compare_on_pairs, build_report, write_report

    net, ckpt = load_network(model_path)
    net.eval()
    sha = file_sha256(model_path)
    from spikereg_neuro.config import InferenceConfig
    inf = InferenceConfig.from_checkpoint(ckpt)
    patch, stride, batch = inf.patch3, inf.stride3, inf.batch_size
    log(f"model: {model_path} (sha256 {sha[:12]}), patch {patch}, stride {stride}, scales {list(net.cfg.scales)}")

    from spikereg_neuro.registration.world import model_spacing

    model_mm, mm_source = model_spacing(ckpt)

    if data and is_folder_data(data):
        train, test, source, cdesc = _folder_calibration_data(data, model_mm, calib_pairs, seed)
        log(f"calibration: {len(train)} training pairs of {source} ({cdesc['data']['format']}), "
            f"model spacing {model_mm:g} mm ({mm_source})")
    else:
        if data:
            h5 = embedded_h5(data)
        else:
            dc = DataConfig.from_dict(ckpt.get("data_config") or {})
            h5 = build_dataset(dc, cache, progress=False)
        info = dataset_info(h5)
        n_train = info["n_subjects"]["train"]
        cpairs = train_pairs(n_train, epoch=0, seed=10_000 + int(seed), max_pairs=int(calib_pairs))
        train = load_pairs_numpy(h5, "train", pairs=cpairs)
        test = None
        source = h5
        cdesc = {"split": "train", "dataset": h5.name, "dataset_params": info["config"].to_dict(),
                 "pair_choice": f"train_pairs(n={n_train}, epoch=0, seed={10_000 + int(seed)})[:{calib_pairs}]",
                 "data": {"kind": "embedded", "path": str(Path(h5).resolve())}}
        log(f"calibration: {len(train)} train pairs {cpairs} of {h5.name}")
    cdesc.update({"headroom_bits": headroom_bits, "model_voxel_size_mm": model_mm,
                  "model_voxel_size_source": mm_source})

    t0 = time.time()
    cal = collect_float_stats(net, train, patch, stride, batch, max_patches=max_calib_patches, seed=seed,
                              description=cdesc)
    exps, why = choose_weight_exps(net, cal.stats, headroom_bits)
    log(f"  statistics of {cal.n_patches} patches in {time.time() - t0:.1f} s; weight exponents {exps}")
    q = quantize_network(net, exps, source_checkpoint=str(model_path), source_sha256=sha,
                         calibration=cal.description, patch_size=patch, stride=stride)
    t0 = time.time()
    ver = verify(net, q, cal.patches)
    log(f"  float vs emulator on {ver['_field']['patches']} calibration patches ({time.time() - t0:.1f} s): "
        + ", ".join(f"{k} {v['spike_agreement']:.5f}/{v['spike_agreement_teacher_forced']:.5f}"
                    for k, v in ver.items() if not k.startswith("_") and "spike_agreement" in v)
        + " (end-to-end/teacher-forced spike agreement)")

    if test is None:
        test = load_pairs_numpy(h5, "test")
    if eval_pairs:
        test = test[: int(eval_pairs)]
    log(f"evaluation: {len(test)} test pairs, float and quantized through the same tiling and policy")
    t0 = time.time()
    cmp_ = compare_on_pairs(net, q, test, patch, stride, batch, progress=lambda s: log("  " + s))
    log(f"  done in {time.time() - t0:.1f} s")

    notes = _notes(q, ver, cmp_)
    rep = build_report(
        q=q, comparison=cmp_, weight_errors=weight_errors(net, q), float_stats=summarize_stats(cal.stats),
        exp_choice=why, verification=ver, schedule=lava_schedule(q),
        meta={"source_checkpoint": str(model_path), "source_sha256": sha, "net_file": str(out),
              "dataset": str(source), "patch_size": patch, "stride": stride, "scales": list(net.cfg.scales),
              "input_once": bool(q.input_once), "input_steps": int(q.input_steps),
              "calibration": cal.description, "notes": notes,
              "torch_threads": torch.get_num_threads(), "seconds": time.time() - t_start})
    save_qnet(out, q)
    paths = write_report(rdir, rep)
    log(f"Dice float {rep['dice_float']:.4f}, quantized {rep['dice_quantized']:.4f}, drop {rep['dice_drop']:+.5f} "
        f"(target <= 0.01: {'met' if rep['meets_target'] else 'NOT met'})")
    log(f"wrote {out}, {paths['json']}, {paths['md']}")
    return rep


def _folder_calibration_data(data, model_mm: float, calib_pairs: int, seed: int):
    """Calibration and evaluation pairs of a Learn2Reg / pairs.json ``--data`` folder: calibration
    from its training pairs (``calib_pairs`` drawn with ``seed``), evaluation on its labelled
    ``registration_val`` pairs, or (pairs.json, no validation list) the labelled pairs left over
    (all of them when calibration took every pair). Returns ``(train, test, source, description)``."""
    import numpy as np

    from spikereg_neuro.train.folder_data import FolderPairList, folder_records

    records, val, desc = folder_records(data)
    hint = "calibrate reads pairs at the model's spacing (resample them first)"
    rng = np.random.default_rng(10_000 + int(seed))
    pick = sorted(int(i) for i in rng.choice(len(records), size=min(int(calib_pairs), len(records)),
                                              replace=False))
    calib = [records[i] for i in pick]
    if val:
        evals, how = [r for r in val if r.has_labels], "registration_val"
    else:
        rest = [r for i, r in enumerate(records) if i not in set(pick) and r.has_labels]
        evals, how = (rest, "the pairs not used for calibration") if rest else (
            [r for r in records if r.has_labels], "every pair (calibration used them all)")
    if not evals:
        raise ValueError(f"--data {data}: no evaluation pair with label maps ({how}): the fidelity report "
                         f"compares Dice, which needs fixed and moving labels")
    source = Path(desc["path"])
    cdesc = {"split": "train", "dataset": source.name,
             "pair_choice": f"default_rng({10_000 + int(seed)}).choice({len(records)}, {len(calib)}) of the "
                            f"folder's training pairs",
             "data": {"kind": "folder", **desc, "calibration_pairs": [r.name for r in calib],
                      "evaluation": how, "evaluation_pairs": [r.name for r in evals]}}
    return FolderPairList(calib, model_mm, hint), FolderPairList(evals, model_mm, hint), source, cdesc


def _notes(q, ver: Dict[str, Any], cmp_: Dict[str, Any]) -> list:
    notes = []
    exact = [k for k, v in ver.items() if not k.startswith("_") and v.get("mismatches_teacher_forced") == 0]
    inexact = [k for k, v in ver.items() if not k.startswith("_") and v.get("mismatches_teacher_forced", 0) > 0]
    if exact:
        notes.append("Layers bit-exact with the float SLAYER model when fed the same input spikes "
                     f"(teacher-forced): {', '.join(exact)}.")
    graded = [l.name for l in q.layers if any(e.source == "input" for e in l.inputs)]
    reading_graded = [l.name for l in q.layers if l.num_message_bits > 0 and l.name not in graded]
    for k in inexact:
        why = ("it reads the graded 8-bit input: SLAYER computes trunc(4096 * conv(w/64, p/255)) in float32 "
               "(rounding toward zero at its state scale), Loihi integrates floor(sum(w*p) * 2^weight_exp) (the "
               "weight exponent is an arithmetic shift) with the threshold scaled by 255 * 2^weight_exp, so "
               "input and decay rounding differ slightly (division by 255 has no shift equivalent)"
               if k in graded else
               "it reads graded spikes: the float model passes v/theta unrounded, Loihi the payload "
               "floor(G * v/theta) (docs/calibration.md, graded spikes), and its threshold is scaled by G"
               if k in reading_graded else "see the verification numbers")
        notes.append(f"{k}: teacher-forced mismatches {ver[k]['mismatches_teacher_forced']} of "
                     f"{ver[k]['entries']} (neuron, step) entries; {why}.")
    over = {k: (v.get("current_wraps", 0), v.get("voltage_saturations", 0)) for k, v in cmp_["rates"].items()
            if v.get("current_wraps", 0) or v.get("voltage_saturations", 0)}
    notes.append("24-bit overflow events on the demo pairs: " + (str(over) if over else "none") + ".")
    drop = cmp_["dice_drop"]
    if drop <= 0.005:
        notes.append("Post-training quantization meets the goal; quantization-aware fine-tuning is not needed.")
    else:
        notes.append("Dice drop above the 0.005 goal: consider quantization-aware fine-tuning "
                     "(docs/calibration.md).")
    return notes


def run(args: argparse.Namespace) -> int:
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    import torch
    if args.threads:
        torch.set_num_threads(int(args.threads))
    calibrate_model(args.model, args.out, report_dir=args.report_dir, data=args.data, cache=args.cache,
                    calib_pairs=args.calib_pairs, max_calib_patches=args.max_calib_patches,
                    eval_pairs=args.eval_pairs, headroom_bits=args.headroom_bits, seed=args.seed)
    return 0


__all__: Sequence[str] = ["register", "run", "calibrate_model"]
