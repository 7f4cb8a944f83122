"""Training on the user's own NIfTI data: ``spikereg-neuro train --data DIR``.

``DIR`` is a Learn2Reg dataset folder (or its dataset JSON) or a ``pairs.json`` folder
(:mod:`spikereg_neuro.data.learn2reg`):

* Learn2Reg: the training pairs are its ``training_paired_images`` list when it has one, else
  every ordered pair of distinct images of its ``training`` list (labels from the entries'
  ``label`` or the matching ``labels*`` folder); validation pairs are ``registration_val``
  (used when every pair has label maps).
* ``pairs.json``: its pairs are the training pairs; no validation.

Images are read in canonical (RAS+) orientation and scaled to [0, 1] as inference does
(:func:`~spikereg_neuro.inference.normalize_intensity`); a pair's volumes must share one grid.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.learn2reg import PairRecord, find_dataset_json, read_json_object, read_learn2reg, read_pairs_json

__all__ = ["FolderPairs", "folder_records", "data_files", "is_folder_data", "check_at_spacing", "load_pair_at", "FolderPairList"]


def _image_list(json_path: Path, data: Dict[str, Any]) -> List[Tuple[Path, Optional[Path]]]:
    """``(image, label)`` of the Learn2Reg ``training`` list (absolute paths)."""
    root = json_path.parent
    out = []
    for n, entry in enumerate(data.get("training") or []):
        if not isinstance(entry, dict) or not entry.get("image"):
            raise KeyError(f"{json_path}: training[{n}] must have an 'image' path, got {entry!r}")
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve() if entry.get("label") else None
        if label is None:  # the labels* folder next to the images* one, if it has the file
            parts = list(image.parts)
            for i in range(len(parts) - 2, -1, -1):
                if parts[i].startswith("images"):
                    cand = Path(*parts[:i], "labels" + parts[i][len("images"):], *parts[i + 1:])
                    label = cand if cand.is_file() else None
                    break
        out.append((image, label))
    return out


def folder_records(path: str | Path) -> Tuple[List[PairRecord], List[PairRecord], Dict[str, Any]]:
    """``(training pairs, validation pairs, description)`` of a ``--data`` folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--data: not found: {p}")
    if (p.is_dir() and (p / "pairs.json").is_file()) or p.name == "pairs.json":
        train = read_pairs_json(p)
        return train, [], {"format": "pairs.json", "path": str(p.resolve())}
    json_path = find_dataset_json(p) if p.is_dir() else p
    data = read_json_object(json_path)
    if data.get("training_paired_images"):
        train = read_learn2reg(json_path, "training_paired_images")
    else:
        images = _image_list(json_path, data)
        if len(images) < 2:
            raise ValueError(f"{json_path}: its 'training' list has {len(images)} image(s); "
                             "training pairs need at least 2")
        train = [PairRecord(fi, mi, fl, ml, f"{fi.name.split('.')[0]}__{mi.name.split('.')[0]}")
                 for a, (fi, fl) in enumerate(images) for b, (mi, ml) in enumerate(images) if a != b]
        missing = [str(q) for pair in images for q in pair if q is not None and not q.is_file()]
        if missing:
            raise FileNotFoundError(f"{json_path}: {len(missing)} training file(s) missing, e.g. {missing[0]}")
    val = read_learn2reg(json_path, "registration_val") if data.get("registration_val") else []
    return train, val, {"format": "learn2reg", "path": str(json_path.resolve())}


class FolderPairs(Dataset):
    """Torch dataset of NIfTI pairs, items like :class:`~spikereg_neuro.data.RegistrationPairs`.

    ``fixed``, ``moving`` float32 ``(1, D, H, W)`` in [0, 1]; ``fixed_labels``,
    ``moving_labels`` int64 (only when every pair has label maps); ``pair`` the item index.
    The last ``cache`` volumes read are kept in memory.
    """

    def __init__(self, records: List[PairRecord], cache: int = 16) -> None:
        if not records:
            raise ValueError("no pairs to train on")
        self.records = list(records)
        self.with_labels = all(r.has_labels for r in self.records)
        self._cache: "OrderedDict[Tuple[str, bool], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
        self._size = int(cache)
        first = self._read(self.records[0].fixed, False)
        self.shape = tuple(int(s) for s in first[0].shape)
        self.spacing = tuple(float(v) for v in np.linalg.norm(first[1][:3, :3], axis=0))

    def _read(self, path: Path, labels: bool) -> Tuple[np.ndarray, np.ndarray]:
        from ..inference import normalize_intensity
        from ..io.nifti import load_labels, load_volume

        key = (str(path), labels)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if labels:
            arr, aff, _ = load_labels(path)
        else:
            arr, aff, _ = load_volume(path)
            try:
                arr = normalize_intensity(arr)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        self._cache[key] = (arr, aff)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return arr, aff

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, k: int) -> Dict[str, torch.Tensor]:
        from ..io.nifti import check_pair

        r = self.records[k]
        vols = {"fixed": self._read(r.fixed, False), "moving": self._read(r.moving, False)}
        if self.with_labels:
            vols["fixed_labels"] = self._read(r.fixed_labels, True)
            vols["moving_labels"] = self._read(r.moving_labels, True)
        ref = vols["fixed"]
        for name, v in vols.items():
            try:
                check_pair(ref, v)
            except ValueError as exc:
                raise ValueError(f"pair {r.name or k}: {name} is not on the fixed image's grid ({exc})") from None
        out = {name: torch.from_numpy(np.ascontiguousarray(v[0])[None].copy()) for name, v in vols.items()}
        out["pair"] = torch.tensor([k, k], dtype=torch.int64)
        return out


