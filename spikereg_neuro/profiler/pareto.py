"""The energy-vs-Dice trade-off of several SpikeReg models: ``spikereg-neuro benchmark pareto``.

Each point is one ``benchmark`` run (its ``benchmark.json``), typically of models trained with
different firing-rate bands: its main Loihi 2 row (gross and dynamic energy, estimated), the Dice
of that row (the quantized network on Loihi 2) and of the float model, and the network's mean and
largest per-layer spike rate. The runs must share their pairs, data and Loihi 2 constants, so
the points are priced on one basis. A point is on the front when no other point has both less
gross energy and a higher Dice. The VoxelMorph GPU row and the identity's Dice of the first run
are drawn for reference. A ``pareto.json`` given among the runs contributes all of its points, so
a figure can be extended with a new model's run when the earlier models' runs are gone.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

PARETO_FORMAT = "spikereg-neuro/pareto"
PARETO_VERSION = 2   # 2: the Loihi 2 constants recorded in the document


def _loihi_constants(constants: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The Loihi 2 constants of a document's ``constants`` (values): the GPU estimate's constants,
    which price only the VoxelMorph reference line, are left out of the one-basis check."""
    if constants is None:
        return None
    from .gpu_energy import GPU_CONSTANTS, GPU_IDLE, GPU_KERNEL_FLOOR, GPU_THROUGHPUT
    gpu = {*GPU_CONSTANTS, *GPU_IDLE, *GPU_KERNEL_FLOOR, *GPU_THROUGHPUT}
    return {k: (v.get("value") if isinstance(v, Mapping) else v) for k, v in constants.items() if k not in gpu}


def _expect(v: Any, kind: Any, where: str, what: str) -> Any:
    """``v`` (the JSON value at ``where``), checked to be a ``kind``: else a one-line error."""
    if not isinstance(v, kind) or isinstance(v, bool):
        raise ValueError(f"{where}: expected {what}, got {'nothing' if v is None else repr(v)[:40]}")
    return v


def _num(v: Any, where: str, hi: Optional[float] = None, need: bool = False) -> Optional[float]:
    """``v`` (the JSON value at ``where``) as a finite number >= 0 (and <= ``hi``); None passes
    unless ``need``. Anything else (a string, NaN, a negative energy, a Dice of 7) is an error."""
    if v is None and not need:
        return None
    _expect(v, (int, float), where, "a number")
    if not math.isfinite(v) or v < 0 or (hi is not None and v > hi):
        raise ValueError(f"{where}: {v!r} is out of range (expected a finite number "
                         f"{'>= 0' if hi is None else f'in [0, {hi:g}]'})")
    return float(v)


def _rows(doc: Mapping[str, Any], src: str) -> List[Mapping[str, Any]]:
    rows = _expect(doc.get("rows", []), list, f"{src}: rows", "a list of rows")
    for i, r in enumerate(rows):
        _expect(r, Mapping, f"{src}: rows[{i}]", "a row (a JSON object)")
    return rows


def _row(rows: Sequence[Mapping[str, Any]], method_prefix: str, platform_prefix: str,
         energy: bool = False) -> Optional[int]:
    """The index of the first row of that method and platform (with an energy, if ``energy``)."""
    return next((i for i, r in enumerate(rows) if str(r.get("method", "")).startswith(method_prefix)
                 and str(r.get("platform", "")).startswith(platform_prefix)
                 and (not energy or r.get("energy_mj") is not None)), None)


def _vxm(v: Any, where: str) -> Optional[Dict[str, Any]]:
    """The VoxelMorph GPU reference (a benchmark row or a pareto.json's ``voxelmorph_gpu``), checked."""
    if v is None:
        return None
    _expect(v, Mapping, where, "a JSON object")
    return {"energy_mj": _num(v.get("energy_mj"), f"{where}.energy_mj"),
            "dynamic_mj": _num(v.get("dynamic_mj"), f"{where}.dynamic_mj"),
            "energy_source": v.get("energy_source"), "dice": _num(v.get("dice"), f"{where}.dice", hi=1),
            "platform": v.get("platform")}


