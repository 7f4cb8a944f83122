"""Atomic file writes: a file either appears complete under its final name or not at all.

Every file the project writes goes through :func:`atomic_write`::

    with atomic_write("out/fixed.nii.gz") as tmp:
        nib.save(img, tmp)          # write anything to ``tmp``
    # here out/fixed.nii.gz exists and is complete

The temporary file lives in the target's directory (so the final ``os.replace`` is an
atomic rename on the same file system) and its name *ends with the target's name*, so it
keeps every suffix (``.nii.gz``, ``.h5``, ...) that libraries use to pick a format.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator, Union

__all__ = ["atomic_write", "atomic_write_text"]

PathLike = Union[str, "os.PathLike[str]"]


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - best effort only
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: PathLike, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    * On normal exit the temporary file is flushed to disk and renamed over ``path``
      (replacing any existing file). The body must have created the temporary file.
    * If the body raises, the temporary file (if any) is deleted, ``path`` is left
      untouched (an older version stays as it was) and the exception propagates.

    ``make_parents`` creates missing parent directories of ``path``.
    """
    target = Path(path)
    if target.name in ("", ".", ".."):
        raise ValueError(f"atomic_write needs a file path, got {str(path)!r}")
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{secrets.token_hex(4)}-{target.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"atomic_write: nothing was written to the temporary file for {target}"
            )
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    target = Path(path)
    with atomic_write(target) as tmp:
        tmp.write_text(text, encoding=encoding)
    return target
