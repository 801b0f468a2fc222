"""Typed results as JSON and back: every command's result is a frozen dataclass, its file the
record's fields in order, and a later command reads the file back into the same record.

A field whose metadata is `OPTIONAL` is left out of the JSON while it holds nothing (None, False or
an empty collection), so a file says only what was computed. Undefined numbers are NaN in memory and
null in the file (cxr.atomic.json_ready); `from_json` turns them back into NaN.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

OPTIONAL = {"optional": True}  # field metadata: left out of the JSON while it holds nothing
NOT_SAVED = {"saved": False}  # field metadata: in memory only (a folder, a table)
EMPTY = ({}, [], ())


def optional(default: object = None) -> Any:
    """A field left out of the JSON while it holds nothing."""
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=type(default), metadata=OPTIONAL)
    return dataclasses.field(default=default, metadata=OPTIONAL)


def to_json(value: object) -> object:
    """A record (or a collection of them) as plain JSON-ready values, fields in their order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        found = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("saved") is False:
                continue
            if f.metadata.get("optional") and (item is None or item is False or item in EMPTY):
                continue
            found[f.name] = to_json(item)
        return found
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(kind: type, data: object) -> Any:
    """`data` (parsed JSON) as a value of `kind`: records built field by field from their type
    hints, JSON's string keys turned back into ints where the record says so, null floats into
    NaN. Keys a record does not have (verdicts derived on writing) are ignored."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return data
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        return from_json(next(a for a in args if a is not type(None)), data)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        assert isinstance(data, dict), f"{kind.__name__} is read from an object, not {data!r}"
        return kind(
            **{
                f.name: from_json(hints[f.name], data[f.name])
                for f in dataclasses.fields(kind)
                if f.init and f.name in data
            }
        )
    if origin is dict:
        key, item = args
        assert isinstance(data, dict)
        return {from_json(key, k): from_json(item, v) for k, v in data.items()}
    if origin is list:
        assert isinstance(data, list)
        return [from_json(args[0], v) for v in data]
    if origin is tuple:
        assert isinstance(data, list | tuple)
        items = args if args[-1] is not Ellipsis else (args[0],) * len(data)
        return tuple(from_json(a, v) for a, v in zip(items, data, strict=True))
    if kind is float:
        return math.nan if data is None else float(data)
    if kind is int:
        return int(data)
    return data


def num(value: object, spec: str = ".3f") -> str:
    """A figure for a document, formatted; 'undefined' where it is NaN (null in the JSON)."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "undefined"
    return format(value, spec)
