"""The embedded benchmark: synthetic subjects of the MNI template, cached in one HDF5 file.

* :class:`DataConfig` fixes everything that defines the data; its JSON (``to_dict``) plus
  :data:`FORMAT_VERSION` is stored in the file and hashed into the file name, and a cached
  file is reused only when both match (otherwise it is regenerated, atomically).
* Subject seeds come from ``(seed, split, index)`` (:func:`subject_seed`); the three splits
  never share one (checked at build time).
* Pairs (``fixed``, ``moving``) are always distinct subjects of one split. Validation and
  test use the fixed chain :func:`eval_pairs` ``(i, i+1)``, ``i = 0 .. n-2`` (as Learn2Reg
  OASIS pairs consecutive subjects); training draws a fresh random order of all ordered
  pairs each epoch (:func:`train_pairs`).

HDF5 layout (``format_version`` 1)::

    /                 attrs: format_version, params (JSON of DataConfig.to_dict()),
                             label_names (JSON {label: name}), voxel_size (3,), shape (3,),
                             nilearn_version, created
    /affine           (4, 4) float64   voxel -> MNI mm, shared by all volumes
    /template/image   (D, H, W) float32;  /template/labels uint8;  /template/mask uint8
    /<split>/images   (S, D, H, W) float32 in [0, 1]      split in train, val, test
    /<split>/labels   (S, D, H, W) uint8 (0 background, 1..18)
    /<split>/seeds    (S,) int64 subject seeds
    /<split>/velocities (S, 3, d, h, w) float32 coarse velocities (target voxels), see synth
    /<split>/pairs    (P, 2) int64 evaluation pairs (val and test only)
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..dataclass_io import DictIO, check_fields
from ..io.atomic import atomic_write
from ..io.nifti import save_volume
from ..registration.transform import compose
from .learn2reg import PairRecord, write_pairs_json
from .synth import SynthConfig, pair_displacement, subject_map, synth_subject
from .template import LABEL_NAMES, build_template

__all__ = [
    "FORMAT_VERSION",
    "SPLITS",
    "DEFAULT_FOV_MM",
    "DataConfig",
    "default_cache_dir",
    "dataset_path",
    "subject_seed",
    "split_seeds",
    "build_dataset",
    "dataset_info",
    "eval_pairs",
    "all_pairs",
    "train_pairs",
    "default_pairs",
    "RegistrationPairs",
    "load_pairs_numpy",
    "true_displacement",
    "export_demo",
]

PathLike = Union[str, "os.PathLike[str]"]
FORMAT_VERSION = 1
SPLITS: Tuple[str, ...] = ("train", "val", "test")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
#: field of view of the default grid (64 x 72 x 64 voxels of 2.5 mm)
DEFAULT_FOV_MM: Tuple[float, float, float] = (160.0, 180.0, 160.0)


@dataclass
class DataConfig(DictIO):
    """Everything that defines the embedded data set."""

    _keys_label = "DataConfig key(s)"

    voxel_size_mm: float = 2.5
    shape: Tuple[int, int, int] = (64, 72, 64)
    n_train: int = 40
    n_val: int = 6
    n_test: int = 6
    seed: int = 0
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        check_fields(self, "data")  # types first: ``shape: 64``, ``n_train: 2.5``, ``synth: 5`` name their key
        if not isinstance(self.synth, SynthConfig):
            self.synth = SynthConfig.from_dict(self.synth, "data.synth")
        self.voxel_size_mm = float(self.voxel_size_mm)
        if not (math.isfinite(self.voxel_size_mm) and self.voxel_size_mm > 0):
            raise ValueError(f"data.voxel_size_mm must be > 0, got {self.voxel_size_mm}")
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        if min(self.shape) < 4:
            raise ValueError(f"data.shape must be 3 integers >= 4, got {list(self.shape)}")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 2:
                raise ValueError(f"data.{name} must be >= 2 (pairs need two subjects), got {getattr(self, name)}")
            setattr(self, name, int(getattr(self, name)))
        if self.seed < 0:
            raise ValueError(f"data.seed must be >= 0, got {self.seed}")
        self.seed = int(self.seed)

    def n_subjects(self, split: str) -> int:
        _check_split(split)
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def with_voxel_size(self, voxel_size_mm: float, multiple: int = 8) -> "DataConfig":
        """Same config at another voxel size, the shape scaled to keep :data:`DEFAULT_FOV_MM`
        (rounded up to a multiple of ``multiple`` voxels per axis)."""
        vs = float(voxel_size_mm)
        if not vs > 0:
            raise ValueError(f"voxel size must be > 0, got {voxel_size_mm}")
        shape = tuple(int(multiple * math.ceil(f / vs / multiple)) for f in DEFAULT_FOV_MM)
        return replace(self, voxel_size_mm=vs, shape=shape)

    def params_json(self) -> str:
        """Canonical JSON stored in (and compared against) the cache file."""
        return json.dumps({"format_version": FORMAT_VERSION, "config": self.to_dict()}, sort_keys=True)


def _check_split(split: str) -> None:
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


# ----------------------------------------------------------------------------- seeds, paths
def default_cache_dir() -> Path:
    """``$SPIKEREG_CACHE`` if set, else ``~/.cache/spikereg-neuro``."""
    env = os.environ.get("SPIKEREG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spikereg-neuro"


def dataset_path(cfg: Optional[DataConfig] = None, cache_dir: Optional[PathLike] = None) -> Path:
    """Cache file of ``cfg``: ``synth_mni_<vs>mm_<D>x<H>x<W>_<hash>.h5`` (hash of the params)."""
    cfg = cfg or DataConfig()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    for p in (root, *root.parents):   # the first existing ancestor must be a folder
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"dataset cache {root}: {p} exists and is not a folder "
                                 "(--cache / $SPIKEREG_CACHE)")
            break
    digest = hashlib.sha256(cfg.params_json().encode()).hexdigest()[:12]
    d, h, w = cfg.shape
    return root / f"synth_mni_{cfg.voxel_size_mm:g}mm_{d}x{h}x{w}_{digest}.h5"


def subject_seed(seed: int, split: str, index: int) -> int:
    """Seed of subject ``index`` of ``split`` (a 63-bit integer from ``SeedSequence``)."""
    _check_split(split)
    ss = np.random.SeedSequence([int(seed), 0x5EED5, _SPLIT_IDS[split], int(index)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def split_seeds(cfg: DataConfig) -> Dict[str, List[int]]:
    """Subject seeds per split; raises ``RuntimeError`` if any seed repeats (never expected)."""
    seeds = {s: [subject_seed(cfg.seed, s, i) for i in range(cfg.n_subjects(s))] for s in SPLITS}
    flat = [x for s in SPLITS for x in seeds[s]]
    if len(set(flat)) != len(flat):
        raise RuntimeError("subject seeds collide between or within splits")
    return seeds


# ----------------------------------------------------------------------------- pairs
def eval_pairs(n_subjects: int) -> List[Tuple[int, int]]:
    """Evaluation pairs ``(fixed, moving) = (i, i + 1)`` for ``i`` in ``0 .. n - 2``."""
    return [(i, i + 1) for i in range(int(n_subjects) - 1)]


def all_pairs(n_subjects: int) -> List[Tuple[int, int]]:
    """All ordered pairs of distinct subjects, ``n (n - 1)`` of them."""
    n = int(n_subjects)
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def train_pairs(n_subjects: int, epoch: int, seed: int = 0, max_pairs: Optional[int] = None) -> List[Tuple[int, int]]:
    """All ordered pairs in a random order drawn from ``(seed, epoch)``; first ``max_pairs``."""
    pairs = all_pairs(n_subjects)
    order = np.random.default_rng([int(seed), 0x7A1, int(epoch)]).permutation(len(pairs))
    out = [pairs[k] for k in order]
    return out if max_pairs is None else out[: int(max_pairs)]


def default_pairs(split: str, n_subjects: int) -> List[Tuple[int, int]]:
    """``all_pairs`` for train, ``eval_pairs`` for val / test."""
    _check_split(split)
    return all_pairs(n_subjects) if split == "train" else eval_pairs(n_subjects)


# ----------------------------------------------------------------------------- build
def _stored_params(path: Path) -> Optional[str]:
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                return None
            for s in SPLITS:
                if s not in f or "images" not in f[s] or "labels" not in f[s]:
                    return None
            params = f.attrs.get("params")
            return params.decode() if isinstance(params, bytes) else params
    except (OSError, KeyError, ValueError):
        return None


@contextlib.contextmanager
def _torch_threads(n: int):
    """Temporarily limit torch's intra-op threads (the warps are small; on a shared 2-core
    machine one thread is several times faster than two fighting for a busy core)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _nilearn_version() -> str:
    try:
        from importlib.metadata import version

        return version("nilearn")
    except Exception:  # pragma: no cover
        return "unknown"


