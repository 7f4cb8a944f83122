"""Registration pairs stored as NIfTI files: Learn2Reg dataset folders and ``pairs.json``.

Both readers return the same record type, :class:`PairRecord` (absolute paths), so every
command that takes ``--data DIR`` can accept either kind of folder
(:func:`read_pair_folder` decides which).

**Learn2Reg** folders hold a dataset JSON (``OASIS_dataset.json``, ``dataset.json``, ...)::

    {"training":   [{"image": "./imagesTr/OASIS_0001_0000.nii.gz",
                     "label": "./labelsTr/OASIS_0001_0000.nii.gz"}, ...],
     "registration_val": [{"fixed": "./imagesTr/OASIS_0438_0000.nii.gz",
                           "moving": "./imagesTr/OASIS_0439_0000.nii.gz"}, ...],
     "registration_test": [...], ...}

Paths are relative to the JSON file's folder. A pair image's label map is the ``"label"``
of the entry with that ``"image"`` in ``training`` / ``validation`` / ``test`` lists or,
failing that, the same file under the ``labels*`` folder that matches its ``images*``
folder (``imagesTr`` -> ``labelsTr``) if it exists; otherwise ``None``.

**pairs.json** folders are written by :func:`spikereg_neuro.data.export_demo` (format
``spikereg-neuro-pairs``, version 1): ``{"format", "version", "voxel_size_mm", "shape",
"label_names", "pairs": [{"name", "fixed", "moving", "fixed_labels", "moving_labels",
...}]}`` with paths relative to the folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..io.atomic import atomic_write_text
from ..io.nifti import check_pair, load_labels, load_volume

__all__ = [
    "PairRecord",
    "PAIRS_FORMAT",
    "PAIRS_VERSION",
    "find_dataset_json",
    "read_json_object",
    "read_learn2reg",
    "read_pairs_json",
    "read_pairs_meta",
    "write_pairs_json",
    "read_pair_folder",
    "read_nifti_pair",
    "GridMismatchError",
    "load_pair_record",
]

PathLike = Union[str, "os.PathLike[str]"]
PAIRS_FORMAT = "spikereg-neuro-pairs"
PAIRS_VERSION = 1
_SPLIT_ALIASES = {"val": "registration_val", "validation": "registration_val", "test": "registration_test"}


@dataclass(frozen=True)
class PairRecord:
    """One registration pair: absolute NIfTI paths (labels optional) and a display name."""

    fixed: Path
    moving: Path
    fixed_labels: Optional[Path] = None
    moving_labels: Optional[Path] = None
    name: str = ""

    @property
    def has_labels(self) -> bool:
        return self.fixed_labels is not None and self.moving_labels is not None

    def paths(self) -> List[Path]:
        return [p for p in (self.fixed, self.moving, self.fixed_labels, self.moving_labels) if p is not None]

    def missing(self) -> List[Path]:
        return [p for p in self.paths() if not p.is_file()]

    def to_dict(self, root: Optional[PathLike] = None) -> Dict[str, Any]:
        """JSON-ready dict; paths relative to ``root`` when given (POSIX separators)."""
        def rel(p: Optional[Path]) -> Optional[str]:
            if p is None:
                return None
            if root is None:
                return str(p)
            return Path(os.path.relpath(p, root)).as_posix()

        return {
            "name": self.name,
            "fixed": rel(self.fixed),
            "moving": rel(self.moving),
            "fixed_labels": rel(self.fixed_labels),
            "moving_labels": rel(self.moving_labels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], root: PathLike) -> "PairRecord":
        if not isinstance(data, Mapping):
            raise ValueError(f"a pair entry must be a mapping with 'fixed' and 'moving' paths, got {data!r}")
        for key in ("fixed", "moving"):
            if not data.get(key):
                raise KeyError(f"pair entry {dict(data)!r} has no {key!r} path")
        for key in ("fixed", "moving", "fixed_labels", "moving_labels"):
            v = data.get(key)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"pair entry {dict(data)!r}: {key!r} must be a path (a string), got {v!r}")

        def res(v: Any) -> Optional[Path]:
            return _resolve(root, v) if v else None

        return cls(
            fixed=_resolve(root, data["fixed"]),
            moving=_resolve(root, data["moving"]),
            fixed_labels=res(data.get("fixed_labels")),
            moving_labels=res(data.get("moving_labels")),
            name=str(data.get("name") or ""),
        )


def _resolve(root: PathLike, rel: str) -> Path:
    p = Path(str(rel))
    if not p.is_absolute():
        p = Path(root) / p
    return Path(os.path.normpath(p))


def _check_exist(records: Sequence[PairRecord], source: Path) -> None:
    missing = [str(p) for r in records for p in r.missing()]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{source}: {len(missing)} file(s) missing: {', '.join(missing[:5])}{more}")


def read_json_object(path: Path) -> Dict[str, Any]:
    """The JSON object (top-level mapping) in ``path``; clear errors for a missing file,
    invalid JSON or another top level."""
    if not path.is_file():
        raise FileNotFoundError(f"JSON file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from exc
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a JSON file (not UTF-8 text)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    return data


def find_dataset_json(folder: PathLike) -> Path:
    """The Learn2Reg dataset JSON of ``folder``: the single ``*_dataset.json``, or ``dataset.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    candidates = sorted(folder.glob("*_dataset.json"))
    if len(candidates) == 1:
        return candidates[0]
    if (folder / "dataset.json").is_file():
        return folder / "dataset.json"
    if not candidates:
        raise FileNotFoundError(f"{folder}: no Learn2Reg dataset JSON (*_dataset.json or dataset.json)")
    raise ValueError(f"{folder}: several dataset JSON files, pass one: {[c.name for c in candidates]}")