def _shared(doc: Mapping[str, Any], src: str) -> Dict[str, Any]:
    """A document's pairs and constants, checked (the one-basis check compares them)."""
    return {"pairs": list(_expect(doc.get("pairs", []), list, f"{src}: pairs", "a list of pair names")),
            "data": doc.get("data"),
            "constants": _loihi_constants(_expect(doc.get("constants") or {}, Mapping, f"{src}: constants",
                                                  "a JSON object"))}


def _json_path(p: Path) -> Path:
    """The file an input names: itself, or its folder's benchmark.json (else its pareto.json)."""
    j = p / "benchmark.json" if p.is_dir() else p
    if p.is_dir() and not j.is_file() and (p / "pareto.json").is_file():
        j = p / "pareto.json"
    return j


def check_outputs(out_dir: str | Path, paths: Sequence[str | Path]) -> None:
    """Refuse an ``out_dir`` whose files would replace one of the inputs (e.g. extending a figure
    in its own folder): a one-line error before anything is read or written."""
    outs = {(Path(out_dir) / f"pareto.{ext}").resolve() for ext in ("json", "md", "png")}
    for p in paths:
        if _json_path(Path(p)).resolve() in outs:
            raise ValueError(f"--out {out_dir} would replace the input {p}: write to another folder "
                             "(and copy the files over afterwards)")


def _read_doc(path: str | Path) -> tuple:
    """``(json path, document, default label)`` of a benchmark output folder or a ``pareto.json``
    folder, or of such a file, checked to be one of the two."""
    p = Path(path)
    j = _json_path(p)
    if not j.is_file():
        raise FileNotFoundError(f"no benchmark.json in {p} (run `spikereg-neuro benchmark --out {p}` first)")
    from ..data.learn2reg import read_json_object

    doc = read_json_object(j)
    if doc.get("format") != PARETO_FORMAT and "rows" not in doc:
        raise ValueError(f"{j}: not a benchmark.json (no rows) nor a pareto.json")
    return j, doc, p.name


def _points_of(j: Path, doc: Mapping[str, Any], label: str) -> List[Dict[str, Any]]:
    """A benchmark document's point (named ``label``), or a pareto document's points (checked:
    a supported version, one label each, numbers in range)."""
    if doc.get("format") != PARETO_FORMAT:
        return [point_from_doc(doc, label, str(j))]
    v = doc.get("version")
    if isinstance(v, bool) or v not in range(1, PARETO_VERSION + 1):
        raise ValueError(f"{j}: pareto.json version {v!r} is not supported (this spikereg-neuro reads "
                         f"versions 1 to {PARETO_VERSION}; a newer one needs a newer spikereg-neuro)")
    shared = {**_shared(doc, str(j)), "voxelmorph_gpu": _vxm(doc.get("voxelmorph_gpu"), f"{j}: voxelmorph_gpu"),
              "identity_dice": _num(doc.get("identity_dice"), f"{j}: identity_dice", hi=1)}
    if doc.get("constants") is None:
        shared["constants"] = None      # version 1: not recorded
    pts = []
    for i, q in enumerate(_expect(doc.get("points"), list, f"{j}: points", "a list of points")):
        at = f"{j}: points[{i}]"
        _expect(q, Mapping, at, "a point (a JSON object)")
        name = q.get("label")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{at}.label: expected a non-empty name, got {'nothing' if name is None else repr(name)[:40]}")
        if any(p["label"] == name for p in pts):
            raise ValueError(f"{j}: two points are labelled {name!r}")
        nums = {k: _num(q.get(k), f"{at}.{k}", hi=1 if k.startswith("dice") else None, need=k == "energy_mj")
                for k in ("energy_mj", "dynamic_mj", "latency_ms", "dice_quantized", "dice_float",
                          "mean_spike_rate", "max_layer_rate")}
        pts.append({**q, **{k: q.get(k) for k in ("energy_source", "platform", "max_layer")}, **nums, **shared,
                    "label": name, "path": q.get("path") or str(j), "from": str(j)})
    return pts


def read_points(path: str | Path, label: Optional[str] = None) -> List[Dict[str, Any]]:
    """The point of a benchmark output folder (or its ``benchmark.json``), or every point of a
    ``pareto.json`` (or a folder holding one), which keep their labels."""
    j, doc, name = _read_doc(path)
    return _points_of(j, doc, label or name)


