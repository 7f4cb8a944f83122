"""``spikereg-neuro`` command line: one entry point, one subcommand per capability.

Each capability module exposes ``register(subparsers)`` that adds its own subcommand(s) and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import zlib
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
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="spikereg-neuro",
        description="Spiking deformable 3D registration for Intel Loihi 2 (SpikeReg).",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (every command; also --no-progress)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for leaf in _leaf_parsers(sub):
        _add_common_flags(leaf)
    return parser


def _leaf_parsers(sub: argparse._SubParsersAction):
    """Every command parser, nested subcommands included (a parser with subcommands may run
    a command of its own too, as ``benchmark`` does)."""
    for p in dict.fromkeys(sub.choices.values()):   # aliases share a parser
        yield p
        for n in [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]:
            yield from _leaf_parsers(n)


def _add_common_flags(p: argparse.ArgumentParser) -> None:
    """One scheme on every command: ``-q/--quiet`` (= ``--no-progress``) and ``-v/--verbose``,
    accepted before or after the command name (SUPPRESS: absent ones keep the global value)."""
    have = p._option_string_actions
    quiet = [f for f in ("-q", "--quiet", "--no-progress") if f not in have]
    if quiet:
        p.add_argument(*quiet, dest="quiet" if "--quiet" in quiet else "no_progress",
                       action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars" if "--quiet" in quiet else argparse.SUPPRESS)
    verbose = [f for f in ("-v", "--verbose") if f not in have]
    if verbose:
        p.add_argument(*verbose, dest="verbose", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, show the full traceback")


def _unify_quiet(args: argparse.Namespace) -> None:
    """``quiet`` and ``no_progress`` mean the same: set both from either."""
    q = bool(getattr(args, "quiet", False) or getattr(args, "no_progress", False))
    args.quiet = args.no_progress = q


def _command_name(args: argparse.Namespace) -> str:
    parts = [getattr(args, "command", None) or ""]
    for attr in ("loihi_command", "data_command", "benchmark_command", "baseline_command"):
        if getattr(args, attr, None):
            parts.append(str(getattr(args, attr)))
    return " ".join(p for p in parts if p)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_error(exc: BaseException) -> str:
    """One line for an expected failure (what went wrong, naming the file where known)."""
    if isinstance(exc, MemoryError):
        detail = _one_line(exc)
        return "out of memory" + (f" ({detail})" if detail else "") + \
            " (is the input much larger than its header suggests, or the machine too small?)"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        return _one_line(exc) or exc.__class__.__name__
    if isinstance(exc, KeyError):
        return _one_line(exc.args[0] if len(exc.args) == 1 else exc)
    if isinstance(exc, (EOFError, zlib.error)):
        return f"truncated or corrupt compressed data ({exc.__class__.__name__}: {_one_line(exc)})"
    return _one_line(exc) or exc.__class__.__name__


#: failures a user can cause (bad files, paths, values, resources): one line, exit 1
EXPECTED_ERRORS = (ValueError, OSError, KeyError, MemoryError, EOFError, zlib.error)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    0 success, 1 an error (one line ``spikereg-neuro CMD: error: ...`` on stderr; the full
    traceback with ``-v``), 2 a usage error (argparse), 130 interrupted (Ctrl-C). Commands
    write their files atomically, so an error or Ctrl-C leaves no partial file.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("spikereg-neuro: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _unify_quiet(args)
    cmd = _command_name(args)
    verbose = bool(getattr(args, "verbose", False))
    try:
        if getattr(args, "device", None):
            from .devices import check_device
            check_device(args.device)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if verbose:
            traceback.print_exc()
        print(f"spikereg-neuro {cmd}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:  # user errors: one clear line
        if verbose:
            traceback.print_exc()
        else:
            print(f"spikereg-neuro {cmd}: error: {describe_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, the traceback with -v
        if verbose:
            traceback.print_exc()
        else:
            print(f"spikereg-neuro {cmd}: error: internal error: {exc.__class__.__name__}: "
                  f"{_one_line(exc)} (run with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
