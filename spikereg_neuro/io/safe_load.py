"""Loading torch checkpoints without running code from them, and checking shipped models.

* :func:`safe_torch_load` always uses ``torch.load(..., weights_only=True)``: only tensors,
  plain Python containers and numbers can come out of a file; a file whose pickle asks for
  anything else (a callable, a class, a numpy array) is refused with a one-line
  ``ValueError`` naming the file, before any of it is executed.
* :func:`verify_shipped` checks a shipped model against the sha256 recorded in the JSON file
  next to it (``default.pt`` -> ``default.json``), once per process and file version.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

from .hashing import file_sha256
from .paths import check_input_file

__all__ = ["safe_torch_load", "verify_shipped"]

PathLike = Union[str, "os.PathLike[str]"]

_UNSAFE = re.compile(r"Unsupported (?:class|global)[: ]\s*(?:GLOBAL\s+)?([\w.]+)")
#: torch's weights-only refusal of a byte that starts no pickle opcode it reads: not a torch file
_NOT_PICKLE = re.compile(r"Unsupported operand \d+")


def _torch_reason(exc: BaseException) -> str:
    """``exc`` as one short line, without torch's advice to retry with ``weights_only=False``
    (which would run code from the file): only what follows its ``WeightsUnpickler error:``."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1].replace("Weights only load failed.", "")
    return _one_line(text) or "the file ends early or is empty"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_torch_load(path: PathLike, what: str = "checkpoint") -> Any:
    """``torch.load`` a file on the CPU with ``weights_only=True``; clear errors otherwise.

    Raises ``FileNotFoundError`` for a missing path, ``IsADirectoryError`` for a directory and
    ``ValueError`` (one line, naming the file) for a file that needs unsafe unpickling or is
    not a readable torch file. ``MemoryError`` and ``KeyboardInterrupt`` propagate.
    """
    import torch

    p = check_input_file(path, what)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except pickle.UnpicklingError as exc:
        m = _UNSAFE.search(str(exc))
        if m:
            raise ValueError(f"{p}: refusing to load this {what}: it needs unsafe unpickling "
                             f"(it references {m.group(1)}); only tensors and plain Python values "
                             f"are accepted") from None
        if _NOT_PICKLE.search(str(exc)):
            raise ValueError(f"{p} is not a readable torch {what} (not a PyTorch file: it is neither "
                             f"a torch zip archive nor a pickle the safe loader reads)") from None
        raise ValueError(f"{p} is not a readable torch {what} ({_torch_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - zip/pickle/torch errors all mean a bad file
        raise ValueError(f"{p} is not a readable torch {what} "
                         f"({exc.__class__.__name__}: {_torch_reason(exc)})") from None


@lru_cache(maxsize=16)
def _sha256_cached(resolved: str, size: int, mtime_ns: int) -> str:
    return file_sha256(resolved)


def verify_shipped(path: PathLike, record: PathLike | None = None) -> str:
    """Check a shipped model file against the ``sha256`` in its record (``<stem>.json``).

    The digest is computed once per process for each (file, size, mtime). Returns it; raises
    ``ValueError`` ("shipped model ... checksum mismatch") if it differs from the record and
    ``FileNotFoundError`` if the record is missing or has no ``sha256``.
    """
    p = Path(path).resolve()
    rec = Path(record) if record is not None else p.with_suffix(".json")
    try:
        expected = json.loads(rec.read_text(encoding="utf-8")).get("sha256")
    except FileNotFoundError:
        raise FileNotFoundError(f"shipped model {p}: its record {rec} is missing") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"shipped model {p}: cannot read its record {rec} ({_one_line(exc)})") from None
    if not isinstance(expected, str) or not expected:
        raise FileNotFoundError(f"shipped model {p}: {rec} records no sha256")
    st = p.stat()
    got = _sha256_cached(str(p), st.st_size, st.st_mtime_ns)
    if got != expected.lower():
        raise ValueError(f"shipped model {p} checksum mismatch: sha256 {got[:16]}..., "
                         f"{rec.name} records {expected[:16]}... (the file is damaged or was replaced; "
                         f"reinstall spikereg-neuro)")
    return got
