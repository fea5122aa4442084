"""cattrs converters: models to JSON-ready payloads and back."""

from __future__ import annotations

import enum
from collections.abc import Set
from datetime import datetime
from typing import Any

import cattrs

__all__ = ["json_converter", "to_json"]

json_converter = cattrs.Converter(unstruct_collection_overrides={Set: sorted})
json_converter.register_unstructure_hook(datetime, lambda value: value.isoformat())
json_converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
json_converter.register_unstructure_hook_func(
    lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda value: value.value
)


def to_json(obj: object) -> Any:
    """Unstructure a model into JSON-ready data (ISO datetimes, enum values,
    sorted lists for sets)."""
    return json_converter.unstructure(obj)
