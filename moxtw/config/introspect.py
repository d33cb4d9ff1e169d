"""Walking the config schema: field types, their human names, the model at a key path.

Used by error reporting (what keys a table allows, what type a key expects) and by
`moxtw.config.describe` (the annotated example files).
"""

import types
import typing
from datetime import timedelta
from typing import Any, Optional, Union

from pydantic import BaseModel

from moxtw.config.types import TypeDoc


def strip_optional(annotation: Any) -> tuple[Any, bool]:
    """Return (annotation without None, whether None was allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) != len(typing.get_args(annotation)):
            return args[0], True
    return annotation, False


def strip_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    """Return (base type, metadata) of a possibly Annotated type."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        args = typing.get_args(annotation)
        annotation = args[0]
        metadata = list(args[1:]) + metadata
    return annotation, metadata


def base_type(annotation: Any) -> Any:
    """The type with Optional and Annotated removed."""
    annotation, _ = strip_optional(annotation)
    annotation, _ = strip_annotated(annotation)
    annotation, _ = strip_optional(annotation)
    return annotation


def is_model(annotation: Any) -> bool:
    t = base_type(annotation)
    return isinstance(t, type) and issubclass(t, BaseModel)


def container(annotation: Any) -> tuple[Optional[type], tuple[Any, ...]]:
    """(list or dict or None, type arguments) of an annotation."""
    t = base_type(annotation)
    origin = typing.get_origin(t)
    if origin in (list, dict):
        return origin, typing.get_args(t)
    return None, ()


def type_name(annotation: Any, metadata: tuple[Any, ...] | list[Any] = ()) -> str:
    """Human name of a field type, e.g. "port number (1-65535)" or "list of IP address"."""
    for m in metadata:
        if isinstance(m, TypeDoc):
            return m.name
    annotation, _ = strip_optional(annotation)
    annotation, meta = strip_annotated(annotation)
    for m in meta:
        if isinstance(m, TypeDoc):
            return m.name
    annotation, _ = strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if is_model(item):
            return "array of tables"
        return "list of " + type_name(item)
    if origin is dict:
        key, value = typing.get_args(annotation)
        if is_model(value):
            return f"table of tables, keyed by {type_name(key)}"
        return f"table of {type_name(key)} = {type_name(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    names = {str: "string", int: "integer", bool: "boolean", float: "number", timedelta: "duration"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> Optional[type[BaseModel]]:
    """The model class for the table at key path loc, or None if loc is not a table."""
    current: Any = root
    i = 0
    while i < len(loc):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        finfo = current.model_fields.get(loc[i])
        if finfo is None:
            return None
        annotation = finfo.annotation
        i += 1
        kind, args = container(annotation)
        if kind is not None:
            if i >= len(loc):
                return None
            annotation = args[-1]
            i += 1
        current = base_type(annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def field_at(root: type[BaseModel], loc: tuple[Any, ...]):
    """The pydantic FieldInfo of the key at loc, or None."""
    if not loc:
        return None
    parent = model_at(root, loc[:-1])
    if parent is None:
        return None
    return parent.model_fields.get(loc[-1])
