"""Our versioned HDF5 files (net.h5, deploy files): opening them with one set of checks, and
their attributes described by field tables (:class:`AttrField`) that drive writing, reading
(defaults for files written before an attribute existed, one clear error for a missing one) and
equality."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Sequence, Type, Union

import h5py
import numpy as np

from .paths import check_input_file

PathLike = Union[str, os.PathLike]


def open_versioned(path: PathLike, fmt: str, version: int, error: Type[Exception],
                   what: str) -> h5py.File:
    """Open ``path`` read-only after checking it exists, is HDF5, and carries the root attributes
    ``format == fmt`` and ``format_version == version``.

    Missing file -> ``FileNotFoundError``; anything else wrong -> ``error`` with a message naming
    the file and ``what`` it should be. The caller closes the returned file (``with``).
    """
    path = check_input_file(path, what)
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
    except (RuntimeError, OSError) as exc:  # h5py on damaged root metadata
        f.close()
        raise error(f"{path}: damaged HDF5 file ({' '.join(str(exc).split())})") from None
    except BaseException:
        f.close()
        raise
    return f


# ============================================================================ attribute tables
@dataclass(frozen=True)
class Codec:
    """How a value is stored as one HDF5 attribute.

    ``encode``: the value h5py writes (its type fixes the attribute's dtype); ``decode``: the
    value from what h5py reads, raising ValueError/TypeError with a phrase that follows the
    attribute's name (``"must be a bool, got 1 (int64)"``); ``key``: what equality compares.
    """

    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    key: Callable[[Any], Any] = lambda v: v


def _scalar(v: Any) -> Any:
    return v[()] if isinstance(v, np.ndarray) and v.shape == () else v


def _text(v: Any) -> str:
    v = _scalar(v)
    return v.decode() if isinstance(v, bytes) else str(v)


def _bool(v: Any) -> bool:
    v = _scalar(v)
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"must be a bool, got {v!r} ({type(v).__name__})")
    return bool(v)


def _converted(kind: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def decode(v: Any) -> Any:
        try:
            return fn(v)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be {kind}, got {v!r} ({exc})") from exc
    return decode


def _int_tuple(v: Any) -> tuple:
    return tuple(int(x) for x in np.atleast_1d(v))


#: int64 scalar
INT = Codec("int", int, _converted("an int", int))
#: float64 scalar
FLOAT = Codec("float", float, _converted("a float", float))
#: HDF5 enum bool; reading anything else (an int 0/1 included) is an error
BOOL = Codec("bool", bool, _bool, key=bool)
#: variable-length UTF-8 string
STR = Codec("str", str, _text)
#: int64 array, read as a tuple of ints (compared as tuples)
INTS = Codec("int tuple", lambda v: np.asarray(v, dtype=np.int64), _converted("integers", _int_tuple), key=tuple)
#: array of variable-length UTF-8 strings, read as a list of str
STRS = Codec("str list", lambda v: np.array(list(v), dtype=h5py.string_dtype()),
             lambda v: [_text(x) for x in np.atleast_1d(v)])


def int_tuple(n: int) -> Codec:
    """:data:`INTS` that must hold exactly ``n`` integers."""
    def decode(v: Any) -> tuple:
        t = INTS.decode(v)
        if len(t) != n:
            raise ValueError(f"must be {n} integers, got {t}")
        return t
    return Codec(f"{n} ints", INTS.encode, decode, key=tuple)


@dataclass(frozen=True)
class AttrField:
    """One stored attribute: ``name`` (also the dataclass field or dict key holding its value)
    and ``codec``. ``required=False``: files without it read as ``default`` (written before the
    attribute existed), and a None value is not written (absent = None). ``compare=False``:
    equality ignores it."""

    name: str
    codec: Codec
    required: bool = True
    default: Any = None
    compare: bool = True


def write_attrs(attrs: h5py.AttributeManager, fields: Sequence[AttrField], values: Mapping[str, Any]) -> None:
    """Write ``values[f.name]`` as attribute ``f.name`` for every field (a None optional value:
    nothing written)."""
    for f in fields:
        v = values[f.name]
        if v is None and not f.required:
            continue
        attrs[f.name] = f.codec.encode(v)


def read_attr(attrs: h5py.AttributeManager, f: AttrField, where: str, error: Type[Exception]) -> Any:
    """The decoded attribute ``f.name`` (its default when absent and optional); ``error`` with
    ``where`` for a missing required or an undecodable attribute."""
    if f.name not in attrs:
        if f.required:
            raise error(f"{where}: missing attribute {f.name!r}")
        return copy.deepcopy(f.default)
    try:
        return f.codec.decode(attrs[f.name])
    except (TypeError, ValueError) as exc:
        raise error(f"{where}: attribute {f.name!r} {exc}") from None


def read_attrs(attrs: h5py.AttributeManager, fields: Sequence[AttrField], where: str,
               error: Type[Exception]) -> Dict[str, Any]:
    """``{f.name: value}`` of every field (:func:`read_attr`)."""
    return {f.name: read_attr(attrs, f, where, error) for f in fields}


def attrs_equal(fields: Sequence[AttrField], a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether ``a`` and ``b`` agree on every field with ``compare=True`` (by its codec's key)."""
    return all(f.codec.key(a[f.name]) == f.codec.key(b[f.name]) for f in fields if f.compare)


__all__ = ["open_versioned", "Codec", "AttrField", "INT", "FLOAT", "BOOL", "STR", "INTS", "STRS",
           "int_tuple", "write_attrs", "read_attr", "read_attrs", "attrs_equal"]
