"""``spikereg-neuro data ...``: build the embedded data set, export demo NIfTI pairs."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def _config(args: argparse.Namespace):
    from .dataset import DataConfig

    cfg = DataConfig()
    if args.voxel_size is not None:
        cfg = cfg.with_voxel_size(args.voxel_size)
    return cfg


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _cmd_build(args: argparse.Namespace) -> int:
    import time

    from .dataset import build_dataset, dataset_info

    cfg = _config(args)
    t0 = time.perf_counter()
    path = build_dataset(cfg, args.cache, force=args.force, progress=not args.quiet)
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
    pairs_json = export_demo(args.dir, cfg, args.cache, progress=not args.quiet)
    records = read_pairs_json(pairs_json)
    print(pairs_json)
    print(f"  {len(records)} test pairs written under {Path(args.dir)}")
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
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    b = sub.add_parser("build", help="generate (or reuse) the cached HDF5 data set; print its path")
    common(b)
    b.add_argument("--force", action="store_true", help="regenerate even if a matching cache exists")
    b.set_defaults(func=_cmd_build)

    e = sub.add_parser("export-demo", help="write the test pairs as NIfTI + pairs.json into DIR")
    e.add_argument("dir", metavar="DIR", type=Path)
    common(e)
    e.set_defaults(func=_cmd_export)

    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])
