"""Opening our versioned HDF5 files (net.h5, deploy files) with one set of checks."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Type, Union

import h5py

PathLike = Union[str, os.PathLike]


def open_versioned(path: PathLike, fmt: str, version: int, error: Type[Exception],
                   what: str) -> h5py.File:
    """Open ``path`` read-only after checking it exists, is HDF5, and carries the root attributes
    ``format == fmt`` and ``format_version == version``.

    Missing file -> ``FileNotFoundError``; anything else wrong -> ``error`` with a message naming
    the file and ``what`` it should be. The caller closes the returned file (``with``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise error(f"{path} is not an HDF5 file ({exc})") from exc
    try:
        got = f.attrs.get("format")
        got = got.decode() if isinstance(got, bytes) else got
        if got != fmt:
            raise error(f"{path} is not a {what} file (format {got!r}, expected {fmt!r})")
        ver = f.attrs.get("format_version")
        if ver is None or int(ver) != version:
            raise error(f"{path}: unsupported format_version {ver} (this reader supports "
                        f"version {version})")
    except BaseException:
        f.close()
        raise
    return f
