"""The benchmark table: rows, the ``benchmark.json`` contract, ``benchmark.md``, ``report.html``
and the printout.

A row is one (method, platform) with energy (mJ) and latency (ms) per registration of one pair,
each with its source, and the accuracy of that method on the same held-out pairs::

    {"method", "platform", "energy_mj", "energy_source", "latency_ms", "latency_source",
     "dice", "hd95", "folding_pct", ...}

Sources: ``"measured"`` or ``"estimated"`` whenever the figure is a number. A figure that could
not be obtained on this machine is ``null`` with source ``"not available"`` and a reason in
``energy_note`` / ``latency_note`` (a row that could not run at all: every figure ``null`` and
``why``). Nothing is ever filled in from elsewhere.

:func:`markdown` (benchmark.md, linking the figures) and :func:`report_html` (report.html, the
figures embedded as base64 PNG: one self-contained file) are written from the same document.
"""
from __future__ import annotations

import base64
import html as _html
import math
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

#: keys every row of benchmark.json carries (the output contract of issue 7)
CONTRACT_ROW_KEYS = ("method", "platform", "energy_mj", "energy_basis", "dynamic_mj", "energy_source",
                     "latency_ms", "latency_source", "dice", "hd95", "folding_pct")
#: the sources a number may have
SOURCES = ("measured", "estimated")
#: the source of a figure that is null
NOT_AVAILABLE = "not available"
#: every row's energy_mj: static (or idle) + dynamic energy
ENERGY_BASIS = "gross"
FORMAT = "spikereg-neuro/benchmark"
FORMAT_VERSION = 1


def _num(v: Any) -> Optional[float]:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def energy_ratio_sentence(e: Mapping[str, Any]) -> str:
    """``benchmark.json["energy_ratio_vs_voxelmorph_gpu"]`` as a sentence naming both sides' sources."""
    f = (lambda v: "n/a" if v is None else f"{v:.2f}x")
    s, g = e.get("spikereg") or {}, e.get("voxelmorph") or {}
    return (f"Energy per registration, SpikeReg ({s.get('platform')}, {s.get('source') or 'n/a'}) / VoxelMorph "
            f"({g.get('platform')}, {g.get('source') or 'n/a'}): gross {f(e.get('gross'))}, dynamic "
            f"{f(e.get('dynamic'))}.")