def point_from_doc(doc: Mapping[str, Any], label: str, path: str = "") -> Dict[str, Any]:
    """One point from a benchmark document (a ``benchmark.json``'s content, or the run in progress),
    its rows, numbers and spike rates checked (a one-line error naming ``path`` and the key)."""
    src = path or "the benchmark run"
    rows = _rows(doc, src)
    i = _row(rows, "", "Loihi 2", energy=True)
    if i is None:
        raise ValueError(f"{src}: no Loihi 2 row with an energy (rows: {len(rows)})")

    def val(i: Optional[int], key: str) -> Optional[float]:
        return None if i is None else _num(rows[i].get(key), f"{src}: rows[{i}].{key}", hi=1 if key == "dice" else None)

    loihi, flt, vxm = rows[i], _row(rows, "SpikeReg (float", "CPU"), _row(rows, "VoxelMorph", "GPU")
    given = _expect(doc.get("spike_rates") or {}, Mapping, f"{src}: spike_rates", "a JSON object of layer rates")
    rates = {k: _num(v, f"{src}: spike_rates.{k}") for k, v in given.items() if v is not None}
    return {
        "label": label,
        "path": path,
        "energy_mj": val(i, "energy_mj"),
        "dynamic_mj": val(i, "dynamic_mj"),
        "energy_source": loihi.get("energy_source"),
        "latency_ms": val(i, "latency_ms"),
        "platform": loihi.get("platform"),
        "dice_quantized": val(i, "dice"),
        "dice_float": val(flt, "dice"),
        "mean_spike_rate": _num(doc.get("mean_spike_rate"), f"{src}: mean_spike_rate"),
        "max_layer_rate": max(rates.values()) if rates else None,
        "max_layer": max(rates, key=rates.get) if rates else None,
        **_shared(doc, src),
        "voxelmorph_gpu": None if vxm is None else _vxm(rows[vxm], f"{src}: rows[{vxm}]"),
        "identity_dice": val(_row(rows, "identity", ""), "dice"),
    }


def front(points: Sequence[Mapping[str, Any]], dice_key: str = "dice_quantized") -> List[bool]:
    """Whether each point is on the Pareto front (no other point with less gross energy AND a
    higher Dice; points without a Dice are not)."""
    out = []
    for p in points:
        if p.get(dice_key) is None:
            out.append(False)
            continue
        out.append(not any(q is not p and q.get(dice_key) is not None and q["energy_mj"] <= p["energy_mj"]
                           and q[dice_key] >= p[dice_key]
                           and (q["energy_mj"] < p["energy_mj"] or q[dice_key] > p[dice_key]) for q in points))
    return out


