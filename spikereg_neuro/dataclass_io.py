"""Dictionary round trips of the config dataclasses (YAML sections, checkpoint records).

A leaf module: it imports nothing of the project, so every config module can use it.

* :func:`to_plain` -- a dataclass as plain dicts and lists (tuples become lists, nested
  dataclasses dicts), what YAML and JSON hold;
* :func:`checked_kwargs` -- a mapping's keys and value types checked against a dataclass's
  fields (an unknown key or a value of the wrong type is a ``ValueError`` naming the key);
* :func:`check_fields` -- the same type check of a built instance (for ``__post_init__``);
* :class:`DictIO` -- a mixin giving a config dataclass ``to_dict`` and ``from_dict`` from those.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, fields, is_dataclass
from functools import lru_cache
from typing import Any, ClassVar, Dict, Mapping, Optional, Type, TypeVar, get_args, get_origin, get_type_hints

__all__ = ["to_plain", "checked_kwargs", "check_fields", "DictIO"]

T = TypeVar("T", bound="DictIO")

#: the scalar field types checked, with what a value must be (singular, plural)
_SCALARS: Dict[type, tuple] = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
                               float: ("a number", "numbers"), str: ("a string", "strings")}


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def to_plain(obj: Any) -> Dict[str, Any]:
    """``obj`` (a dataclass instance) as nested dicts and lists: no tuples, no dataclasses."""
    if not is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"to_plain needs a dataclass instance, got {type(obj).__name__}")
    return _lists(asdict(obj))


@lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return get_type_hints(cls)


def _scalar_ok(value: Any, tp: type) -> bool:
    """bool is not a number here, and 2.5 (or 2.0) is not an integer."""
    if tp is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if tp is int:
        return isinstance(value, numbers.Integral)
    if tp is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, tp)


def _items(hint: Any) -> Optional[tuple]:
    """``(item type, length or None)`` of a homogeneous list / tuple hint, else ``None``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is list and len(args) == 1:
        return args[0], None
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0], None
    if origin is tuple and args and all(a == args[0] for a in args):
        return args[0], len(args)
    return None


def _plural(hint: Any) -> str:
    if hint in _SCALARS:
        return _SCALARS[hint][1]
    items = _items(hint)
    return f"lists of {_plural(items[0])}" if items else "values"


def _wanted(value: Any, hint: Any) -> Optional[str]:
    """What ``value`` must be to fit ``hint`` (``None``: it fits, or the hint is not checked here)."""
    if hint in _SCALARS:
        return None if _scalar_ok(value, hint) else _SCALARS[hint][0]
    items = _items(hint)
    if items is None:
        return None
    item, n = items
    want = f"a list of {'' if n is None else f'{n} '}{_plural(item)}"
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
        return want
    return want if any(_wanted(v, item) is not None for v in value) else None


def _check_values(cls: type, data: Mapping[str, Any], section: str) -> None:
    """Each value against its field's type hint; a nested config dataclass must be a mapping
    (checked in turn, as section ``section.key``) or an instance of it."""
    prefix = f"{section}." if section else ""
    hints = _hints(cls)
    for key, value in data.items():
        hint = hints.get(key)
        if isinstance(hint, type) and is_dataclass(hint):
            if value is not None and not isinstance(value, hint):
                checked_kwargs(hint, value, getattr(hint, "_keys_label", "keys"), f"{prefix}{key}")
            continue
        want = _wanted(value, hint)
        if want is not None:
            raise ValueError(f"{prefix}{key} must be {want}, got {value!r} ({type(value).__name__})")


def checked_kwargs(cls: type, data: Optional[Mapping[str, Any]], what: str, section: str = "") -> Dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``, checked: ``None`` reads as empty;
    anything else that is not a mapping, a key that is not one of the fields
    (``"unknown {what} [...]; known: [...]"``) or a value that does not fit its field's type
    (bool, int, float, str, lists of them, nested config sections) is a one-line ``ValueError``
    naming the key (``section.key``; ``section`` is the YAML section, e.g. ``"train"``)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        where = f"config section '{section}'" if section else f"{cls.__name__} settings"
        raise ValueError(f"{where} must be a mapping, got {data!r} ({type(data).__name__})")
    data = dict(data)
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")
    _check_values(cls, data, section)
    return data


def check_fields(obj: Any, section: str = "") -> None:
    """The type check of :func:`checked_kwargs` on a built dataclass instance (call it first in
    ``__post_init__``, so direct construction is checked like a YAML section)."""
    _check_values(type(obj), {f.name: getattr(obj, f.name) for f in fields(obj)}, section)


class DictIO:
    """Mixin for config dataclasses: ``to_dict`` (:func:`to_plain`) and ``from_dict`` (unknown
    keys and values of the wrong type are errors, worded with the class's ``_keys_label``;
    everything else is left to the dataclass's ``__post_init__``)."""

    _keys_label: ClassVar[str] = "keys"

    def to_dict(self) -> Dict[str, Any]:
        """The config as plain dicts and lists."""
        return to_plain(self)

    @classmethod
    def from_dict(cls: Type[T], data: Optional[Mapping[str, Any]], section: str = "") -> T:
        """Build from a mapping of field names (missing keys keep the defaults); ``section``
        names it in errors (``"train"``: ``train.lr must be a number ...``)."""
        return cls(**checked_kwargs(cls, data, cls._keys_label, section))
