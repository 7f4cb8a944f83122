"""Train the VoxelMorph baseline on the same (augmented) data and budget as a SpikeReg run.

    python scripts/train_voxelmorph_same_data.py CONFIG OUT [--init VXM_CKPT]

CONFIG is the SpikeReg run's YAML (its data, train and augment sections are used: the same
pairs, patches and augmentation draws, epochs x steps_per_epoch steps); ``--init`` starts from
a VoxelMorph checkpoint (default: the shipped one, as ``train --init`` starts SpikeReg from its).
"""
from __future__ import annotations

import argparse
import json

from spikereg_neuro.baselines.voxelmorph import DEFAULT_VOXELMORPH_MODEL, train_voxelmorph
from spikereg_neuro.config import load_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--init", default=str(DEFAULT_VOXELMORPH_MODEL))
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    summary = train_voxelmorph(load_config(a.config), a.out, init=a.init or None, progress=not a.no_progress)
    print(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
