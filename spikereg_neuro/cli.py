"""``spikereg-neuro`` command line: one entry point, one subcommand per capability.

Each capability module exposes ``register(subparsers)`` that adds its own subcommand(s) and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: modules that add subcommands, in help order
_COMMAND_MODULES = [
    "spikereg_neuro.data.cli",
    "spikereg_neuro.commands.train",
    "spikereg_neuro.commands.register",
    "spikereg_neuro.commands.demo",
    "calibration.cli",
    "sim.cli",
    "loihi.cli",
    "spikereg_neuro.commands.benchmark",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikereg-neuro",
        description="Spiking deformable 3D registration for Intel Loihi 2 (SpikeReg).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:  # user errors: one clear line
        print(f"spikereg-neuro {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