# ---------------------------------------------------------------------------------- shared readers
# ``calibrate --data DIR`` and ``simulate --data DIR`` / ``--fixed/--moving`` read their pairs here
# (the folder parsing is :func:`folder_records` / :func:`~spikereg_neuro.data.read_pair_folder`).

def is_folder_data(path: str | Path) -> bool:
    """Whether a ``--data`` argument names a NIfTI folder (a directory or its JSON) rather than an
    embedded HDF5 data set."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() == ".json"


def data_files(path: Optional[str | Path]) -> Dict[str, Path]:
    """The files a ``--data`` argument reads, named for error messages: an HDF5 data set itself,
    or a folder's index JSON and every image and label map of its pairs (training, validation,
    ``pairs.json``), so that :func:`~spikereg_neuro.io.paths.check_outputs` keeps outputs off them.
    A folder that cannot be read gives what could be listed (its own error comes later)."""
    if path is None:
        return {}
    p = Path(path)
    if not is_folder_data(p):
        return {"--data": p}
    from ..data.learn2reg import read_pair_folder
    try:                                    # training and validation pairs
        train, val, _ = folder_records(p)
        records = [*train, *val]
    except (ValueError, KeyError, OSError):
        try:                                # an evaluation-only folder
            records = read_pair_folder(p)
        except (ValueError, KeyError, OSError):
            records = []
    files = [q for r in records for q in r.paths()]
    try:
        files.append(p if not p.is_dir() else p / "pairs.json" if (p / "pairs.json").is_file()
                     else find_dataset_json(p))
    except (ValueError, FileNotFoundError):
        pass
    return {f"--data file {q.name}": q for q in dict.fromkeys(files)}


def embedded_h5(path: str | Path) -> Path:
    """A ``--data`` argument that is not a folder: the embedded data set's HDF5 file, which must
    exist (a one-line error naming both accepted kinds otherwise)."""
    h5 = Path(path)
    if not h5.is_file():
        raise FileNotFoundError(f"dataset not found: {h5} (--data takes an embedded dataset HDF5, "
                                f"or a Learn2Reg / pairs.json folder)")
    return h5


def check_at_spacing(spacing, spacing_mm: float, what: str, hint: str = "", rtol: float = 1e-3) -> None:
    """One-line ``ValueError`` unless ``spacing`` (3 floats, mm) is ``spacing_mm`` on every axis."""
    sp = np.asarray(spacing, dtype=np.float64)
    if not np.all(np.abs(sp / float(spacing_mm) - 1.0) <= rtol):
        raise ValueError(f"{what}: voxel size {'x'.join(f'{v:.4g}' for v in sp)} mm, not the model's "
                         f"{float(spacing_mm):g} mm" + (f"; {hint}" if hint else ""))


def load_pair_at(fixed: str | Path, moving: str | Path, spacing_mm: Optional[float] = None,
                 fixed_labels: Optional[str | Path] = None, moving_labels: Optional[str | Path] = None,
                 name: str = "", hint: str = "") -> Dict[str, Any]:
    """A NIfTI pair as the pipeline reads it: canonical (RAS+), one grid (shape and affine, labels
    included), intensities scaled to [0, 1] as inference does, and (``spacing_mm``) at the model's
    spacing, else one-line ``ValueError`` (``hint`` says what to do). Returns ``fixed``,
    ``moving`` float32, ``fixed_labels``/``moving_labels`` int64 or ``None``, ``affine``,
    ``spacing``, ``name``."""
    from ..data.learn2reg import GridMismatchError, read_nifti_pair
    from ..inference import normalize_intensity

    what = name or f"{fixed} / {moving}"
    try:
        pr = read_nifti_pair(fixed, moving, fixed_labels, moving_labels)
    except GridMismatchError as exc:   # unreadable files and NaN keep their own message
        raise ValueError(f"{exc} (not on one grid)" + (f"; {hint}" if hint else "")) from None
    if spacing_mm is not None:
        check_at_spacing(pr["spacing"], spacing_mm, what, hint)
    for key, path in (("fixed", fixed), ("moving", moving)):
        try:
            pr[key] = normalize_intensity(pr[key])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    pr["name"] = name
    return pr


class FolderPairList:
    """Records of a ``--data`` folder as a lazy sequence of pair dicts (the keys of
    :func:`load_pair_at`, plus ``pair``: ``[k, k]``, the record index), read on access so a large
    folder need not fit in memory; every pair at ``spacing_mm`` when given."""

    def __init__(self, records: List[PairRecord], spacing_mm: Optional[float] = None, hint: str = "") -> None:
        self.records = list(records)
        self.spacing_mm = spacing_mm
        self.hint = hint

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return FolderPairList(self.records[k], self.spacing_mm, self.hint)
        r = self.records[k]
        pr = load_pair_at(r.fixed, r.moving, self.spacing_mm, r.fixed_labels, r.moving_labels,
                          name=r.name or f"pair {k}", hint=self.hint)
        pr["pair"] = [int(k), int(k)]
        return pr

    def __iter__(self):
        return (self[k] for k in range(len(self)))