def _label_lookup(data: Mapping[str, Any], root: Path) -> Dict[Path, Path]:
    table: Dict[Path, Path] = {}
    for key in ("training", "validation", "test"):
        for entry in data.get(key, []) or []:
            if isinstance(entry, Mapping) and entry.get("image") and entry.get("label"):
                table[_resolve(root, entry["image"])] = _resolve(root, entry["label"])
    return table


def _guess_label(image: Path) -> Optional[Path]:
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].startswith("images"):
            candidate = Path(*parts[:i], "labels" + parts[i][len("images"):], *parts[i + 1:])
            return candidate if candidate.is_file() else None
    return None


def read_learn2reg(
    path: PathLike,
    split: str = "registration_val",
    require_labels: bool = False,
    check_files: bool = True,
) -> List[PairRecord]:
    """Pairs of a Learn2Reg dataset (folder or dataset JSON file).

    ``split`` is a key of the JSON whose entries are ``{"fixed": ..., "moving": ...}``
    (``registration_val``, ``registration_test``, ``training_paired_images``, ...; the
    aliases ``val`` / ``test`` are accepted). Raises ``KeyError`` naming the available keys
    if ``split`` is absent, ``FileNotFoundError`` listing missing files (when
    ``check_files``) and ``ValueError`` if ``require_labels`` and a pair has no labels.
    """
    p = Path(path)
    json_path = find_dataset_json(p) if p.is_dir() else p
    data = read_json_object(json_path)
    root = json_path.parent
    key = split if split in data else _SPLIT_ALIASES.get(split, split)
    if key not in data:
        pair_keys = [k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], Mapping) and "fixed" in v[0]]
        raise KeyError(f"{json_path}: no {split!r} list of pairs; pair lists present: {pair_keys}")
    entries = data[key]
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: {key!r} must be a list of {{'fixed', 'moving'}} entries")
    labels = _label_lookup(data, root)
    records: List[PairRecord] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "fixed" not in entry or "moving" not in entry:
            raise KeyError(f"{json_path}: {key}[{n}] must have 'fixed' and 'moving' keys, got {entry!r}")
        fixed, moving = _resolve(root, entry["fixed"]), _resolve(root, entry["moving"])
        fl = labels.get(fixed) or _guess_label(fixed)
        ml = labels.get(moving) or _guess_label(moving)
        name = f"{Path(str(fixed)).name.split('.')[0]}__{Path(str(moving)).name.split('.')[0]}"
        records.append(PairRecord(fixed, moving, fl, ml, name))
    if require_labels:
        bad = [r.name for r in records if not r.has_labels]
        if bad:
            raise ValueError(f"{json_path}: {len(bad)} pair(s) of {key!r} have no label maps, e.g. {bad[0]}")
    if check_files:
        _check_exist(records, json_path)
    return records


def write_pairs_json(folder: PathLike, records: Iterable[PairRecord], meta: Optional[Mapping[str, Any]] = None,
                     extra: Optional[Sequence[Mapping[str, Any]]] = None) -> Path:
    """Write ``folder/pairs.json`` (atomic) with paths relative to ``folder``.

    ``meta`` adds top-level keys (``voxel_size_mm``, ``label_names``, ...); ``extra[i]`` adds
    keys to pair ``i`` (e.g. subject indices). Returns the JSON path.
    """
    folder = Path(folder)
    records = list(records)
    pairs = []
    for i, r in enumerate(records):
        d = r.to_dict(root=folder)
        if extra is not None:
            d.update(dict(extra[i]))
        pairs.append(d)
    doc: Dict[str, Any] = {"format": PAIRS_FORMAT, "version": PAIRS_VERSION}
    doc.update(dict(meta or {}))
    doc["pairs"] = pairs
    return atomic_write_text(folder / "pairs.json", json.dumps(doc, indent=2) + "\n")


