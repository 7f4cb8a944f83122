"""The held-out pairs, the registration methods and their evaluation, shared by
``benchmark accuracy`` and the ``benchmark`` table (library code; the commands live in
:mod:`spikereg_neuro.commands.benchmark` and :mod:`spikereg_neuro.commands.benchmark_table`).

* pairs: :func:`embedded_pairs` (the embedded synthetic pairs, with their true fields),
  :func:`folder_pairs` (a ``--data`` folder's records, lazy), :func:`table_pairs` (a folder's
  pairs loaded at the model's spacing);
* methods: :func:`make_registrar` (identity, VoxelMorph, SpikeReg, ANTs SyN), :func:`parse_methods`;
* evaluation: :func:`evaluate_pair`, :func:`summarize`, :func:`accuracy_benchmark`,
  :func:`accuracy_markdown`, :func:`write_accuracy`; :func:`clean_json` and :func:`machine_info`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: method names in report order
METHODS: Tuple[str, ...] = ("identity", "voxelmorph", "spikereg", "ants_syn")
ACCURACY_FORMAT = "spikereg-neuro/accuracy"
ACCURACY_VERSION = 1


# ============================================================================ SpikeReg adapter
class SpikeRegRegistrar:
    """:class:`spikereg_neuro.inference.SpikeRegInference` as a benchmark method."""

    name = "spikereg"

    def __init__(self, checkpoint: Optional[str] = None, device: str = "cpu", symmetric: bool = False) -> None:
        from .checkpoint import DEFAULT_MODEL

        self.checkpoint = Path(checkpoint) if checkpoint else DEFAULT_MODEL
        self.device = device
        self.symmetric = bool(symmetric)   # both ways (register_tensors), whatever the checkpoint says
        self._inf = None

    def available(self) -> Tuple[bool, str]:
        if not self.checkpoint.is_file():
            return False, (f"no SpikeReg checkpoint at {self.checkpoint} (the shipped default model is not "
                           "there yet?); pass --spikereg-model CKPT")
        return True, ""

    def load(self):
        if self._inf is None:
            from .inference import SpikeRegInference
            from .registration.world import model_spacing
            self._inf = SpikeRegInference(self.checkpoint, device=self.device, symmetric=self.symmetric)
            self.spacing_mm = model_spacing(self._inf.meta)[0]  # the checkpoint's keys it reads
        return self._inf

    def check_pair_spacing(self, pair: Dict[str, Any], name: str) -> None:
        """One-line ``ValueError`` when a loaded pair is not at the model's voxel size (the network
        runs on the arrays as they are, so another spacing gives a meaningless score)."""
        if pair.get("spacing") is not None:
            from .train.folder_data import check_at_spacing
            self.load()
            check_at_spacing(pair["spacing"], self.spacing_mm, f"pair {name}",
                             "the spikereg method reads pairs at the model's voxel size (resample them "
                             "first, or `register` them, which resamples)")

    def register(self, fixed: np.ndarray, moving: np.ndarray, affine: Optional[np.ndarray] = None) -> np.ndarray:
        from .baselines.base import check_field, check_pair_arrays

        f, m = check_pair_arrays(fixed, moving)
        return check_field(self.load().register(f, m), f.shape, "SpikeReg")

    def info(self) -> Dict[str, Any]:
        inf = self.load()
        return {"checkpoint": str(self.checkpoint), "parameters": sum(p.numel() for p in inf.net.parameters()),
                "patch": inf.patch, "stride": inf.stride, "best_val_dice": inf.meta.get("best_val_dice"),
                **({"symmetric": True} if self.symmetric else {})}


def make_registrar(name: str, args: Optional[argparse.Namespace] = None):
    """The registrar of a method name, configured from the command-line ``args``. With
    ``args.symmetric`` the learned methods run both ways: SpikeReg through its own inference
    (``register_tensors(symmetric=True)``), VoxelMorph in a :class:`SymmetricRegistrar` (ANTs SyN
    is symmetric by construction; the identity needs nothing); without it, one way (SpikeReg
    whatever its checkpoint's ``inference.symmetric``)."""
    reg = _make_registrar(name, args)
    if args is not None and getattr(args, "symmetric", False) and name == "voxelmorph":
        from .baselines.base import SymmetricRegistrar
        return SymmetricRegistrar(reg)
    return reg


def _make_registrar(name: str, args: Optional[argparse.Namespace] = None):
    g = (lambda k, d=None: getattr(args, k, d) if args is not None else d)
    if name == "identity":
        from .baselines.identity import IdentityRegistrar
        return IdentityRegistrar()
    if name == "voxelmorph":
        from .baselines.voxelmorph import VoxelMorphRegistrar
        return VoxelMorphRegistrar(g("voxelmorph_model"), device=g("device", "cpu"))
    if name == "spikereg":
        return SpikeRegRegistrar(g("spikereg_model"), device=g("device", "cpu"), symmetric=bool(g("symmetric", False)))
    if name == "ants_syn":
        from .baselines.ants import AntsSyNRegistrar
        kw: Dict[str, Any] = {}
        if g("ants_iterations"):
            try:
                kw["reg_iterations"] = tuple(int(v) for v in str(g("ants_iterations")).split(","))
            except ValueError:
                raise ValueError(f"--ants-iterations must be integers separated by commas, got {g('ants_iterations')!r}")
        return AntsSyNRegistrar(type_of_transform=g("ants_transform", "SyN") or "SyN",
                                threads=g("threads", 1) or 1, **kw)
    raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")


def parse_methods(text: str) -> List[str]:
    names = [m.strip() for m in str(text).split(",") if m.strip()]
    if not names:
        raise ValueError("--methods is empty")
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; known: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


# ============================================================================ pairs
#: the held-out splits of the embedded data that ``benchmark accuracy --split`` evaluates
EMBEDDED_SPLITS = ("test", "val")


def embedded_pairs(config=None, cache_dir=None, split: str = "test", progress: bool = True,
                   max_pairs: Optional[int] = None) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """The embedded evaluation pairs of ``split`` (built/cached from ``config.data``), the first
    ``max_pairs`` of them (all with ``None``), each with its true field (``true_field``)."""
    from .config import load_config
    from .data import build_dataset, dataset_path, load_pairs_numpy, true_displacement

    cfg = config if config is not None else load_config()
    h5 = build_dataset(cfg.data, cache_dir, progress=progress)
    pairs = []
    for k, p in enumerate(load_pairs_numpy(h5, split)[:max_pairs]):
        p = dict(p)
        p["name"] = f"pair_{k:03d}"
        p["subjects"] = list(p.pop("pair"))
        # synthetic pairs know their exact correspondence: the endpoint error is reported too
        p["true_field"] = true_displacement(h5, split, p["subjects"]).astype(np.float32)
        pairs.append(p)
    label_names = pairs[0]["label_names"] if pairs else {}
    meta = {"source": "embedded", "split": split, "dataset": str(dataset_path(cfg.data, cache_dir)),
            "dataset_params": cfg.data.to_dict(), "label_names": {int(k): v for k, v in label_names.items()}}
    return pairs, meta


def folder_pairs(path: str, split: str = "registration_val") -> Tuple[List[Any], Dict[str, Any]]:
    """Pair records of a ``--data`` folder (loaded lazily, one pair at a time)."""
    from .data import read_pair_folder

    records = read_pair_folder(path, split=split)
    label_names: Dict[int, str] = {}
    try:
        from .data import read_pairs_meta
        label_names = read_pairs_meta(path).get("label_names") or {}
    except (ValueError, KeyError, FileNotFoundError):
        pass  # a Learn2Reg folder: no label names
    return records, {"source": str(Path(path).resolve()), "split": split, "label_names": label_names}


def table_pairs(data: str, split: str, spacing_mm: float,
                max_pairs: Optional[int] = None) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """The first ``max_pairs`` pairs of a ``--data`` folder for the benchmark table, loaded (canonical
    RAS+, intensities in [0, 1], one grid) and checked to be at the model's ``spacing_mm``, each with
    ``name``, ``subjects`` (its fixed and moving file names) and label maps (required: every row
    reports Dice). ``meta`` as :func:`folder_pairs`, with ``dataset``: the folder."""
    from .train.folder_data import FolderPairList

    records, meta = folder_pairs(data, split)
    records = records[:max_pairs]
    unlabelled = [r.name or str(r.fixed) for r in records if not r.has_labels]
    if unlabelled:
        raise ValueError(f"--data {data}: {len(unlabelled)} pair(s) without fixed and moving label maps "
                         f"(e.g. {unlabelled[0]}); the benchmark table reports Dice, which needs them")
    hint = "the benchmark reads pairs at the model's voxel size (resample them first, or `register` them)"
    pairs = []
    for k, r in enumerate(records):
        pr = FolderPairList(records, spacing_mm, hint)[k]
        pr["name"] = r.name or f"pair_{k:03d}"
        pr["subjects"] = [Path(r.fixed).name, Path(r.moving).name]
        pairs.append(pr)
    return pairs, {**meta, "dataset": meta["source"], "voxel_size_mm": float(spacing_mm)}


def _load_pair(p: Any) -> Dict[str, Any]:
    if isinstance(p, dict):
        return p
    from .data import load_pair_record
    return load_pair_record(p)


# ============================================================================ evaluation
def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, dict keys -> str."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    return v


def evaluate_pair(pair: Dict[str, Any], field: np.ndarray) -> Dict[str, Any]:
    """Metrics of one registered pair (labels optional: Dice/HD95 are NaN without them).

    With a ``true_field`` (synthetic pairs), also the endpoint error in voxels over the fixed
    image's labelled voxels (all voxels without labels), after (``epe``) and before
    (``epe_before``: the identity's, i.e. the mean true displacement) registration.
    """
    import torch

    from .evaluate import evaluate_registration
    from .registration.metrics import endpoint_error, folding_percent, sdlogj_learn2reg, std_log_jacobian
    from .registration.transform import warp_labels

    fl, ml = pair.get("fixed_labels"), pair.get("moving_labels")
    if fl is None or ml is None:
        nan = float("nan")
        out = {"dice_before": nan, "dice": nan, "hd95_before": nan, "hd95": nan,
               "folding_pct": folding_percent(field), "sdlogj": std_log_jacobian(field),
               "sdlogj_learn2reg": sdlogj_learn2reg(field), "dice_per_label": {}}
    else:
        ml_t = torch.from_numpy(np.asarray(ml).astype(np.int64))[None, None]
        wl = warp_labels(ml_t, torch.from_numpy(np.asarray(field, dtype=np.float32))[None])[0, 0].numpy()
        out = evaluate_registration(fl, ml, wl, field, pair["spacing"])
    tf = pair.get("true_field")
    if tf is not None:
        mask = None if fl is None else np.asarray(fl) > 0
        out["epe"] = endpoint_error(field, tf, mask)
        out["epe_before"] = endpoint_error(np.zeros_like(tf), tf, mask)
    return out


def summarize(records: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Means over pair records in the output contract's names, plus the paired gains over
    the unregistered pairs (``dice_gain``, ``epe_gain``: :func:`~spikereg_neuro.evaluate.paired_gain`)."""
    from .evaluate import mean_metrics, paired_gain

    m = mean_metrics(records) if records else {}
    nan = float("nan")
    dices = [r["dice"] for r in records]
    labels = sorted({int(k) for r in records for k in r.get("dice_per_label", {})})
    per_label = {}
    for lab in labels:
        vals = [r["dice_per_label"].get(lab, r["dice_per_label"].get(str(lab), nan)) for r in records]
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        per_label[lab] = float(np.mean(vals)) if vals else nan
    finite = [d for d in dices if d is not None and np.isfinite(d)]
    return {
        "n_pairs": len(records),
        "dice_mean": m.get("dice", nan),
        "dice_std": float(np.std(finite)) if finite else nan,
        "dice_before_mean": m.get("dice_before", nan),
        "hd95_mean": m.get("hd95", nan),
        "hd95_before_mean": m.get("hd95_before", nan),
        "folding_pct_mean": m.get("folding_pct", nan),
        "sdlogj_mean": m.get("sdlogj", nan),
        "sdlogj_learn2reg_mean": m.get("sdlogj_learn2reg", nan),
        "epe_mean": m.get("epe", nan),
        "epe_before_mean": m.get("epe_before", nan),
        "seconds_per_pair": m.get("seconds", nan),
        "seconds_total": float(sum(r["seconds"] for r in records)),
        "dice_per_label_mean": per_label,
        "dice_gain": paired_gain([r.get("dice", nan) for r in records],
                                 [r.get("dice_before", nan) for r in records]) if records else None,
        "epe_gain": paired_gain([r.get("epe", nan) for r in records], [r.get("epe_before", nan) for r in records],
                                higher_is_better=False) if records and "epe" in records[0] else None,
    }


def accuracy_benchmark(pairs: Sequence[Any], registrars: Sequence[Any], progress: bool = True,
                       log=print) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Run every (available) registrar on every pair.

    Returns ``(methods, skipped)``: ``methods[name]`` = :func:`summarize` of its records plus
    ``info`` and ``pairs`` (one record per pair: name, seconds, metrics); ``skipped[name]`` =
    the reason a method could not run. Pairs are loaded one at a time (outer loop), so large
    Learn2Reg folders do not have to fit in memory; each registrar's model is loaded before
    the timed calls (``seconds`` is the ``register`` call only).
    """
    from tqdm.auto import tqdm

    ready, skipped, setup = [], {}, {}
    for reg in registrars:
        ok, why = reg.available()
        if not ok:
            skipped[reg.name] = why
            log(f"[benchmark] skipping {reg.name}: {why}")
            continue
        t0 = time.perf_counter()
        if hasattr(reg, "load"):
            reg.load()
        setup[reg.name] = time.perf_counter() - t0
        ready.append(reg)
    records: Dict[str, List[Dict[str, Any]]] = {r.name: [] for r in ready}
    bar = tqdm(total=len(pairs) * len(ready), desc="benchmark accuracy", unit="reg",
               disable=not progress or not ready, dynamic_ncols=True)
    for k, p in enumerate(pairs):
        pair = _load_pair(p)
        name = pair.get("name") or f"pair_{k:03d}"
        for reg in ready:
            if hasattr(reg, "check_pair_spacing"):
                reg.check_pair_spacing(pair, name)
        for reg in ready:
            bar.set_postfix(method=reg.name, pair=name)
            t0 = time.perf_counter()
            field = reg.register(pair["fixed"], pair["moving"], pair.get("affine"))
            secs = time.perf_counter() - t0
            rec = {"pair": name, **({"subjects": pair["subjects"]} if "subjects" in pair else {}),
                   "seconds": secs, **evaluate_pair(pair, field)}
            records[reg.name].append(rec)
            bar.update(1)
    bar.close()
    methods = {}
    for reg in ready:
        info = reg.info()
        methods[reg.name] = {**summarize(records[reg.name]), "setup_seconds": setup[reg.name],
                             "info": info, "pairs": records[reg.name]}
    return methods, skipped


# ============================================================================ reports
def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def accuracy_markdown(doc: Dict[str, Any]) -> str:
    """The ``accuracy.md`` table(s) of an ``accuracy.json`` document."""
    methods = doc["methods"]
    data = doc["data"]
    lines = ["# Registration accuracy", ""]
    lines.append(f"Pairs: {data['n_pairs']} ({data['source']}"
                 + (f", split {data['split']}" if data.get("split") else "") + "). "
                 f"Machine: {doc['machine']['platform']}, {doc['machine']['cpu_count']} CPU cores, "
                 f"{doc['threads']} thread(s) per method. Created {doc['created']}.")
    lines.append("")
    epe = any(m.get("epe_mean") is not None and math.isfinite(m["epe_mean"]) for m in methods.values())
    lines.append("| method | Dice (mean ± sd) | Dice before | HD95 mm | folding % | SDlogJ |"
                 + (" EPE vox (before) |" if epe else "") + " s / pair |")
    lines.append("|---|---|---|---|---|---|" + ("---|" if epe else "") + "---|")
    for name, m in methods.items():
        if (m.get("info") or {}).get("symmetric"):
            name = f"{name} (both ways)"
        lines.append(f"| {name} | {_fmt(m['dice_mean'])} ± {_fmt(m['dice_std'])} | {_fmt(m['dice_before_mean'])} "
                     f"| {_fmt(m['hd95_mean'], 2)} | {_fmt(m['folding_pct_mean'], 3)} | {_fmt(m['sdlogj_mean'], 3)} "
                     + (f"| {_fmt(m.get('epe_mean'), 2)} ({_fmt(m.get('epe_before_mean'), 2)}) " if epe else "")
                     + f"| {_fmt(m['seconds_per_pair'], 2)} |")
    lines.append("")
    if any((m.get("info") or {}).get("symmetric") for m in methods.values()):
        lines.append("*both ways* (`--symmetric`): the method registered each pair in both directions and was scored "
                     "on the inverse-consistent mean of the two fields (twice its work).")
        lines.append("")
    lines.append("Dice: mean over foreground labels present in both maps (Learn2Reg); HD95: symmetric 95th "
                 "percentile surface distance in mm; folding %: voxels with det(J) <= 0; SDlogJ: standard "
                 "deviation of log det(J) (see spikereg_neuro/registration/metrics.py). "
                 + ("EPE: mean endpoint error against the synthetic pairs' true field, in voxels, over the "
                    "fixed image's labelled voxels (before: the identity's, i.e. the mean true displacement). "
                    if epe else "")
                 + "s / pair: wall time of the registration call on this machine (model loading excluded).")
    gains = {n: m for n, m in methods.items() if (m.get("dice_gain") or {}).get("n", 0) >= 2}
    if gains:
        conf = next(iter(gains.values()))["dice_gain"]["confidence"]
        lines += ["", "## Gain over the unregistered pairs (paired, per pair)", ""]
        lines.append(f"| method | Dice gain | {conf:.0%} CI | pairs improved | p (Wilcoxon, one-sided) |"
                     + (" EPE change vox | pairs improved |" if epe else ""))
        lines.append("|---|---|---|---|---|" + ("---|---|" if epe else ""))
        for name, m in gains.items():
            g, e = m["dice_gain"], m.get("epe_gain") or {}
            lines.append(f"| {name} | {g['mean']:+.4f} | [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}] "
                         f"| {g['n_better']} / {g['n']} | {_fmt(g['p_wilcoxon'], 3)} |"
                         + (f" {e['mean']:+.3f} | {e['n_better']} / {e['n']} |" if epe and e.get("n") else
                            (" n/a | n/a |" if epe else "")))
        lines.append("")
        lines.append("Gain: Dice after minus Dice before on each pair, then the mean with a Student-t "
                     "interval; EPE change: endpoint error after minus before (negative is better). "
                     "With 5 pairs the smallest possible one-sided Wilcoxon p is 1/32 = 0.031, "
                     "reached when every pair improves; the identity has no gain (n/a).")
    labels = sorted({int(k) for m in methods.values() for k in m.get("dice_per_label_mean", {})})
    if labels and methods:
        names = data.get("label_names") or {}
        lines += ["", "## Dice per label (mean over pairs)", ""]
        lines.append("| label | " + " | ".join(methods) + " |")
        lines.append("|---|" + "---|" * len(methods))
        for lab in labels:
            lname = names.get(lab, names.get(str(lab), ""))
            cells = [_fmt(m["dice_per_label_mean"].get(lab, m["dice_per_label_mean"].get(str(lab)))) for m in methods.values()]
            lines.append(f"| {lab} {lname} | " + " | ".join(cells) + " |")
    if doc.get("skipped"):
        lines += ["", "## Skipped methods", ""]
        for name, why in doc["skipped"].items():
            lines.append(f"* **{name}**: {why}")
    return "\n".join(lines) + "\n"


def write_accuracy(out_dir: str | Path, doc: Dict[str, Any]) -> Tuple[Path, Path]:
    """Write ``accuracy.json`` and ``accuracy.md`` atomically; returns their paths."""
    from .io.atomic import atomic_write_text

    out = Path(out_dir)
    doc = _clean(doc)
    j = atomic_write_text(out / "accuracy.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    md = atomic_write_text(out / "accuracy.md", accuracy_markdown(doc))
    return j, md


def _machine(threads: int) -> Dict[str, Any]:
    import torch
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "threads": threads}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


# ============================================================================ commands


clean_json = _clean
machine_info = _machine
