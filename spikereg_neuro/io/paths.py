"""Output paths checked before any work, so a long run never ends by overwriting an input
or failing to write its result.

>>> check_outputs(inputs={"--moving": "m.nii.gz"},
...               outputs={"--out-warped": "out/w.nii.gz"},
...               suffixes={"--out-warped": NIFTI_SUFFIXES})
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["NIFTI_SUFFIXES", "H5_SUFFIXES", "JSON_SUFFIXES", "check_input_file", "check_outputs",
           "check_output_dir", "same_file"]

PathLike = Union[str, "os.PathLike[str]"]

NIFTI_SUFFIXES: Tuple[str, ...] = (".nii", ".nii.gz")
H5_SUFFIXES: Tuple[str, ...] = (".h5", ".hdf5")
JSON_SUFFIXES: Tuple[str, ...] = (".json",)


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file: equal once resolved (symlinks, ``..``), or the
    same inode when both exist (hard links)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists() and os.path.samefile(pa, pb):
            return True
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def check_input_file(path: PathLike, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` once it names an existing regular file: a directory
    raises ``IsADirectoryError``, a missing path ``FileNotFoundError``, both naming ``what``."""
    if str(path) == "":
        raise ValueError(f"the {what} path is empty")
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"expected a {what} file, got a directory: {p}")
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    return p


def _named(paths: Union[Mapping[str, Optional[PathLike]], Iterable[Optional[PathLike]]],
           empty_ok: bool = True) -> Dict[str, Path]:
    """``{flag: Path}`` of the given paths (``None`` skipped; ``""`` skipped, or with
    ``empty_ok=False`` an error: an output named by an empty argument)."""
    if isinstance(paths, Mapping):
        items = list(paths.items())
    else:
        items = [(str(p), p) for p in paths]
    if not empty_ok:
        for name, p in items:
            if p is not None and str(p) == "":
                raise ValueError(f"{name} is empty: give a file name")
    return {name: Path(p) for name, p in items if p is not None and str(p) != ""}



def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_dir(flag: str, target: Path, directory: Path, make_parents: bool) -> None:
    """``directory`` (where ``target`` goes) exists and can take a new file, or (with
    ``make_parents``) can be created under a writable existing ancestor."""
    base = _nearest_existing(directory)
    if not base.is_dir():
        raise ValueError(f"{flag} {target}: {base} is a file, not a directory")
    if base != directory.absolute() and not make_parents:
        raise ValueError(f"{flag} {target}: directory {directory} does not exist")
    try:  # os.access is not enough (root, read-only mounts): try a throwaway file
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {target}: cannot write in {base} ({exc.strerror or exc})") from None


def check_outputs(
    inputs: Union[Mapping[str, Optional[PathLike]], Iterable[Optional[PathLike]]],
    outputs: Mapping[str, Optional[PathLike]],
    suffixes: Optional[Mapping[str, Sequence[str]]] = None,
    make_parents: bool = True,
) -> Dict[str, Path]:
    """Validate output file paths before a command does any work; returns them as ``Path``.

    ``inputs`` and ``outputs`` map a name (the command-line flag) to a path; ``None`` entries
    are skipped. Raises a one-line ``ValueError`` when an output

    * has the wrong suffix (``suffixes[flag]``, e.g. ``(".nii", ".nii.gz")``),
    * is an existing directory,
    * is empty (``""``), or the same file as an input or as another output (resolved paths, hard
      links; a data folder's files: :func:`~spikereg_neuro.train.folder_data.data_files`),
    * cannot be written: its parent is a file, is missing (and ``make_parents`` is false, i.e.
      the command does not create parent directories) or is not writable.
    """
    ins = _named(inputs)
    outs = _named(outputs, empty_ok=False)
    for flag, out in outs.items():
        want = tuple((suffixes or {}).get(flag, ()))
        if want and not str(out).lower().endswith(tuple(s.lower() for s in want)):
            raise ValueError(f"{flag} {out}: the file name must end with {' or '.join(want)}")
        if out.is_dir():
            raise ValueError(f"{flag} {out} is a directory; give a file name")
        for iflag, inp in ins.items():
            if same_file(out, inp):
                raise ValueError(f"{flag} {out} is the same file as the input {iflag} ({inp}); "
                                 f"refusing to overwrite an input")
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if same_file(outs[a], outs[b]):
                raise ValueError(f"{a} and {b} are the same file ({outs[a]}); give two different paths")
    for flag, out in outs.items():
        _check_writable_dir(flag, out, out.parent, make_parents)
    return outs


def check_output_dir(flag: str, directory: PathLike, make_parents: bool = True) -> Path:
    """Validate an output directory before any work: named (``""`` is not the current folder),
    not an existing file, and creatable or writable. Returns it as a ``Path``."""
    if str(directory) == "":
        raise ValueError(f"{flag} is empty: give a folder name")
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{flag} {d} is a file, not a directory")
    _check_writable_dir(flag, d, d, make_parents)
    return d