def _pairs_doc(path: PathLike) -> Tuple[Path, Dict[str, Any]]:
    p = Path(path)
    json_path = p / "pairs.json" if p.is_dir() else p
    doc = read_json_object(json_path)
    if doc.get("format") != PAIRS_FORMAT:
        raise ValueError(f"{json_path}: not a {PAIRS_FORMAT} file (format={doc.get('format')!r})")
    version = doc.get("version", -1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{json_path}: 'version' must be an integer, got {version!r}")
    if version > PAIRS_VERSION:
        raise ValueError(f"{json_path}: version {doc.get('version')} is newer than supported ({PAIRS_VERSION})")
    if not isinstance(doc.get("pairs"), list):
        raise KeyError(f"{json_path}: missing 'pairs' list")
    return json_path, doc


def read_pairs_json(path: PathLike, check_files: bool = True) -> List[PairRecord]:
    """Pairs of a folder written by ``export_demo`` (folder or its ``pairs.json``)."""
    json_path, doc = _pairs_doc(path)
    records = [PairRecord.from_dict(d, json_path.parent) for d in doc["pairs"]]
    seen = set()
    for r in records:
        if r.name and r.name in seen:
            raise ValueError(f"{json_path}: duplicate pair name {r.name!r}; every pair needs its own name")
        seen.add(r.name)
    if check_files:
        _check_exist(records, json_path)
    return records


def read_pairs_meta(path: PathLike) -> Dict[str, Any]:
    """Top-level metadata of a ``pairs.json`` (everything but ``pairs``); ``label_names``
    keys are converted back to ``int``."""
    _, doc = _pairs_doc(path)
    meta = {k: v for k, v in doc.items() if k != "pairs"}
    if isinstance(meta.get("label_names"), Mapping):
        meta["label_names"] = {int(k): v for k, v in meta["label_names"].items()}
    return meta


def read_pair_folder(path: PathLike, split: str = "registration_val", check_files: bool = True) -> List[PairRecord]:
    """Pairs of a ``--data`` folder: ``pairs.json`` if present, else a Learn2Reg dataset JSON.

    ``split`` only applies to Learn2Reg folders. A path to a JSON file is read by its kind.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data path not found: {p}")
    if (p.is_dir() and (p / "pairs.json").is_file()) or p.name == "pairs.json":
        return read_pairs_json(p, check_files=check_files)
    return read_learn2reg(p, split=split, check_files=check_files)


def _spacing(affine: np.ndarray) -> Tuple[float, float, float]:
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


class GridMismatchError(ValueError):
    """The volumes of a pair (or a label map and its image) are not on one voxel grid."""


def read_nifti_pair(
    fixed_path: PathLike,
    moving_path: PathLike,
    fixed_labels: Optional[PathLike] = None,
    moving_labels: Optional[PathLike] = None,
    canonical: bool = True,
    atol: float = 1e-3,
) -> Dict[str, Any]:
    """Load a pair (canonical RAS+ by default) and check that all volumes share one grid.

    Returns a dict: ``fixed``, ``moving`` float32 (D,H,W); ``fixed_labels``,
    ``moving_labels`` int64 (D,H,W) or ``None``; ``affine`` (4x4, the fixed image's, shared
    by all); ``spacing`` (3 floats, mm). Raises ``ValueError`` on a shape/affine mismatch.
    """
    fixed, f_aff, _ = load_volume(fixed_path, canonical=canonical)
    moving, m_aff, _ = load_volume(moving_path, canonical=canonical)
    try:
        check_pair((fixed, f_aff), (moving, m_aff), atol=atol)
    except ValueError as exc:
        raise GridMismatchError(f"{fixed_path} / {moving_path}: {exc}") from None
    out: Dict[str, Any] = {"fixed": fixed, "moving": moving, "fixed_labels": None, "moving_labels": None}
    for key, lpath, ref in (("fixed_labels", fixed_labels, (fixed, f_aff)), ("moving_labels", moving_labels, (moving, m_aff))):
        if lpath is None:
            continue
        lab, l_aff, _ = load_labels(lpath, canonical=canonical)
        try:
            check_pair(ref, (lab, l_aff), atol=atol)
        except ValueError as exc:
            raise GridMismatchError(f"{lpath} does not match its image: {exc}") from None
        out[key] = lab
    out["affine"] = f_aff
    out["spacing"] = _spacing(f_aff)
    return out


def load_pair_record(record: PairRecord, canonical: bool = True) -> Dict[str, Any]:
    """:func:`read_nifti_pair` for a :class:`PairRecord`; adds ``name``."""
    out = read_nifti_pair(record.fixed, record.moving, record.fixed_labels, record.moving_labels,
                          canonical=canonical)
    out["name"] = record.name
    return out
