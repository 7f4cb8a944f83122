"""``spikereg-neuro train``: train a SpikeReg model on the embedded dataset or a ``--data`` folder."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training options (shared with ``python -m spikereg_neuro.train`` under torchrun)."""
    p.add_argument("--config", default=None,
                   help="YAML config (default: the packaged default.yaml; with --resume: the checkpoint's config)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<YYYYmmdd-HHMMSS>)")
    p.add_argument("--epochs", type=int,
                   help="total epochs of the run (overrides train.epochs); with --resume the total to reach, "
                        "not extra epochs: the cosine schedule ends there and never restarts")
    p.add_argument("--steps", type=int, help="override train.steps_per_epoch (optimiser steps per epoch)")
    p.add_argument("--device", help="override train.device (cpu, cuda)")
    p.add_argument("--resume", help="checkpoint to continue from (e.g. RUN/last.pt); the run continues "
                                    "bitwise as if it had not stopped (same data order and schedule)")
    p.add_argument("--init", help="start from this checkpoint's trained weights (fine-tuning): a new optimiser "
                                  "and schedule; neuron constants come from --config, so e.g. a model "
                                  "with another rate band or input schedule can start from the shipped one")
    p.add_argument("--cache", help="dataset cache directory (default $SPIKEREG_CACHE or ~/.cache/spikereg-neuro)")
    p.add_argument("--data", help="train on your own NIfTI data instead: a Learn2Reg folder (training pairs from its "
                                  "'training' list, validation on 'registration_val') or a pairs.json folder")
    p.add_argument("--no-progress", action="store_true")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a SpikeReg model (surrogate gradients)",
                       description="Train on the embedded synthetic-anatomy dataset built from the config's "
                                   "data section (or on a Learn2Reg / pairs.json folder with --data). Writes best.pt, last.pt, train_log.csv and summary.json to --out. "
                                   "Data-parallel on several processes: --ddp N here (gloo on the CPU), or "
                                   "torchrun --nproc_per_node N -m spikereg_neuro.train [the same options].")
    add_arguments(p)
    p.add_argument("--ddp", type=int, default=1, metavar="N",
                   help="data-parallel training on N local processes (torch.distributed; the global "
                        "train.batch_size is split over them; default 1)")
    p.set_defaults(func=run)


def options(args: argparse.Namespace):
    """:class:`~spikereg_neuro.train.run.TrainOptions` of parsed arguments (checked)."""
    from ..train.run import TrainOptions

    opts = TrainOptions(config=args.config, out=args.out, epochs=args.epochs, steps=args.steps,
                        device=args.device, resume=args.resume, init=getattr(args, "init", None),
                        cache=args.cache, data=args.data,
                        progress=not args.no_progress, ddp=getattr(args, "ddp", 1))
    opts.check()
    return opts


def run(args: argparse.Namespace) -> int:
    from ..train.run import prepare_config, run_training

    opts = options(args)
    cfg = prepare_config(opts)  # every check before any work (or any process is started)
    if opts.data is not None:
        from ..train.folder_data import folder_records
        folder_records(opts.data)  # a broken folder is an error before any process starts
    if opts.ddp > 1:
        from ..data import build_dataset
        from ..train.distributed import spawn_training

        if opts.data is None:
            build_dataset(cfg.data, opts.cache)  # once, before the processes read it
        spawn_training(run_training, opts, opts.ddp)  # rank 0 prints the summary line
        return 0
    run_training(opts)
    return 0
