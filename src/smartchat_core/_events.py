"""Events for the live dashboard, and the rooms they go to.

Every event has a ``name``, a JSON-ready ``payload`` and the ``rooms`` it is
delivered to: ``dashboard``, ``executive:{id}`` and ``chat:{id}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import attrs

from ._convert import chat_to_json, isoformat, to_json
from ._models import Chat, Executive, ExecutiveStatus, Rating

__all__ = [
    "CHAT_ASSIGNED",
    "CHAT_MESSAGE",
    "CHAT_RATED",
    "CHAT_REASSIGNED",
    "CHAT_RESOLVED",
    "DASHBOARD",
    "EVENT_NAMES",
    "EXECUTIVE_STATUS",
    "SLA_ALERT",
    "TAG_UPDATED",
    "Event",
    "chat_room",
    "executive_room",
]

DASHBOARD = "dashboard"
SLA_ALERT = "sla_alert"
CHAT_ASSIGNED = "chat_assigned"
CHAT_REASSIGNED = "chat_reassigned"
EXECUTIVE_STATUS = "executive_status"
TAG_UPDATED = "tag_updated"
CHAT_RESOLVED = "chat_resolved"
CHAT_RATED = "chat_rated"
CHAT_MESSAGE = "chat_message"
EVENT_NAMES = frozenset(
    {
        SLA_ALERT,
        CHAT_ASSIGNED,
        CHAT_REASSIGNED,
        EXECUTIVE_STATUS,
        TAG_UPDATED,
        CHAT_RESOLVED,
        CHAT_RATED,
        CHAT_MESSAGE,
    }
)


def executive_room(executive_id: str) -> str:
    """The room of one executive's screens: ``executive:{id}``."""
    return f"executive:{executive_id}"


def chat_room(chat_id: str) -> str:
    """The room of everyone watching one chat: ``chat:{id}``."""
    return f"chat:{chat_id}"


@attrs.frozen
class Event:
    """Something changed; ``payload`` is JSON-ready (no datetimes, no enums)."""

    name: str
    payload: dict[str, Any]
    rooms: frozenset[str]
    occurred_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"event", "rooms", "occurred_at", "payload"}``."""
        return {
            "event": self.name,
            "rooms": sorted(self.rooms),
            "occurred_at": isoformat(self.occurred_at),
            "payload": self.payload,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_json` (used by cross-process publishers)."""
        return cls(
            name=data["event"],
            payload=data["payload"],
            rooms=frozenset(data["rooms"]),
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
        )


def _rooms(chat: Chat, *executive_ids: str | None, dashboard: bool = True) -> frozenset[str]:
    rooms = [chat_room(chat.id)]
    if dashboard:
        rooms.append(DASHBOARD)
    for executive_id in executive_ids:
        if executive_id:
            rooms.append(executive_room(executive_id))
    return frozenset(rooms)


def chat_assigned(chat: Chat, at: datetime) -> Event:
    payload = {
        "chat_id": chat.id,
        "executive_id": chat.assigned_executive_id,
        "chat": chat_to_json(chat),
    }
    return Event(CHAT_ASSIGNED, payload, _rooms(chat, chat.assigned_executive_id), at)


def chat_reassigned(chat: Chat, from_id: str, to_id: str | None, at: datetime) -> Event:
    payload = {
        "chat_id": chat.id,
        "from_executive_id": from_id,
        "to_executive_id": to_id,
        "chat": chat_to_json(chat),
    }
    return Event(CHAT_REASSIGNED, payload, _rooms(chat, from_id, to_id), at)


def executive_status(executive: Executive, previous: ExecutiveStatus | None, at: datetime) -> Event:
    payload = {
        "executive_id": executive.id,
        "status": executive.status.value,
        "previous_status": previous.value if previous else None,
        "executive": to_json(executive),
    }
    return Event(
        EXECUTIVE_STATUS, payload, frozenset({DASHBOARD, executive_room(executive.id)}), at
    )


def tag_updated(chat: Chat, tag: str, action: str, at: datetime) -> Event:
    payload = {"chat_id": chat.id, "tag": tag, "action": action, "tags": list(chat.tags)}
    return Event(TAG_UPDATED, payload, _rooms(chat, chat.assigned_executive_id), at)


def sla_alert(
    chat: Chat, tier: str, waited_seconds: float, recipient: str | None, at: datetime
) -> Event:
    payload = {
        "chat_id": chat.id,
        "alert_type": tier,
        "waited_seconds": waited_seconds,
        "recipient": recipient,
        "customer_id": chat.customer_id,
        "customer_name": chat.customer_name,
        "customer_type": chat.customer_type,
        "executive_id": chat.assigned_executive_id,
    }
    return Event(SLA_ALERT, payload, _rooms(chat, chat.assigned_executive_id), at)


def chat_resolved(chat: Chat, executive_id: str | None, at: datetime) -> Event:
    payload = {"chat_id": chat.id, "executive_id": executive_id, "chat": chat_to_json(chat)}
    return Event(CHAT_RESOLVED, payload, _rooms(chat, executive_id), at)


def chat_rated(rating: Rating, at: datetime) -> Event:
    rooms = {DASHBOARD, chat_room(rating.chat_id)}
    if rating.executive_id:
        rooms.add(executive_room(rating.executive_id))
    return Event(
        CHAT_RATED, {"rating": to_json(rating), "chat_id": rating.chat_id}, frozenset(rooms), at
    )


def chat_message(
    chat: Chat, direction: str, text: str, executive_id: str | None, at: datetime
) -> Event:
    payload = {
        "chat_id": chat.id,
        "direction": direction,
        "text": text,
        "executive_id": executive_id,
        "chat": chat_to_json(chat),
    }
    return Event(CHAT_MESSAGE, payload, _rooms(chat, chat.assigned_executive_id), at)


def rooms_match(event_rooms: Iterable[str], wanted: frozenset[str]) -> bool:
    """Whether an event for ``event_rooms`` goes to a subscriber of ``wanted``."""
    return not wanted.isdisjoint(event_rooms)