def build(paths: Sequence[str | Path], labels: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The pareto document of several benchmark runs and/or earlier pareto documents (checked to
    share pairs, data and constants). ``labels`` name the benchmark runs, in order. A run named
    like a point that a pareto.json brings replaces that point (a model priced again); two runs
    of one name are an error."""
    docs = [_read_doc(p) for p in paths]
    runs = sum(doc.get("format") != PARETO_FORMAT for _, doc, _ in docs)
    if labels is not None and not all(x.strip() for x in labels):
        raise ValueError(f"--labels {','.join(labels)!r}: a name is empty (give one name per benchmark run)")
    if labels is not None and len(labels) != runs:
        raise ValueError(f"--labels has {len(labels)} names for {runs} benchmark runs")
    names = iter(labels or [])
    pts, from_run = [], []
    for j, doc, name in docs:
        is_run = doc.get("format") != PARETO_FORMAT
        for q in _points_of(j, doc, next(names) if labels and is_run else name):
            pts.append(q)
            from_run.append(is_run)
    run_labels = [q["label"] for q, r in zip(pts, from_run) if r]
    twice = sorted({x for x in run_labels if run_labels.count(x) > 1})
    if twice:
        raise ValueError(f"two benchmark runs are both named {twice[0]!r}: give them different --labels")
    replaced = [q for q, r in zip(pts, from_run) if not r and q["label"] in run_labels]
    pts = [q for q in pts if not any(q is x for x in replaced)]
    for i, q in enumerate(pts):
        other = next((x for x in pts[:i] if x["label"] == q["label"]), None)
        if other is not None:
            raise ValueError(f"two points are labelled {q['label']!r} (from {other.get('from', other['path'])} "
                             f"and {q.get('from', q['path'])}): give each input once, or rename")
    if len(pts) < 2:
        raise ValueError("benchmark pareto needs at least 2 points (benchmark runs or a pareto.json's points)")
    doc = build_points(pts)
    for q in replaced:
        doc.setdefault("notes", []).append(f"{q['label']}: the point of {q.get('from', q['path'])} is replaced by "
                                           "the benchmark run of that name")
    return doc


def build_points(pts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The pareto document of points (:func:`read_points` / :func:`point_from_doc`), checked to
    share pairs, data and constants. A point read from a pareto.json of version 1 has no
    constants recorded: it is taken on the reference's, and the document's notes say so."""
    ref = next((p for p in pts if p.get("constants") is not None), pts[0])
    notes = []
    for p in pts:
        if p is ref:
            continue
        for key, what in (("pairs", "pairs"), ("data", "data"), ("constants", "Loihi 2 constants")):
            if key == "constants" and p[key] is None:
                note = (f"{p.get('from', p['path'])}: Loihi 2 constants not recorded (pareto.json version 1); "
                        f"its points are taken on those of {ref['path']}")
                if note not in notes:
                    notes.append(note)
            elif p[key] != ref[key]:
                raise ValueError(f"{p['path']} and {ref['path']} differ in their {what}: the points would "
                                 "not be priced or scored on one basis")
    on = front(pts)
    for p, f in zip(pts, on):
        p["on_front"] = f
    first = pts[0]
    doc = {"format": PARETO_FORMAT, "version": PARETO_VERSION, "pairs": ref["pairs"], "data": ref["data"],
           "constants": ref["constants"],
           "energy_basis": "gross (static + dynamic), estimated, one constant set for every point",
           "voxelmorph_gpu": first["voxelmorph_gpu"], "identity_dice": first["identity_dice"],
           "points": [{k: v for k, v in p.items() if k not in ("pairs", "data", "constants", "voxelmorph_gpu",
                                                                "identity_dice", "from")} for p in pts]}
    if notes:
        doc["notes"] = notes
    return doc


def rename(doc: Dict[str, Any], names: Mapping[str, Optional[str]]) -> None:
    """Rename points in place (``{old label: new label}``); an unknown label or a missing new
    one is an error."""
    labels = [p["label"] for p in doc["points"]]
    for old, new in names.items():
        if new is None or not new.strip():
            raise ValueError(f"--rename {old!r}: give OLD=NEW")
        if old not in labels:
            raise ValueError(f"--rename: no point labelled {old!r} (points: {', '.join(labels)})")
    new = [names.get(x, x) for x in labels]
    twice = next((x for x in new if new.count(x) > 1), None)
    if twice is not None:
        raise ValueError(f"--rename: two points would be labelled {twice!r}")
    for p, x in zip(doc["points"], new):
        p["label"] = x


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown(doc: Mapping[str, Any]) -> str:
    """The table of points (front marked) and the references."""
    lines = ["# SpikeReg energy vs Dice (Loihi 2, estimated)", "",
             f"{len(doc['points'])} models on the same {len(doc['pairs'])} pair(s); energy basis: "
             f"{doc['energy_basis']}. `*`: on the Pareto front (no other model with less gross energy "
             "and a higher quantized Dice).", "",
             "| model | gross mJ | dynamic mJ | latency ms | Dice (Loihi 2, quantized) | Dice (float) | mean spike rate | "
             "largest layer rate | front |",
             "|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for p in doc["points"]:
        lr = "n/a" if p["max_layer_rate"] is None else f"{100 * p['max_layer_rate']:.1f} % ({p['max_layer']})"
        lines.append(f"| {p['label']} | {p['energy_mj']:.2f} | {_f(p['dynamic_mj'], '.2f')} | "
                     f"{_f(p['latency_ms'], '.3g')} | {_f(p['dice_quantized'], '.4f')} | {_f(p['dice_float'], '.4f')} | "
                     f"{'n/a' if p['mean_spike_rate'] is None else format(100 * p['mean_spike_rate'], '.1f') + ' %'} | "
                     f"{lr} | {'*' if p['on_front'] else ''} |")
    v = doc.get("voxelmorph_gpu")
    lines += ["", f"Identity (no registration) Dice: {_f(doc.get('identity_dice'), '.4f')}."]
    lines += [f"Note: {n}." for n in doc.get("notes", [])]
    if v:
        lines.append(f"VoxelMorph, {v['platform']}: {_f(v['energy_mj'], '.2f')} mJ gross "
                     f"({v['energy_source']}), Dice {_f(v['dice'], '.4f')}.")
    return "\n".join(lines) + "\n"


def figure(path: Path, doc: Mapping[str, Any]) -> Path:
    """Gross (filled) and dynamic (open) energy against Dice, the front joined, the VoxelMorph GPU
    point and the identity's Dice drawn; each point labelled with its mean spike rate."""
    from .figures import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(10.0, 4.6))
    fig.subplots_adjust(right=0.66)     # the key of the numbered points to the right of the axes
    pts = [p for p in doc["points"] if p.get("dice_quantized") is not None]
    for i, p in enumerate(pts):
        ax.scatter(p["dice_quantized"], p["energy_mj"], s=46, color="C0" if p["on_front"] else "C7", zorder=3)
        if p.get("dynamic_mj") is not None:
            ax.scatter(p["dice_quantized"], p["dynamic_mj"], s=46, facecolors="none",
                       edgecolors="C0" if p["on_front"] else "C7", zorder=3)
        ax.annotate(str(i + 1), (p["dice_quantized"], p["energy_mj"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)     # numbered: close points stay legible, named in the key
    key = [f"{i + 1}: {p['label']}" + ("" if p["mean_spike_rate"] is None else
                                        f" ({100 * p['mean_spike_rate']:.1f} % spikes)") for i, p in enumerate(pts)]
    ax.text(1.02, 1.0, "\n".join(key), transform=ax.transAxes, va="top", ha="left", fontsize=7.5,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})
    fr = sorted((p for p in pts if p["on_front"]), key=lambda p: p["dice_quantized"])
    if len(fr) > 1:
        ax.plot([p["dice_quantized"] for p in fr], [p["energy_mj"] for p in fr], color="C0", lw=1, zorder=2,
                label="front (gross)")
    v = doc.get("voxelmorph_gpu")
    if v and v.get("energy_mj") is not None and v.get("dice") is not None:
        ax.scatter(v["dice"], v["energy_mj"], marker="s", s=46, color="C3", zorder=3,
                   label=f"VoxelMorph GPU ({v['energy_source']})")
    if doc.get("identity_dice") is not None:
        ax.axvline(doc["identity_dice"], color="k", ls="--", lw=0.8, label="identity Dice")
    ax.set_yscale("log")
    ax.set_xlabel("Dice (mean over the pairs; SpikeReg quantized, Loihi 2 rows)")
    ax.set_ylabel("energy per registration (mJ, estimated)")
    ax.set_title("SpikeReg energy vs Dice: filled gross, open dynamic")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, Path(path))


def write(out_dir: str | Path, doc: Mapping[str, Any]) -> Dict[str, Path]:
    """``pareto.json``, ``pareto.md`` and ``pareto.png`` in ``out_dir``, all or none: the texts are
    made first, and a failed write removes the files already written."""
    from ..io.atomic import atomic_write_text

    out = Path(out_dir)
    paths = {"json": out / "pareto.json", "md": out / "pareto.md", "png": out / "pareto.png"}
    try:
        text = json.dumps(doc, indent=1, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{paths['json']}: {exc}") from None
    md = markdown(doc) + "\n![energy vs Dice](pareto.png)\n"
    out.mkdir(parents=True, exist_ok=True)
    done: List[Path] = []
    try:
        done.append(figure(paths["png"], doc))
        done.append(atomic_write_text(paths["json"], text))
        atomic_write_text(paths["md"], md)
    except BaseException:
        for p in done:
            p.unlink(missing_ok=True)
        raise
    return paths