def build_dataset(
    cfg: Optional[DataConfig] = None,
    cache_dir: Optional[PathLike] = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Generate (or reuse) the HDF5 file of ``cfg`` in ``cache_dir`` and return its path.

    A file whose stored params equal ``cfg.params_json()`` is reused unless ``force``;
    otherwise the data are generated and written atomically (a crash leaves no partial file).
    """
    from tqdm.auto import tqdm

    cfg = cfg or DataConfig()
    path = dataset_path(cfg, cache_dir)
    if not force and path.is_file() and _stored_params(path) == cfg.params_json():
        return path

    seeds = split_seeds(cfg)
    tpl = build_template(cfg.voxel_size_mm, cfg.shape)
    total = sum(len(v) for v in seeds.values())
    shape = tuple(cfg.shape)
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f, _torch_threads(1):
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["params"] = cfg.params_json()
        f.attrs["label_names"] = json.dumps({str(k): v for k, v in LABEL_NAMES.items()})
        f.attrs["voxel_size"] = np.asarray(tpl.voxel_size, dtype=np.float64)
        f.attrs["shape"] = np.asarray(shape, dtype=np.int64)
        f.attrs["nilearn_version"] = _nilearn_version()
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        f.attrs["description"] = (
            "Synthetic subjects: random diffeomorphic warps + intensity augmentation of the "
            "MNI ICBM152 2009a template (nilearn). See docs/data.md."
        )
        f.create_dataset("affine", data=tpl.affine)
        g = f.create_group("template")
        g.create_dataset("image", data=tpl.image)
        g.create_dataset("labels", data=tpl.labels)
        g.create_dataset("mask", data=tpl.mask.astype(np.uint8))
        opts = dict(compression="gzip", compression_opts=4, shuffle=True)
        with tqdm(total=total, desc="synthetic subjects", unit="subj", disable=not progress) as bar:
            for split in SPLITS:
                n = len(seeds[split])
                g = f.create_group(split)
                g.attrs["n_subjects"] = n
                images = g.create_dataset("images", shape=(n,) + shape, dtype=np.float32, chunks=(1,) + shape, **opts)
                labels = g.create_dataset("labels", shape=(n,) + shape, dtype=np.uint8, chunks=(1,) + shape, **opts)
                g.create_dataset("seeds", data=np.asarray(seeds[split], dtype=np.int64))
                velocities = None
                for i, s in enumerate(seeds[split]):
                    subj = synth_subject(tpl.image, tpl.labels, s, cfg.synth)
                    if velocities is None:
                        velocities = g.create_dataset("velocities", shape=(n,) + subj.velocity.shape, dtype=np.float32)
                    images[i] = subj.image
                    labels[i] = subj.labels
                    velocities[i] = subj.velocity
                    bar.update(1)
                if split != "train":
                    g.create_dataset("pairs", data=np.asarray(eval_pairs(n), dtype=np.int64).reshape(-1, 2))
    return path


def dataset_info(h5path: PathLike) -> Dict[str, Any]:
    """Metadata of a built file: ``config`` (DataConfig), ``affine``, ``spacing``, ``shape``,
    ``label_names`` ({int: str}), ``n_subjects`` ({split: n}), ``format_version``.

    A file that is not an HDF5 file, or one that is not a data set of this project (no stored
    params, affine or splits), is a one-line ``ValueError`` naming it."""
    path = Path(h5path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ValueError(f"{path} is not an HDF5 file, so not a spikereg-neuro dataset "
                         "(build one with `spikereg-neuro data build`)") from None
    with f:
        try:
            params = json.loads(f.attrs["params"])
            return {
                "config": DataConfig.from_dict(params["config"]),
                "format_version": int(f.attrs["format_version"]),
                "affine": np.array(f["affine"]),
                "spacing": tuple(float(v) for v in f.attrs["voxel_size"]),
                "shape": tuple(int(v) for v in f.attrs["shape"]),
                "label_names": {int(k): v for k, v in json.loads(f.attrs["label_names"]).items()},
                "n_subjects": {s: int(f[s]["images"].shape[0]) for s in SPLITS if s in f},
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # str(KeyError) adds quotes
            raise ValueError(f"{path} is an HDF5 file but not a spikereg-neuro dataset "
                             f"({' '.join(str(why).split()) or type(exc).__name__})") from None


def _check_pairs(pairs: Sequence[Sequence[int]], n: int, split: str) -> List[Tuple[int, int]]:
    out = []
    for p in pairs:
        i, j = (int(v) for v in p)
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"pair {(i, j)} out of range for split {split!r} with {n} subjects")
        if i == j:
            raise ValueError(f"pair {(i, j)}: fixed and moving must be distinct subjects")
        out.append((i, j))
    return out


def _read_split(h5path: PathLike, split: str) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    _check_split(split)
    info = dataset_info(h5path)
    with h5py.File(h5path, "r") as f:
        if split not in f:
            raise KeyError(f"{h5path}: no split {split!r}")
        images = np.asarray(f[split]["images"], dtype=np.float32)
        labels = np.asarray(f[split]["labels"])
    return images, labels, info


# ----------------------------------------------------------------------------- access
class RegistrationPairs(Dataset):
    """Torch dataset of (fixed, moving) pairs of one split of a built HDF5 file.

    The split's volumes are read into memory once (about 60 MB for the default train split).
    Item ``k`` is a dict: ``fixed``, ``moving`` float32 ``(1, D, H, W)``; ``fixed_labels``,
    ``moving_labels`` int64 ``(1, D, H, W)``; ``pair`` int64 tensor ``(2,)`` = (fixed, moving)
    subject indices. ``pairs`` defaults to :func:`default_pairs`; it may be reassigned, e.g.
    by :meth:`resample` once per epoch for training.

    With ``true_fields=True`` items also carry ``true_field`` float32 ``(3, D, H, W)``, the
    pair's ground-truth pull field (as :func:`true_displacement`): each subject's ``exp(v)``
    and ``exp(-v)`` are integrated once, on first use, and kept (about 7 MB per subject at the
    default size), so a pair costs one composition.
    """

    def __init__(self, h5path: PathLike, split: str, pairs: Optional[Sequence[Sequence[int]]] = None,
                 true_fields: bool = False):
        self.h5path = Path(h5path)
        self.split = split
        self.images, self.labels, info = _read_split(self.h5path, split)
        self.affine: np.ndarray = info["affine"]
        self.spacing: Tuple[float, float, float] = info["spacing"]
        self.label_names: Dict[int, str] = info["label_names"]
        self.n_subjects = int(self.images.shape[0])
        self.pairs = default_pairs(split, self.n_subjects) if pairs is None else pairs
        self.true_fields = bool(true_fields)
        self._velocities: Optional[np.ndarray] = None
        self._phi: Dict[Tuple[int, int], torch.Tensor] = {}
        if self.true_fields:
            with h5py.File(self.h5path, "r") as f:
                if "velocities" not in f[split]:
                    raise ValueError(f"{self.h5path}: split {split!r} stores no velocities, so it has no "
                                     "true fields (only the embedded synthetic data set has them)")
                self._velocities = np.asarray(f[split]["velocities"], dtype=np.float32)
            self._steps = int(info["config"].synth.integration_steps)

    def _subject_map(self, i: int, sign: int) -> torch.Tensor:
        """:func:`~spikereg_neuro.data.synth.subject_map` of subject ``i`` (cached)."""
        key = (i, sign)
        if key not in self._phi:
            self._phi[key] = subject_map(self._velocities[i], self.images.shape[1:], self._steps, sign)
        return self._phi[key]

    def true_field(self, i: int, j: int) -> torch.Tensor:
        """Ground-truth pull field ``(3, D, H, W)`` of the pair (fixed ``i``, moving ``j``)."""
        if not self.true_fields:
            raise ValueError("this RegistrationPairs was built without true_fields=True")
        with torch.no_grad():
            return compose(self._subject_map(j, -1), self._subject_map(i, 1))[0]

    @property
    def pairs(self) -> List[Tuple[int, int]]:
        return self._pairs

    @pairs.setter
    def pairs(self, value: Sequence[Sequence[int]]) -> None:
        self._pairs = _check_pairs(value, self.n_subjects, self.split)

    def resample(self, epoch: int, seed: int = 0, max_pairs: Optional[int] = None) -> None:
        """Set ``pairs`` to :func:`train_pairs` of this epoch."""
        self.pairs = train_pairs(self.n_subjects, epoch, seed=seed, max_pairs=max_pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, k: int) -> Dict[str, torch.Tensor]:
        i, j = self._pairs[k]
        return {
            "fixed": torch.from_numpy(self.images[i][None].copy()),
            "moving": torch.from_numpy(self.images[j][None].copy()),
            "fixed_labels": torch.from_numpy(self.labels[i][None].astype(np.int64)),
            "moving_labels": torch.from_numpy(self.labels[j][None].astype(np.int64)),
            "pair": torch.tensor([i, j], dtype=torch.int64),
            **({"true_field": self.true_field(i, j)} if self.true_fields else {}),
        }


def load_pairs_numpy(
    h5path: PathLike, split: str = "test", pairs: Optional[Sequence[Sequence[int]]] = None
) -> List[Dict[str, Any]]:
    """Pairs as numpy for evaluation: a list of dicts with ``fixed``, ``moving`` float32
    ``(D, H, W)``; ``fixed_labels``, ``moving_labels`` int64 ``(D, H, W)``; ``pair`` (i, j);
    ``affine`` (4, 4); ``spacing`` (3 floats, mm); ``label_names``. Default pairs as in
    :func:`default_pairs`."""
    images, labels, info = _read_split(h5path, split)
    n = images.shape[0]
    chosen = _check_pairs(default_pairs(split, n) if pairs is None else pairs, n, split)
    return [
        {
            "fixed": images[i].copy(),
            "moving": images[j].copy(),
            "fixed_labels": labels[i].astype(np.int64),
            "moving_labels": labels[j].astype(np.int64),
            "pair": (i, j),
            "affine": info["affine"].copy(),
            "spacing": info["spacing"],
            "label_names": dict(info["label_names"]),
        }
        for i, j in chosen
    ]


def true_displacement(h5path: PathLike, split: str, pair: Sequence[int]) -> np.ndarray:
    """Ground-truth pull field (3, D, H, W), voxels, of pair ``(fixed, moving)``: the field with
    ``moving(x + u(x)) ~ fixed(x)`` up to the intensity augmentation (see
    :func:`spikereg_neuro.data.synth.pair_displacement`)."""
    _check_split(split)
    info = dataset_info(h5path)
    i, j = _check_pairs([pair], info["n_subjects"][split], split)[0]
    with h5py.File(h5path, "r") as f:
        vel = f[split]["velocities"]
        vi, vj = np.asarray(vel[i]), np.asarray(vel[j])
    return pair_displacement(vi, vj, info["shape"], steps=info["config"].synth.integration_steps)


# ----------------------------------------------------------------------------- export
def export_demo(
    out_dir: PathLike,
    cfg: Optional[DataConfig] = None,
    cache_dir: Optional[PathLike] = None,
    split: str = "test",
    progress: bool = False,
) -> Path:
    """Write the held-out evaluation pairs of ``split`` as NIfTI and return ``pairs.json``.

    Layout: ``out_dir/pair_XXX/{fixed,moving,fixed_labels,moving_labels}.nii.gz`` (images
    float32, labels uint8, affine = the data set's) and ``out_dir/pairs.json`` (relative
    paths, subject indices, voxel size, shape, label names), all written atomically.
    Builds the data set first if it is not cached.
    """
    cfg = cfg or DataConfig()
    h5path = build_dataset(cfg, cache_dir, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels, info = _read_split(h5path, split)
    affine = info["affine"]
    records, extra = [], []
    for k, (i, j) in enumerate(eval_pairs(images.shape[0])):
        name = f"pair_{k:03d}"
        d = out / name
        save_volume(d / "fixed.nii.gz", images[i], affine, dtype=np.float32)
        save_volume(d / "moving.nii.gz", images[j], affine, dtype=np.float32)
        save_volume(d / "fixed_labels.nii.gz", labels[i], affine, dtype=np.uint8)
        save_volume(d / "moving_labels.nii.gz", labels[j], affine, dtype=np.uint8)
        records.append(PairRecord(d / "fixed.nii.gz", d / "moving.nii.gz",
                                  d / "fixed_labels.nii.gz", d / "moving_labels.nii.gz", name))
        extra.append({"split": split, "fixed_subject": i, "moving_subject": j})
    meta = {
        "source": "spikereg-neuro synthetic MNI ICBM152 2009a subjects (docs/data.md)",
        "dataset_params": cfg.to_dict(),
        "voxel_size_mm": list(info["spacing"]),
        "shape": list(info["shape"]),
        "affine": np.asarray(affine).tolist(),
        "orientation": "RAS+",
        "displacement_convention": "voxels, channel k along axis k, pull: warped(x) = moving(x + u(x))",
        "label_names": {str(k): v for k, v in info["label_names"].items()},
    }
    return write_pairs_json(out, records, meta=meta, extra=extra)
