"""``python -m spikereg_neuro.train`` (under ``torchrun --nproc_per_node N``): data-parallel training.

Takes the options of ``spikereg-neuro train`` (without ``--ddp``: torchrun starts the
processes); every rank joins the ``env://`` process group torchrun describes (gloo on the
CPU, NCCL with ``--device cuda``), rank 0 writes the run folder. Alone (no torchrun) it is one
ordinary training process.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, join the process group, train; 1 with one line on an expected error."""
    from ..commands.train import add_arguments, options
    from . import distributed as ddp
    from .run import run_training

    parser = argparse.ArgumentParser(prog="python -m spikereg_neuro.train",
                                     description="SpikeReg training, one rank of torchrun (or alone)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    joined = False
    try:
        opts = options(args)
        joined = ddp.init_from_env(opts.device or "cpu")
        run_training(opts)
        return 0
    except (ValueError, OSError, KeyError) as exc:
        rank = ddp.world_info()[0]
        print(f"spikereg_neuro.train [rank {rank}]: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        if joined:
            import torch.distributed as dist
            dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