def make_row(method: str, platform: str, *, energy_mj: Optional[float] = None,
             energy_source: Optional[str] = None, energy_note: str = "",
             dynamic_mj: Optional[float] = None,
             latency_ms: Optional[float] = None, latency_source: Optional[str] = None,
             latency_note: str = "", dice: Optional[float] = None, hd95: Optional[float] = None,
             folding_pct: Optional[float] = None, note: str = "",
             details: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """One table row; checks that every number has a source and every missing figure a reason.

    ``energy_mj`` is GROSS (static or idle power x time + dynamic; ``energy_basis: "gross"`` on
    every row), ``dynamic_mj`` its dynamic part (null where it is not known separately).
    """
    row: Dict[str, Any] = {"method": str(method), "platform": str(platform)}
    for what, val, src, why in (("energy", energy_mj, energy_source, energy_note),
                                ("latency", latency_ms, latency_source, latency_note)):
        v = _num(val)
        if v is None:
            if not why:
                raise ValueError(f"{method} / {platform}: {what} is missing, say why ({what}_note)")
            src = NOT_AVAILABLE
        elif src not in SOURCES:
            raise ValueError(f"{method} / {platform}: {what} source must be one of {SOURCES}, got {src!r}")
        row[f"{what}_{'mj' if what == 'energy' else 'ms'}"] = v
        row[f"{what}_source"] = src
        if why:
            row[f"{what}_note"] = str(why)
    row["energy_basis"] = ENERGY_BASIS
    row["dynamic_mj"] = _num(dynamic_mj)
    if row["dynamic_mj"] is not None and row["energy_mj"] is not None and row["dynamic_mj"] > row["energy_mj"] * (1 + 1e-9):
        raise ValueError(f"{method} / {platform}: dynamic energy {row['dynamic_mj']} exceeds the gross {row['energy_mj']}")
    row.update(dice=_num(dice), hd95=_num(hd95), folding_pct=_num(folding_pct))
    if note:
        row["note"] = str(note)
    if details:
        row["details"] = dict(details)
    return row


def refusal_row(method: str, platform: str, why: str) -> Dict[str, Any]:
    """A row that could not be produced: every figure null, and the reason."""
    if not why:
        raise ValueError("a refusal row needs a reason")
    row = make_row(method, platform, energy_note=why, latency_note=why)
    row["why"] = str(why)
    return row


def validate_document(doc: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``doc`` meets the benchmark.json contract."""
    for k in ("rows", "constants", "pairs"):
        if k not in doc:
            raise ValueError(f"benchmark document lacks {k!r}")
    if not doc["rows"]:
        raise ValueError("benchmark document has no rows")
    for r in doc["rows"]:
        missing = [k for k in CONTRACT_ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"row {r.get('method')!r} lacks {missing}")
        if r.get("energy_basis") != ENERGY_BASIS:
            raise ValueError(f"row {r['method']!r}: energy_basis must be {ENERGY_BASIS!r}, got {r.get('energy_basis')!r}")
        for what, key in (("energy", "energy_mj"), ("latency", "latency_ms")):
            src = r[f"{what}_source"]
            if r[key] is None:
                if src != NOT_AVAILABLE or not (r.get(f"{what}_note") or r.get("why")):
                    raise ValueError(f"row {r['method']!r}: null {what} needs source {NOT_AVAILABLE!r} and a reason")
            elif src not in SOURCES:
                raise ValueError(f"row {r['method']!r}: {what} source {src!r} not in {SOURCES}")
    for name, c in doc["constants"].items():
        if not isinstance(c, Mapping) or not c.get("citation") or "value" not in c:
            raise ValueError(f"constant {name!r} needs a value and a citation")
    if not doc["pairs"]:
        raise ValueError("benchmark document lists no pairs")


def build_document(rows: Sequence[Mapping[str, Any]], constants: Mapping[str, Mapping[str, Any]],
                   pairs: Sequence[Any], **extra: Any) -> Dict[str, Any]:
    """The benchmark.json dictionary (validated)."""
    doc: Dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "rows": [dict(r) for r in rows],
                           "constants": {k: dict(v) for k, v in constants.items()}, "pairs": list(pairs)}
    doc.update(extra)
    validate_document(doc)
    return doc


# ============================================================================ text
def _f(v: Optional[float], nd: int) -> str:
    if v is None:
        return "n/a"
    if nd < 0:  # significant digits
        return f"{v:.{-nd}g}"
    return f"{v:.{nd}f}"


def _src(s: str) -> str:
    return {"measured": "meas.", "estimated": "est.", NOT_AVAILABLE: "n/a"}.get(s, s)


def _fig(v: Optional[float]) -> str:
    if v is None:
        return "n/a"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def table_lines(rows: Iterable[Mapping[str, Any]]) -> List[str]:
    """The markdown table of the rows (energy and latency per registration of one pair)."""
    out = ["| method | platform | energy, gross (mJ) | dynamic (mJ) | source | latency (ms) | source | Dice | HD95 (mm) | folding % |",
           "|---|---|---:|---:|---|---:|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['method']} | {r['platform']} | {_fig(r['energy_mj'])} | {_fig(r.get('dynamic_mj'))} "
                   f"| {_src(r['energy_source'])} "
                   f"| {_fig(r['latency_ms'])} | {_src(r['latency_source'])} | {_f(r['dice'], 3)} "
                   f"| {_f(r['hd95'], 2)} | {_f(r['folding_pct'], 3)} |")
    return out


def row_notes(rows: Iterable[Mapping[str, Any]]) -> List[str]:
    """One bullet per row: how its figures were obtained, and why any is missing."""
    out = []
    for r in rows:
        parts = [p for p in (r.get("note"), r.get("why") and f"not produced: {r['why']}",
                             r.get("energy_note") and not r.get("why") and f"energy: {r['energy_note']}",
                             r.get("latency_note") and not r.get("why") and f"latency: {r['latency_note']}") if p]
        out.append(f"* **{r['method']} / {r['platform']}**: " + " ".join(parts))
    return out


def data_source(doc: Dict[str, Any]) -> str:
    """Where a benchmark document's pairs came from, in words."""
    d = doc.get("data") or {}
    if d.get("source") and d.get("source") != "embedded":
        return f"{d['source']} ({d.get('split', '?')})"
    return f"the embedded data set ({d.get('split', 'test')} split)"


def markdown(doc: Mapping[str, Any]) -> str:
    """benchmark.md: the table, date, machine, pairs and a note on every row and constant."""
    m = doc.get("machine", {})
    lines = ["# Benchmark: energy, latency and accuracy per registration", ""]
    lines.append(f"Created {doc.get('created', '?')} on {m.get('cpu', m.get('processor', '?'))}, "
                 f"{m.get('cpu_count', '?')} CPU cores, GPU: {m.get('gpu') or 'none'}; "
                 f"{m.get('threads', '?')} torch thread(s) for the timed CPU runs.")
    lines.append(f"Pairs: {len(doc['pairs'])} held-out pairs ({', '.join(str(p) for p in doc['pairs'])}) of "
                 f"{data_source(doc)}, the same for every row (the Lava rows use one patch of the first pair).")
    lines.append("")
    lines += table_lines(doc["rows"])
    lines.append("")
    r = doc.get("cpu_latency_ratio_vs_voxelmorph")
    if r:
        f = (lambda v: "n/a" if v is None else f"{v:.2f}x")
        inf = r.get("inference") or {}
        lines.append(f"CPU latency / VoxelMorph's ({r.get('platform')}, same pairs): SpikeReg float "
                     f"{f(r.get('spikereg_float'))} ({inf.get('spikereg_float')}), quantized emulator "
                     f"{f(r.get('quantized_emulator'))} ({inf.get('quantized_emulator')}).")
        lines.append("")
    e = doc.get("energy_ratio_vs_voxelmorph_gpu")
    if e:
        lines += [energy_ratio_sentence(e), ""]
    lines.append("Energy and latency are per registration of one pair (mean over the pairs) unless the platform "
                 "says otherwise; energy is gross (static or idle power x time + dynamic), the dynamic part beside "
                 "it. *meas.* = measured on this machine, or on the GPU machine a row's platform names (a recorded NVML "
                 "run); *est.* = estimated by a model from counted "
                 "operations and the named constants below (not a measurement); *n/a* = not available here "
                 "(reason below). Dice: mean over the labels; HD95 in mm; folding: % voxels with det J <= 0.")
    warn = identity_warnings(doc["rows"])
    if warn:
        lines += [f"**Not above the identity:** {w}" for w in warn] + [""]
    lines += ["", "## What the numbers rest on", "", basis_paragraph(doc)]
    vt = variant_table(doc)
    if vt:
        lines += ["", "## Loihi 2 variants (estimated, per registration)", ""] + _md_table(*vt)
    st = sensitivity_table(doc)
    if st:
        lines += ["", "## Sensitivity bracket (main Loihi 2 row, estimated)", ""] + _md_table(*st)
    figs = doc.get("figures") or {}
    if figs:
        caps = doc.get("figure_captions") or {}
        lines += ["", "## Figures", "", "All of them in one page: [report.html](report.html).", ""]
        for key, path in figs.items():
            lines += [f"![{key}]({path})", "", f"*{caps.get(key, key)}* ([{path}]({path}))", ""]
    lines += ["", "## How each row was obtained", ""]
    lines += row_notes(doc["rows"])
    if doc.get("notes"):
        lines += ["", "## Notes", ""]
        lines += [f"* {n}" for n in doc["notes"]]
    lines += ["", "## Constants (every model constant, with its source)", "",
              "| name | value | unit | kind | citation |", "|---|---|---|---|---|"]
    for k, c in doc["constants"].items():
        lines.append(f"| `{k}` | {c['value']:g} | {c.get('unit', '')} | {c.get('kind', '')} | {c['citation']} |")
    return "\n".join(lines) + "\n"


# ============================================================================ report sections
#: what the Loihi 2 model does not include (the estimator's scope, docs/benchmark.md)
NOT_MODELLED = ("host I/O (injecting the graded input, reading the field back)",
                "network-on-chip routing congestion", "tile hops (the mapping gives none)",
                "reconfiguration between input shapes", "the host's warping between scales")
IDENTITY_METHOD = "identity (reference)"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> List[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in body])


def identity_warnings(rows: Iterable[Mapping[str, Any]]) -> List[str]:
    """One line per row whose Dice is not above the identity's (no registration)."""
    rows = list(rows)
    ident = next((r.get("dice") for r in rows if r.get("method") == IDENTITY_METHOD), None)
    if ident is None:
        return []
    return [f"{r['method']} / {r['platform']}: Dice {r['dice']:.4f} <= identity {ident:.4f}"
            for r in rows if r.get("method") != IDENTITY_METHOD and r.get("dice") is not None
            and r["dice"] <= ident]


def variant_table(doc: Mapping[str, Any]) -> Optional[Tuple[List[str], List[List[str]]]]:
    """``loihi2_variants`` as (header, rows): one row per deployment, one column per mapping
    (gross / dynamic mJ, ms, chips, cores), then the deployment's Dice."""
    vs = doc.get("loihi2_variants") or []
    if not vs:
        return None
    encs = list(dict.fromkeys(v["encoding"] for v in vs))
    deps = list(dict.fromkeys(v["deployment"] for v in vs))
    by = {(v["encoding"], v["deployment"]): v for v in vs}
    enc_label = {"shared": "shared kernels", "sparse": "explicit Sparse (conservative bound)"}
    header = ["deployment"] + [enc_label.get(e, e) + ": gross / dynamic mJ, ms, chips, cores" for e in encs] + ["Dice"]
    body = []
    main = doc.get("loihi2_deployment")
    for d in deps:
        cells = [d.replace("_", " ") + (" (table rows)" if d == main else "")]
        dice = None
        for e in encs:
            v = by.get((e, d))
            if v is None:
                cells.append("not priced" + (f" ({doc['loihi2_not_priced'].get(e + ':' + d)})"
                                             if (doc.get("loihi2_not_priced") or {}).get(e + ":" + d) else ""))
                continue
            dice = v.get("dice") if dice is None else dice
            cells.append(f"{_fig(v.get('energy_mj'))} / {_fig(v.get('dynamic_mj'))}, {_fig(v.get('latency_ms'))}, "
                         f"{v.get('chips')}, {v.get('cores')}")
        cells.append(_f(dice, 4))
        body.append(cells)
    return header, body


def sensitivity_table(doc: Mapping[str, Any]) -> Optional[Tuple[List[str], List[List[str]]]]:
    """``loihi2_sensitivity`` as (header, rows): one row per constant set."""
    s = doc.get("loihi2_sensitivity") or {}
    sets = [k for k, v in s.items() if isinstance(v, Mapping) and "energy_mj" in v]
    if not sets:
        return None
    presets = s.get("presets") or {}
    header = ["constant set", "gross mJ", "dynamic mJ", "static mJ", "latency ms", "what it is"]
    body = [[k, _fig(s[k].get("energy_mj")), _fig(s[k].get("dynamic_mj")), _fig(s[k].get("static_mj")),
             _fig(s[k].get("latency_ms")), str(presets.get(k, ""))] for k in sets]
    return header, body


def _constant_groups(constants: Mapping[str, Mapping[str, Any]]) -> Dict[str, List[str]]:
    """The Loihi 2 model's constants by where their value comes from (read from the citations)."""
    g: Dict[str, List[str]] = {"measured": [], "hala_point": [], "loihi1": [], "loihi1_ratio": [], "spec": [],
                               "assumed": [], "gpu": []}
    for k, c in constants.items():
        cit, kind = str(c.get("citation", "")), str(c.get("kind", ""))
        if k.startswith(("h100", "horowitz")):
            g["gpu"].append(k)
        elif kind == "measured":
            g["measured"].append(k)
        elif "Hala Point" in cit:
            g["hala_point"].append(k)
        elif kind == "assumed":
            g["assumed"].append(k)
        elif "Davies" in cit and any(o in cit for o in constants if o != k):
            g["loihi1_ratio"].append(k)
        elif "Davies" in cit or "LOIHI 1" in cit:
            g["loihi1"].append(k)
        else:
            g["spec"].append(k)
    return g


def basis_paragraph(doc: Mapping[str, Any]) -> str:
    """"What the numbers rest on", generated from the document's constants, rows and bracket."""
    g = _constant_groups(doc.get("constants") or {})
    code = (lambda ks: ", ".join(f"`{k}`" for k in ks) if ks else "none")
    parts = ["The Loihi 2 rows are estimates, not measurements: exact operation counts of the quantized network "
             "(bit-accurate emulator) priced with per-op constants."]
    parts.append(f"Measured on Loihi 2: {code(g['measured'])}.")
    parts.append(f"Derived from Hala Point's published system totals (Loihi 2 at full load): {code(g['hala_point'])}.")
    parts.append(f"Loihi 1's (Davies et al. 2018, Table 2, pre-silicon) used for Loihi 2: {code(g['loihi1'])}"
                 + (f"; Loihi 2 figures scaled by a Loihi 1 ratio: {code(g['loihi1_ratio'])}" if g["loihi1_ratio"] else "")
                 + ".")
    if g["spec"]:
        parts.append(f"Chip specifications and other published figures: {code(g['spec'])}.")
    if g["assumed"]:
        parts.append(f"Assumed: {code(g['assumed'])}.")
    sens = doc.get("loihi2_sensitivity") or {}
    alt = {k: v for k, v in sens.items() if isinstance(v, Mapping) and "energy_mj" in v}
    if len(alt) > 1:
        parts.append("The same mappings under each constant set: " + "; ".join(
            f"{k}: {_fig(v.get('energy_mj'))} mJ, {_fig(v.get('latency_ms'))} ms" for k, v in alt.items()) + ".")
    if g["gpu"]:
        parts.append(f"GPU estimates (where no GPU is measured) rest on datasheet peaks and a cited idle power "
                     f"({code(g['gpu'])}): best cases.")
    parts.append("Not modelled: " + "; ".join(NOT_MODELLED) + ".")
    return " ".join(parts)


# ============================================================================ report.html
_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0;font-size:13px}th,td{border:1px solid #bbb;padding:3px 6px;"
        "vertical-align:top}th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}"
        "tr.identity{background:#f4f4f4}.warn{color:#a00}.est{color:#555;font-style:italic}"
        "figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:13px}"
        "code{font-size:12px}")


