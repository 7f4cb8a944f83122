"""``spikereg-neuro data ...``: build the embedded data set, export demo NIfTI pairs."""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

__all__ = ["register"]

#: the coarsest grid ``--voxel-size`` may give: voxels across the field of view, per axis
MIN_VOXELS_PER_AXIS = 8
#: what ``export-demo`` writes into DIR (a folder holding anything else is refused)
_EXPORT_PAIR_DIR = re.compile(r"pair_\d{3,}")
_EXPORT_PAIR_FILES = {"fixed.nii.gz", "moving.nii.gz", "fixed_labels.nii.gz", "moving_labels.nii.gz"}


def _config(args: argparse.Namespace):
    """The data config of ``--voxel-size``, refused (one line naming the flag) before any work
    when it is not a finite size > 0, too coarse (fewer than :data:`MIN_VOXELS_PER_AXIS`
    voxels across the field of view) or too fine (more than ``MAX_WORKING_VOXELS``)."""
    from ..registration.world import MAX_WORKING_VOXELS
    from .dataset import DEFAULT_FOV_MM, DataConfig

    cfg = DataConfig()
    vs = args.voxel_size
    if vs is None:
        return cfg
    if not (math.isfinite(vs) and vs > 0):
        raise ValueError(f"--voxel-size must be a finite number of mm > 0, got {vs:g}")
    coarsest = min(DEFAULT_FOV_MM) / MIN_VOXELS_PER_AXIS
    if vs > coarsest:
        raise ValueError(f"--voxel-size {vs:g} is too coarse: the {min(DEFAULT_FOV_MM):g} mm field of "
                         f"view would span {min(DEFAULT_FOV_MM) / vs:.1f} voxels (at least "
                         f"{MIN_VOXELS_PER_AXIS}: --voxel-size at most {coarsest:g})")
    cfg = cfg.with_voxel_size(vs)
    n = math.prod(cfg.shape)
    if n > MAX_WORKING_VOXELS:
        raise ValueError(f"--voxel-size {vs:g} is too fine: a {'x'.join(map(str, cfg.shape))} grid has "
                         f"{n:,} voxels (at most {MAX_WORKING_VOXELS:,})")
    return cfg


def _is_own_export(pairs_json: Path) -> bool:
    """Whether ``pairs_json`` was written by ``export-demo`` (its ``source`` line)."""
    try:
        doc = json.loads(pairs_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and str(doc.get("source", "")).startswith("spikereg-neuro synthetic")


def _check_export_dir(arg) -> Path:
    """DIR of ``export-demo``, checked before any work: named, not a file, writable, and
    empty or holding only what a previous ``export-demo`` wrote (``pairs.json`` written by it,
    ``pair_NNN/`` folders of its four NIfTI files), which it replaces."""
    from ..io.paths import check_output_dir

    out = check_output_dir("DIR", arg)
    if not out.is_dir():
        return out
    for entry in sorted(out.iterdir()):
        if entry.name == "pairs.json" and entry.is_file() and not entry.is_symlink():
            if not _is_own_export(entry):
                raise ValueError(f"DIR {out} holds a pairs.json not written by export-demo; refusing to "
                                 f"replace it (give an empty or new folder)")
            continue
        if (_EXPORT_PAIR_DIR.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()
                and all(f.name in _EXPORT_PAIR_FILES and f.is_file() and not f.is_symlink()
                        for f in entry.iterdir())):
            continue
        raise ValueError(f"DIR {out} is not empty and not a previous export-demo folder ({entry.name}); "
                         f"give an empty or new folder")
    return out


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _cmd_build(args: argparse.Namespace) -> int:
    import time

    from .dataset import build_dataset, dataset_info

    cfg = _config(args)
    t0 = time.perf_counter()
    path = build_dataset(cfg, args.cache, force=args.force, progress=not getattr(args, "quiet", False))
    elapsed = time.perf_counter() - t0
    info = dataset_info(path)
    print(path)
    print(f"  size: {_fmt_bytes(path.stat().st_size)}  ({elapsed:.1f} s)")
    print(f"  grid: {'x'.join(map(str, info['shape']))} voxels of "
          f"{'x'.join(f'{v:g}' for v in info['spacing'])} mm, {len(info['label_names'])} labels")
    for split, n in info["n_subjects"].items():
        print(f"  {split}: {n} subjects")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .dataset import export_demo
    from .learn2reg import read_pairs_json

    cfg = _config(args)
    out = _check_export_dir(args.dir)
    pairs_json = export_demo(out, cfg, args.cache, progress=not getattr(args, "quiet", False))
    records = read_pairs_json(pairs_json)
    print(pairs_json)
    print(f"  {len(records)} test pairs written under {out}")
    return 0


def register(subparsers) -> None:
    """Add ``data build`` and ``data export-demo``."""
    data = subparsers.add_parser(
        "data", help="embedded data: synthetic subjects of the MNI ICBM152 2009a template",
        description="Build the cached HDF5 data set or export its test pairs as NIfTI.",
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cache", type=Path, default=None,
                       help="cache folder (default: $SPIKEREG_CACHE or ~/.cache/spikereg-neuro)")
        p.add_argument("--voxel-size", type=float, default=None, metavar="MM",
                       help="isotropic voxel size in mm (default 2.5; the grid shape is scaled to "
                            "keep a 160x180x160 mm field of view)")
        # SUPPRESS: an absent -q keeps the global ``spikereg-neuro -q`` (see cli._add_common_flags)
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bar")

    b = sub.add_parser("build", help="generate (or reuse) the cached HDF5 data set; print its path")
    common(b)
    b.add_argument("--force", action="store_true", help="regenerate even if a matching cache exists")
    b.set_defaults(func=_cmd_build)

    e = sub.add_parser("export-demo", help="write the test pairs as NIfTI + pairs.json into DIR")
    e.add_argument("dir", metavar="DIR")  # str: Path("") would silently become "."
    common(e)
    e.set_defaults(func=_cmd_export)

    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])
