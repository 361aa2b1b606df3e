"""Decode wire bytes into a type, turning every failure into field-level errors.

msgspec reports one error at a time as text (``Expected `str`, got `int` - at
`$.status```); callers need a field name and a reason, so this module parses
that text into :class:`FieldError` values.
"""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from handoff_schemas.limits import MAX_DEPTH
from handoff_schemas.runtime import FieldError

T = TypeVar("T")

_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED_FIELD = re.compile(r"(missing required field|unknown field) `(?P<name>[^`]+)`")


class SchemaError(ValueError):
    """Bytes that are not valid JSON, or do not match the expected type."""

    def __init__(self, type_name: str, fields: list[FieldError]) -> None:
        self.type_name = type_name
        self.fields = fields
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields)
        super().__init__(f"invalid {type_name}: {detail}")


def field_errors(error: msgspec.MsgspecError) -> list[FieldError]:
    """Turn one msgspec error into field errors (``$`` is the whole message)."""
    match = _AT_PATH.match(str(error))
    assert match is not None  # the pattern matches any string
    message, path = match["message"], match["path"] or ""
    named = _NAMED_FIELD.search(message)
    if named:
        path = f"{path}.{named['name']}"
        message = named.group(1)
    field = path.lstrip(".") or "$"
    if isinstance(error, msgspec.DecodeError) and not isinstance(error, msgspec.ValidationError):
        return [FieldError(field="$", message=f"not valid JSON: {message}")]
    return [FieldError(field=field, message=message)]


def decode(data: bytes, into: type[T], max_depth: int = MAX_DEPTH) -> T:
    """Decode JSON bytes into ``into`` or raise :class:`SchemaError`.

    Whatever the bytes (not JSON, not UTF-8, nested thousands deep), the outcome is a
    value or a :class:`SchemaError`: a decoder that raised anything else, or recursed
    until Python gave up, would leave a request unanswered or a reader stopped.
    """
    try:
        value = msgspec.json.decode(data, type=into)
    except msgspec.DecodeError as error:
        raise SchemaError(into.__name__, field_errors(error)) from None
    except RecursionError:
        raise too_deep(into, max_depth) from None
    except (ValueError, TypeError, OverflowError) as error:  # e.g. a string that is not UTF-8
        raise SchemaError(
            into.__name__, [FieldError(field="$", message=f"not valid JSON: {error}")]
        ) from None
    if nesting_exceeds(data, max_depth):
        raise too_deep(into, max_depth)
    return value


def too_deep(into: type, max_depth: int) -> SchemaError:
    return SchemaError(
        into.__name__, [FieldError(field="$", message=f"nested deeper than {max_depth} levels")]
    )


def nesting_exceeds(data: bytes, limit: int) -> bool:
    """Does this (valid) JSON nest objects and arrays deeper than ``limit``?

    Counting brackets is a cheap upper bound that settles nearly every message; only
    one with more brackets than ``limit`` is walked.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    level: list[object] = [msgspec.json.decode(data)]
    depth = 0
    while True:
        containers = [value for value in level if isinstance(value, dict | list)]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for value in containers
            for child in (value.values() if isinstance(value, dict) else value)
        ]


def convert(value: object, into: type[T]) -> T:
    """Validate already-decoded builtins (e.g. a reply's ``result``) into ``into``."""
    try:
        return msgspec.convert(value, type=into)
    except msgspec.ValidationError as error:
        raise SchemaError(into.__name__, field_errors(error)) from None
    except RecursionError:
        raise SchemaError(
            into.__name__, [FieldError(field="$", message="nested too deep")]
        ) from None


def encode(message: object) -> bytes:
    return msgspec.json.encode(message)