def _e(v: Any) -> str:
    return _html.escape(str(v), quote=True)


def _inline(text: Any) -> str:
    """Escaped text with the markdown the notes use (``**bold**``, ```code```) as HTML."""
    t = _e(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", t)


def _html_table(header: Sequence[str], body: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in body:
        out.append("<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{_e(c)}</td>" for i, c in enumerate(r))
                   + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _embed(path: Path) -> Optional[str]:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def report_html(doc: Mapping[str, Any], out_dir: str | Path) -> str:
    """report.html: the table (gross and dynamic energy, basis, measured / estimated), warnings
    where a method does not beat the identity, what the numbers rest on, the Loihi 2 variants
    and the sensitivity bracket, every figure of ``doc["figures"]`` (paths relative to
    ``out_dir``) embedded as base64 PNG, the row notes and the constants. Self-contained."""
    out_dir = Path(out_dir)
    m = doc.get("machine", {})
    h: List[str] = ["<!DOCTYPE html>", "<html lang=en><head><meta charset=utf-8>",
                    "<title>SpikeReg benchmark</title>", f"<style>{_CSS}</style></head><body>",
                    "<h1>Benchmark: energy, latency and accuracy per registration</h1>"]
    h.append(f"<p>Created {_e(doc.get('created', '?'))} on {_e(m.get('cpu', m.get('processor', '?')))}, "
             f"{_e(m.get('cpu_count', '?'))} CPU cores, GPU: {_e(m.get('gpu') or 'none')}; "
             f"{_e(m.get('threads', '?'))} torch thread(s) for the timed CPU runs. Pairs: {len(doc['pairs'])} "
             f"held-out pairs ({_e(', '.join(str(p) for p in doc['pairs']))}) of {_e(data_source(doc))}, the same for every row"
             f"{' (--quick)' if doc.get('quick') else ''}.</p>")
    h.append("<h2>Table</h2>")
    ident = next((r.get("dice") for r in doc["rows"] if r.get("method") == IDENTITY_METHOD), None)
    head = ["method", "platform", "energy, gross (mJ)", "dynamic (mJ)", "energy basis", "energy source",
            "latency (ms)", "latency source", "Dice", "HD95 (mm)", "folding %"]
    rows = ["<table><thead><tr>" + "".join(f"<th>{_e(x)}</th>" for x in head) + "</tr></thead><tbody>"]
    for r in doc["rows"]:
        is_id = r.get("method") == IDENTITY_METHOD
        dice = _f(r.get("dice"), 3)
        bad = (not is_id and ident is not None and r.get("dice") is not None and r["dice"] <= ident)
        dcell = _e(dice) + (" <span class=warn title='not above the identity'>&#9888; &le; identity</span>" if bad else "")
        src = (lambda s: f"<span class=est>{_e(s)}</span>" if s == "estimated" else _e(s))
        rows.append(f"<tr{' class=identity' if is_id else ''}><td>{_e(r['method'])}</td><td>{_e(r['platform'])}</td>"
                    f"<td class=n>{_e(_fig(r.get('energy_mj')))}</td><td class=n>{_e(_fig(r.get('dynamic_mj')))}</td>"
                    f"<td>{_e(r.get('energy_basis', ''))}</td><td>{src(r.get('energy_source'))}</td>"
                    f"<td class=n>{_e(_fig(r.get('latency_ms')))}</td><td>{src(r.get('latency_source'))}</td>"
                    f"<td class=n>{dcell}</td><td class=n>{_e(_f(r.get('hd95'), 2))}</td>"
                    f"<td class=n>{_e(_f(r.get('folding_pct'), 3))}</td></tr>")
    h.append("\n".join(rows) + "</tbody></table>")
    h.append("<p>Energy and latency per registration of one pair (mean over the pairs) unless the platform says "
             "otherwise. Energy basis <em>gross</em>: static or idle power x time + dynamic energy; the dynamic part "
             "beside it. <em>measured</em>: timed or read from an energy counter on the machine above; "
             "<em>estimated</em>: computed by a model from counted operations and the constants below; "
             "<em>not available</em>: the reason is in the row's note. The identity row (shaded) is the accuracy "
             "before registration.</p>")
    for w in identity_warnings(doc["rows"]):
        h.append(f"<p class=warn>&#9888; Not above the identity: {_e(w)}</p>")
    r = doc.get("cpu_latency_ratio_vs_voxelmorph")
    if r:
        f = (lambda v: "n/a" if v is None else f"{v:.2f}x")
        h.append(f"<p>CPU latency / VoxelMorph's ({_e(r.get('platform'))}, same pairs): SpikeReg float "
                 f"{_e(f(r.get('spikereg_float')))}, quantized emulator {_e(f(r.get('quantized_emulator')))}.</p>")
    e = doc.get("energy_ratio_vs_voxelmorph_gpu")
    if e:
        h.append(f"<p>{_e(energy_ratio_sentence(e))}</p>")
    h += ["<h2>What the numbers rest on</h2>", f"<p>{_inline(basis_paragraph(doc))}</p>"]
    vt = variant_table(doc)
    if vt:
        h += ["<h2>Loihi 2 variants (estimated, per registration)</h2>", _html_table(*vt)]
        if doc.get("loihi2_variants_basis"):
            h.append(f"<p>{_e(doc['loihi2_variants_basis'])}</p>")
    st = sensitivity_table(doc)
    if st:
        h += ["<h2>Sensitivity bracket (main Loihi 2 row, estimated)</h2>", _html_table(*st, numeric=(1, 2, 3, 4))]
        if (doc.get("loihi2_sensitivity") or {}).get("basis"):
            h.append(f"<p>{_e(doc['loihi2_sensitivity']['basis'])}.</p>")
    figs = doc.get("figures") or {}
    caps = doc.get("figure_captions") or {}
    if figs:
        h.append("<h2>Figures</h2>")
        for key, rel in figs.items():
            src = _embed(out_dir / rel)
            cap = _e(caps.get(key, key))
            if src is None:
                h.append(f"<p class=warn>figure {_e(key)} ({_e(rel)}) could not be read</p>")
                continue
            h.append(f"<figure id='fig-{_e(key)}' data-file='{_e(rel)}'><img alt='{_e(key)}' src='{src}'>"
                     f"<figcaption>{cap} (<code>{_e(rel)}</code>)</figcaption></figure>")
    h += ["<h2>How each row was obtained</h2>", "<ul>"]
    h += [f"<li>{_inline(n[2:])}</li>" for n in row_notes(doc["rows"])]
    h.append("</ul>")
    if doc.get("notes"):
        h += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{_inline(n)}</li>" for n in doc["notes"]] + ["</ul>"]
    h.append("<h2>Constants (every model constant, with its source)</h2>")
    h.append(_html_table(["name", "value", "unit", "kind", "citation"],
                         [[k, f"{c['value']:g}", c.get("unit", ""), c.get("kind", ""), c["citation"]]
                          for k, c in doc["constants"].items()], numeric=(1,)))
    h.append("</body></html>")
    return "\n".join(h) + "\n"


def printable(doc: Mapping[str, Any]) -> str:
    """The table as printed by the command (markdown table + one line per missing figure)."""
    lines = table_lines(doc["rows"])
    for r in doc["rows"]:
        if r.get("why"):
            lines.append(f"  {r['method']} / {r['platform']}: not produced: {r['why']}")
    return "\n".join(lines)


__all__ = ["CONTRACT_ROW_KEYS", "SOURCES", "NOT_AVAILABLE", "ENERGY_BASIS", "NOT_MODELLED", "make_row", "refusal_row",
           "validate_document", "build_document", "table_lines", "row_notes", "markdown", "printable",
           "identity_warnings", "variant_table", "sensitivity_table", "basis_paragraph", "report_html"]
