"""Checks of caller input: a clear InvalidInputError, before any I/O."""

from __future__ import annotations

import enum
from typing import TypeVar

from ._errors import InvalidInputError

E = TypeVar("E", bound=enum.Enum)


def text(field: str, value: object, *, max_length: int, allow_empty: bool = False) -> str:
    """A plain ``str`` (never a dict or other query object), stripped."""
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string, got {type(value).__name__}")
    stripped = value.strip()
    if not stripped and not allow_empty:
        raise InvalidInputError(field, "must not be empty")
    if len(stripped) > max_length:
        raise InvalidInputError(field, f"must be at most {max_length} characters")
    if "\x00" in stripped:
        raise InvalidInputError(field, "must not contain NUL characters")
    return stripped


def identifier(field: str, value: object, *, max_length: int) -> str:
    """An id: a non-empty string with no surrounding white space."""
    checked = text(field, value, max_length=max_length)
    if checked != value:
        raise InvalidInputError(field, "must not start or end with white space")
    return checked


def optional_identifier(field: str, value: object, *, max_length: int) -> str | None:
    return None if value is None else identifier(field, value, max_length=max_length)


def choice(field: str, value: object, kind: type[E]) -> E:
    """A member of ``kind``, given as the member or its value."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        for member in kind:
            if member.value == value:
                return member
    allowed = ", ".join(repr(m.value) for m in kind)
    raise InvalidInputError(field, f"must be one of {allowed}, got {value!r}")


def integer(field: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(field, f"must be an integer, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise InvalidInputError(field, f"must be {bound}, got {value}")
    return value


def identifier_set(field: str, value: object, *, max_length: int) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, (set, frozenset, list, tuple)):
        raise InvalidInputError(field, "must be a set of strings")
    items = frozenset(identifier(field, item, max_length=max_length) for item in value)
    if not items:
        raise InvalidInputError(field, "must not be empty")
    return items
