#!/usr/bin/env python
"""Ship a training run's best checkpoint as the packaged default model.

    .venv/bin/python scripts/release_model.py RUN_DIR --trained-with "spikereg-neuro train ..."

Writes ``spikereg_neuro/models/default.pt`` (``best.pt`` without optimizer/RNG state) and
``default.json`` (what was trained how, the per-epoch log, the config, the validation Dice of the
selected epoch next to the unregistered validation Dice on the same pairs). Both atomically.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401  (lava sets mp start method)
import numpy as np

from spikereg_neuro.checkpoint import file_sha256, read_checkpoint, strip_for_release
from spikereg_neuro.config import Config
from spikereg_neuro.data import RegistrationPairs, build_dataset
from spikereg_neuro.io.atomic import atomic_write_text
from spikereg_neuro.registration.metrics import dice_mean

MODELS = Path(__file__).resolve().parents[1] / "spikereg_neuro" / "models"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="training run directory (with best.pt)")
    ap.add_argument("--trained-with", required=True, help="command line and machine, for the record")
    ap.add_argument("--note", default="", help="free text kept in default.json")
    ap.add_argument("--out", default=str(MODELS), help="models directory (default: the package's)")
    a = ap.parse_args()
    run, out = Path(a.run), Path(a.out)
    best = run / "best.pt"
    if not best.exists():
        raise SystemExit(f"{best} does not exist: train first (spikereg-neuro train --out {run})")
    ckpt = read_checkpoint(best)
    cfg = Config.from_dict(ckpt["config"])
    h5 = build_dataset(cfg.data)
    val = RegistrationPairs(h5, "val")
    n = cfg.train.val_pairs or len(val)
    unreg = [dice_mean(val[i]["fixed_labels"][0].numpy(), val[i]["moving_labels"][0].numpy())
             for i in range(min(n, len(val)))]
    summary = strip_for_release(best, out / "default.pt")
    history = summary["history"]
    meta = {
        "model": "SpikeRegUNet (spikereg_neuro/model/unet.py)",
        "checkpoint": "default.pt",
        "sha256": file_sha256(out / "default.pt"),
        "trained_with": a.trained_with,
        "selected": f"best validation Dice over the epochs run (epoch {ckpt.get('epoch')})",
        "epochs_run": len(history),
        "epochs_planned": cfg.train.epochs,
        "steps": len(history) * cfg.train.steps_per_epoch,
        "best_val_dice": ckpt.get("best_val_dice"),
        "val_pairs": len(unreg),
        "val_dice_unregistered": float(np.mean(unreg)),
        "note": a.note,
        "log": history,
        "config": ckpt["config"],
    }
    atomic_write_text(out / "default.json", json.dumps(meta, indent=2, default=float) + "\n")
    print(f"shipped {best} -> {out / 'default.pt'} (val Dice {meta['best_val_dice']:.4f}, "
          f"unregistered {meta['val_dice_unregistered']:.4f} on {len(unreg)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
