"""The benchmark table: rows, the ``benchmark.json`` contract, ``benchmark.md`` and the printout.

A row is one (method, platform) with energy (mJ) and latency (ms) per registration of one pair,
each with its source, and the accuracy of that method on the same held-out pairs::

    {"method", "platform", "energy_mj", "energy_source", "latency_ms", "latency_source",
     "dice", "hd95", "folding_pct", ...}

Sources: ``"measured"`` or ``"estimated"`` whenever the figure is a number. A figure that could
not be obtained on this machine is ``null`` with source ``"not available"`` and a reason in
``energy_note`` / ``latency_note`` (a row that could not run at all: every figure ``null`` and
``why``). Nothing is ever filled in from elsewhere.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

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


def markdown(doc: Mapping[str, Any]) -> str:
    """benchmark.md: the table, date, machine, pairs and a note on every row and constant."""
    m = doc.get("machine", {})
    lines = ["# Benchmark: energy, latency and accuracy per registration", ""]
    lines.append(f"Created {doc.get('created', '?')} on {m.get('cpu', m.get('processor', '?'))}, "
                 f"{m.get('cpu_count', '?')} CPU cores, GPU: {m.get('gpu') or 'none'}; "
                 f"{m.get('threads', '?')} torch thread(s) for the timed CPU runs.")
    lines.append(f"Pairs: {len(doc['pairs'])} held-out pairs ({', '.join(str(p) for p in doc['pairs'])}), the same "
                 "for every row (the Lava rows use one patch of the first pair).")
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
    lines.append("Energy and latency are per registration of one pair (mean over the pairs) unless the platform "
                 "says otherwise; energy is gross (static or idle power x time + dynamic), the dynamic part beside "
                 "it. *meas.* = measured on this machine; *est.* = estimated by a model from counted "
                 "operations and the named constants below (not a measurement); *n/a* = not available here "
                 "(reason below). Dice: mean over the 18 labels; HD95 in mm; folding: % voxels with det J <= 0.")
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


def printable(doc: Mapping[str, Any]) -> str:
    """The table as printed by the command (markdown table + one line per missing figure)."""
    lines = table_lines(doc["rows"])
    for r in doc["rows"]:
        if r.get("why"):
            lines.append(f"  {r['method']} / {r['platform']}: not produced: {r['why']}")
    return "\n".join(lines)


__all__ = ["CONTRACT_ROW_KEYS", "SOURCES", "NOT_AVAILABLE", "ENERGY_BASIS", "make_row", "refusal_row",
           "validate_document", "build_document", "table_lines", "row_notes", "markdown", "printable"]
