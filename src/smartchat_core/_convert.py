"""cattrs converters: models to JSON-ready payloads and back."""

from __future__ import annotations

import enum
from collections.abc import Set
from datetime import datetime
from typing import Any

import cattrs

from ._models import Chat

__all__ = ["chat_to_json", "isoformat", "json_converter", "to_json"]

_ISO_MEMO_SIZE = 256
_iso_memo: dict[int, tuple[datetime, str]] = {}


def isoformat(value: datetime) -> str:
    """``value.isoformat()``, remembered for the last few hundred datetime
    objects (by identity, holding them so an id is not reused meanwhile).

    One moment usually stands in several fields of a chat (a new chat's
    ``created_at``, ``opened_at``, ``last_activity_at``... are one ``now``)
    and in several events, while ``isoformat`` costs about a microsecond.
    """
    known = _iso_memo.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    text = value.isoformat()
    if len(_iso_memo) >= _ISO_MEMO_SIZE:
        _iso_memo.clear()
    _iso_memo[id(value)] = (value, text)
    return text


json_converter = cattrs.Converter(unstruct_collection_overrides={Set: sorted})
json_converter.register_unstructure_hook(datetime, isoformat)
json_converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
json_converter.register_unstructure_hook_func(
    lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda value: value.value
)


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else isoformat(value)


def chat_to_json(chat: Chat) -> dict[str, Any]:
    """A chat as the converter unstructures any model, written out: every
    event of the assignment path carries a chat, and cattrs' generated
    function (a hook call per optional field) costs twice this.
    ``tests/test_convert.py`` checks it against the generic unstructuring
    (same keys in the same order, same values) so a new field cannot be
    forgotten here."""
    by = chat.last_interaction_by
    return {
        "id": chat.id,
        "customer_id": chat.customer_id,
        "customer_name": chat.customer_name,
        "customer_type": chat.customer_type,
        "created_at": isoformat(chat.created_at),
        "opened_at": isoformat(chat.opened_at),
        "last_incoming_message": _iso_or_none(chat.last_incoming_message),
        "last_outgoing_message": _iso_or_none(chat.last_outgoing_message),
        "last_interaction_by": None if by is None else by.value,
        "last_message": chat.last_message,
        "last_activity_at": isoformat(chat.last_activity_at),
        "is_resolved": chat.is_resolved,
        "resolved_at": _iso_or_none(chat.resolved_at),
        "tags": list(chat.tags),
        "assigned_executive_id": chat.assigned_executive_id,
        "assigned_at": _iso_or_none(chat.assigned_at),
        "queued_at": _iso_or_none(chat.queued_at),
    }


json_converter.register_unstructure_hook(Chat, chat_to_json)


def to_json(obj: object) -> Any:
    """Unstructure a model into JSON-ready data (ISO datetimes, enum values,
    sorted lists for sets)."""
    return json_converter.unstructure(obj)
