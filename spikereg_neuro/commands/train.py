"""``spikereg-neuro train``: train a SpikeReg model on the embedded (or cached) dataset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a SpikeReg model (surrogate gradients)",
                       description="Train on the embedded synthetic-anatomy dataset built from the config's "
                                   "data section. Writes best.pt, last.pt, train_log.csv and summary.json to --out.")
    p.add_argument("--config", default=None, help="YAML config (default: the packaged default.yaml)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--steps", type=int, help="override train.steps_per_epoch")
    p.add_argument("--device", help="override train.device (cpu, cuda)")
    p.add_argument("--resume", help="checkpoint to continue from (e.g. RUN/last.pt)")
    p.add_argument("--cache", help="dataset cache directory (default $SPIKEREG_CACHE or ~/.cache/spikereg-neuro)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from ..config import load_config
    from ..data import RegistrationPairs, build_dataset
    from ..io.atomic import atomic_write_text
    from ..model.unet import SpikeRegUNet
    from ..train.trainer import SpikeRegTrainer

    cfg = load_config(args.config)
    if args.epochs:
        cfg.train.epochs = args.epochs
    if args.steps:
        cfg.train.steps_per_epoch = args.steps
    if args.device:
        cfg.train.device = args.device
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch sees no CUDA device")
    h5 = build_dataset(cfg.data, args.cache)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = DataLoader(RegistrationPairs(h5, "train", true_fields=cfg.train.w_field > 0),
                              batch_size=1, shuffle=True, generator=gen)
    val_loader = DataLoader(RegistrationPairs(h5, "val"), batch_size=1, shuffle=False)
    torch.manual_seed(cfg.train.seed)
    net = SpikeRegUNet(cfg.model)
    trainer = SpikeRegTrainer(net, cfg, args.out, progress=not args.no_progress)
    if args.resume:
        trainer.resume(args.resume)
    summary = trainer.train(train_loader, val_loader)
    out = Path(args.out)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float))
    print(f"best validation Dice {summary['best_val_dice']:.4f}; checkpoints in {out}")
    return 0
