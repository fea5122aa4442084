"""cattrs converters: models to JSON-ready payloads and back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import cattrs

__all__ = ["json_converter", "to_json"]

json_converter = cattrs.Converter()
json_converter.register_unstructure_hook(datetime, lambda value: value.isoformat())
json_converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
json_converter.register_unstructure_hook(frozenset, lambda value: sorted(value))


def to_json(obj: object) -> Any:
    """Unstructure a model into JSON-ready data (ISO datetimes, enum values)."""
    return json_converter.unstructure(obj)
